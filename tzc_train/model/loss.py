"""Packed rows in, the loss out: the model inputs of a batch of packed rows and the chunked loss.

A packed row holds several examples one after the other (``segment_ids`` 1..k, 0 = padding).
Each token may attend only to earlier tokens *of its own example*: the mask is causal AND
same-segment AND not padding (block-diagonal causal, :func:`attention_mask`; the model builds it
inside its layers, :mod:`tzc_train.model.attention`). Positions restart at 0 in each example,
so every example sees exactly what it would see alone: the tests check that the logits of an
example packed after another equal its logits alone, within float error.

The loss is integer-label cross entropy (a one-hot over Gemma's 256k vocabulary, 262k for Gemma 3,
would be ``[B, L, 256000]`` floats) on the tokens whose ``loss_mask`` is 1 (the model turn), and never on a
token predicted from the previous example: a target counts only when it and the token before it
are in the same segment (:func:`packed_inputs`). It projects the final hidden states on the
vocabulary a slice of positions at a time, so the whole logits never exist (:func:`packed_loss`);
the projection accumulates in float32 before the soft-cap (Gemma 2's 30.0; Gemma 3 has none). The
forward pass runs on the model's compute view (:func:`tzc_train.model.views.compute_view`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from tzc_train.model import attention as attention_lib
from tzc_train.model.views import compute_view


def attention_mask(segment_ids: jax.Array) -> jax.Array:
    """``[B, L, L]`` bool: causal, within one segment, never to or from padding."""
    length = segment_ids.shape[-1]
    causal = jnp.tril(jnp.ones((length, length), dtype=bool))[None]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return causal & same & (segment_ids[:, None, :] != 0)


def packed_inputs(batch: dict[str, Any]) -> dict[str, jax.Array]:
    """Model inputs of a batch of packed rows (``tzc_data.batches`` output); runs inside jit."""
    tokens, segments = jnp.asarray(batch["tokens"]), jnp.asarray(batch["segment_ids"])
    loss_mask = jnp.asarray(batch["loss_mask"])
    same_as_previous = segments[:, 1:] == segments[:, :-1]
    target_mask = (loss_mask[:, 1:] == 1) & same_as_previous & (segments[:, 1:] != 0)
    return {"input_tokens": tokens, "positions": jnp.asarray(batch["positions"]),
            "segment_ids": segments.astype(jnp.int32), "target_mask": target_mask}


LOSS_CHUNK = 512  # positions per slice of the vocabulary projection in the loss


def packed_loss(model: Any, input_tokens: jax.Array, positions: jax.Array, segment_ids: jax.Array,
                target_mask: jax.Array) -> jax.Array:
    """Mean cross entropy over the target tokens of a batch of packed rows.

    The logits are never held whole: ``[B, L, 256000]`` floats are 4 GB per 4096-token row. The
    model's final hidden states (sown by tunix's ``output_hidden_states``) are projected on the
    tied embedding ``LOSS_CHUNK`` positions at a time, each slice rematerialised in the backward
    pass, so the loss needs ``[B, LOSS_CHUNK, vocab]`` at a time. The logits the model returns are
    unused, and XLA drops their computation. Same softcap (Gemma 2's; Gemma 3 has none) and same
    result as the full logits (tested to 1e-5). The model must have been through
    :func:`tzc_train.model.views.prepare`.
    """
    if not attention_lib.is_installed(model):
        raise ValueError("packed_loss needs a model set up by tzc_train.model.views.prepare (segment-id attention)")
    model = compute_view(model)
    model(input_tokens, positions, None, segment_ids, output_hidden_states=True)
    (hidden,) = nnx.pop(model, nnx.Intermediate)["all_hidden_states"].get_value()
    return chunked_cross_entropy(hidden[:, :-1], model.embedder.input_embedding.get_value(), input_tokens[:, 1:],
                                 target_mask.astype(jnp.float32), softcap=getattr(model, "final_logits_softcap", None))


def chunked_cross_entropy(hidden: jax.Array, embedding: jax.Array, labels: jax.Array, weights: jax.Array, *,
                          softcap: float | None, chunk: int = LOSS_CHUNK) -> jax.Array:
    """Weighted mean of integer-label cross entropy of ``softcap(hidden @ embedding.T)``, by slices
    of ``chunk`` positions (the last slice padded with zero weight)."""
    batch, length = hidden.shape[:2]
    pad = -length % chunk
    if pad:
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        labels, weights = jnp.pad(labels, ((0, 0), (0, pad))), jnp.pad(weights, ((0, 0), (0, pad)))
    slices = (length + pad) // chunk

    @jax.checkpoint
    def one_slice(h: jax.Array, y: jax.Array, w: jax.Array) -> jax.Array:
        logits = jnp.dot(h, embedding.T, preferred_element_type=jnp.float32)
        if softcap is not None:
            logits = jnp.tanh(logits / softcap) * softcap
        return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y) * w)

    def step(total: jax.Array, xs: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[jax.Array, None]:
        return total + one_slice(*xs), None

    def by_slice(x: jax.Array) -> jax.Array:  # [B, slices*chunk, ...] -> [slices, B, chunk, ...]
        return jnp.swapaxes(x.reshape(batch, slices, chunk, *x.shape[2:]), 0, 1)

    total, _ = jax.lax.scan(step, jnp.zeros((), jnp.float32), (by_slice(hidden), by_slice(labels), by_slice(weights)))
    return total / jnp.maximum(jnp.sum(weights), 1.0)


__all__ = ["LOSS_CHUNK", "attention_mask", "chunked_cross_entropy", "packed_inputs", "packed_loss"]
