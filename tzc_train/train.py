"""LoRA SFT of Gemma 2 or Gemma 3 on a tzc build, with tunix, on a JAX device mesh. Read it top to bottom.

    mesh ─ model (tzc_train.bases: tiny random | HF safetensors | Kaggle Flax) ─ qwix LoRA (float32 adapters)
         ─ optax AdamW, warmup + cosine
         ─ tzc's Trainer (tunix PeftTrainer; token-mean loss over grad_accum micro-batches per step)
         ─ orbax checkpoints, TensorBoard, tzc_run.json and summary.json in --out

One step is ``--batch-size`` x ``--grad-accum`` packed rows (the effective batch); each host reads
its share (``tzc_data.batches`` with ``shard_index = jax.process_index()``), so the rows of a step
do not depend on the number of hosts. The loss is the mean over the step's target tokens.

Resume: tunix restores the latest checkpoint in ``--out`` (adapters, optimizer state, step) and
skips the batches already consumed; ``tzc_data.batches`` is a pure function of the seed, so the
data position is exact as long as the options that shape the data and the schedule are the
run's own (checked against ``tzc_run.json``). ``--time-limit`` ends a session with a checkpoint
before the limit (``tzc_train/session.py``). ``--init-lora`` starts a new run from another run's
adapters (the original entry's "unrestricted mode").
"""

from __future__ import annotations

import dataclasses
import itertools
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
from tzc_data.files import sha256_file
from tzc_train import bases
from tzc_train.export import ADAPTER_FILE, adapter_config, is_exported_adapters, load_adapters, param_arrays
from tzc_train.model import REMAT, cast_params, default_attention, packed_inputs, packed_loss, prepare
from tzc_train.session import (SAVE_RESERVE_S, Deadline, Feed, checkpoint_root, format_seconds, legacy_layout,
                               read_summary, saved_step, write_summary)
from tzc_train.trainer import Trainer

