"""LoRA SFT of Gemma 2 on a tzc build, with tunix, on a JAX device mesh. Read it top to bottom.

    mesh ─ model (tiny random | HF safetensors | Kaggle Flax) ─ qwix LoRA (float32 adapters)
         ─ optax AdamW, warmup + cosine, gradient accumulation
         ─ tunix PeftTrainer with tzc's packed inputs and loss ─ orbax checkpoints in --out

Resume: tunix restores the latest checkpoint in ``--out`` (adapters, optimizer state, step) and
skips the batches already consumed; ``tzc_data.batches`` is a pure function of the seed, so the
data position is exact. ``--init-lora`` starts a new run from another run's adapters (the
original entry's "unrestricted mode").
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import qwix
from flax import nnx
from tunix.models import dummy_model_creator
from tunix.models.gemma import model as gemma_lib
from tunix.rl import reshard
from tunix.sft import checkpoint_manager, hooks, metrics_logger, peft_trainer

import tzc_data
from tzc_train.model import check_seq_len, packed_inputs, packed_loss, tiny_config

LORA_TARGETS = ".*q_einsum|.*kv_einsum|.*attn_vec_einsum|.*gate_proj|.*up_proj|.*down_proj"


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One run. Validated on construction; every field is a ``tzc-train`` option."""

    data: str
    out: str
    model: str = "tiny"  # "tiny" (random, for tests and trying the tool) or "gemma2-2b"
    weights: str | None = None  # HF safetensors directory or Kaggle Flax checkpoint (gemma2-2b)
    init_lora: str | None = None
    epochs: float = 1.0
    steps: int | None = None  # bounds the run instead of epochs
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-5
    warmup_steps: int = 10
    weight_decay: float = 0.0
    lora_rank: int = 64
    lora_alpha: float = 64.0
    lora_targets: str = LORA_TARGETS
    mesh: tuple[int, int] | None = None  # (fsdp, tp); default: (devices / tp, tp) with tp = min(4, devices)
    seed: int = 0
    eval_every: int = 50
    save_every: int = 50
    resume: bool = False

    def __post_init__(self) -> None:
        if self.model not in ("tiny", "gemma2-2b"):
            raise ValueError(f"--model {self.model!r}: choose tiny or gemma2-2b")
        if self.model == "gemma2-2b" and not self.weights:
            raise ValueError("--model gemma2-2b needs --weights (HF safetensors dir or Kaggle Flax checkpoint)")
        if self.batch_size < 1 or self.grad_accum < 1 or self.lora_rank < 1 or self.lr <= 0:
            raise ValueError("--batch-size, --grad-accum and --lora-rank must be >= 1 and --lr > 0")
        if self.steps is None and self.epochs <= 0:
            raise ValueError("--epochs must be > 0 (or give --steps)")


def make_mesh(shape: tuple[int, int] | None) -> jax.sharding.Mesh:
    devices = len(jax.devices())
    if shape is None:
        tp = math.gcd(devices, 4)
        shape = (devices // tp, tp)
    if shape[0] * shape[1] != devices:
        raise ValueError(f"--mesh {shape[0]}x{shape[1]} needs {shape[0] * shape[1]} devices; {devices} available")
    # Auto axes: Explicit (jax.make_mesh's default) breaks Gemma's embedding gather.
    return jax.make_mesh(shape, ("fsdp", "tp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def base_model(config: TrainConfig, vocab_size: int, mesh: jax.sharding.Mesh
               ) -> tuple[nnx.Module, gemma_lib.ModelConfig]:
    """The base model and its config: a tiny random Gemma 2, or Gemma 2 2B-IT in bfloat16."""
    if config.model == "tiny":
        model_config = tiny_config(vocab_size)
        return dummy_model_creator.create_dummy_model(gemma_lib.Gemma, model_config, mesh=mesh, scale=0.02), \
            model_config
    model_config = gemma_lib.ModelConfig.gemma2_2b_it()
    if os.path.isdir(config.weights) and any(n.endswith(".safetensors") for n in os.listdir(config.weights)):
        from tunix.models.gemma import params_safetensors

        return params_safetensors.create_model_from_safe_tensors(config.weights, model_config, mesh,
                                                                dtype=jnp.bfloat16), model_config
    from tunix.models.gemma import params as gemma_params

    params = gemma_params.load_and_format_params(config.weights)
    return gemma_lib.Gemma.from_params(params, version="2-2b-it"), model_config


def with_lora(base: nnx.Module, config: TrainConfig, mesh: jax.sharding.Mesh) -> nnx.Module:
    """qwix LoRA on the attention and MLP projections; adapters in float32 whatever the base."""
    provider = qwix.LoraProvider(module_path=config.lora_targets, rank=config.lora_rank, alpha=config.lora_alpha)
    model = qwix.apply_lora_to_model(base, provider, rngs=nnx.Rngs(config.seed), **base.get_model_input())
    adapters = nnx.state(model, nnx.LoRAParam)
    nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.float32), adapters))
    return reshard.reshard_model_to_mesh(model, mesh)


