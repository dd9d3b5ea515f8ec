"""Packed rows on a tiny Gemma 2 (random weights) over 8 fake CPU devices: no attention and no loss
crosses an example boundary."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tzc_train.model import attention_mask, check_seq_len, packed_inputs, packed_loss, tiny_config, tiny_model


@pytest.fixture(scope="module")
def mesh():
    assert len(jax.devices()) == 8, "tests/conftest.py sets XLA_FLAGS for 8 fake CPU devices"
    return jax.make_mesh((2, 4), ("fsdp", "tp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


@pytest.fixture(scope="module")
def model(mesh):
    with mesh:
        return tiny_model(1024, mesh)


def _row(examples, length, prompt_lengths):
    tokens, segments, positions, mask = (np.zeros(length, np.int32) for _ in range(4))
    at = 0
    for k, (ids, prompt) in enumerate(zip(examples, prompt_lengths), 1):
        n = len(ids)
        tokens[at:at + n], segments[at:at + n], positions[at:at + n] = ids, k, np.arange(n)
        mask[at + prompt:at + n] = 1
        at += n
    return {"tokens": tokens[None], "segment_ids": segments[None], "positions": positions[None],
            "loss_mask": mask[None]}


def test_packed_logits_equal_each_example_alone_and_a_plain_causal_mask_would_not(model, mesh):
    rng = np.random.default_rng(0)
    first, second = rng.integers(5, 1024, 23), rng.integers(5, 1024, 17)
    row = _row([first, second], 48, [5, 4])
    with mesh:
        packed, _ = model(jnp.asarray(row["tokens"]), jnp.asarray(row["positions"]), None,
                          attention_mask(jnp.asarray(row["segment_ids"])))
        alone, _ = model(jnp.asarray(second)[None], jnp.arange(17)[None], None, jnp.tril(jnp.ones((17, 17), bool))[None])
        plain, _ = model(jnp.asarray(row["tokens"]), jnp.arange(48)[None], None, jnp.tril(jnp.ones((48, 48), bool))[None])
    assert float(jnp.abs(packed[0, 23:40] - alone[0]).max()) < 1e-5
    assert float(jnp.abs(plain[0, 23:40] - alone[0]).max()) > 1e-2


def test_loss_is_the_token_weighted_mean_of_the_examples_alone(model, mesh):
    rng = np.random.default_rng(1)
    a, b = rng.integers(5, 1024, 20), rng.integers(5, 1024, 14)
    with mesh:
        both = packed_loss(model, **packed_inputs(_row([a, b], 40, [6, 3])))
        la = packed_loss(model, **packed_inputs(_row([a], 20, [6])))
        lb = packed_loss(model, **packed_inputs(_row([b], 14, [3])))
    weights = (20 - 6, 14 - 3)
    assert abs(float(both) - (float(la) * weights[0] + float(lb) * weights[1]) / sum(weights)) < 1e-5


def test_no_target_is_predicted_across_a_boundary_or_from_padding():
    row = _row([np.arange(5, 10), np.arange(20, 26)], 16, [0, 0])  # loss on every token, even the first
    targets = np.asarray(packed_inputs(row)["target_mask"])[0]
    # target t is token t+1: the first token of segment 2 (index 5) and padding are never targets
    assert not targets[4] and targets[5] and not targets[10:].any() and targets[:4].all()


def test_rows_longer_than_the_sliding_window_are_refused():
    config = tiny_config(1024)
    check_seq_len(config.sliding_window_size, config)
    with pytest.raises(ValueError, match="sliding window"):
        check_seq_len(config.sliding_window_size + 1, config)


def test_every_replica_of_every_tiny_parameter_agrees(model):
    """tunix's dummy creator, given a mesh, drew each device's shard with its own key: replicated
    norm scales then differed between devices, and a checkpoint (which keeps one replica) could not
    reproduce the model. Every replica must hold the same values."""
    from flax import nnx

    for path, variable in nnx.state(model, nnx.Param).flat_state():
        array = variable.get_value()
        first: dict[str, np.ndarray] = {}
        for shard in array.addressable_shards:
            data = np.asarray(shard.data)
            np.testing.assert_array_equal(first.setdefault(str(shard.index), data), data, err_msg=str(path))