LORA_TARGETS = ".*q_einsum|.*kv_einsum|.*attn_vec_einsum|.*gate_proj|.*up_proj|.*down_proj"


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One run. Validated on construction; every field is a ``tzc-train`` option."""

    data: str | tuple[str, ...]  # a build, or several mixed (tzc_data.batches): --data A --data B
    data_weights: tuple[float, ...] | None = None  # the mixture's weights; default: each build's packed rows
    out: str
    model: str = "tiny"  # tiny | gemma2-2b | tiny-gemma3 | gemma3-1b (tzc_train.bases; tiny ones: random)
    weights: str | None = None  # HF safetensors directory or Kaggle Flax checkpoint (gemma2-2b, gemma3-1b)
    init_lora: str | None = None
    epochs: float = 1.0
    steps: int | None = None  # bounds the run instead of epochs
    batch_size: int = 8  # packed rows per micro-batch, all hosts together
    grad_accum: int = 1
    lr: float = 2e-5
    warmup_steps: int = 10
    weight_decay: float = 0.0
    lora_rank: int = 64
    lora_alpha: float = 64.0
    lora_targets: str = LORA_TARGETS
    mesh: tuple[int, int] | None = None  # (fsdp, tp); default: (devices / tp, tp) with tp = min(4, devices)
    seed: int = 0
    eval_every: int | None = None  # default: see eval_interval
    eval_rows: int = 256  # a fixed subset of the eval split; 0: no eval
    save_every: int = 50
    time_limit: float | None = None  # seconds from the start of the command
    resume: bool = False
    remat: str = "block"  # none | block | decoder: tunix's RematConfig (tzc_train.model.prepare)
    attention: str = "auto"  # auto (splash on TPU, else plain) | plain | splash
    dtype: str | None = None  # the base weights' dtype; default: the model's own (tiny float32, Gemma bfloat16)

    def __post_init__(self) -> None:
        if not isinstance(self.data, str):  # a list of one is that build: the same run, the same tzc_run.json
            builds = tuple(self.data)
            object.__setattr__(self, "data", builds[0] if len(builds) == 1 else builds)
            if not builds:
                raise ValueError("--data: give at least one build")
        if self.data_weights is not None:
            object.__setattr__(self, "data_weights", tuple(self.data_weights))
            if len(self.data_weights) != len(self.builds):
                raise ValueError(f"--data-weights gives {len(self.data_weights)} weight(s) for {len(self.builds)} "
                                 "--data build(s): one per build, in the order of --data")
            if not all(math.isfinite(w) and w > 0 for w in self.data_weights):
                raise ValueError(f"--data-weights {','.join(map(str, self.data_weights))}: weights must be positive "
                                 "finite numbers")
        if self.remat not in REMAT:
            raise ValueError(f"--remat {self.remat!r}: choose one of {', '.join(REMAT)}")
        if self.attention not in ("auto", "plain", "splash"):
            raise ValueError(f"--attention {self.attention!r}: choose auto, plain or splash")
        if self.dtype not in (None, *DTYPES):
            raise ValueError(f"--dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")
        if not bases.base(self.model).tiny and not self.weights:  # base() refuses an unknown --model
            raise ValueError(f"--model {self.model} needs --weights (HF safetensors dir or Kaggle Flax checkpoint)")
        for name in ("epochs", "lr", "weight_decay", "lora_alpha"):  # NaN passes every comparison
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"--{name.replace('_', '-')} {value}: must be a finite number")
        if self.batch_size < 1 or self.grad_accum < 1 or self.lora_rank < 1 or self.lr <= 0:
            raise ValueError("--batch-size, --grad-accum and --lora-rank must be >= 1 and --lr > 0")
        if self.steps is None and self.epochs <= 0:
            raise ValueError("--epochs must be > 0 (or give --steps)")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"--steps {self.steps}: must be >= 1")
        if (self.eval_every is not None and self.eval_every < 1) or self.save_every < 1 or self.eval_rows < 0:
            raise ValueError("--eval-every and --save-every must be >= 1, --eval-rows >= 0")
        if self.time_limit is not None and not (self.time_limit > 0 and math.isfinite(self.time_limit)):
            raise ValueError(f"--time-limit {self.time_limit}: must be a positive number of seconds")
        if self.time_limit is not None and self.time_limit <= SAVE_RESERVE_S:
            raise ValueError(f"--time-limit {self.time_limit:g}s leaves no time to train: the last "
                             f"{SAVE_RESERVE_S:.0f} s of a session are kept for the final checkpoint")

    @property
    def builds(self) -> tuple[str, ...]:
        """The builds the run reads: one, or the mixture's, in the order of --data."""
        return (self.data,) if isinstance(self.data, str) else self.data

    @property
    def base_dtype(self) -> Any:
        """The base weights' dtype: ``--dtype``, or the model's own (the tiny ones float32, the real ones bfloat16)."""
        return jnp.dtype(self.dtype or ("float32" if bases.base(self.model).tiny else "bfloat16"))


DTYPES = ("float32", "bfloat16")


# The options that decide which rows each step reads and what it does with them: a resume with
# other values would continue another run from this one's checkpoint at the wrong data position.
# Builds and --init-lora are compared by what they hold (IDENTITY_FIELDS), not by path: a Kaggle
# session sees the first session's build under /kaggle/input/... .
RESUME_FIELDS = ("data", "data_weights", "model", "weights", "dtype", "init_lora", "epochs", "steps", "batch_size",
                 "grad_accum", "lr", "warmup_steps", "weight_decay", "lora_rank", "lora_alpha", "lora_targets", "seed")
IDENTITY_FIELDS = {"data": "data_identity", "init_lora": "init_lora_identity"}
PATH_FIELDS = ("data", "out", "weights", "init_lora")


def parse_data_weights(text: str | None) -> tuple[float, ...] | None:
    """``--data-weights 0.7,0.3``: one positive number per ``--data``, in order."""
    if not text:
        return None
    try:
        weights = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--data-weights {text!r}: write one number per --data, comma-separated, "
                         "e.g. 0.7,0.3") from None
    return weights


