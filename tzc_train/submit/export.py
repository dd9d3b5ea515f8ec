"""Export a run: its adapters alone, the judges' LoRA checkpoint, and the adapters merged into the base.

:func:`export_run` (``tzc-train export``) writes every layout below for a run's latest checkpoint;
the functions it calls write one layout each from a model or its parameters.

    OUT/kaggle/                         the unrestricted-mode deliverable: the LoRA parameters as the orbax
                                        checkpoint the judges' cells restore into ``lora_policy``
                                        (``tzc_train.submit.kaggle``); upload this folder as the Kaggle
                                        model's files
    OUT/adapters/adapters.safetensors   float32 LoRA factors by module path (``layers/0/attn/q_einsum/w_lora_a``…)
    OUT/adapters/adapter_config.json    rank, alpha, target regex, base model and dtype, the run it came from
                                        (read back by ``tzc_train.model.adapters``)
    OUT/merged/model.safetensors        a plain Gemma 2 checkpoint in Hugging Face's layout and names
    OUT/merged/config.json              Hugging Face ``Gemma2ForCausalLM`` config (special ids: the build's tokenizer's)
    OUT/flax/                           the same merged weights as a Kaggle Flax (orbax) Gemma 2 checkpoint

A Gemma 3 run (its parameters hold the QK-norm scales ``attn/_query_norm``) is written the same way in
Gemma 3's layouts: ``Gemma3ForCausalLM`` (``model_type`` ``gemma3_text``; the norms ``input_layernorm``,
``post_attention_layernorm``, ``pre_feedforward_layernorm``, ``post_feedforward_layernorm``, and
``self_attn.q_norm`` / ``k_norm``), read back by ``tunix.models.gemma3.params_safetensors``; and Google's
Gemma 3 Flax layout (``mlp/gating_einsum`` ``[2, hidden, embed]``, ``post_attention_norm``,
``attn/_query_norm``, ``attn/_key_norm``), read back by ``tunix.models.gemma3.params
.create_model_from_checkpoint``.

The competition loads only ``kaggle/`` (and, in a single session, the run's own
``CKPT_DIR/actor/<step>/model_params``): LoRA parameters restored onto the notebook's base model,
"not safetensors" and not merged weights. The other layouts are for everyone else, and all load
again with tunix: ``--init-lora OUT/adapters`` (or ``tzc-train sample --lora``) puts the adapters
back on a qwix LoRA model; ``--weights OUT/merged`` is read by tunix's own ``params_safetensors``
loader, the one that reads Google's HF checkpoints (and by Hugging Face ``transformers``); ``OUT/flax``
by tunix's Kaggle path for base weights, ``gemma.params.load_and_format_params(OUT/flax)`` then
``Gemma.from_params(params, version="2-2b-it")``. The tests check that the merged model, loaded each
way, gives the logits and the greedy samples of the LoRA model.

Kaggle layout (what tunix's loader inverts): a flat tree of ``transformer/...`` keys,
``transformer/embedder`` {``input_embedding``}, ``transformer/final_norm`` {``scale``} and per layer
``transformer/layer_{i}/attn/{q_einsum,kv_einsum,attn_vec_einsum}`` {``w``} in tunix's own axis
order, ``mlp/gating_einsum`` {``w``: gate and up stacked, ``[2, embed, hidden]``}, ``mlp/linear``
{``w``: ``[hidden, embed]``} and the norms ``pre_attention_norm``, ``post_attention_norm``,
``pre_ffw_norm``, ``post_ffw_norm`` {``scale``}.

Each directory is written under a temporary name beside it and renamed into place.

Merging: qwix computes ``y = x·W + (x·A)·B · alpha/rank``; so ``W' = W + alpha/rank · A⊗B``,
contracted over the rank, with the axes put back in the order of ``W``. Each Gemma projection has
its own layout, so the contraction is spelled out per module in ``_MERGE`` (never guessed from
shapes, which coincide at some sizes). The sum is done in float32 and cast to the base's dtype.

Hugging Face layout (the inverse of tunix's loader): ``q_proj`` is ``[heads·head_dim, embed]``,
``k_proj``/``v_proj`` ``[kv_heads·head_dim, embed]``, ``o_proj`` ``[embed, heads·head_dim]``, MLP
weights are ``[out, in]``; norms and the embedding are stored as they are (both sides keep Gemma's
``1 + scale`` offset and scale the embedding at run time).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
from flax import nnx
from safetensors.numpy import save_file
from tunix.models.gemma import model as gemma_lib

import tzc_data
from tzc_train.config import read_run_config
from tzc_train.model.adapters import ADAPTER_CONFIG, ADAPTER_FILE, adapter_arrays, param_arrays
from tzc_train.model.bases import attention_types
from tzc_train.model.load import base_model, run_mesh
from tzc_train.model.lora import restore_adapters, with_lora
from tzc_train.model.views import for_decoding

ADAPTERS, MERGED, FLAX, KAGGLE = "adapters", "merged", "flax", "kaggle"

# Last path component of the weight -> einsum from (A, B) to the weight's own axis order.
_MERGE = {
    "q_einsum": "dr,rnh->ndh",         # w [heads, embed, head_dim]
    "kv_einsum": "dr,rckh->ckdh",      # w [2, kv_heads, embed, head_dim]
    "qkv_einsum": "dr,rcnh->cndh",     # w [3, heads, embed, head_dim] (fused when heads == kv_heads)
    "attn_vec_einsum": "nhr,rd->nhd",  # w [heads, head_dim, embed]
    "gate_proj": "ir,ro->io", "up_proj": "ir,ro->io", "down_proj": "ir,ro->io",  # kernel [in, out]
}


@contextlib.contextmanager
def staged(directory: str) -> Iterator[str]:
    """A path to write ``directory`` at, renamed into place when the block succeeds. The path is
    inside a fresh temporary directory beside ``directory`` (removed, being this call's own, on
    failure); ``directory`` itself may exist only as an empty directory."""
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.", dir=parent)
    try:
        path = os.path.join(scratch, os.path.basename(directory))
        yield path
        os.replace(path, directory)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def save_adapters(model: nnx.Module, directory: str, *, rank: int, alpha: float, targets: str,
                  base: str, dtype: str | None = None, run: str | None = None) -> str:
    with staged(directory) as path:
        os.makedirs(path)
        save_file(adapter_arrays(model), os.path.join(path, ADAPTER_FILE))
        with open(os.path.join(path, ADAPTER_CONFIG), "w", encoding="utf-8") as handle:
            json.dump({"format": "tzc-lora-1", "rank": rank, "alpha": alpha, "targets": targets, "base_model": base,
                       "dtype": dtype, "run": run, "merge": "W += alpha/rank * A@B (per-module contraction in tzc_train/submit/export.py)"},
                      handle, indent=2)
    return directory


def merged_params(model: nnx.Module, *, rank: int, alpha: float) -> dict[str, np.ndarray]:
    """The base weights of a LoRA model with its adapters added: ``{path: array}`` in the base's dtype."""
    adapters = adapter_arrays(model)
    merged: dict[str, np.ndarray] = {}
    for path, base in param_arrays(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))).items():
        if f"{path}_lora_a" in adapters:
            module = path.split("/")[-2]
            if module not in _MERGE:
                raise ValueError(f"cannot merge adapters on {path}: no contraction known for {module!r}")
            delta = np.einsum(_MERGE[module], adapters[f"{path}_lora_a"], adapters[f"{path}_lora_b"])
            base = (base.astype(np.float32) + (alpha / rank) * delta).astype(base.dtype)
        merged[path] = base
    return merged


