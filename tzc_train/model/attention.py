"""Packed attention for tunix's Gemma 2 and Gemma 3: segment ids instead of a ``[B, L, L]`` mask, and splash attention on TPU.

tunix's ``Attention.block`` takes a dense mask and materialises ``[B, L, heads, L]`` logits and
probabilities; its sliding window compares query *positions* with key *indices*, which is wrong as
soon as a packed example starts past the window. :class:`PackedAttention` subclasses it and
overrides ``block`` only: the projections (where qwix's LoRA applies), RoPE, Gemma's query scaling
(``head_dim ** -0.5``) and the output projection are tunix's own modules and functions; the
attention itself is one of

- ``plain``: einsum attention with a mask built from the segment ids *inside* the layer (causal,
  same example, never to padding; on local layers ``q - k < window`` by index, which within one
  example is the distance by position); the reference, and what runs on CPU;
- ``splash``: ``jax.experimental.pallas.ops.tpu.splash_attention`` with ``SegmentIds`` for the
  examples, ``CausalMask`` on global layers and ``LocalMask((window - 1, 0))`` on local ones, and
  Gemma 2's logit soft-cap; never builds an ``[L, L]`` array. Placed on the mesh with ``shard_map``
  (batch over ``fsdp``, heads over ``tp``, when they divide). ``interpret=True`` runs the same
  kernel in Pallas' interpreter on CPU, which is how the tests check it.

Gemma 3 (:class:`PackedAttention3`, over tunix's ``gemma3`` attention) is the same but for what its layer
does before the attention: QK-norm (``_query_norm``, ``_key_norm``) after the projections, RoPE with
the layer's base frequency (10,000 on local layers, 1,000,000 on global ones) and scale factor, the
query scaled by ``query_pre_attn_scalar``; and no logit soft-cap. Its window (512 on five layers of
six) is applied within each example as Gemma 2's is.

The model is called as ``model(tokens, positions, None, segment_ids)``: the fourth argument, which
tunix passes unchanged to every layer, carries the ``[B, L]`` segment ids. With a KV cache
(sampling), or given a dense ``[B, L, L]`` mask, the layer falls back to tunix's own attention.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask
from jax.interpreters import pxla
from jax.sharding import PartitionSpec as P
from tunix.models.gemma import model as gemma_lib
from tunix.models.gemma3 import model as gemma3_lib
from tunix.utils import sharding_utils

IMPLEMENTATIONS = ("plain", "splash")


def _segment_ids(attn_mask: jax.Array, x: jax.Array) -> jax.Array:
    if attn_mask.shape != x.shape[:2] or not jnp.issubdtype(attn_mask.dtype, jnp.integer):
        raise ValueError(f"PackedAttention expects [batch, length] integer segment ids, got {attn_mask.shape} "
                         f"{attn_mask.dtype}: call the model with segment ids, not a dense mask")
    return attn_mask


def _attend(layer: Any, query: jax.Array, key: jax.Array, value: jax.Array, segment_ids: jax.Array, *,
            window: int | None, soft_cap: float | None) -> jax.Array:
    """The layer's chosen attention (``tzc_attention``) over already projected, normed, rotated and
    scaled heads."""
    if layer.tzc_attention == "splash":
        return splash_attention(query, key, value, segment_ids, window=window, soft_cap=soft_cap,
                                interpret=layer.tzc_interpret)
    return reference_attention(query, key, value, segment_ids, window=window, soft_cap=soft_cap)


class PackedAttention(gemma_lib.Attention):
    """tunix's Gemma attention on packed rows; ``attn_mask`` is the ``[B, L]`` segment ids.

    Two static attributes choose the path: ``tzc_attention`` (``plain`` or ``splash``) and
    ``tzc_interpret`` (run the splash kernel in Pallas' interpreter). Set by :func:`install`.
    """

    tzc_attention = "plain"
    tzc_interpret = False

    def block(self, x: jax.Array, segment_pos: jax.Array, cache: Any, attn_mask: jax.Array) -> tuple[Any, jax.Array]:
        if cache is not None or attn_mask.ndim == 3:  # a cache or a dense mask: tunix's own path (sampling)
            return super().block(x, segment_pos, cache, attn_mask)
        segment_ids = _segment_ids(attn_mask, x)
        if self.use_qkv_einsum:
            query, key, value = self.qkv_einsum(x)
        else:
            query = self.q_einsum(x)
            key, value = self.kv_einsum(x)
        query = gemma_lib.shard(query, self.shd_config.act_btnh)
        key = gemma_lib.shard(key, self.shd_config.act_btnh)
        value = gemma_lib.shard(value, self.shd_config.act_btnh)
        query = gemma_lib.apply_rope(query, segment_pos, head_dim=self.head_dim) * self.head_dim ** -0.5
        key = gemma_lib.apply_rope(key, segment_pos, head_dim=self.head_dim)
        window = self.sliding_window_size if self.attn_type == gemma_lib.AttentionType.LOCAL_SLIDING else None
        encoded = _attend(self, query, key, value, segment_ids, window=window, soft_cap=self.attn_logits_soft_cap)
        output = self.attn_vec_einsum(encoded)
        return None, gemma_lib.shard(output, self.shd_config.act_btd)


class PackedAttention3(gemma3_lib.Attention):
    """tunix's Gemma 3 attention on packed rows; as :class:`PackedAttention`, with Gemma 3's QK-norm,
    per-layer RoPE base and query scalar, and no soft-cap. tunix's own steps, in tunix's order."""

    tzc_attention = "plain"
    tzc_interpret = False

    def block(self, x: jax.Array, segment_pos: jax.Array, cache: Any, attn_mask: jax.Array) -> tuple[Any, jax.Array]:
        if cache is not None or attn_mask.ndim == 3:  # a cache or a dense mask: tunix's own path (sampling)
            return super().block(x, segment_pos, cache, attn_mask)
        segment_ids = _segment_ids(attn_mask, x)
        if self.use_qkv_einsum:
            query, key, value = self.qkv_einsum(x)
        else:
            query = self.q_einsum(x)
            key, value = self.kv_einsum(x)
        query = sharding_utils.shard(query, self.shd_config.act_btnh)
        key = sharding_utils.shard(key, self.shd_config.act_btnh)
        value = sharding_utils.shard(value, self.shd_config.act_btnh)
        query, key = self._query_norm(query), self._key_norm(key)
        rope = dict(head_dim=self.head_dim, base_frequency=self.rope_base_frequency, scale_factor=self.rope_scale_factor)
        query = gemma3_lib.apply_rope(query, segment_pos, **rope) * self.query_pre_attn_scalar
        key = gemma3_lib.apply_rope(key, segment_pos, **rope)
        window = self.sliding_window_size if self.attn_type == gemma3_lib.AttentionType.LOCAL_SLIDING else None
        encoded = _attend(self, query, key, value, segment_ids, window=window, soft_cap=None)
        output = self.attn_vec_einsum(encoded)
        return None, sharding_utils.shard(output, self.shd_config.act_btd)


_PACKED = {gemma_lib.Attention: PackedAttention, gemma3_lib.Attention: PackedAttention3}


def install(model: Any, implementation: str, *, interpret: bool = False) -> Any:
    """Make every attention layer of a tunix Gemma 2 or Gemma 3 (LoRA or not) a :class:`PackedAttention`
    (:class:`PackedAttention3`); in place.

    Only the class of each layer's ``attn`` changes (qwix changes the model's class the same way):
    parameters, their paths and LoRA adapters are untouched, so checkpoints are unaffected.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention {implementation!r}: choose one of {', '.join(IMPLEMENTATIONS)}")
    for layer in model.layers:
        attention = layer.attn
        packed = next((p for tunix_class, p in _PACKED.items() if isinstance(attention, tunix_class)), None)
        if packed is None:
            raise ValueError(f"not a tunix Gemma 2 or Gemma 3 attention layer: {type(attention).__name__}")
        attention.__class__ = packed
        attention.tzc_attention = implementation
        attention.tzc_interpret = interpret
    return model


