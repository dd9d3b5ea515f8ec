"""Tests of tzc_train/submit/ (a package, so that its test modules' names may repeat other folders')."""