def is_gemma3(params: dict[str, np.ndarray]) -> bool:
    """Whether tunix parameters (by path) are a Gemma 3's: only Gemma 3 has QK-norm scales."""
    return any(path.endswith("/attn/_query_norm/scale") for path in params)


_HF_NORMS = {
    "gemma2": {"pre_attention_norm": "input_layernorm", "post_attn_norm": "post_attention_layernorm",
               "pre_ffw_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm"},
    "gemma3": {"pre_attention_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
               "pre_ffw_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
               "attn/_query_norm": "self_attn.q_norm", "attn/_key_norm": "self_attn.k_norm"},
}


def hf_state_dict(params: dict[str, np.ndarray], config: Any) -> dict[str, np.ndarray]:
    """tunix Gemma 2 or Gemma 3 parameters -> Hugging Face names and layouts (see the module docstring)."""
    d, n, k, h = config.embed_dim, config.num_heads, config.num_kv_heads, config.head_dim
    out = {"model.embed_tokens.weight": params["embedder/input_embedding"],
           "model.norm.weight": params["final_norm/scale"]}
    norms = _HF_NORMS["gemma3" if is_gemma3(params) else "gemma2"]

    def proj(w: np.ndarray, heads: int) -> np.ndarray:  # [heads, embed, head_dim] -> [heads*head_dim, embed]
        return np.ascontiguousarray(w.transpose(0, 2, 1).reshape(heads * h, d))

    for layer in range(config.num_layers):
        src, dst = f"layers/{layer}", f"model.layers.{layer}"
        if f"{src}/attn/qkv_einsum/w" in params:
            q, key, value = params[f"{src}/attn/qkv_einsum/w"]
        else:
            q = params[f"{src}/attn/q_einsum/w"]
            key, value = params[f"{src}/attn/kv_einsum/w"]
        out[f"{dst}.self_attn.q_proj.weight"] = proj(q, n)
        out[f"{dst}.self_attn.k_proj.weight"] = proj(key, k)
        out[f"{dst}.self_attn.v_proj.weight"] = proj(value, k)
        out[f"{dst}.self_attn.o_proj.weight"] = np.ascontiguousarray(
            params[f"{src}/attn/attn_vec_einsum/w"].reshape(n * h, d).T)
        for name in ("gate_proj", "up_proj", "down_proj"):
            out[f"{dst}.mlp.{name}.weight"] = np.ascontiguousarray(params[f"{src}/mlp/{name}/kernel"].T)
        for ours, theirs in norms.items():
            out[f"{dst}.{theirs}.weight"] = params[f"{src}/{ours}/scale"]
    used = {"embedder/input_embedding", "final_norm/scale"} | {
        p for p in params if re.match(r"layers/\d+/(attn|mlp|pre_|post_)", p)}
    if set(params) - used:
        raise ValueError(f"parameters with no Hugging Face name: {sorted(set(params) - used)[:5]}")
    return out


