"""LoRA on a base model: qwix adapters in float32, and a run's adapters restored onto them.

:func:`with_lora` puts qwix LoRA on the projections ``--lora-targets`` names (by default every
attention and MLP projection), rank ``--lora-rank``, scale ``--lora-alpha / rank``, initialised
from ``--seed``. The factors are float32 master copies whatever the base's dtype: the loss casts
them to the base dtype for the forward pass (:func:`tzc_train.model.views.compute_view`).

:func:`restore_adapters` puts back the adapters of a run's ``--out`` (its latest orbax checkpoint,
``actor/<step>/model_params``) or of a ``tzc-train export``'s ``adapters/``
(:mod:`tzc_train.model.adapters`) onto a LoRA model of the same rank and targets.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import qwix
from flax import nnx
from tunix.rl import reshard
from tunix.sft import checkpoint_manager

from tzc_train.config import TrainConfig
from tzc_train.model.adapters import is_exported_adapters, load_adapters, param_arrays
from tzc_train.session import checkpoint_root


def with_lora(base: nnx.Module, config: TrainConfig, mesh: jax.sharding.Mesh) -> nnx.Module:
    """qwix LoRA on the attention and MLP projections; adapters in float32 whatever the base (master
    copies: the loss casts them to the base dtype for the forward pass, ``views.compute_view``)."""
    provider = qwix.LoraProvider(module_path=config.lora_targets, rank=config.lora_rank, alpha=config.lora_alpha)
    model = qwix.apply_lora_to_model(base, provider, rngs=nnx.Rngs(config.seed), **base.get_model_input())
    adapters = nnx.state(model, nnx.LoRAParam)
    nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.float32), adapters))
    return reshard.reshard_model_to_mesh(model, mesh)


def restore_adapters(model: nnx.Module, path: str, option: str) -> None:
    """Adapters from a run's ``--out`` (its latest orbax checkpoint, ``actor/<step>/model_params``)
    or a ``tzc-train export``."""
    if is_exported_adapters(path):
        load_adapters(model, path)
        return
    root = os.path.abspath(checkpoint_root(path))  # orbax wants an absolute path
    restored, _ = checkpoint_manager.CheckpointManager(root_directory=root).maybe_restore(
        model, None, restore_only_lora_params=True)
    if not restored:
        raise ValueError(f"{option} {path}: no checkpoint there (no {root}/<step>/model_params, and no exported "
                         "adapters)")


def lora_state(model: nnx.Module) -> dict[str, np.ndarray]:
    """The adapters as numpy arrays by path (what a run trains and saves)."""
    return param_arrays(model, nnx.LoRAParam)


def base_state(model: nnx.Module) -> dict[str, np.ndarray]:
    """The base weights (every parameter but the adapters) as numpy arrays by path."""
    return param_arrays(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam)))


__all__ = ["base_state", "lora_state", "restore_adapters", "with_lora"]
