"""Packed rows on a tiny Gemma 2 (random weights) over 8 fake CPU devices: no attention and no loss
crosses an example boundary, through the plain and the splash (Pallas interpreter) attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tzc_train.model import attention_mask, packed_inputs, packed_loss, prepare, tiny_model


@pytest.fixture(scope="module")
def mesh():
    assert len(jax.devices()) == 8, "tests/conftest.py sets XLA_FLAGS for 8 fake CPU devices"
    return jax.make_mesh((2, 4), ("fsdp", "tp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


@pytest.fixture(scope="module")
def tunix_model(mesh):
    """tunix's own attention and dense mask (what sampling uses)."""
    with mesh:
        return tiny_model(1024, mesh)


@pytest.fixture(scope="module")
def model(mesh):
    with mesh:
        return prepare(tiny_model(1024, mesh), remat="none", attention="plain")


@nnx.jit
def _logits(model, tokens, positions, mask):
    """One compiled forward pass: eager calls over 8 fake devices (and Pallas' interpreter) are slow."""
    return model(tokens, positions, None, mask)[0]


def _segments(*lengths, total):
    ids = np.zeros(total, np.int32)
    ids[:sum(lengths)] = np.repeat(np.arange(1, len(lengths) + 1), lengths)
    return jnp.asarray(ids)[None]


def _row(examples, length, prompt_lengths):
    tokens, segments, positions, mask = (np.zeros(length, np.int32) for _ in range(4))
    at = 0
    for k, (ids, prompt) in enumerate(zip(examples, prompt_lengths), 1):
        n = len(ids)
        tokens[at:at + n], segments[at:at + n], positions[at:at + n] = ids, k, np.arange(n)
        mask[at + prompt:at + n] = 1
        at += n
    return {"tokens": tokens[None], "segment_ids": segments[None], "positions": positions[None],
            "loss_mask": mask[None]}


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


def test_loss_is_the_token_weighted_mean_of_the_examples_alone(model, mesh):
    rng = np.random.default_rng(1)
    a, b = rng.integers(5, 1024, 20), rng.integers(5, 1024, 14)
    loss = nnx.jit(packed_loss)
    with mesh:
        both = loss(model, **packed_inputs(_row([a, b], 40, [6, 3])))
        la = loss(model, **packed_inputs(_row([a], 20, [6])))
        lb = loss(model, **packed_inputs(_row([b], 14, [3])))
    weights = (20 - 6, 14 - 3)
    assert abs(float(both) - (float(la) * weights[0] + float(lb) * weights[1]) / sum(weights)) < 1e-5


