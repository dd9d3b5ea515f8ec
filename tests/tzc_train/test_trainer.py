"""tzc's Trainer on a tiny Gemma 2 over 8 fake CPU devices: the step is the token mean over the whole
effective batch (not a mean of micro-batch means), and the eval loss is a token mean (not a sum); the
learning rate and the eval cadence a run sets it up with."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import qwix
from flax import nnx
from tiny_runs import run_config
from tunix.rl import reshard
from tunix.sft import peft_trainer, sharding_utils

from tzc_train.model.loss import packed_inputs, packed_loss
from tzc_train.model.views import prepare, tiny_model
from tzc_train.trainer import Trainer, eval_interval, lr_schedule, micro_batches

VOCAB, LENGTH = 600, 32


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((2, 4), ("fsdp", "tp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def _lora_model(mesh):
    with mesh:
        base = tiny_model(VOCAB, mesh)
        provider = qwix.LoraProvider(module_path=".*q_einsum|.*down_proj", rank=4, alpha=4.0)
        model = qwix.apply_lora_to_model(base, provider, rngs=nnx.Rngs(0), **base.get_model_input())
        lora = nnx.state(model, nnx.LoRAParam)  # B starts at 0: give it values so gradients reach A too
        nnx.update(model, jax.tree.map(lambda x: x + 0.05 * jnp.ones_like(x), lora))
        return prepare(reshard.reshard_model_to_mesh(model, mesh), remat="none", attention="plain")


def _batch(rows, seed):
    """Packed rows of one example each whose target counts differ a lot from row to row."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(5, VOCAB, (rows, LENGTH)).astype(np.int32)
    segments = np.ones((rows, LENGTH), np.int32)
    loss_mask = np.zeros((rows, LENGTH), np.int32)
    for r in range(rows):  # odd rows: 2 targets, even rows: 25
        loss_mask[r, LENGTH - (2 if r % 2 else 25):] = 1
    positions = np.broadcast_to(np.arange(LENGTH, dtype=np.int32), (rows, LENGTH)).copy()
    return {"tokens": tokens, "segment_ids": segments, "positions": positions, "loss_mask": loss_mask}


def _trainer(model, accum):
    config = peft_trainer.TrainingConfig(eval_every_n_steps=1, max_steps=1)
    return (Trainer(model, optax.sgd(1.0), config, grad_accum=accum)
            .with_gen_model_input_fn(packed_inputs).with_loss_fn(packed_loss))


@nnx.jit
def _value_and_grad(model, inputs):
    return nnx.value_and_grad(lambda m: packed_loss(m, **inputs), argnums=nnx.DiffState(0, nnx.LoRAParam))(model)


def _loss_and_grads(model, batch):
    """The token mean over all of ``batch`` and its gradient, straight from the loss function (compiled:
    eager calls over 8 fake devices take minutes)."""
    loss, grads = _value_and_grad(model, packed_inputs(jax.tree.map(jnp.asarray, batch)))
    return float(loss), {p: np.asarray(v.get_value()) for p, v in grads.flat_state()}


def _adapters(model):
    return {p: np.asarray(v.get_value()) for p, v in nnx.state(model, nnx.LoRAParam).flat_state()}


def test_micro_batches_keep_each_devices_rows_and_cover_the_batch():
    batch = {"x": jnp.arange(12)}
    split = micro_batches(batch, 3)["x"]
    assert split.shape == (3, 4)
    assert sorted(np.asarray(split).ravel().tolist()) == list(range(12))
    np.testing.assert_array_equal(split[:, 0], [0, 1, 2])  # the first device's rows stay its own


def test_accumulated_step_is_the_token_mean_over_the_effective_batch(mesh):
    """Two micro-batches of 4 rows (one with many targets, one with few): the update equals SGD on
    the token mean over all 8 rows; optax.MultiSteps' mean of the two means would differ."""
    batch = _batch(8, seed=1)
    model = _lora_model(mesh)
    with mesh:
        before = _adapters(model)
        loss, grads = _loss_and_grads(model, batch)
        first = jax.tree.map(lambda x: x[0::2], batch)  # micro-batch 0 of micro_batches(batch, 2)
        second = jax.tree.map(lambda x: x[1::2], batch)
        mean_of_means = (_loss_and_grads(model, first)[0] + _loss_and_grads(model, second)[0]) / 2
        trainer = _trainer(model, accum=2)
        train_step, _ = trainer.jit_train_and_eval_step()
        step_loss, _, _ = train_step(sharding_utils.shard_input(batch, ("fsdp",)))
        after = _adapters(model)
    assert abs(float(step_loss) - loss) < 1e-5
    assert abs(mean_of_means - loss) > 1e-3  # the test can tell the two apart
    assert any(np.abs(g).max() > 1e-6 for g in grads.values())
    for path, value in after.items():
        np.testing.assert_allclose(value, before[path] - grads[path], rtol=1e-4, atol=1e-6, err_msg=str(path))


def test_eval_loss_is_the_token_mean_over_the_eval_batches(mesh):
    first, second = _batch(4, seed=2), _batch(4, seed=3)
    second["loss_mask"][:, : LENGTH - 2] = 0  # few targets in the second batch
    model = _lora_model(mesh)
    with mesh:
        everything = jax.tree.map(lambda a, b: np.concatenate([a, b]), first, second)
        expected, _ = _loss_and_grads(model, everything)
        got = _trainer(model, accum=1).evaluate([first, second])
    assert abs(got - expected) < 1e-5
    assert got < 10  # not the sum of two losses near ln(600) = 6.4


def test_trainer_refuses_tunix_accumulation_on_top_of_its_own(mesh):
    config = peft_trainer.TrainingConfig(eval_every_n_steps=1, max_steps=1, gradient_accumulation_steps=2)
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        Trainer(_lora_model(mesh), optax.sgd(1.0), config, grad_accum=2)


def test_the_learning_rate_never_trains_a_step_at_zero():
    schedule = lr_schedule(1e-2, 5, 100)
    assert [round(float(schedule(i)), 6) for i in range(5)] == [0.002, 0.004, 0.006, 0.008, 0.01]
    assert 0 < float(schedule(99)) < 1e-5 and float(schedule(50)) < 1e-2
    assert float(lr_schedule(1e-2, 0, 10)(0)) == pytest.approx(1e-2)
    assert float(lr_schedule(1e-2, 10, 1)(0)) == pytest.approx(1e-2)  # one step: no warmup


def test_evals_come_at_a_sensible_cadence():
    """--eval-every, or about 20 evals a run and never more often than every 50 steps."""
    every = functools.partial(eval_interval, run_config("-", "u", eval_every=None))
    assert every(100) == 50 and every(22_500) == 1125 and eval_interval(run_config("-", "u", eval_rows=5), 100) == 8