def hf_config(config: gemma_lib.ModelConfig, vocab_size: int, dtype: str, special: dict[str, int]) -> dict[str, Any]:
    """Hugging Face ``config.json``; ``special``: the tokenizer's ``bos``, ``eos`` and ``pad`` ids."""
    return {
        "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "vocab_size": vocab_size,
        "hidden_size": config.embed_dim, "intermediate_size": config.hidden_dim,
        "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads, "head_dim": config.head_dim,
        "query_pre_attn_scalar": config.head_dim, "sliding_window": config.sliding_window_size,
        "attn_logit_softcapping": config.attn_logits_soft_cap, "final_logit_softcapping": config.final_logit_softcap,
        "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "max_position_embeddings": 8192, "tie_word_embeddings": True, "torch_dtype": dtype,
        "bos_token_id": special["bos"], "eos_token_id": special["eos"], "pad_token_id": special["pad"],
    }


def hf_config_gemma3(config: Any, vocab_size: int, dtype: str, special: dict[str, int]) -> dict[str, Any]:
    """Hugging Face ``config.json`` of a Gemma 3 text model (``Gemma3ForCausalLM``): QK-norm, no
    soft-caps, local layers (window, RoPE base 10,000) with every sixth layer global (base 1,000,000)."""
    from tunix.models.gemma3 import model as gemma3_lib

    types = ["sliding_attention" if t == gemma3_lib.AttentionType.LOCAL_SLIDING else "full_attention"
             for t in attention_types(config)]
    return {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "vocab_size": vocab_size,
        "hidden_size": config.embed_dim, "intermediate_size": config.hidden_dim,
        "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads, "head_dim": config.head_dim,
        "query_pre_attn_scalar": config.head_dim, "sliding_window": config.sliding_window_size,
        "sliding_window_pattern": 6, "layer_types": types, "attn_logit_softcapping": None,
        "final_logit_softcapping": None, "rope_theta": float(config.global_base_frequency),
        "rope_local_base_freq": float(config.local_base_frequency), "rope_scaling": None,
        "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6, "max_position_embeddings": 32768,
        "tie_word_embeddings": True, "torch_dtype": dtype,
        "bos_token_id": special["bos"], "eos_token_id": special["eos"], "pad_token_id": special["pad"],
    }


