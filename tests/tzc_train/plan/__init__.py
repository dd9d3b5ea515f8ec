"""Tests of tzc_train/plan/ (a package, so that its test modules' names may repeat other folders')."""
