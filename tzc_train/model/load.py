"""The device mesh, and a run's base model loaded: tiny random, Hugging Face safetensors, or Kaggle Flax.

The mesh has two axes, ``fsdp`` (the batch and the weights' rows) and ``tp`` (heads and MLP width):
``--mesh FSDPxTP``, or by default ``(devices / tp, tp)`` with ``tp = gcd(devices, 4)``.

:func:`base_model` is the base a run trains (``--model``, ``--weights``, ``--dtype`` of its
:class:`~tzc_train.config.TrainConfig`): a tiny random Gemma 2 or Gemma 3
(:func:`tzc_train.model.bases.tiny_model`), or Gemma 2 2B-IT or Gemma 3 1B-IT from a Hugging Face
safetensors directory or a Kaggle Flax (orbax) checkpoint, read by tunix's own loaders; placed on
the mesh, in the run's dtype. An export of merged weights (``tzc-train export``'s ``merged/`` or
``flax/``) loads the same way.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tzc_train.config import TrainConfig
from tzc_train.model.bases import base, module, real_config, tiny_config, tiny_model
from tzc_train.model.views import cast_params


def make_mesh(shape: tuple[int, int] | None) -> jax.sharding.Mesh:
    devices = len(jax.devices())
    if shape is None:
        tp = math.gcd(devices, 4)
        shape = (devices // tp, tp)
    if shape[0] * shape[1] != devices:
        raise ValueError(f"--mesh {shape[0]}x{shape[1]} needs {shape[0] * shape[1]} devices; {devices} available")
    # Auto axes: Explicit (jax.make_mesh's default) breaks Gemma's embedding gather.
    return jax.make_mesh(shape, ("fsdp", "tp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def run_mesh(config: TrainConfig) -> jax.sharding.Mesh:
    """The mesh a run recorded, when this machine's devices make it; else the default one."""
    devices = len(jax.devices())
    return make_mesh(config.mesh if config.mesh and config.mesh[0] * config.mesh[1] == devices else None)


def base_model(config: TrainConfig, vocab_size: int, mesh: jax.sharding.Mesh) -> tuple[nnx.Module, Any]:
    """The base model and its config (:func:`load_base`): a tiny random Gemma 2 or Gemma 3, or Gemma 2
    2B-IT or Gemma 3 1B-IT from ``--weights``, in ``config.base_dtype``."""
    model, model_config = load_base(config.model, config.weights, vocab_size, mesh)
    return cast_params(model, config.base_dtype), model_config


def load_base(name: str, weights: str | None, vocab_size: int, mesh: jax.sharding.Mesh) -> tuple[nnx.Module, Any]:
    """The base model and its config: a tiny random model, or real weights in bfloat16 (the tiny
    model's float32 when ``weights`` are a tiny model's export) from a Hugging Face safetensors
    directory or a Kaggle Flax checkpoint."""
    b = base(name)
    model_config = tiny_config(b.family, vocab_size) if b.tiny else real_config(name)
    if weights is None:  # only the tiny models may come without weights (validated in TrainConfig)
        return tiny_model(b.family, vocab_size, mesh), model_config
    dtype = jnp.float32 if b.tiny else jnp.bfloat16
    if os.path.isdir(weights) and any(n.endswith(".safetensors") for n in os.listdir(weights)):
        model = _from_safetensors(b.family, weights, model_config, mesh, dtype)
        return model, dataclasses.replace(model_config, num_embed=model.embedder.input_embedding.shape[0])
    return _from_kaggle(b.family, weights, model_config, mesh, dtype), model_config


def _from_safetensors(family: str, path: str, model_config: Any, mesh: jax.sharding.Mesh, dtype: Any) -> nnx.Module:
    if family == "gemma2":
        from tunix.models.gemma import params_safetensors
    else:
        from tunix.models.gemma3 import params_safetensors
    return params_safetensors.create_model_from_safe_tensors(path, model_config, mesh, dtype=dtype)


def _from_kaggle(family: str, path: str, model_config: Any, mesh: jax.sharding.Mesh, dtype: Any) -> nnx.Module:
    """A Kaggle (Flax/orbax) checkpoint as a tunix model of ``model_config``, through tunix's own
    key mapping (Gemma 2: ``module_from_linen_variables``, since ``Gemma.from_params`` picks the
    config from a version string; Gemma 3: ``params.create_model_from_checkpoint``)."""
    from tunix.rl import reshard

    def refused(err: Exception) -> ValueError:
        return ValueError(f"--weights {path}: not a Kaggle Flax checkpoint or a safetensors directory "
                          f"({str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__})")

    if family == "gemma3":
        from tunix.models.gemma3 import params as gemma3_params

        try:
            return gemma3_params.create_model_from_checkpoint(os.path.abspath(path), model_config, mesh, dtype=dtype)
        except (FileNotFoundError, ValueError, KeyError) as err:
            raise refused(err) from None
    from tunix.models.gemma import params as gemma_params

    gemma_lib = module("gemma2")
    try:
        params = gemma_params.load_and_format_params(os.path.abspath(path))
    except (FileNotFoundError, ValueError) as err:
        raise refused(err) from None
    model = gemma_lib.module_from_linen_variables(
        module_factory=lambda: gemma_lib.Gemma(model_config, rngs=nnx.Rngs(params=0)),
        variables=params["transformer"], map_key_fn=gemma_lib._map_linen_var_names,
        assign_val_fn=gemma_lib._assign_linen_params_to_nnx_state)
    return reshard.reshard_model_to_mesh(model, mesh)


__all__ = ["base_model", "load_base", "make_mesh", "run_mesh"]
