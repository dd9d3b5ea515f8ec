"""Gemma 2 on packed rows: the attention mask, the inputs and the loss.

A packed row holds several examples one after the other (``segment_ids`` 1..k, 0 = padding).
Each token may attend only to earlier tokens *of its own example*: the mask is causal AND
same-segment AND not padding (block-diagonal causal). Positions restart at 0 in each example,
so every example sees exactly what it would see alone: the tests check that the logits of an
example packed after another equal its logits alone, within float error.

The loss is integer-label cross entropy (a one-hot over Gemma's 256k vocabulary would be
``[B, L, 256000]`` floats) on the tokens whose ``loss_mask`` is 1 (the model turn), and never on a
token predicted from the previous example: a target counts only when it and the token before it
are in the same segment.

Pitfall (tunix 0.1.7): Gemma 2's sliding-window mask compares query *positions* with key *indices*;
with per-example positions it is wrong once a packed row is longer than the window. Rows longer
than the window are refused (:func:`check_seq_len`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from tunix.models import dummy_model_creator
from tunix.models.gemma import model as gemma_lib
from tunix.rl import reshard


def tiny_config(vocab_size: int) -> gemma_lib.ModelConfig:
    """Gemma 2 2B's architecture at toy size (2 layers, width 64), for tests and trying the tool.

    Heads (8 query, 4 key/value) keep the real model's ratio and divide a ``tp`` axis of 4.
    """
    return dataclasses.replace(gemma_lib.ModelConfig.gemma2_2b_it(), num_layers=2, num_embed=vocab_size,
                               embed_dim=64, hidden_dim=128, num_heads=8, head_dim=16, num_kv_heads=4)


def tiny_model(vocab_size: int, mesh: jax.sharding.Mesh) -> gemma_lib.Gemma:
    """A tiny Gemma 2 with deterministic random weights (seed 0), placed on ``mesh``.

    Created unsharded, then placed: tunix 0.1.7's ``dummy_model_creator``, given a mesh, draws a
    fresh key for every device's shard, so replicated parameters (the norm scales) differed from
    device to device, and no checkpoint or export could reproduce the model's outputs.
    """
    model = dummy_model_creator.create_dummy_model(gemma_lib.Gemma, tiny_config(vocab_size), mesh=None, scale=0.02)
    return reshard.reshard_model_to_mesh(model, mesh)


def check_seq_len(seq_len: int, config: gemma_lib.ModelConfig) -> None:
    window = config.sliding_window_size
    if window is not None and seq_len > window:
        raise ValueError(f"packed rows of {seq_len} tokens are longer than the model's sliding window ({window}): "
                         "tunix's local attention would then mix examples; build with --seq-len <= the window")


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
            "attention_mask": attention_mask(segments), "target_mask": target_mask}


def packed_loss(model: Any, input_tokens: jax.Array, positions: jax.Array, attention_mask: jax.Array,
                target_mask: jax.Array) -> jax.Array:
    """Mean cross entropy over the target tokens of a batch of packed rows."""
    logits, _ = model(input_tokens, positions, None, attention_mask)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1].astype(jnp.float32), input_tokens[:, 1:])
    weights = target_mask.astype(jnp.float32)
    return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)
