"""The base models tzc trains, by ``--model`` name: what differs between Gemma 2 and Gemma 3.

    tiny         a random Gemma 2 at toy size (tests, trying the tool)   tunix.models.gemma
    gemma2-2b    Gemma 2 2B-IT, from --weights                            tunix.models.gemma
    tiny-gemma3  a random Gemma 3 at toy size                             tunix.models.gemma3
    gemma3-1b    Gemma 3 1B-IT, from --weights                            tunix.models.gemma3

Per family: tunix's module (``ModelConfig``, the model class, ``RematConfig``, ``AttentionType``), the
real config, the tiny config and its random model, and the tokenizer its builds must have been made with
(``tzc_data``'s ``gemma2`` or ``gemma3``, as the manifest names it). Real weights are loaded by
:mod:`tzc_train.model.load`. Everything else (packed attention, the loss, LoRA, the trainer) is one code
path: both families share the layer structure tzc relies on (``layers[i].attn`` with ``q_einsum`` /
``kv_einsum`` / ``attn_vec_einsum``, ``mlp.{gate,up,down}_proj``, ``embedder.input_embedding``).

What Gemma 3 changes for training: a 262,144-piece vocabulary (tied embedding), one key/value head
(1B), QK-norm instead of the attention logit soft-cap, no final logit soft-cap, local layers with a
512-token window and RoPE base 10,000 and every sixth layer global with base 1,000,000.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: the CLI reads MODELS without loading JAX
    import jax
    from flax import nnx


@dataclass(frozen=True, kw_only=True)
class Base:
    """One ``--model``: its family (``gemma2`` | ``gemma3``), and whether it is the tiny random one."""

    name: str
    family: str
    tiny: bool
    title: str


MODELS = {b.name: b for b in (
    Base(name="tiny", family="gemma2", tiny=True, title="a tiny random Gemma 2"),
    Base(name="gemma2-2b", family="gemma2", tiny=False, title="Gemma 2 2B-IT"),
    Base(name="tiny-gemma3", family="gemma3", tiny=True, title="a tiny random Gemma 3"),
    Base(name="gemma3-1b", family="gemma3", tiny=False, title="Gemma 3 1B-IT"),
)}


def base(name: str) -> Base:
    """The :class:`Base` of ``--model name``; ValueError naming the choices otherwise."""
    if name not in MODELS:
        raise ValueError(f"--model {name!r}: choose one of {', '.join(MODELS)}")
    return MODELS[name]


def module(family: str) -> ModuleType:
    """tunix's model module of a family."""
    if family == "gemma2":
        from tunix.models.gemma import model as gemma_lib

        return gemma_lib
    from tunix.models.gemma3 import model as gemma3_lib

    return gemma3_lib


def model_class(family: str) -> type:
    lib = module(family)
    return lib.Gemma if family == "gemma2" else lib.Gemma3


def family_of(model: nnx.Module) -> str:
    """``gemma2`` or ``gemma3``: the family of a tunix model (LoRA or not), by its layers' config."""
    config_module = type(model.layers[0].config).__module__
    if config_module == module("gemma3").__name__:
        return "gemma3"
    if config_module == module("gemma2").__name__:
        return "gemma2"
    raise ValueError(f"not a tunix Gemma 2 or Gemma 3 model: its layers' config is {config_module}")


def real_config(name: str) -> Any:
    """tunix's config of a real model."""
    b = base(name)
    if b.family == "gemma2":
        return module("gemma2").ModelConfig.gemma2_2b_it()
    return module("gemma3").ModelConfig.gemma3_1b_it()


def tiny_config(family: str, vocab_size: int, **overrides: Any) -> Any:
    """A family's architecture at toy size (width 64), for tests and trying the tool.

    Gemma 2: 2 layers (local, global), 8 query and 4 key/value heads (the real model's ratio). Gemma 3:
    6 layers (five local, one global, as the real pattern), 4 query heads and 1 key/value head (as 1B),
    float32. Heads divide a ``tp`` axis of 4. ``overrides``: other ``ModelConfig`` fields (a short
    ``sliding_window_size`` in the tests).
    """
    if family == "gemma2":
        toy = dict(num_layers=2, num_embed=vocab_size, embed_dim=64, hidden_dim=128, num_heads=8, head_dim=16,
                   num_kv_heads=4)
        return dataclasses.replace(module("gemma2").ModelConfig.gemma2_2b_it(), **{**toy, **overrides})
    import jax.numpy as jnp

    toy = dict(num_layers=6, num_embed=vocab_size, embed_dim=64, hidden_dim=128, num_heads=4, head_dim=16,
               num_kv_heads=1, param_dtype=jnp.float32)
    return dataclasses.replace(module("gemma3").ModelConfig.gemma3_1b_it(), **{**toy, **overrides})


def tiny_model(family: str, vocab_size: int, mesh: jax.sharding.Mesh, **overrides: Any) -> nnx.Module:
    """A tiny model of ``family`` with deterministic random weights (seed 0), placed on ``mesh``.

    Created unsharded, then placed: tunix 0.1.7's ``dummy_model_creator``, given a mesh, draws a
    fresh key for every device's shard, so replicated parameters (the norm scales) differed from
    device to device, and no checkpoint or export could reproduce the model's outputs.
    """
    from tunix.models import dummy_model_creator
    from tunix.rl import reshard

    model = dummy_model_creator.create_dummy_model(model_class(family), tiny_config(family, vocab_size, **overrides),
                                                   mesh=None, scale=0.02)
    return reshard.reshard_model_to_mesh(model, mesh)


def check_tokenizer(name: str, recorded: dict[str, Any], build: str) -> None:
    """Refuse, in one line naming both, a build whose tokenizer (its manifest's ``tokenizer``
    entry) is another model's: a Gemma 2 build for ``gemma3-1b`` or a Gemma 3 build for
    ``gemma2-2b``, or ids beyond the real model's vocabulary. The tiny models take any build (their
    vocabulary is the build's)."""
    b = base(name)
    if b.tiny:
        return
    from tzc_data.text.tokenize import KNOWN, known_name

    made_for = recorded.get("name") or known_name(recorded["sha256"])
    if made_for is not None and made_for != b.family:
        raise ValueError(f"--data {build} was tokenized for {KNOWN[made_for].title} ({made_for} tokenizer, sha256 "
                         f"{recorded['sha256'][:12]}...) but --model {name} reads {KNOWN[b.family].title}'s "
                         f"({b.family}, sha256 {KNOWN[b.family].sha256[:12]}...): rebuild it with "
                         f"tzc-data build --tokenizer {b.family}")
    vocab = real_config(name).num_embed
    if recorded["vocab_size"] > vocab:
        raise ValueError(f"--data {build}: its tokenizer has {recorded['vocab_size']:,} ids, more than the "
                         f"{vocab:,} rows of --model {name}'s embedding")


def attention_types(model_config: Any) -> list[Any]:
    """Each layer's attention type (``LOCAL_SLIDING`` or ``GLOBAL``) of a config of either family."""
    if hasattr(model_config, "attention_types"):
        return list(model_config.attention_types)
    import itertools

    pattern = module("gemma3").GEMMA3_ATTENTION_PATTERN
    return [t for _, t in zip(range(model_config.num_layers), itertools.cycle(pattern))]


__all__ = ["MODELS", "Base", "attention_types", "base", "check_tokenizer", "family_of", "model_class", "module",
           "real_config", "tiny_config", "tiny_model"]
