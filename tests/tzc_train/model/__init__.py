"""Tests of tzc_train/model/ (a package, so that its test modules' names may repeat other folders')."""
