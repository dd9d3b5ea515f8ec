"""Packed rows' inputs and loss (tzc_train/model/loss.py), on tiny random Gemma 2s and 3s: no target is
predicted across an example boundary, the loss is the token mean of the examples alone, computed in
slices of the vocabulary projection it equals the full logits' loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tiny_runs import VOCAB
from tiny_runs import packed_row as _row

from tzc_train.model import bases
from tzc_train.model.loss import chunked_cross_entropy, packed_inputs, packed_loss
from tzc_train.model.views import prepare, tiny_model


def test_loss_is_the_token_weighted_mean_of_the_examples_alone(model, mesh):
    rng = np.random.default_rng(1)
    a, b = rng.integers(5, 1024, 20), rng.integers(5, 1024, 14)
    loss = nnx.jit(packed_loss)
    with mesh:
        both = loss(model, **packed_inputs(_row([a, b], 40, [6, 3])))
        la = loss(model, **packed_inputs(_row([a], 20, [6])))
        lb = loss(model, **packed_inputs(_row([b], 14, [3])))
    weights = (20 - 6, 14 - 3)
    assert abs(float(both) - (float(la) * weights[0] + float(lb) * weights[1]) / sum(weights)) < 1e-5


def test_loss_by_slices_equals_the_loss_on_the_whole_logits():
    """packed_loss never builds [B, L, vocab]; its value is the full-logits loss (through the model),
    and its gradients those of the full computation (on random hidden states)."""
    import optax

    inputs = packed_inputs(_row([np.arange(5, 600), np.arange(700, 1000)], 1000, [40, 25]))  # > one 512 slice
    # On one device: eager 8-device programs of this size sometimes deadlocked XLA:CPU's collectives
    # on 2 cores ("Termination timeout ... only 3 of them arrived"), and the loss needs no mesh.
    one = jax.make_mesh((1, 1), ("fsdp", "tp"), devices=jax.devices()[:1],
                        axis_types=(jax.sharding.AxisType.Auto,) * 2)

    @nnx.jit  # compiled, as training runs it (eager op-by-op calls are slow)
    def full_logits_loss(model, inputs):
        logits, _ = model(inputs["input_tokens"], inputs["positions"], None, inputs["segment_ids"])
        full = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1].astype(jnp.float32),
                                                               inputs["input_tokens"][:, 1:])
        weights = inputs["target_mask"].astype(jnp.float32)
        return jnp.sum(full * weights) / jnp.sum(weights)

    with one:
        model = prepare(tiny_model(1024, one), remat="none", attention="plain")
        expected = full_logits_loss(model, inputs)
        assert abs(float(nnx.jit(packed_loss)(model, **inputs)) - float(expected)) < 1e-5

    rng = np.random.default_rng(3)
    hidden, embedding = jnp.asarray(rng.normal(size=(2, 30, 16)), jnp.float32), jnp.asarray(rng.normal(size=(50, 16)))
    labels, mask = jnp.asarray(rng.integers(0, 50, (2, 30))), jnp.asarray(rng.random((2, 30)) < 0.6, jnp.float32)

    @jax.jit
    def whole(h, e):
        z = jnp.tanh((h @ e.T) / 30.0) * 30.0
        return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(z, labels) * mask) / jnp.sum(mask)

    @jax.jit
    def sliced(h, e):  # 30 positions in slices of 7: the last one padded
        return chunked_cross_entropy(h, e, labels, mask, softcap=30.0, chunk=7)

    np.testing.assert_allclose(float(sliced(hidden, embedding)), float(whole(hidden, embedding)), rtol=1e-6)
    for got, want in zip(jax.grad(sliced, argnums=(0, 1))(hidden, embedding),
                         jax.grad(whole, argnums=(0, 1))(hidden, embedding)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_no_target_is_predicted_across_a_boundary_or_from_padding():
    row = _row([np.arange(5, 10), np.arange(20, 26)], 16, [0, 0])  # loss on every token, even the first
    targets = np.asarray(packed_inputs(row)["target_mask"])[0]
    # target t is token t+1: the first token of segment 2 (index 5) and padding are never targets
    assert not targets[4] and targets[5] and not targets[10:].any() and targets[:4].all()


def test_an_unprepared_model_or_bad_segment_ids_are_refused(model, tunix_model, mesh):
    inputs = packed_inputs(_row([np.arange(5, 15)], 16, [2]))
    with mesh:
        with pytest.raises(ValueError, match="segment ids"):
            model(inputs["input_tokens"], inputs["positions"], None, inputs["segment_ids"].astype(jnp.float32))
        with pytest.raises(ValueError, match="prepare"):
            packed_loss(tunix_model, **inputs)


def test_gemma3_loss_has_no_soft_cap_and_equals_the_full_logits_loss():
    """packed_loss over Gemma 3's tied embedding, in slices, equals cross entropy of the model's own
    logits (which Gemma 3 does not soft-cap)."""
    import optax

    one = jax.make_mesh((1, 1), ("fsdp", "tp"), devices=jax.devices()[:1], axis_types=(jax.sharding.AxisType.Auto,) * 2)
    inputs = packed_inputs(_row([np.arange(5, 400), np.arange(100, 250) % VOCAB], 600, [40, 25]))

    @nnx.jit
    def full_logits_loss(model, inputs):
        logits, _ = model(inputs["input_tokens"], inputs["positions"], None, inputs["segment_ids"])
        full = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1].astype(jnp.float32),
                                                               inputs["input_tokens"][:, 1:])
        weights = inputs["target_mask"].astype(jnp.float32)
        return jnp.sum(full * weights) / jnp.sum(weights)

    with one:
        model = prepare(bases.tiny_model("gemma3", VOCAB, one), remat="block", attention="plain")
        assert getattr(model, "final_logits_softcap", None) is None
        expected = full_logits_loss(model, inputs)
        assert abs(float(nnx.jit(packed_loss)(model, **inputs)) - float(expected)) < 1e-5
    hidden, embedding = jnp.ones((1, 4, 8)), jnp.ones((10, 8)) * 10.0
    capped = chunked_cross_entropy(hidden, embedding, jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4)), softcap=30.0)
    assert float(chunked_cross_entropy(hidden, embedding, jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4)),
                                       softcap=None)) != float(capped)