def save_merged(params: dict[str, np.ndarray], directory: str, config: Any, *,
                special: dict[str, int]) -> str:
    """Merged weights (:func:`merged_params`) in Hugging Face's layout (Gemma 2's or Gemma 3's, as the
    parameters are); ``special``: the tokenizer's ``bos``, ``eos``, ``pad`` and ``end_of_turn`` ids
    (generation stops at ``eos`` or ``end_of_turn``)."""
    state = hf_state_dict(params, config)
    dtype = str(state["model.embed_tokens.weight"].dtype)
    describe = hf_config_gemma3 if is_gemma3(params) else hf_config
    with staged(directory) as path:
        os.makedirs(path)
        save_file(state, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as handle:
            json.dump(describe(config, state["model.embed_tokens.weight"].shape[0], dtype, special), handle, indent=2)
        with open(os.path.join(path, "generation_config.json"), "w", encoding="utf-8") as handle:
            json.dump({"bos_token_id": special["bos"], "eos_token_id": [special["eos"], special["end_of_turn"]],
                       "pad_token_id": special["pad"]}, handle, indent=2)
    return directory


_KAGGLE_NORMS = {"pre_attention_norm": "pre_attention_norm", "post_attn_norm": "post_attention_norm",
                 "pre_ffw_norm": "pre_ffw_norm", "post_ffw_norm": "post_ffw_norm"}


def kaggle_params(params: dict[str, np.ndarray], config: gemma_lib.ModelConfig, *, vocab_rows: int = 0
                  ) -> dict[str, dict[str, np.ndarray]]:
    """tunix Gemma 2 parameters -> a Kaggle Flax checkpoint's flat tree (see the module docstring).

    ``vocab_rows``: the embedding rows the loader's config has (Kaggle's Gemma 2 has 256,128, Hugging
    Face's 256,000); missing rows are zeros, for ids no tokenizer piece has.
    """
    embedding = params["embedder/input_embedding"]
    if vocab_rows > embedding.shape[0]:
        embedding = np.concatenate([embedding, np.zeros((vocab_rows - embedding.shape[0], embedding.shape[1]),
                                                        embedding.dtype)])
    tree = {"transformer/embedder": {"input_embedding": embedding},
            "transformer/final_norm": {"scale": params["final_norm/scale"]}}
    for layer in range(config.num_layers):
        ours, theirs = f"layers/{layer}", f"transformer/layer_{layer}"
        for name in ("q_einsum", "kv_einsum", "qkv_einsum", "attn_vec_einsum"):
            if f"{ours}/attn/{name}/w" in params:
                tree[f"{theirs}/attn/{name}"] = {"w": params[f"{ours}/attn/{name}/w"]}
        tree[f"{theirs}/mlp/gating_einsum"] = {"w": np.stack([params[f"{ours}/mlp/gate_proj/kernel"],
                                                              params[f"{ours}/mlp/up_proj/kernel"]])}
        tree[f"{theirs}/mlp/linear"] = {"w": params[f"{ours}/mlp/down_proj/kernel"]}
        for name, kaggle in _KAGGLE_NORMS.items():
            tree[f"{theirs}/{kaggle}"] = {"scale": params[f"{ours}/{name}/scale"]}
    written = sum(len(leaves) for leaves in tree.values()) + config.num_layers  # gating_einsum holds two
    if written != len(params):
        raise ValueError(f"{len(params)} parameters but {written} in the Kaggle layout: a module it does not name")
    return tree


_KAGGLE_NORMS_GEMMA3 = {"pre_attention_norm": "pre_attention_norm", "post_attention_norm": "post_attention_norm",
                        "pre_ffw_norm": "pre_ffw_norm", "post_ffw_norm": "post_ffw_norm",
                        "attn/_query_norm": "attn/_query_norm", "attn/_key_norm": "attn/_key_norm"}


def kaggle_params_gemma3(params: dict[str, np.ndarray], config: Any) -> dict[str, dict[str, np.ndarray]]:
    """tunix Gemma 3 parameters -> Google's Gemma 3 Flax checkpoint tree (the inverse of tunix's
    ``gemma3.params.map_from_upstream_checkpoint``): ``mlp/gating_einsum`` is ``[2, hidden, embed]``."""
    tree = {"transformer/embedder": {"input_embedding": params["embedder/input_embedding"]},
            "transformer/final_norm": {"scale": params["final_norm/scale"]}}
    for layer in range(config.num_layers):
        ours, theirs = f"layers/{layer}", f"transformer/layer_{layer}"
        for name in ("q_einsum", "kv_einsum", "qkv_einsum", "attn_vec_einsum"):
            if f"{ours}/attn/{name}/w" in params:
                tree[f"{theirs}/attn/{name}"] = {"w": params[f"{ours}/attn/{name}/w"]}
        tree[f"{theirs}/mlp/gating_einsum"] = {"w": np.stack([params[f"{ours}/mlp/gate_proj/kernel"].T,
                                                              params[f"{ours}/mlp/up_proj/kernel"].T])}
        tree[f"{theirs}/mlp/linear"] = {"w": params[f"{ours}/mlp/down_proj/kernel"]}
        for name, kaggle in _KAGGLE_NORMS_GEMMA3.items():
            tree[f"{theirs}/{kaggle}"] = {"scale": params[f"{ours}/{name}/scale"]}
    written = sum(len(leaves) for leaves in tree.values()) + config.num_layers  # gating_einsum holds two
    if written != len(params):
        raise ValueError(f"{len(params)} parameters but {written} in the Gemma 3 Flax layout: a module it does not name")
    return tree


def save_flax(params: dict[str, np.ndarray], directory: str, config: Any, *,
              vocab_rows: int = 0) -> str:
    """Merged weights (:func:`merged_params`) as a Kaggle Flax (orbax) Gemma 2 or Gemma 3 checkpoint
    (as the parameters are) at ``directory``; ``vocab_rows`` applies to Gemma 2."""
    import orbax.checkpoint as ocp

    tree = (kaggle_params_gemma3(params, config) if is_gemma3(params)
            else kaggle_params(params, config, vocab_rows=vocab_rows))
    with staged(directory) as path:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(path, tree)
        checkpointer.wait_until_finished()
    return directory


def save_lora_checkpoint(model: Any, directory: str) -> str:
    """The LoRA parameters of ``model`` (a decoding view: factors in the base's dtype) as the orbax
    checkpoint the judges restore in unrestricted mode, at ``directory`` (staged and renamed)."""
    import orbax.checkpoint as ocp

    with staged(directory) as path:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(os.path.abspath(path), nnx.state(model, nnx.LoRAParam))
        checkpointer.wait_until_finished()
    return directory


def export_run(run: str, out: str, *, weights: str | None = None, merged: bool = True) -> dict[str, Any]:
    """Write ``out/adapters`` and ``out/kaggle`` (the unrestricted-mode deliverable: the LoRA
    parameters as the orbax checkpoint the judges restore, ``tzc_train.submit.kaggle``) and, unless
    ``merged=False``, ``out/merged`` and ``out/flax``, for a run's latest checkpoint (see the module
    docstring). ``weights`` overrides the base weights the run used. Refuses to write over a
    non-empty directory."""
    from tzc_data.text.tokenize import build_tokenizer

    config = read_run_config(run)
    if weights:
        config = dataclasses.replace(config, weights=weights)
    names = [ADAPTERS, KAGGLE] + ([MERGED, FLAX] if merged else [])
    targets = {name: os.path.join(out, name) for name in names}
    taken = [t for t in targets.values() if os.path.exists(t) and (not os.path.isdir(t) or os.listdir(t))]
    if taken:
        raise ValueError(f"{taken[0]} already exists and is not empty; choose another --out")
    manifest = tzc_data.read_manifest(config.builds[0])
    tokenizer = build_tokenizer(manifest, None)
    special = {"bos": tokenizer.bos, "eos": tokenizer.eos, "pad": max(tokenizer.pad, 0),
               "end_of_turn": tokenizer.end_of_turn}
    mesh = run_mesh(config)
    with mesh:
        base, model_config = base_model(config, manifest["tokenizer"]["vocab_size"], mesh)
        model = with_lora(base, config, mesh)
        restore_adapters(model, run, "--run")
        written = {"adapters": save_adapters(model, targets[ADAPTERS], rank=config.lora_rank,
                                             alpha=config.lora_alpha, targets=config.lora_targets,
                                             base=config.model, dtype=config.dtype, run=os.path.abspath(run)),
                   "kaggle": save_lora_checkpoint(for_decoding(model), targets[KAGGLE])}
        if merged:
            params = merged_params(model, rank=config.lora_rank, alpha=config.lora_alpha)
            written["merged"] = save_merged(params, targets[MERGED], model_config, special=special)
            # Gemma.from_params builds Kaggle's config (256,128 embedding rows; Hugging Face's have 256,000)
            rows = gemma_lib.ModelConfig.gemma2_2b_it().num_embed if config.model == "gemma2-2b" else 0
            written["flax"] = save_flax(params, targets[FLAX], model_config, vocab_rows=rows)
    return written


__all__ = ["ADAPTERS", "FLAX", "KAGGLE", "MERGED", "export_run", "hf_config", "hf_config_gemma3", "hf_state_dict",
           "is_gemma3", "kaggle_params", "kaggle_params_gemma3", "merged_params", "save_adapters", "save_flax",
           "save_lora_checkpoint", "save_merged", "staged"]
