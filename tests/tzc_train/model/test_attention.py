"""Splash attention (Pallas' interpreter on CPU) against the dense reference on packed rows: segment
ids, Gemma 2's sliding window and its 50.0 logit soft-cap, forward and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tzc_train.model.attention import packed_mask, reference_attention, splash_attention


def _packed(rng, batch=2, length=256, heads=8, kv_heads=4, head_dim=16):
    """Rows of several examples and some padding; inputs scaled so the soft-cap is in play."""
    q = jnp.asarray(rng.normal(size=(batch, length, heads, head_dim)) * 3, jnp.float32)
    k = jnp.asarray(rng.normal(size=(batch, length, kv_heads, head_dim)) * 3, jnp.float32)
    v = jnp.asarray(rng.normal(size=(batch, length, kv_heads, head_dim)), jnp.float32)
    segments = np.zeros((batch, length), np.int32)
    segments[0, :90], segments[0, 90:200], segments[0, 200:230] = 1, 2, 3  # then 26 padding
    segments[1, :] = 1
    return q, k, v, jnp.asarray(segments)


@pytest.mark.parametrize("window", [None, 64])
def test_splash_equals_the_reference_forward_and_gradients_on_packed_rows(window):
    q, k, v, segments = _packed(np.random.default_rng(0))
    real = (segments != 0)[:, :, None, None]
    cotangent = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), jnp.float32)

    def loss(attend):
        def f(q, k, v):  # padding rows' outputs are nobody's input: only real tokens count
            out = attend(q, k, v, segments, window=window, soft_cap=50.0)
            return jnp.sum(jnp.where(real, out, 0.0) * cotangent), out
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))

    (_, want), want_grads = loss(reference_attention)(q, k, v)
    (_, got), got_grads = loss(lambda *a, **kw: splash_attention(*a, interpret=True, **kw))(q, k, v)
    np.testing.assert_allclose(np.where(real, got, 0), np.where(real, want, 0), atol=2e-5, rtol=1e-5)
    for name, g, w in zip("qkv", got_grads, want_grads):
        np.testing.assert_allclose(g, w, atol=1e-4 * float(jnp.abs(w).max()), err_msg=name)
    if window is not None:  # the window is in force: examples here are longer than it
        unwindowed = reference_attention(q, k, v, segments, window=None, soft_cap=50.0)
        assert float(jnp.abs(jnp.where(real, unwindowed - want, 0)).max()) > 1e-2


def test_soft_cap_is_applied():
    q, k, v, segments = _packed(np.random.default_rng(2))
    capped = splash_attention(q, k, v, segments, window=None, soft_cap=5.0, interpret=True)
    uncapped = reference_attention(q, k, v, segments, window=None, soft_cap=None)
    assert float(jnp.abs(capped - uncapped).max()) > 1e-2
    np.testing.assert_allclose(capped[segments != 0], reference_attention(q, k, v, segments, window=None,
                                                                          soft_cap=5.0)[segments != 0], atol=2e-5)


def test_the_mask_is_causal_within_each_example_and_window_by_index():
    segments = jnp.asarray([[1, 1, 1, 2, 2, 2, 2, 0]])
    mask = np.asarray(packed_mask(segments, window=2))[0]
    assert mask[2, :3].tolist() == [False, True, True]  # window 2: itself and one before
    assert not mask[3, :3].any() and mask[3, 3]  # a new example sees nothing of the last
    assert mask[6].tolist() == [False] * 5 + [True, True, False]
    assert not mask[:, 7].any()  # nobody attends to padding


def test_splash_equals_the_reference_for_gemma3s_one_key_head_without_soft_cap():
    """Gemma 3 1B: 4 query heads on 1 key/value head, no logit soft-cap, a window (8 here, 512 in the
    model) shorter than the examples: forward and gradients."""
    q, k, v, segments = _packed(np.random.default_rng(4), heads=4, kv_heads=1)
    real = (segments != 0)[:, :, None, None]
    cotangent = jnp.asarray(np.random.default_rng(5).normal(size=q.shape), jnp.float32)
    for window in (8, None):
        def loss(attend):
            def f(q, k, v):
                out = attend(q, k, v, segments, window=window, soft_cap=None)
                return jnp.sum(jnp.where(real, out, 0.0) * cotangent), out
            return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))

        (_, want), want_grads = loss(reference_attention)(q, k, v)
        (_, got), got_grads = loss(lambda *a, **kw: splash_attention(*a, interpret=True, **kw))(q, k, v)
        np.testing.assert_allclose(np.where(real, got, 0), np.where(real, want, 0), atol=2e-5, rtol=1e-5)
        for name, g, w in zip("qkv", got_grads, want_grads):
            np.testing.assert_allclose(g, w, atol=1e-4 * float(jnp.abs(w).max()), err_msg=f"{name} window {window}")
