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

import dataclasses
import json
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
from tunix.models.gemma import model as gemma_lib
from tunix.rl import reshard
from tunix.sft import checkpoint_manager, hooks, metrics_logger, peft_trainer

import tzc_data
from tzc_train.export import adapter_config, is_exported_adapters, load_adapters, param_arrays
from tzc_train.model import REMAT, default_attention, packed_inputs, packed_loss, prepare, tiny_config, tiny_model

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
    remat: str = "block"  # none | block | decoder: tunix's RematConfig (tzc_train.model.prepare)
    attention: str = "auto"  # auto (splash on TPU, else plain) | plain | splash

    def __post_init__(self) -> None:
        if self.remat not in REMAT:
            raise ValueError(f"--remat {self.remat!r}: choose one of {', '.join(REMAT)}")
        if self.attention not in ("auto", "plain", "splash"):
            raise ValueError(f"--attention {self.attention!r}: choose auto, plain or splash")
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
    model_config = tiny_config(vocab_size) if config.model == "tiny" else gemma_lib.ModelConfig.gemma2_2b_it()
    weights = config.weights
    if weights is None:  # only the tiny model may come without weights (validated in TrainConfig)
        return tiny_model(vocab_size, mesh), model_config
    if os.path.isdir(weights) and any(n.endswith(".safetensors") for n in os.listdir(weights)):
        from tunix.models.gemma import params_safetensors

        dtype = jnp.float32 if config.model == "tiny" else jnp.bfloat16
        model = params_safetensors.create_model_from_safe_tensors(weights, model_config, mesh, dtype=dtype)
        return model, dataclasses.replace(model_config, num_embed=model.embedder.input_embedding.shape[0])
    model = kaggle_model(weights, model_config)
    return reshard.reshard_model_to_mesh(model, mesh), model_config


def kaggle_model(path: str, model_config: gemma_lib.ModelConfig) -> gemma_lib.Gemma:
    """A Kaggle (Flax/orbax) Gemma 2 checkpoint as a tunix model of ``model_config``.

    tunix's ``Gemma.from_params`` does the same but picks the config from a version string, so it
    cannot load a checkpoint of any other size; this uses tunix's own key mapping with our config.
    """
    from tunix.models.gemma import params as gemma_params

    try:
        params = gemma_params.load_and_format_params(os.path.abspath(path))
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"--weights {path}: not a Kaggle Flax checkpoint or a safetensors directory ({err})") from None
    return gemma_lib.module_from_linen_variables(
        module_factory=lambda: gemma_lib.Gemma(model_config, rngs=nnx.Rngs(params=0)),
        variables=params["transformer"], map_key_fn=gemma_lib._map_linen_var_names,
        assign_val_fn=gemma_lib._assign_linen_params_to_nnx_state)


def with_lora(base: nnx.Module, config: TrainConfig, mesh: jax.sharding.Mesh) -> nnx.Module:
    """qwix LoRA on the attention and MLP projections; adapters in float32 whatever the base (master
    copies: the loss casts them to the base dtype for the forward pass, ``model.compute_view``)."""
    provider = qwix.LoraProvider(module_path=config.lora_targets, rank=config.lora_rank, alpha=config.lora_alpha)
    model = qwix.apply_lora_to_model(base, provider, rngs=nnx.Rngs(config.seed), **base.get_model_input())
    adapters = nnx.state(model, nnx.LoRAParam)
    nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.float32), adapters))
    return reshard.reshard_model_to_mesh(model, mesh)


RUN_CONFIG = "tzc_run.json"


def restore_adapters(model: nnx.Module, path: str, option: str) -> None:
    """Adapters from a run's ``--out`` (its latest orbax checkpoint) or a ``tzc-train export``."""
    if is_exported_adapters(path):
        load_adapters(model, path)
        return
    restored, _ = checkpoint_manager.CheckpointManager(root_directory=path).maybe_restore(
        model, None, restore_only_lora_params=True)
    if not restored:
        raise ValueError(f"{option} {path}: no checkpoint there (and no exported adapters)")


def recorded_lora(path: str) -> tuple[int, float] | None:
    """(rank, alpha) that a run's ``--out`` or an export's ``adapters/`` records, or None."""
    if is_exported_adapters(path):
        recorded = adapter_config(path)
        return int(recorded["rank"]), float(recorded["alpha"])
    if os.path.isfile(os.path.join(path, RUN_CONFIG)):
        config = read_run_config(path)
        return config.lora_rank, config.lora_alpha
    return None


