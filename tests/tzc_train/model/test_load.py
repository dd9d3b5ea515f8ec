"""A run's base model loaded (tzc_train/model/load.py): a Kaggle Flax checkpoint as the base."""

import numpy as np
import pytest
from tiny_runs import run_config

from tzc_train.model.load import base_model, make_mesh
from tzc_train.model.lora import base_state
from tzc_train.model.views import tiny_config
from tzc_train.submit.export import kaggle_params


def test_a_kaggle_flax_checkpoint_loads_as_the_base_model(tmp_path):
    """--weights with a Kaggle-layout orbax checkpoint (written here at tiny size: no real weights are
    reachable) gives the model whose parameters were written, on the mesh."""
    import orbax.checkpoint as ocp

    mesh = make_mesh(None)
    with mesh:
        tiny, _ = base_model(run_config("x", "y"), 600, mesh)
    params = base_state(tiny)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "kaggle", kaggle_params(params, tiny_config(600)))
    checkpointer.wait_until_finished()
    with mesh:
        loaded, _ = base_model(run_config("x", "y", weights=str(tmp_path / "kaggle")), 600, mesh)
    got = base_state(loaded)
    assert set(got) == set(params)
    for name, value in params.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    with pytest.raises(ValueError, match="not a Kaggle Flax checkpoint"), mesh:
        base_model(run_config("x", "y", weights=str(tmp_path / "missing")), 600, mesh)
