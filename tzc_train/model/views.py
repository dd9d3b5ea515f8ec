"""The model tunix trains and decodes, set up for packed rows: remat, packed attention, and its dtype views.

:func:`prepare` sets a tunix Gemma (with or without LoRA) up for training on packed rows, in place:
rematerialisation (tunix's own ``RematConfig``) and tzc's packed attention
(:mod:`tzc_train.model.attention`), whose layers take the ``[B, L]`` segment ids and build the mask
themselves, or run splash attention on TPU. That also mends a tunix 0.1.7 pitfall: its
sliding-window mask compares query *positions* with key *indices*, wrong once a packed example
starts past the window (4096 for Gemma 2), so rows longer than the window are now correct (tested
at 2x the window). The inputs and the loss of packed rows are :mod:`tzc_train.model.loss`.

Precision: the base weights stay in their dtype (bfloat16 for Gemma 2 2B) and so does the compute;
the LoRA factors are float32 master copies that the optimizer updates, cast to the base dtype inside
the forward pass (:func:`compute_view`), since qwix adds ``x @ A @ B`` to the base output and float32
factors would promote every activation to float32. :func:`for_decoding` is the model to decode
with: the same arrays, the factors in the base's dtype, remat off.

The model families (tunix's Gemma 2 and Gemma 3 modules, their tiny configs) are
:mod:`tzc_train.model.bases`; everything here serves both.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tzc_train.model import attention as attention_lib
from tzc_train.model import bases

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


def prepare(model: nnx.Module, *, remat: str, attention: str, interpret: bool = False) -> nnx.Module:
    """Set up a tunix Gemma (with or without LoRA) for training on packed rows; in place.

    ``remat``: ``none``, ``block`` (recompute each attention and MLP block in the backward pass) or
    ``decoder`` (each whole layer), tunix's own ``RematConfig``. ``attention``: ``plain`` or
    ``splash`` (:mod:`tzc_train.model.attention`); ``interpret`` runs splash in Pallas' interpreter (CPU).
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
    the judges' cells restore into (``tzc_train.submit.kaggle``). Remat only pays in a backward pass, and
    tunix's ``nnx.remat`` writes its outputs back into the module's variables, which the sampler's
    KV-cache loop (plain JAX transforms) does not allow (flax's TraceContextError).
    """
    view = compute_view(model)
    _set_remat(view, "none")
    return view


def default_attention() -> str:
    """Splash attention on TPU, the plain reference anywhere else."""
    return "splash" if jax.default_backend() == "tpu" else "plain"


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


__all__ = ["REMAT", "cast_params", "compute_view", "default_attention", "for_decoding", "prepare", "tiny_config",
           "tiny_model"]
