"""The model tests' mesh (8 fake CPU devices) and tiny Gemma 2s, one per test module."""

import pytest
from tiny_runs import eight_devices

from tzc_train.model.views import prepare, tiny_model


@pytest.fixture(scope="module")
def mesh():
    return eight_devices()


@pytest.fixture(scope="module")
def tunix_model(mesh):
    """tunix's own attention and dense mask (what sampling uses)."""
    with mesh:
        return tiny_model(1024, mesh)


@pytest.fixture(scope="module")
def model(mesh):
    with mesh:
        return prepare(tiny_model(1024, mesh), remat="none", attention="plain")
