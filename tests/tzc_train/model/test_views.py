"""The model set up for packed rows (tzc_train/model/views.py), on tiny random Gemma 2s and 3s over 8
fake CPU devices: no attention crosses an example boundary, through the plain and the splash (Pallas
interpreter) attention and past the sliding window; a bfloat16 base computes in bfloat16 with float32
master adapters; the decoding view."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tiny_runs import VOCAB
from tiny_runs import alone as _alone
from tiny_runs import logits as _logits
from tiny_runs import packed_row as _row

from tzc_train.model import bases
from tzc_train.model.loss import attention_mask, chunked_cross_entropy, packed_inputs, packed_loss
from tzc_train.model.views import compute_view, for_decoding, prepare, tiny_model


def _segments(*lengths, total):
    ids = np.zeros(total, np.int32)
    ids[:sum(lengths)] = np.repeat(np.arange(1, len(lengths) + 1), lengths)
    return jnp.asarray(ids)[None]


@pytest.mark.parametrize("attention", ["plain", "splash"])
def test_packed_logits_equal_each_example_alone_and_a_plain_causal_mask_would_not(mesh, attention, tunix_model):
    rng = np.random.default_rng(0)
    first, second = rng.integers(5, 1024, 23), rng.integers(5, 1024, 17)
    row = _row([first, second], 48, [5, 4])
    tokens, positions, segments = (jnp.asarray(row[k]) for k in ("tokens", "positions", "segment_ids"))
    with mesh:
        model = prepare(tiny_model(1024, mesh), remat="none", attention=attention, interpret=True)
        packed = _logits(model, tokens, positions, segments)
        alone = _logits(model, jnp.asarray(second)[None], jnp.arange(17)[None], _segments(17, total=17))
        plain = _logits(model, tokens, jnp.arange(48)[None], _segments(48, total=48))
        dense = _logits(tunix_model, tokens, positions, attention_mask(segments))  # tunix's own path
    assert float(jnp.abs(packed[0, 23:40] - alone[0]).max()) < 1e-5
    assert float(jnp.abs(plain[0, 23:40] - alone[0]).max()) > 1e-2
    assert float(jnp.abs(packed[0, :40] - dense[0, :40]).max()) < 1e-5


def test_rows_longer_than_the_sliding_window_keep_examples_apart_where_tunix_mask_would_not(mesh):
    """An example that starts past the window (tunix's local mask compares positions with indices)
    and is itself longer than the window: its packed logits equal its logits alone, through the
    plain and the splash path. The row is twice the window, as 8192-token rows are for Gemma 2."""
    window = 16
    rng = np.random.default_rng(5)
    first, second = rng.integers(5, 1024, 20), rng.integers(5, 1024, 40)
    row = _row([first, second], 2 * window + 32, [3, 3])
    tokens, positions, segments = (jnp.asarray(row[k]) for k in ("tokens", "positions", "segment_ids"))
    with mesh:
        tunix = tiny_model(1024, mesh, sliding_window_size=window)
        dense = _logits(tunix, tokens, positions, attention_mask(segments))
        alone_inputs = (jnp.asarray(second)[None], jnp.arange(40)[None], _segments(40, total=40))
        for attention in ("plain", "splash"):
            model = prepare(tiny_model(1024, mesh, sliding_window_size=window), remat="none", attention=attention,
                            interpret=True)
            packed = _logits(model, tokens, positions, segments)
            alone = _logits(model, *alone_inputs)
            unwindowed = _logits(prepare(tiny_model(1024, mesh), remat="none", attention=attention, interpret=True),
                                 *alone_inputs)
            assert float(jnp.abs(packed[0, 20:60] - alone[0]).max()) < 1e-5, attention
            assert float(jnp.abs(unwindowed[0] - alone[0]).max()) > 1e-3, attention  # the window is in force
    assert float(jnp.abs(dense[0, 20:60] - alone[0]).max()) > 1e-2  # tunix's mask mixes them up


@pytest.mark.parametrize("attention", ["plain", "splash"])
def test_gemma3_packed_logits_equal_each_example_alone_and_tunix_own_attention(mesh, attention):
    """Rows twice the window (8): an example that starts past it and is longer than it. Its packed
    logits equal its logits alone; tunix's own Gemma 3 attention with the dense block-diagonal mask
    (its prefill window is by index, right within an example) gives the same; a plain causal mask and
    a model without the window do not."""
    window = 8
    rng = np.random.default_rng(0)
    first, second = rng.integers(5, VOCAB, 13), rng.integers(5, VOCAB, 21)
    row = _row([first, second], 40, [5, 4])
    tokens, positions, segments = (jnp.asarray(row[k]) for k in ("tokens", "positions", "segment_ids"))
    with mesh:
        tunix = bases.tiny_model("gemma3", VOCAB, mesh, sliding_window_size=window)
        dense = _logits(tunix, tokens, positions, attention_mask(segments))
        model = prepare(bases.tiny_model("gemma3", VOCAB, mesh, sliding_window_size=window), remat="none",
                        attention=attention, interpret=True)
        packed = _logits(model, tokens, positions, segments)
        alone = _logits(model, *_alone(second))
        causal = _logits(model, tokens, jnp.arange(40)[None], jnp.asarray((np.arange(40) < 34).astype(np.int32))[None])
        unwindowed = _logits(prepare(bases.tiny_model("gemma3", VOCAB, mesh, sliding_window_size=64), remat="none",
                                     attention=attention, interpret=True), *_alone(second))
    assert float(jnp.abs(packed[0, 13:34] - alone[0]).max()) < 1e-5
    assert float(jnp.abs(packed[0, :34] - dense[0, :34]).max()) < 1e-5
    assert float(jnp.abs(causal[0, 13:34] - alone[0]).max()) > 1e-2
    assert float(jnp.abs(unwindowed[0] - alone[0]).max()) > 1e-3  # the window is in force


def _dots(jaxpr):
    """Every dot_general in a jaxpr, nested ones (scan, checkpoint, jit) included."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _dots(inner)


def test_a_bfloat16_base_computes_in_bfloat16_with_float32_master_adapters():
    """qwix adds x @ A @ B to the base output: float32 factors would make every activation float32.
    The loss casts them for the forward pass; the gradients (and the optimizer) stay float32, and
    the vocabulary projection accumulates in float32."""
    from tzc_train.config import TrainConfig
    from tzc_train.model.lora import with_lora

    one = jax.make_mesh((1, 1), ("fsdp", "tp"), devices=jax.devices()[:1], axis_types=(jax.sharding.AxisType.Auto,) * 2)
    inputs = packed_inputs(_row([np.arange(5, 25), np.arange(30, 40)], 32, [4, 2]))
    with one:
        base = tiny_model(1024, one)
        nnx.update(base, jax.tree.map(lambda x: x.astype(jnp.bfloat16), nnx.state(base, nnx.Param)))
        model = prepare(with_lora(base, TrainConfig(data="-", out="-", model="tiny", lora_rank=4), one),
                        remat="block", attention="plain")
        assert {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.LoRAParam))} == {jnp.dtype(jnp.float32)}
        args = (inputs["input_tokens"], inputs["positions"], None, inputs["segment_ids"])
        # Dtypes are the trace's: evaluated abstractly (eager op-by-op calls took half a minute)
        assert nnx.eval_shape(lambda m: m(*args)[0], model).dtype == jnp.float32  # uncast: promoted
        assert nnx.eval_shape(lambda m: compute_view(m)(*args)[0], model).dtype == jnp.bfloat16
        grads = nnx.eval_shape(lambda m: nnx.grad(packed_loss, argnums=nnx.DiffState(0, nnx.LoRAParam))(m, **inputs),
                               model)
        assert {x.dtype for x in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
        jaxpr = jax.make_jaxpr(lambda m: packed_loss(m, **inputs))(model).jaxpr
    model_dots = [e for e in _dots(jaxpr) if e.outvars[0].aval.shape[-1] != 1024]
    assert model_dots and all(e.outvars[0].aval.dtype == jnp.bfloat16 for e in model_dots)
    h, e = jnp.ones((1, 8, 16), jnp.bfloat16), jnp.ones((50, 16), jnp.bfloat16)
    vocab = list(_dots(jax.make_jaxpr(lambda h, e: chunked_cross_entropy(
        h, e, jnp.zeros((1, 8), jnp.int32), jnp.ones((1, 8)), softcap=30.0, chunk=4))(h, e).jaxpr))
    assert vocab and all(d.outvars[0].aval.dtype == jnp.float32 for d in vocab if d.outvars[0].aval.shape[-1] == 50)


def test_the_decoding_view_has_remat_off_shares_the_arrays_and_leaves_the_training_model_alone(mesh):
    """Sampling a --remat block model (tunix's nnx.remat) failed with flax's TraceContextError: the
    sampler decodes tzc_train.model.views.for_decoding(model), which has remat off over the same arrays."""
    from tunix.models.gemma import model as gemma_lib

    with mesh:
        trained = prepare(tiny_model(1024, mesh), remat="block", attention="plain")
    view = for_decoding(trained)
    assert view is not trained
    assert {layer.config.remat_config for layer in view.layers} == {gemma_lib.RematConfig.NONE}
    assert {layer.attn.remat_config for layer in view.layers} == {gemma_lib.RematConfig.NONE}
    assert {layer.config.remat_config for layer in trained.layers} == {gemma_lib.RematConfig.BLOCK}
    assert view.layers[0].attn.q_einsum.w.get_value() is trained.layers[0].attn.q_einsum.w.get_value()


def test_the_decoding_view_holds_the_adapters_in_the_base_dtype(mesh):
    """tunix's Sampler makes its KV cache in the model's dtype: float32 factors on a bfloat16 base
    failed in prefill. The view casts them; the training model keeps its float32 masters."""
    import qwix

    with mesh:
        base = tiny_model(1024, mesh, dtype=jnp.bfloat16)
        provider = qwix.LoraProvider(module_path=".*q_einsum|.*kv_einsum", rank=4, alpha=4.0)
        model = qwix.apply_lora_to_model(base, provider, rngs=nnx.Rngs(0), **base.get_model_input())
        nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.float32), nnx.state(model, nnx.LoRAParam)))
    view = for_decoding(model)
    kinds = lambda m, kind: {x.dtype for x in jax.tree.leaves(nnx.state(m, kind))}  # noqa: E731
    assert kinds(view, nnx.LoRAParam) == {jnp.dtype(jnp.bfloat16)} == kinds(view, nnx.Param)
    assert kinds(model, nnx.LoRAParam) == {jnp.dtype(jnp.float32)}


def test_remat_and_the_decoding_view_use_gemma3s_own_enum(mesh):
    lib = bases.module("gemma3")
    with mesh:
        trained = prepare(bases.tiny_model("gemma3", VOCAB, mesh), remat="block", attention="plain")
    assert {layer.attn.remat_config for layer in trained.layers} == {lib.RematConfig.BLOCK}
    assert {layer.mlp.config.remat_config for layer in trained.layers} == {lib.RematConfig.BLOCK}
    view = for_decoding(trained)
    assert {layer.config.remat_config for layer in view.layers} == {lib.RematConfig.NONE}