def write_run_config(config: TrainConfig) -> None:
    """The run's options, beside its checkpoints: ``export`` and ``sample`` rebuild the same model."""
    os.makedirs(config.out, exist_ok=True)
    path = os.path.join(config.out, RUN_CONFIG)
    if not os.path.exists(path):
        fields = dataclasses.asdict(config)
        for name in ("data", "out", "weights", "init_lora"):  # usable from any working directory
            fields[name] = os.path.abspath(fields[name]) if fields[name] else None
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(fields, handle, indent=2)


def read_run_config(run: str) -> TrainConfig:
    path = os.path.join(run, RUN_CONFIG)
    try:
        with open(path, encoding="utf-8") as handle:
            fields = json.load(handle)
    except OSError as err:
        raise ValueError(f"{run} is not a tzc-train run directory (no {RUN_CONFIG}: {err.strerror})") from None
    fields["mesh"] = tuple(fields["mesh"]) if fields.get("mesh") else None
    return TrainConfig(**fields)


class ConsoleLine(hooks.TrainingHooks):
    """One line per step: step, loss, tokens/s (non-padding), learning rate.

    tunix reports a step's loss once the next step is under way, and the last one at the end, so
    the interval between two reports can hold two steps or almost none (on CPU a 3-step run showed
    993,045 tokens/s for its last step). The rate is therefore the average since the first report;
    the first line's rate includes compilation.
    """

    def __init__(self, schedule: optax.Schedule, tokens_per_step: float, every: int = 1):
        self.schedule, self.tokens_per_step, self.every = schedule, tokens_per_step, every
        self.started = time.perf_counter()
        self.first: float | None = None
        self.losses: list[float] = []

    def on_train_step_end(self, train_ctx: Any, train_step: int, train_loss: float) -> None:
        loss = float(train_loss)  # waits for the step
        now = time.perf_counter()
        self.losses.append(loss)
        if self.first is None:
            self.first = now
            rate = self.tokens_per_step / max(now - self.started, 1e-9)
        else:
            rate = self.tokens_per_step * (len(self.losses) - 1) / max(now - self.first, 1e-9)
        if train_step % self.every == 0:
            print(f"step {train_step:>6}  loss {loss:.4f}  {rate:>9,.0f} tokens/s  "
                  f"lr {float(self.schedule(train_step)):.2e}", file=sys.stderr, flush=True)

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
        model = with_lora(base, config, mesh)
        prepare(model, remat=config.remat,
                attention=default_attention() if config.attention == "auto" else config.attention)
        if config.init_lora:
            restore_adapters(model, config.init_lora, "--init-lora")
        write_run_config(config)

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


def export_run(run: str, out: str, *, weights: str | None = None, merged: bool = True) -> dict[str, Any]:
    """Write ``out/adapters`` and (unless ``merged=False``) ``out/merged`` for a run's latest
    checkpoint; see ``tzc_train/export.py``. ``weights`` overrides the base weights the run used."""
    from tzc_train import export

    config = read_run_config(run)
    if weights:
        config = dataclasses.replace(config, weights=weights)
    targets = [os.path.join(out, export.ADAPTERS)] + ([os.path.join(out, export.MERGED)] if merged else [])
    taken = [t for t in targets if os.path.exists(t) and os.listdir(t)]
    if taken:
        raise ValueError(f"{taken[0]} already exists and is not empty; choose another --out")
    manifest = tzc_data.read_manifest(config.data)
    devices = len(jax.devices())
    mesh = make_mesh(config.mesh if config.mesh and config.mesh[0] * config.mesh[1] == devices else None)
    with mesh:
        base, model_config = base_model(config, manifest["tokenizer"]["vocab_size"], mesh)
        model = with_lora(base, config, mesh)
        restore_adapters(model, run, "--run")
        written = {"adapters": export.save_adapters(model, targets[0], rank=config.lora_rank, alpha=config.lora_alpha,
                                                    targets=config.lora_targets, base=config.model, run=os.path.abspath(run))}
        if merged:
            written["merged"] = export.save_merged(model, targets[1], model_config, rank=config.lora_rank,
                                                   alpha=config.lora_alpha)
    return written


def lora_state(model: nnx.Module) -> dict[str, np.ndarray]:
    """The adapters as numpy arrays by path (what a run trains and saves)."""
    return param_arrays(model, nnx.LoRAParam)


def base_state(model: nnx.Module) -> dict[str, np.ndarray]:
    """The base weights (every parameter but the adapters) as numpy arrays by path."""
    return param_arrays(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam)))


__all__ = ["TrainConfig", "base_state", "export_run", "lora_state", "make_mesh", "read_run_config", "recorded_lora",
           "restore_adapters", "train"]
