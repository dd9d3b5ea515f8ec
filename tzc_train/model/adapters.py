"""A model's parameters as numpy arrays by path, and exported adapters read back.

A path names a parameter as flax's state does, joined with ``/``: ``layers/0/attn/q_einsum/w``, and
for a LoRA factor ``layers/0/attn/q_einsum/w_lora_a``. Exported adapters (``tzc-train export``'s
``OUT/adapters/``, written by :func:`tzc_train.submit.export.save_adapters`) are the float32 factors
by that path in ``adapters.safetensors`` and what they were trained with in ``adapter_config.json``
(rank, alpha, target regex, base model and dtype, the run they came from). :func:`load_adapters`
puts them back on a LoRA model of the same rank and targets, and refuses any other, naming the path.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from flax import nnx
from safetensors.numpy import load_file

ADAPTER_FILE, ADAPTER_CONFIG = "adapters.safetensors", "adapter_config.json"


def _path(parts: tuple) -> str:
    return "/".join(map(str, parts))


def param_arrays(model: nnx.Module, kind: Any = nnx.Param) -> dict[str, np.ndarray]:
    """The parameters of ``model`` that ``kind`` (an nnx filter) selects, as numpy arrays by path
    (``layers/0/attn/q_einsum/w``)."""
    return {_path(path): np.asarray(value.get_value()) for path, value in nnx.state(model, kind).flat_state()}


def adapter_arrays(model: nnx.Module) -> dict[str, np.ndarray]:
    """The LoRA factors of ``model`` as float32 numpy arrays, by path."""
    return {path: value.astype(np.float32, copy=False) for path, value in param_arrays(model, nnx.LoRAParam).items()}


def is_exported_adapters(path: str) -> bool:
    return os.path.isfile(os.path.join(path, ADAPTER_CONFIG))


def adapter_config(directory: str) -> dict[str, Any]:
    """``adapter_config.json`` of exported adapters: rank, alpha, targets, base model, run."""
    with open(os.path.join(directory, ADAPTER_CONFIG), encoding="utf-8") as handle:
        return json.load(handle)


def load_adapters(model: nnx.Module, directory: str) -> dict[str, Any]:
    """Put exported adapters back on a LoRA model built with the same rank and targets; returns
    their config. Refuses, naming the path, any adapter that is missing or has another shape."""
    config = adapter_config(directory)
    arrays = load_file(os.path.join(directory, ADAPTER_FILE))
    state = nnx.state(model, nnx.LoRAParam)
    flat = dict(state.flat_state())
    expected = {_path(p) for p in flat}
    if set(arrays) != expected:
        missing, extra = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
        raise ValueError(f"{directory}: adapters do not match this model (rank/targets?): missing {missing[:3]}, "
                         f"unexpected {extra[:3]}")
    for path, variable in flat.items():
        value = arrays[_path(path)]
        current = variable.get_value()
        if value.shape != current.shape:
            raise ValueError(f"{directory}: adapter {_path(path)} has shape {value.shape}, the model wants "
                             f"{current.shape} (was it trained with another --lora-rank?)")
        variable.set_value(np.asarray(value, dtype=current.dtype))
    nnx.update(model, state)
    return config


__all__ = ["ADAPTER_CONFIG", "ADAPTER_FILE", "adapter_arrays", "adapter_config", "is_exported_adapters",
           "load_adapters", "param_arrays"]
