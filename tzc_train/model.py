"""Gemma 2 and Gemma 3 on packed rows: the attention mask, the inputs and the loss.

A packed row holds several examples one after the other (``segment_ids`` 1..k, 0 = padding).
Each token may attend only to earlier tokens *of its own example*: the mask is causal AND
same-segment AND not padding (block-diagonal causal). Positions restart at 0 in each example,
so every example sees exactly what it would see alone: the tests check that the logits of an
example packed after another equal its logits alone, within float error.

The loss is integer-label cross entropy (a one-hot over Gemma's 256k vocabulary, 262k for Gemma 3,
would be ``[B, L, 256000]`` floats) on the tokens whose ``loss_mask`` is 1 (the model turn), and never on a
token predicted from the previous example: a target counts only when it and the token before it
are in the same segment. It projects the final hidden states on the vocabulary a slice of
positions at a time, so the whole logits never exist (:func:`packed_loss`).

The model trains through :mod:`tzc_train.attention` (:func:`prepare`): tunix's attention layers
take the ``[B, L]`` segment ids and build the mask themselves, or run splash attention on TPU. That
also mends a tunix 0.1.7 pitfall: its sliding-window mask compares query *positions* with key
*indices*, wrong once a packed example starts past the window (4096 for Gemma 2), so rows longer than
the window are now correct (tested at 2x the window).

Precision: the base weights stay in their dtype (bfloat16 for Gemma 2 2B) and so does the compute;
the LoRA factors are float32 master copies that the optimizer updates, cast to the base dtype inside
the forward pass (:func:`compute_view`), since qwix adds ``x @ A @ B`` to the base output and float32
factors would promote every activation to float32. The vocabulary projection of the loss
accumulates in float32 before the soft-cap (Gemma 2's 30.0; Gemma 3 has none).

The model families (tunix's Gemma 2 and Gemma 3 modules, their tiny configs, their loaders) are
:mod:`tzc_train.bases`; everything here serves both.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from tzc_train import attention as attention_lib
from tzc_train import bases

REMAT = ("none", "block", "decoder")  # tunix's RematConfig NONE, BLOCK, DECODER (each family has its own enum)


def tiny_config(vocab_size: int, **overrides: Any) -> Any:
    """Gemma 2 2B's architecture at toy size (``bases.tiny_config("gemma2", ...)``): 2 layers, width 64."""
    return bases.tiny_config("gemma2", vocab_size, **overrides)


def tiny_model(vocab_size: int, mesh: jax.sharding.Mesh, *, dtype: Any = jnp.float32, **overrides: Any
               ) -> nnx.Module:
    """A tiny Gemma 2 with deterministic random weights (``bases.tiny_model("gemma2", ...)``) in ``dtype``:
    in ``bfloat16`` it is the float32 model rounded, the dtype path of Gemma 2 2B's real weights."""
    return cast_params(bases.tiny_model("gemma2", vocab_size, mesh, **overrides), dtype)


def cast_params(model: nnx.Module, dtype: Any, kind: Any = nnx.Param) -> nnx.Module:
    """``model`` with its floating parameters of ``kind`` (an nnx filter) in ``dtype``; in place."""
    dtype = jnp.dtype(dtype)
    state = nnx.state(model, kind)
    if any(jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype for x in jax.tree.leaves(state)):
        nnx.update(model, jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                                       state))
    return model


def attention_mask(segment_ids: jax.Array) -> jax.Array:
    """``[B, L, L]`` bool: causal, within one segment, never to or from padding."""
    length = segment_ids.shape[-1]
    causal = jnp.tril(jnp.ones((length, length), dtype=bool))[None]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return causal & same & (segment_ids[:, None, :] != 0)


def prepare(model: nnx.Module, *, remat: str, attention: str, interpret: bool = False) -> nnx.Module:
    """Set up a tunix Gemma (with or without LoRA) for training on packed rows; in place.

    ``remat``: ``none``, ``block`` (recompute each attention and MLP block in the backward pass) or
    ``decoder`` (each whole layer), tunix's own ``RematConfig``. ``attention``: ``plain`` or
    ``splash`` (:mod:`tzc_train.attention`); ``interpret`` runs splash in Pallas' interpreter (CPU).
    """
    if remat not in REMAT:
        raise ValueError(f"--remat {remat!r}: choose one of {', '.join(REMAT)}")
    _set_remat(model, remat)
    return attention_lib.install(model, attention, interpret=interpret)


