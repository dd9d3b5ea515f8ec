"""tunix's ``PeftTrainer`` with honest losses, as a run sets it up, and the console line it prints.

:func:`make_trainer` builds the trainer a run uses: tzc's :class:`Trainer` with AdamW on a linear
warmup and cosine decay (:func:`lr_schedule`), orbax checkpoints in ``--out/actor`` (the judges'
``CKPT_DIR/actor/<step>/model_params``), TensorBoard in ``--out/tensorboard``, packed rows' inputs
and loss (:mod:`tzc_train.model.loss`), an eval every :func:`eval_interval` steps.
:class:`ConsoleLine`, a tunix training hook, prints a line per step and per eval and keeps the
session's losses.

tunix 0.1.7 accumulates gradients with ``optax.MultiSteps``, which averages the micro-batches'
gradients of a loss that is already a per-micro-batch mean: a micro-batch with few target tokens
weighs as much as a full one. Its eval hands hooks the *sum* of the eval batches' mean losses.

:class:`Trainer` overrides the two step functions that ``PeftTrainer`` documents as its
extension points (``create_train_step_fn``, ``create_eval_step_fn``) and keeps the rest of tunix
(loop, checkpoints, resume, metrics, hooks):

* A train step receives the whole effective batch (``grad_accum`` micro-batches stacked, one
  iterator element), scans over its micro-batches, and accumulates the *summed* loss, its
  gradient and the target-token count; the update uses ``sum of gradients / total tokens``, the
  gradient of the token mean over the effective batch (as MaxText does). Only one micro-batch's
  activations live at a time; each gradient is computed once.
* An eval step also returns (summed loss, token count); :meth:`Trainer.pop_eval_loss` gives the
  token mean over the eval batches seen since the last call.

The loss function keeps tunix's contract (``loss_fn(model, **inputs)`` returns the mean over
``inputs["target_mask"]``); the sum is that mean times the count, exact because the mean divides
by the same count.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tunix.sft import checkpoint_manager, hooks, metrics_logger, peft_trainer, sharding_utils

from tzc_train.config import TrainConfig
from tzc_train.feed import Feed
from tzc_train.model.loss import packed_inputs, packed_loss
from tzc_train.session import checkpoint_root, format_seconds


def micro_batches(batch: dict[str, jax.Array], count: int) -> dict[str, jax.Array]:
    """``[count * B, ...]`` arrays as ``[count, B, ...]``: micro-batch ``a`` holds rows ``b * count + a``.

    Rows are split this way, not in contiguous blocks, so that a batch sharded on its first axis
    stays sharded on ``B`` with no data movement (each device's rows are a contiguous block of
    ``B / devices`` groups of ``count`` rows). Which rows share a micro-batch does not change the
    step: the loss is the token mean over all of them.
    """
    def split(x: jax.Array) -> jax.Array:
        return jnp.swapaxes(x.reshape(x.shape[0] // count, count, *x.shape[1:]), 0, 1)

    return jax.tree.map(split, batch)


class Trainer(peft_trainer.PeftTrainer):
    """``PeftTrainer`` whose steps are token means; ``grad_accum`` micro-batches per iterator element.

    Do not also set ``TrainingConfig.gradient_accumulation_steps``: accumulation happens inside
    the step, and tunix counts one iterator element per optimizer step (resume skips that many).
    """

    def __init__(self, *args: Any, grad_accum: int = 1, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.config.gradient_accumulation_steps not in (None, 1):
            raise ValueError("Trainer accumulates inside its step: leave gradient_accumulation_steps unset")
        self.grad_accum = grad_accum
        self._eval_sums: list[tuple[jax.Array, jax.Array]] = []

    def create_train_step_fn(self):
        return self._accumulating_step

    def create_eval_step_fn(self):
        return self._token_eval_step

    def _summed_loss(self, model: nnx.Module, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        inputs = self.gen_model_input_fn(batch)
        count = jnp.sum(inputs["target_mask"], dtype=jnp.int32)
        return self.loss_fn(model, **inputs) * jnp.maximum(count, 1).astype(jnp.float32), count

    def _accumulating_step(self, model: nnx.Module, optimizer: nnx.Optimizer, batch: dict[str, jax.Array]
                           ) -> tuple[jax.Array, None, jax.Array]:
        graphdef, adapters, rest = nnx.split(model, nnx.LoRAParam, ...)

        def micro_loss(adapters: nnx.State, micro: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
            # copy=True: variables of this trace (the scan body's). Merged without it, the module reuses
            # the variables split at the step's level, and tunix's nnx.remat (--remat block/decoder),
            # which writes its outputs back into them, fails with flax's TraceContextError.
            return self._summed_loss(nnx.merge(graphdef, adapters, rest, copy=True), micro)

        grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

        def accumulate(carry: tuple, micro: dict[str, jax.Array]) -> tuple[tuple, None]:
            grads, total, count = carry
            (summed, tokens), micro_grads = grad_fn(adapters, micro)
            return (jax.tree.map(jnp.add, grads, micro_grads), total + summed, count + tokens), None

        start = (jax.tree.map(jnp.zeros_like, adapters), jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
        (grads, total, count), _ = jax.lax.scan(accumulate, start, micro_batches(batch, self.grad_accum))
        scale = 1.0 / jnp.maximum(count, 1).astype(jnp.float32)
        grads = jax.tree.map(lambda g: g * scale, grads)
        grad_norm = optax.global_norm(grads)
        optimizer.update(model, grads)
        return total * scale, None, grad_norm

    def _token_eval_step(self, model: nnx.Module, batch: dict[str, jax.Array]
                         ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        summed, count = self._summed_loss(model, batch)
        return summed / jnp.maximum(count, 1).astype(jnp.float32), (summed, count)

    def _post_process_eval_step(self, aux: tuple[jax.Array, jax.Array]) -> None:
        self._eval_sums.append(aux)

    def pop_eval_loss(self) -> float | None:
        """Token-mean loss over the eval batches run since the last call (None if none ran)."""
        sums, self._eval_sums = self._eval_sums, []
        if not sums:
            return None
        total = sum(float(s) for s, _ in sums)
        count = sum(int(n) for _, n in sums)
        return total / max(count, 1)

    def evaluate(self, batches: list[dict[str, np.ndarray]]) -> float | None:
        """The token-mean loss of the model as it is now over ``batches``, with the eval step tunix
        compiled (usable after ``train()`` has closed the trainer)."""
        _, eval_step = self.jit_train_and_eval_step()
        for batch in batches:
            _, aux = eval_step(sharding_utils.shard_input(batch, self.config.data_sharding_axis))
            self._post_process_eval_step(aux)
        return self.pop_eval_loss()


def make_trainer(config: TrainConfig, model: nnx.Module, steps: int) -> tuple[Trainer, optax.Schedule]:
    """tzc's Trainer with AdamW on warmup + cosine, checkpoints in ``--out/actor`` (the judges'
    ``CKPT_DIR/actor/<step>/model_params``), TensorBoard in ``--out/tensorboard``."""
    schedule = lr_schedule(config.lr, config.warmup_steps, steps)
    optimizer = optax.inject_hyperparams(optax.adamw)(learning_rate=schedule, weight_decay=config.weight_decay)
    training = peft_trainer.TrainingConfig(
        eval_every_n_steps=eval_interval(config, steps), max_steps=steps,
        checkpoint_root_directory=os.path.abspath(checkpoint_root(config.out)),
        checkpointing_options=checkpoint_manager.ocp.CheckpointManagerOptions(
            save_interval_steps=config.save_every, max_to_keep=3),
        metrics_logging_options=metrics_logger.MetricsLoggerOptions(
            log_dir=os.path.join(os.path.abspath(config.out), "tensorboard")),
    )
    trainer = (Trainer(model, optimizer, training, grad_accum=config.grad_accum)
               .with_gen_model_input_fn(packed_inputs).with_loss_fn(packed_loss))
    return trainer, schedule


def lr_schedule(peak: float, warmup_steps: int, steps: int) -> optax.Schedule:
    """The learning rate of each step by its 0-based index: linear warmup to ``peak`` over
    ``warmup_steps`` steps, then cosine decay towards 0. The first step trains at
    ``peak / warmup_steps`` (never at 0), the warmup's last step at ``peak``, the last step just above 0."""
    warmup = min(warmup_steps, steps - 1)
    if warmup <= 0:
        return optax.cosine_decay_schedule(peak, steps + 1)
    base = optax.warmup_cosine_decay_schedule(0.0, peak, warmup, steps + 1)
    return lambda count: base(count + 1)