def is_installed(model: Any) -> bool:
    return all(isinstance(layer.attn, (PackedAttention, PackedAttention3)) for layer in model.layers)


def packed_mask(segment_ids: jax.Array, window: int | None) -> jax.Array:
    """``[B, L, L]`` bool: causal, same example, never to padding; within ``window`` by index if given."""
    length = segment_ids.shape[-1]
    index = jnp.arange(length)
    allowed = index[None, :, None] >= index[None, None, :]
    if window is not None:
        allowed = allowed & (index[None, :, None] - index[None, None, :] < window)
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return allowed & same & (segment_ids[:, None, :] != 0)


def reference_attention(query: jax.Array, key: jax.Array, value: jax.Array, segment_ids: jax.Array, *,
                        window: int | None, soft_cap: float | None) -> jax.Array:
    """Dense attention, ``query [B, T, N, H]`` (already scaled), ``key/value [B, S, K, H]`` → ``[B, T, N, H]``.

    Grouped query heads as in tunix (query head ``n`` reads key head ``n // (N / K)``); soft-cap
    ``tanh(logits / cap) * cap`` before the mask; softmax in float32.
    """
    batch, length, heads, head_dim = query.shape
    kv_heads = key.shape[2]
    grouped = query.reshape(batch, length, kv_heads, heads // kv_heads, head_dim)
    logits = jnp.einsum("BTKGH,BSKH->BKGTS", grouped, key).astype(jnp.float32)
    if soft_cap is not None:
        logits = jnp.tanh(logits / soft_cap) * soft_cap
    mask = packed_mask(segment_ids, window)[:, None, None]
    probs = jax.nn.softmax(jnp.where(mask, logits, gemma_lib.K_MASK), axis=-1).astype(value.dtype)
    encoded = jnp.einsum("BKGTS,BSKH->BTKGH", probs, value)
    return encoded.reshape(batch, length, heads, head_dim)


def block_size(length: int) -> int:
    """The splash tile: 512 where the (padded) length allows, else 256 or 128."""
    return next(b for b in (512, 256, 128) if length % b == 0)


@functools.lru_cache(maxsize=32)
def _mask(length: int, heads: int, window: int | None) -> splash_mask.MultiHeadMask:
    shape = (length, length)
    one = splash_mask.CausalMask(shape) if window is None else splash_mask.LocalMask(shape, (window - 1, 0), 0)
    return splash_mask.MultiHeadMask([one] * heads)


def _kernel(length: int, heads: int, window: int | None, soft_cap: float | None, interpret: bool) -> Any:
    b = block_size(length)
    sizes = splash.BlockSizes(block_q=b, block_kv=b, block_kv_compute=b, block_q_dkv=b, block_kv_dkv=b,
                              block_kv_dkv_compute=b, use_fused_bwd_kernel=True)
    return splash.make_splash_mha(_mask(length, heads, window), block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                  attn_logits_soft_cap=soft_cap, interpret=interpret)


def splash_attention(query: jax.Array, key: jax.Array, value: jax.Array, segment_ids: jax.Array, *,
                     window: int | None, soft_cap: float | None, interpret: bool = False) -> jax.Array:
    """Splash attention with the shapes and meaning of :func:`reference_attention`.

    Rows are padded to a multiple of 128 (segment 0: padding, which no example attends to). On a
    mesh, runs per shard: batch over ``fsdp`` and heads over ``tp`` where they divide evenly
    (each shard then holds whole groups of query heads with their key head).
    """
    batch, length, heads, head_dim = query.shape
    kv_heads = key.shape[2]
    pad = -length % 128
    to_heads_major = lambda x: jnp.pad(jnp.swapaxes(x, 1, 2), ((0, 0), (0, 0), (0, pad), (0, 0)))  # noqa: E731
    q, k, v = to_heads_major(query), to_heads_major(key), to_heads_major(value)
    segments = jnp.pad(segment_ids.astype(jnp.int32), ((0, 0), (0, pad)))

    def attend(q: jax.Array, k: jax.Array, v: jax.Array, segments: jax.Array) -> jax.Array:
        kernel = _kernel(q.shape[2], q.shape[1], window, soft_cap, interpret)
        one = lambda q, k, v, s: kernel(q, k, v, segment_ids=splash.SegmentIds(q=s, kv=s))  # noqa: E731
        return jax.vmap(one)(q, k, v, segments)

    mesh = pxla.thread_resources.env.physical_mesh
    if mesh.empty:
        out = attend(q, k, v, segments)
    else:
        sizes = dict(zip(mesh.axis_names, mesh.devices.shape))
        data = "fsdp" if "fsdp" in sizes and batch % sizes["fsdp"] == 0 else None
        model = "tp" if "tp" in sizes and kv_heads % sizes["tp"] == 0 else None
        spec = P(data, model, None, None)
        out = jax.shard_map(attend, mesh=mesh, in_specs=(spec, spec, spec, P(data, None)), out_specs=spec,
                            check_vma=False)(q, k, v, segments)
    return jnp.swapaxes(out[:, :, :length], 1, 2).astype(query.dtype)


__all__ = ["IMPLEMENTATIONS", "PackedAttention", "PackedAttention3", "install", "is_installed", "packed_mask", "reference_attention",
           "splash_attention"]