def _remat_enum(model: nnx.Module) -> Any:
    return bases.module(bases.family_of(model)).RematConfig


def _set_remat(model: nnx.Module, remat: str) -> None:
    value = getattr(_remat_enum(model), remat.upper())
    for layer in model.layers:  # tunix reads these at call time; the parameters are untouched
        config = dataclasses.replace(layer.config, remat_config=value)
        layer.config = layer.mlp.config = config
        layer.attn.remat_config = config.remat_config


def for_decoding(model: nnx.Module) -> nnx.Module:
    """The model to decode with: the same base arrays, rematerialisation off, and the LoRA factors
    in the base weights' dtype (:func:`compute_view`); ``model`` is unchanged.

    tunix's Sampler makes its KV cache in the dtype of the model's first parameter (bfloat16 for
    Gemma 2 2B): float32 factors would promote the keys and values to float32, and prefill fails
    (``dynamic_update_slice requires arguments to have the same dtypes``). This is also the model
    the judges' cells restore into (``tzc_train.kaggle``). Remat only pays in a backward pass, and
    tunix's ``nnx.remat`` writes its outputs back into the module's variables, which the sampler's
    KV-cache loop (plain JAX transforms) does not allow (flax's TraceContextError).
    """
    view = compute_view(model)
    _set_remat(view, "none")
    return view


def default_attention() -> str:
    """Splash attention on TPU, the plain reference anywhere else."""
    return "splash" if jax.default_backend() == "tpu" else "plain"


def packed_inputs(batch: dict[str, Any]) -> dict[str, jax.Array]:
    """Model inputs of a batch of packed rows (``tzc_data.batches`` output); runs inside jit."""
    tokens, segments = jnp.asarray(batch["tokens"]), jnp.asarray(batch["segment_ids"])
    loss_mask = jnp.asarray(batch["loss_mask"])
    same_as_previous = segments[:, 1:] == segments[:, :-1]
    target_mask = (loss_mask[:, 1:] == 1) & same_as_previous & (segments[:, 1:] != 0)
    return {"input_tokens": tokens, "positions": jnp.asarray(batch["positions"]),
            "segment_ids": segments.astype(jnp.int32), "target_mask": target_mask}


def compute_view(model: nnx.Module) -> nnx.Module:
    """The same model with its LoRA factors cast to the base weights' dtype, for the forward pass.

    A new module over the same (traced) base arrays; gradients flow through the cast back to the
    float32 masters, and the model the optimizer holds is not changed (neither its variables nor
    its modules' settings).
    """
    dtype = model.embedder.input_embedding.get_value().dtype
    graph, adapters, rest = nnx.split(model, nnx.LoRAParam, ...)
    adapters = jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, adapters)
    return nnx.merge(graph, adapters, rest, copy=True)


LOSS_CHUNK = 512  # positions per slice of the vocabulary projection in the loss


def packed_loss(model: Any, input_tokens: jax.Array, positions: jax.Array, segment_ids: jax.Array,
                target_mask: jax.Array) -> jax.Array:
    """Mean cross entropy over the target tokens of a batch of packed rows.

    The logits are never held whole: ``[B, L, 256000]`` floats are 4 GB per 4096-token row. The
    model's final hidden states (sown by tunix's ``output_hidden_states``) are projected on the
    tied embedding ``LOSS_CHUNK`` positions at a time, each slice rematerialised in the backward
    pass, so the loss needs ``[B, LOSS_CHUNK, vocab]`` at a time. The logits the model returns are
    unused, and XLA drops their computation. Same softcap (Gemma 2's; Gemma 3 has none) and same
    result as the full logits (tested to 1e-5). The model must have been through :func:`prepare`.
    """
    if not attention_lib.is_installed(model):
        raise ValueError("packed_loss needs a model set up by tzc_train.model.prepare (segment-id attention)")
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