class ConsoleLine(hooks.TrainingHooks):
    """One line per step: step, loss, tokens/s (non-padding), learning rate."""

    def __init__(self, schedule: optax.Schedule, tokens_per_step: float, every: int = 1):
        self.schedule, self.tokens_per_step, self.every = schedule, tokens_per_step, every
        self.last = time.perf_counter()
        self.losses: list[float] = []

    def on_train_step_end(self, train_ctx: Any, train_step: int, train_loss: float) -> None:
        now = time.perf_counter()
        loss = float(train_loss)
        self.losses.append(loss)
        if train_step % self.every == 0:
            print(f"step {train_step:>6}  loss {loss:.4f}  {self.tokens_per_step / max(now - self.last, 1e-9):>9,.0f} "
                  f"tokens/s  lr {float(self.schedule(train_step)):.2e}", file=sys.stderr, flush=True)
        self.last = now

    def on_eval_step_end(self, train_ctx: Any, eval_loss: float) -> None:
        print(f"eval loss {float(eval_loss):.4f}", file=sys.stderr, flush=True)

    def on_train_start(self, train_ctx: Any) -> None: ...
    def on_train_end(self, train_ctx: Any) -> None: ...
    def on_train_step_start(self, train_ctx: Any) -> None: ...
    def on_eval_step_start(self, train_ctx: Any) -> None: ...


def train(config: TrainConfig) -> dict[str, Any]:
    """Run; returns a summary (steps, first and last loss, seconds, mesh)."""
    manifest = tzc_data.read_manifest(config.data)
    seq_len, vocab_size = manifest["config"]["seq_len"], manifest["tokenizer"]["vocab_size"]
    if os.path.isdir(config.out) and os.listdir(config.out) and not config.resume:
        raise ValueError(f"--out {config.out} already holds a run: pass --resume to continue it")
    rows = manifest["packing"]["by_split"]["train"]["rows"]
    examples_per_step = config.batch_size * config.grad_accum
    steps = config.steps or max(1, int(config.epochs * rows / examples_per_step))

    mesh = make_mesh(config.mesh)
    with mesh:
        base, model_config = base_model(config, vocab_size, mesh)
        check_seq_len(seq_len, model_config)
        model = with_lora(base, config, mesh)
        if config.init_lora:
            restored, _ = checkpoint_manager.CheckpointManager(root_directory=config.init_lora).maybe_restore(
                model, None, restore_only_lora_params=True)
            if not restored:
                raise ValueError(f"--init-lora {config.init_lora}: no checkpoint there")

        warmup = min(config.warmup_steps, steps - 1)
        schedule = optax.warmup_cosine_decay_schedule(0.0, config.lr, warmup, max(steps, warmup + 1))
        optimizer = optax.inject_hyperparams(optax.adamw)(learning_rate=schedule, weight_decay=config.weight_decay)
        training = peft_trainer.TrainingConfig(
            eval_every_n_steps=config.eval_every, max_steps=steps,
            gradient_accumulation_steps=config.grad_accum if config.grad_accum > 1 else None,
            checkpoint_root_directory=os.path.abspath(config.out),
            checkpointing_options=checkpoint_manager.ocp.CheckpointManagerOptions(
                save_interval_steps=config.save_every, max_to_keep=3),
            metrics_logging_options=metrics_logger.MetricsLoggerOptions(
                log_dir=os.path.join(os.path.abspath(config.out), "tensorboard")),
        )
        console = ConsoleLine(schedule, examples_per_step * seq_len * manifest["packing"]["fill"])
        trainer = (peft_trainer.PeftTrainer(model, optimizer, training)
                   .with_gen_model_input_fn(packed_inputs).with_loss_fn(packed_loss))
        trainer.with_training_hooks(console)  # returns None, unlike the two above
        eval_batches = None
        if "eval" in manifest["splits"]:
            eval_batches = list(tzc_data.batches(config.data, config.batch_size, seed=config.seed, split="eval",
                                                 num_epochs=1, drop_remainder=True))
        started = time.perf_counter()
        trainer.train(tzc_data.batches(config.data, config.batch_size, seed=config.seed), eval_batches or None)
        seconds = time.perf_counter() - started
    return {"steps": steps, "losses": console.losses, "seconds": round(seconds, 2),
            "mesh": dict(zip(mesh.axis_names, mesh.devices.shape)), "model": model}


def lora_state(model: nnx.Module) -> dict[str, np.ndarray]:
    """The adapters as numpy arrays by path (what a run trains and saves)."""
    flat = nnx.state(model, nnx.LoRAParam).flat_state()
    return {"/".join(map(str, path)): np.asarray(value.get_value()) for path, value in flat}


def base_state(model: nnx.Module) -> dict[str, np.ndarray]:
    flat = nnx.state(model, nnx.Param).flat_state()
    return {"/".join(map(str, path)): np.asarray(value.get_value())
            for path, value in flat if not isinstance(value, nnx.LoRAParam)}


__all__ = ["TrainConfig", "base_state", "lora_state", "make_mesh", "train"]
