"""tunix's ``PeftTrainer`` with honest losses: token means over the whole optimizer step and the eval set.

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

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tunix.sft import peft_trainer, sharding_utils


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


__all__ = ["Trainer", "micro_batches"]