def parse_mesh(text: str | None) -> tuple[int, int] | None:
    """``--mesh 2x4`` (or ``2X4``) as (fsdp, tp)."""
    if not text:
        return None
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--mesh {text!r}: write it as FSDPxTP, e.g. 2x4")
    return int(parts[0]), int(parts[1])


def make_mesh(shape: tuple[int, int] | None) -> jax.sharding.Mesh:
    devices = len(jax.devices())
    if shape is None:
        tp = math.gcd(devices, 4)
        shape = (devices // tp, tp)
    if shape[0] * shape[1] != devices:
        raise ValueError(f"--mesh {shape[0]}x{shape[1]} needs {shape[0] * shape[1]} devices; {devices} available")
    # Auto axes: Explicit (jax.make_mesh's default) breaks Gemma's embedding gather.
    return jax.make_mesh(shape, ("fsdp", "tp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def run_mesh(config: TrainConfig) -> jax.sharding.Mesh:
    """The mesh a run recorded, when this machine's devices make it; else the default one."""
    devices = len(jax.devices())
    return make_mesh(config.mesh if config.mesh and config.mesh[0] * config.mesh[1] == devices else None)


def base_model(config: TrainConfig, vocab_size: int, mesh: jax.sharding.Mesh) -> tuple[nnx.Module, Any]:
    """The base model and its config (``tzc_train.bases``): a tiny random Gemma 2 or Gemma 3, or Gemma 2
    2B-IT or Gemma 3 1B-IT from ``--weights``, in ``config.base_dtype``."""
    model, model_config = bases.load(config.model, config.weights, vocab_size, mesh)
    return cast_params(model, config.base_dtype), model_config


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
    """Adapters from a run's ``--out`` (its latest orbax checkpoint, ``actor/<step>/model_params``)
    or a ``tzc-train export``."""
    if is_exported_adapters(path):
        load_adapters(model, path)
        return
    root = os.path.abspath(checkpoint_root(path))  # orbax wants an absolute path
    restored, _ = checkpoint_manager.CheckpointManager(root_directory=root).maybe_restore(
        model, None, restore_only_lora_params=True)
    if not restored:
        raise ValueError(f"{option} {path}: no checkpoint there (no {root}/<step>/model_params, and no exported "
                         "adapters)")


def identity(path: str | None) -> str | None:
    """What a build or a run's adapters hold, independent of where they are: the sha256 of a build's
    ``manifest.json`` (it names every shard's sha256), of exported adapters' file, or of a run's
    ``tzc_run.json`` with its latest checkpoint step."""
    if path is None:
        return None
    if os.path.isfile(os.path.join(path, "manifest.json")):
        return "build:" + sha256_file(os.path.join(path, "manifest.json"))
    if is_exported_adapters(path):
        return "adapters:" + sha256_file(os.path.join(path, ADAPTER_FILE))
    if os.path.isfile(os.path.join(path, RUN_CONFIG)):
        return f"run:{sha256_file(os.path.join(path, RUN_CONFIG))}@{saved_step(path)}"
    return None


def recorded_lora(path: str) -> tuple[int, float] | None:
    """(rank, alpha) that a run's ``--out`` or an export's ``adapters/`` records, or None."""
    if is_exported_adapters(path):
        recorded = adapter_config(path)
        return int(recorded["rank"]), float(recorded["alpha"])
    if os.path.isfile(os.path.join(path, RUN_CONFIG)):
        config = read_run_config(path)
        return config.lora_rank, config.lora_alpha
    return None


def _recorded_fields(config: TrainConfig) -> dict[str, Any]:
    fields = dataclasses.asdict(config)
    for name in PATH_FIELDS:  # usable from any working directory
        if isinstance(fields[name], tuple):
            fields[name] = [os.path.abspath(path) for path in fields[name]]
        else:
            fields[name] = os.path.abspath(fields[name]) if fields[name] else None
    fields["data_weights"] = list(config.data_weights) if config.data_weights else None  # as JSON reads it back
    fields["data_identity"] = [identity(build) for build in config.builds]
    fields["init_lora_identity"] = identity(config.init_lora)
    return fields


def write_run_config(config: TrainConfig) -> None:
    """The run's options, beside its checkpoints: ``export`` and ``sample`` rebuild the same model,
    and ``--resume`` is checked against them. Written once, when the run starts."""
    os.makedirs(config.out, exist_ok=True)
    path = os.path.join(config.out, RUN_CONFIG)
    if not os.path.exists(path):
        temporary = path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(_recorded_fields(config), handle, indent=2)
        os.replace(temporary, path)


def read_run_config(run: str) -> TrainConfig:
    path = os.path.join(run, RUN_CONFIG)
    try:
        with open(path, encoding="utf-8") as handle:
            fields = json.load(handle)
    except OSError as err:
        raise ValueError(f"{run} is not a tzc-train run directory (no {RUN_CONFIG}: {err.strerror})") from None
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    fields = {k: v for k, v in fields.items() if k in known}  # runs of older versions lack newer options
    fields["mesh"] = tuple(fields["mesh"]) if fields.get("mesh") else None
    fields["data"] = fields["data"] if isinstance(fields.get("data"), str) else tuple(fields.get("data") or ())
    return TrainConfig(**fields)


def check_out(config: TrainConfig) -> None:
    """``--out`` is absent, empty, or a run (``tzc_run.json``): a run continues only with
    ``--resume``, and a folder holding anything else is never written into, resume or not."""
    if os.path.lexists(config.out) and not os.path.isdir(config.out):
        raise ValueError(f"--out {config.out} exists and is not a directory")
    if not os.path.isdir(config.out) or not os.listdir(config.out):
        return
    if not os.path.isfile(os.path.join(config.out, RUN_CONFIG)):
        raise ValueError(f"--out {config.out} is not empty and holds no tzc-train run (no {RUN_CONFIG}); "
                         "choose another --out")
    if not config.resume:
        raise ValueError(f"--out {config.out} already holds a run: pass --resume to continue it")
    if legacy_layout(config.out):
        raise ValueError(f"--resume: the run in {config.out} keeps its checkpoints in the old layout ({config.out}/"
                         f"<step>); move the step folders into {os.path.join(config.out, 'actor')}/ to continue it")


def check_resume(config: TrainConfig) -> None:
    """Refuse a ``--resume`` whose options differ from the run's where that changes the data
    position or the optimisation, naming each difference. Builds and ``--init-lora`` are compared
    by what they hold (:func:`identity`) where the run recorded it, so a build copied elsewhere
    (a Kaggle dataset) is the same build."""
    if not os.path.isfile(os.path.join(config.out, RUN_CONFIG)):
        return
    with open(os.path.join(config.out, RUN_CONFIG), encoding="utf-8") as handle:
        recorded = json.load(handle)
    now = _recorded_fields(config)
    changed = [name for name in RESUME_FIELDS if _differs(name, recorded, now, config.out)]
    if changed:
        listed = ", ".join(f"--{n.replace('_', '-')} {recorded[n]} (given: {now[n]}"
                           + (", which holds something else)" if recorded[n] == now[n] else ")") for n in changed)
        raise ValueError(f"--resume: the run in {config.out} was started with {listed}; resume with the run's "
                         f"options (recorded in {os.path.join(config.out, RUN_CONFIG)}) or start a new --out")


def _differs(name: str, recorded: dict[str, Any], now: dict[str, Any], out: str) -> bool:
    if name == "init_lora" and saved_step(out) is not None:
        return False  # a run that saved a step restores its own adapters, not --init-lora's
    by = IDENTITY_FIELDS.get(name)
    if by and recorded.get(by) is not None:
        return recorded[by] != now[by]
    return name in recorded and recorded[name] != now[name]


def split_rows(manifest: dict[str, Any], split: str) -> int:
    return int(manifest["packing"]["by_split"].get(split, {}).get("rows", 0)) if split in manifest["splits"] else 0


def check_build(data: str, manifest: dict[str, Any]) -> int:
    """The train split's packed rows; a build with none is refused (Grain would fail on 0 files)."""
    rows = split_rows(manifest, "train")
    if rows == 0:
        counts = manifest.get("counts", {})
        raise ValueError(f"--data {data}: the build has no packed rows in its train split (kept {counts.get('kept', 0)} "
                         f"of {counts.get('read', 0)} rows read): nothing to train on")
    return rows


def check_batch(config: TrainConfig, mesh: jax.sharding.Mesh) -> None:
    """A batch the data axis cannot split evenly would be replicated by tunix's sharding helper
    (every device computing every row): refuse it, naming sizes that fit."""
    data, hosts = mesh.shape["fsdp"], jax.process_count()
    if config.batch_size % data:
        lower = config.batch_size // data * data
        fits = " or ".join(str(s) for s in (lower, lower + data) if s > 0)
        raise ValueError(f"--batch-size {config.batch_size} does not split over the mesh's data axis (fsdp = {data} "
                         f"devices): use a multiple of {data}, e.g. {fits}")
    if config.batch_size % hosts:
        raise ValueError(f"--batch-size {config.batch_size} does not split over {hosts} hosts: use a multiple of {hosts}")


def host_batches(data: str | tuple[str, ...], rows: int, *, seed: int, split: str = "train",
                 num_epochs: int | None = None, weights: tuple[float, ...] | None = None):
    """``tzc_data.batches`` for this host: ``rows`` rows a batch over all hosts, this host's share
    (every ``process_count``-th row of the global order), so hosts read disjoint rows. Several
    builds are a mixture by ``weights``."""
    hosts = jax.process_count()
    data = data if isinstance(data, str) else list(data)
    return tzc_data.batches(data, rows // hosts, seed=seed, split=split, num_epochs=num_epochs,
                            shard_index=jax.process_index(), shard_count=hosts, weights=weights)


def eval_set(config: TrainConfig, manifest: dict[str, Any]) -> tuple[list[dict[str, np.ndarray]], str]:
    """A fixed subset of the eval split (the first ``eval_rows`` rows of its seeded order, whole
    batches only), the same at every eval and in every session; and a line saying what it is.
    A mixture evaluates on the mixture (same weights) of the eval splits of its builds that have one."""
    if config.eval_rows == 0:
        return [], "eval: off (--eval-rows 0)"
    if len(config.builds) > 1:
        return mixture_eval_set(config)
    rows = split_rows(manifest, "eval")
    if rows < config.batch_size:
        return [], f"eval: off (the build's eval split has {rows} packed rows, fewer than one batch of {config.batch_size})"
    count = max(1, min(config.eval_rows, rows) // config.batch_size)
    batches = host_batches(config.data, config.batch_size, seed=config.seed, split="eval", num_epochs=1)
    subset = [next(batches) for _ in range(count)]
    return subset, f"eval: {count * config.batch_size} of the eval split's {rows} packed rows"


def mixture_eval_set(config: TrainConfig) -> tuple[list[dict[str, np.ndarray]], str]:
    """:func:`eval_set` of a mixture: the first ``eval_rows`` rows (whole batches) of the seeded
    mixture of the eval splits, one pass, over the builds whose eval split has packed rows."""
    weights = config.data_weights or (None,) * len(config.builds)
    chosen = [(build, weight, split_rows(tzc_data.read_manifest(build), "eval"))
              for build, weight in zip(config.builds, weights)]
    chosen = [(build, weight, rows) for build, weight, rows in chosen if rows > 0]
    rows = sum(r for _, _, r in chosen)
    if rows < config.batch_size:
        return [], (f"eval: off (the builds' eval splits have {rows} packed rows, fewer than one batch of "
                    f"{config.batch_size})")
    count = max(1, min(config.eval_rows, rows) // config.batch_size)
    given = None if config.data_weights is None else tuple(w for _, w, _ in chosen)
    batches = host_batches(tuple(b for b, _, _ in chosen), config.batch_size, seed=config.seed, split="eval",
                           num_epochs=1, weights=given)
    subset = list(itertools.islice(batches, count))  # a weighted pass may end before every row is drawn
    return subset, (f"eval: {len(subset) * config.batch_size} rows of the mixed eval splits of {len(chosen)} of "
                    f"{len(config.builds)} builds ({rows} packed rows)")


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


def train(config: TrainConfig, *, started: float | None = None) -> dict[str, Any]:
    """Run (or continue) a run; returns its summary (``summary.json``) plus this session's losses,
    mesh and model. ``started``: a ``time.monotonic()`` reading that ``--time-limit`` counts from
    (default: now)."""
    started = time.monotonic() if started is None else started
    manifest = tzc_data.read_manifest(config.builds[0])  # a mixture's builds share seq_len and tokenizer
    seq_len, vocab_size = manifest["config"]["seq_len"], manifest["tokenizer"]["vocab_size"]
    check_out(config)
    if config.resume:
        check_resume(config)
        finished = read_summary(config.out)
        if finished and finished.get("status") == "finished" and saved_step(config.out) == finished.get("max_steps"):
            print(f"tzc-train: the run in {config.out} finished at step {finished['steps']}; nothing to resume",
                  file=sys.stderr, flush=True)  # a re-run notebook: no model load, no eval, no empty session
            return {**finished, "session": None}
    bases.check_tokenizer(config.model, manifest["tokenizer"], config.builds[0])  # a mixture's share it
    rows = check_build(config.builds[0], manifest)
    rows += sum(check_build(build, tzc_data.read_manifest(build)) for build in config.builds[1:])
    examples_per_step = config.batch_size * config.grad_accum
    steps = config.steps or max(1, int(config.epochs * rows / examples_per_step))  # an epoch: all builds' rows
    # the train batches first: a mixture that cannot be (tzc_data.mixture) is refused before the model loads
    batches = host_batches(config.data, examples_per_step, seed=config.seed, weights=config.data_weights)

    mesh = make_mesh(config.mesh)
    check_batch(config, mesh)
    with mesh:
        base, model_config = base_model(config, vocab_size, mesh)
        model = with_lora(base, config, mesh)
        prepare(model, remat=config.remat,
                attention=default_attention() if config.attention == "auto" else config.attention)
        if config.init_lora and saved_step(config.out) is None:  # a resumed run restores its own adapters
            restore_adapters(model, config.init_lora, "--init-lora")
        if jax.process_index() == 0:
            write_run_config(config)

        trainer, schedule = make_trainer(config, model, steps)
        feed = Feed(batches, Deadline(config.time_limit, started), agree=agreement(), skip=saved_step(config.out) or 0)
        console = ConsoleLine(schedule, feed, steps)
        trainer.with_training_hooks(console)
        eval_batches, eval_note = eval_set(config, manifest)
        print(f"{steps} steps of {examples_per_step} packed rows ({config.batch_size} x {config.grad_accum}); "
              f"{eval_note}, every {eval_interval(config, steps)} steps", file=sys.stderr, flush=True)
        trainer.train(feed, eval_batches or None)
        if eval_batches and feed.stopped != "time limit" and (not console.evals or
                                                              console.evals[-1][0] != trainer.train_steps):
            console.record_eval(trainer.train_steps, trainer.evaluate(eval_batches))
        summary = record_session(config, steps, trainer.train_steps, feed, console, started, mesh)
    return {**summary, "losses": console.losses, "mesh": summary["session"]["mesh"], "model": model}


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


def record_session(config: TrainConfig, steps: int, done: int, feed: Feed, console: ConsoleLine, started: float,
                   mesh: jax.sharding.Mesh) -> dict[str, Any]:
    """This session's entry and the run's totals, written to ``summary.json`` (by process 0)."""
    stopped = "time limit" if feed.stopped == "time limit" else "finished" if done >= steps else feed.stopped
    session = {"stopped": stopped, "first_step": console.restored + 1, "last_step": done,
               "steps": done - console.restored,
               "tokens": total_tokens(feed.tokens(done) - feed.tokens(console.restored)),
               "wall_seconds": round(time.monotonic() - started, 1),
               "mesh": dict(zip(mesh.axis_names, mesh.devices.shape))}
    last_eval = console.evals[-1] if console.evals else (None, None)
    totals = {"steps": done, "max_steps": steps, "tokens": total_tokens(feed.tokens(done)),
              "train_loss": console.losses[-1] if console.losses else None, "eval_loss": last_eval[1],
              "eval_step": last_eval[0]}
    if jax.process_index() != 0:
        return {**totals, "session": session}
    sessions = [session]
    recorded = ((read_summary(config.out) or {}).get("sessions") or [{"last_step": 0}])[-1]["last_step"]
    if console.restored > recorded:  # a session killed or crashed after a checkpoint wrote no entry: its saved steps
        sessions.insert(0, {"stopped": "interrupted", "first_step": recorded + 1, "last_step": console.restored,
                            "steps": console.restored - recorded,
                            "tokens": total_tokens(feed.tokens(console.restored) - feed.tokens(recorded)),
                            "wall_seconds": None, "mesh": None})
    return {**write_summary(config.out, sessions, **totals), "session": session}


def total_tokens(local: int) -> int:
    """Tokens over all hosts (each host counts the rows it read)."""
    if jax.process_count() == 1:
        return local
    from jax.experimental import multihost_utils

    return int(np.sum(multihost_utils.process_allgather(np.asarray(local, np.int64))))


def agreement():
    """How hosts agree to stop for the time limit: all as process 0 decides (one host stopping
    alone would leave the others waiting in a collective). None on one host."""
    if jax.process_count() == 1:
        return None
    from jax.experimental import multihost_utils

    return lambda go_on: bool(multihost_utils.broadcast_one_to_all(np.asarray(go_on)))


def export_run(run: str, out: str, *, weights: str | None = None, merged: bool = True) -> dict[str, Any]:
    """Write ``out/adapters`` and ``out/kaggle`` (the unrestricted-mode deliverable: the LoRA
    parameters as the orbax checkpoint the judges restore, ``tzc_train.kaggle``) and, unless
    ``merged=False``, ``out/merged`` and ``out/flax``, for a run's latest checkpoint; see
    ``tzc_train/export.py``. ``weights`` overrides the base weights the run used. Refuses to write
    over a non-empty directory."""
    from tzc_data.look import build_tokenizer
    from tzc_train import export
    from tzc_train.model import for_decoding

    config = read_run_config(run)
    if weights:
        config = dataclasses.replace(config, weights=weights)
    names = [export.ADAPTERS, export.KAGGLE] + ([export.MERGED, export.FLAX] if merged else [])
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
        written = {"adapters": export.save_adapters(model, targets[export.ADAPTERS], rank=config.lora_rank,
                                                    alpha=config.lora_alpha, targets=config.lora_targets,
                                                    base=config.model, dtype=config.dtype, run=os.path.abspath(run)),
                   "kaggle": export.save_lora_checkpoint(for_decoding(model), targets[export.KAGGLE])}
        if merged:
            params = export.merged_params(model, rank=config.lora_rank, alpha=config.lora_alpha)
            written["merged"] = export.save_merged(params, targets[export.MERGED], model_config, special=special)
            # Gemma.from_params builds Kaggle's config (256,128 embedding rows; Hugging Face's have 256,000)
            rows = gemma_lib.ModelConfig.gemma2_2b_it().num_embed if config.model == "gemma2-2b" else 0
            written["flax"] = export.save_flax(params, targets[export.FLAX], model_config, vocab_rows=rows)
    return written


def lora_state(model: nnx.Module) -> dict[str, np.ndarray]:
    """The adapters as numpy arrays by path (what a run trains and saves)."""
    return param_arrays(model, nnx.LoRAParam)


def base_state(model: nnx.Module) -> dict[str, np.ndarray]:
    """The base weights (every parameter but the adapters) as numpy arrays by path."""
    return param_arrays(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam)))


__all__ = ["TrainConfig", "base_state", "check_batch", "export_run", "host_batches", "lora_state", "make_mesh",
           "parse_data_weights", "parse_mesh", "read_run_config", "recorded_lora", "restore_adapters", "train"]