def test_loss_by_slices_equals_the_loss_on_the_whole_logits():
    """packed_loss never builds [B, L, vocab]; its value is the full-logits loss (through the model),
    and its gradients those of the full computation (on random hidden states)."""
    import jax.numpy as jnp
    import optax

    from tzc_train.model import chunked_cross_entropy

    inputs = packed_inputs(_row([np.arange(5, 600), np.arange(700, 1000)], 1000, [40, 25]))  # > one 512 slice
    # On one device: eager 8-device programs of this size sometimes deadlocked XLA:CPU's collectives
    # on 2 cores ("Termination timeout ... only 3 of them arrived"), and the loss needs no mesh.
    one = jax.make_mesh((1, 1), ("fsdp", "tp"), devices=jax.devices()[:1],
                        axis_types=(jax.sharding.AxisType.Auto,) * 2)

    @nnx.jit  # compiled, as training runs it (eager op-by-op calls are slow)
    def full_logits_loss(model, inputs):
        logits, _ = model(inputs["input_tokens"], inputs["positions"], None, inputs["segment_ids"])
        full = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1].astype(jnp.float32),
                                                               inputs["input_tokens"][:, 1:])
        weights = inputs["target_mask"].astype(jnp.float32)
        return jnp.sum(full * weights) / jnp.sum(weights)

    with one:
        model = prepare(tiny_model(1024, one), remat="none", attention="plain")
        expected = full_logits_loss(model, inputs)
        assert abs(float(nnx.jit(packed_loss)(model, **inputs)) - float(expected)) < 1e-5

    rng = np.random.default_rng(3)
    hidden, embedding = jnp.asarray(rng.normal(size=(2, 30, 16)), jnp.float32), jnp.asarray(rng.normal(size=(50, 16)))
    labels, mask = jnp.asarray(rng.integers(0, 50, (2, 30))), jnp.asarray(rng.random((2, 30)) < 0.6, jnp.float32)

    @jax.jit
    def whole(h, e):
        z = jnp.tanh((h @ e.T) / 30.0) * 30.0
        return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(z, labels) * mask) / jnp.sum(mask)

    @jax.jit
    def sliced(h, e):  # 30 positions in slices of 7: the last one padded
        return chunked_cross_entropy(h, e, labels, mask, softcap=30.0, chunk=7)

    np.testing.assert_allclose(float(sliced(hidden, embedding)), float(whole(hidden, embedding)), rtol=1e-6)
    for got, want in zip(jax.grad(sliced, argnums=(0, 1))(hidden, embedding),
                         jax.grad(whole, argnums=(0, 1))(hidden, embedding)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_no_target_is_predicted_across_a_boundary_or_from_padding():
    row = _row([np.arange(5, 10), np.arange(20, 26)], 16, [0, 0])  # loss on every token, even the first
    targets = np.asarray(packed_inputs(row)["target_mask"])[0]
    # target t is token t+1: the first token of segment 2 (index 5) and padding are never targets
    assert not targets[4] and targets[5] and not targets[10:].any() and targets[:4].all()


def test_an_unprepared_model_or_bad_segment_ids_are_refused(model, tunix_model, mesh):
    inputs = packed_inputs(_row([np.arange(5, 15)], 16, [2]))
    with mesh:
        with pytest.raises(ValueError, match="segment ids"):
            model(inputs["input_tokens"], inputs["positions"], None, inputs["segment_ids"].astype(jnp.float32))
        with pytest.raises(ValueError, match="prepare"):
            packed_loss(tunix_model, **inputs)


def test_every_replica_of_every_tiny_parameter_agrees(model):
    """tunix's dummy creator, given a mesh, drew each device's shard with its own key: replicated
    norm scales then differed between devices, and a checkpoint (which keeps one replica) could not
    reproduce the model. Every replica must hold the same values."""
    from flax import nnx

    for path, variable in nnx.state(model, nnx.Param).flat_state():
        array = variable.get_value()
        first: dict[str, np.ndarray] = {}
        for shard in array.addressable_shards:
            data = np.asarray(shard.data)
            np.testing.assert_array_equal(first.setdefault(str(shard.index), data), data, err_msg=str(path))


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
    from tzc_train.model import chunked_cross_entropy, compute_view
    from tzc_train.train import TrainConfig, with_lora

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
    sampler decodes tzc_train.model.for_decoding(model), which has remat off over the same arrays."""
    from tunix.models.gemma import model as gemma_lib

    from tzc_train.model import for_decoding

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
    import jax.numpy as jnp
    import qwix

    from tzc_train.model import for_decoding

    with mesh:
        base = tiny_model(1024, mesh, dtype=jnp.bfloat16)
        provider = qwix.LoraProvider(module_path=".*q_einsum|.*kv_einsum", rank=4, alpha=4.0)
        model = qwix.apply_lora_to_model(base, provider, rngs=nnx.Rngs(0), **base.get_model_input())
        nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.float32), nnx.state(model, nnx.LoRAParam)))
    view = for_decoding(model)
    kinds = lambda m, kind: {x.dtype for x in jax.tree.leaves(nnx.state(m, kind))}  # noqa: E731
    assert kinds(view, nnx.LoRAParam) == {jnp.dtype(jnp.bfloat16)} == kinds(view, nnx.Param)
    assert kinds(model, nnx.LoRAParam) == {jnp.dtype(jnp.float32)}