def eval_interval(config: TrainConfig, steps: int) -> int:
    """``--eval-every``, or about 20 evals a run and never more often than every 50 steps."""
    return config.eval_every or max(50, math.ceil(steps / 20))


class ConsoleLine(hooks.TrainingHooks):
    """One line per step: step of the run's total, loss, tokens/s (non-padding), learning rate, the
    time to the end at the rate since the first step and the time to ``--time-limit``; one per eval.

    tunix reports a step's loss once the next step is under way, and the last one at the end, so
    the interval between two reports can hold two steps or almost none. The rate is therefore the
    average since the first report; the first line's rate includes compilation. The learning rate
    printed is the one the step used (optax's schedule at the step's 0-based index).
    """

    def __init__(self, schedule: optax.Schedule, feed: Feed, steps: int, every: int = 1):
        self.schedule, self.feed, self.steps, self.every = schedule, feed, steps, every
        self.started = time.perf_counter()
        self.first: tuple[int, float] | None = None
        self.losses: list[float] = []
        self.evals: list[tuple[int, float]] = []  # (step, token-mean eval loss)
        self.restored = 0

    def on_train_start(self, train_ctx: Any) -> None:
        self.restored = train_ctx.train_steps

    def on_train_step_end(self, train_ctx: Any, train_step: int, train_loss: float) -> None:
        loss = float(train_loss)  # waits for the step
        now = time.perf_counter()
        self.losses.append(loss)
        if self.first is None:
            self.first = (train_step, now)
            tokens, seconds = self.feed.tokens(train_step) - self.feed.tokens(self.restored), now - self.started
        else:
            tokens, seconds = self.feed.tokens(train_step) - self.feed.tokens(self.first[0]), now - self.first[1]
        if train_step % self.every == 0:
            print(f"step {train_step:>6}/{self.steps}  loss {loss:.4f}  {tokens / max(seconds, 1e-9):>9,.0f} tokens/s  "
                  f"lr {float(self.schedule(train_step - 1)):.2e}{self.times(train_step, now)}", file=sys.stderr,
                  flush=True)

    def times(self, step: int, now: float) -> str:
        """``  eta 1h02m  limit in 3h10m``: the rest of the run at the mean step time since the first
        report (compilation excluded), and what is left of ``--time-limit``."""
        first_step, first_time = self.first or (step, now)
        done = step - first_step
        text = f"  eta {format_seconds((self.steps - step) * (now - first_time) / done)}" if done > 0 else ""
        deadline = self.feed.deadline
        if deadline.limit is not None:
            text += f"  limit in {format_seconds(deadline.limit - deadline.elapsed())}"
        return text

    def on_eval_step_end(self, train_ctx: Any, eval_loss: float) -> None:
        self.record_eval(train_ctx.train_steps, train_ctx.pop_eval_loss())

    def record_eval(self, step: int, loss: float | None) -> None:
        if loss is not None:
            self.evals.append((step, loss))
            print(f"eval loss {loss:.4f}  perplexity {math.exp(min(loss, 700)):.3f}  (step {step})",
                  file=sys.stderr, flush=True)

    def on_train_end(self, train_ctx: Any) -> None: ...
    def on_train_step_start(self, train_ctx: Any) -> None: ...
    def on_eval_step_start(self, train_ctx: Any) -> None: ...


__all__ = ["ConsoleLine", "Trainer", "eval_interval", "lr_schedule", "make_trainer", "micro_batches"]
