"""A run's options, the record it leaves in ``--out``, and what a resume may change.

:class:`TrainConfig` is one run: every field is a ``tzc-train`` option, validated on construction,
so a mistake is refused in one line before anything loads. The run writes its options once, when
it starts, to ``--out/tzc_run.json`` (:func:`write_run_config`): ``export``, ``sample``, ``eval``
and the submission notebook rebuild the same model from it (:func:`read_run_config`).

``--resume`` continues a run at its latest checkpoint; ``tzc_data.batches`` is a pure function of
the seed, so the data position is exact as long as the options that shape the data and the
schedule are the run's own (``RESUME_FIELDS``). :func:`check_resume` refuses any other, naming each
difference. Builds and ``--init-lora`` are compared by what they hold (:func:`identity`), not by
path: a Kaggle session sees the first session's build under ``/kaggle/input/...``.
:func:`check_out` keeps a run from writing into a folder that holds anything but its own run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp

from tzc_data.files import sha256_file
from tzc_train.model import bases
from tzc_train.model.adapters import ADAPTER_FILE, adapter_config, is_exported_adapters
from tzc_train.model.views import REMAT
from tzc_train.session import SAVE_RESERVE_S, legacy_layout, saved_step

LORA_TARGETS = ".*q_einsum|.*kv_einsum|.*attn_vec_einsum|.*gate_proj|.*up_proj|.*down_proj"
DTYPES = ("float32", "bfloat16")
RUN_CONFIG = "tzc_run.json"


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One run. Validated on construction; every field is a ``tzc-train`` option."""

    data: str | tuple[str, ...]  # a build, or several mixed (tzc_data.batches): --data A --data B
    data_weights: tuple[float, ...] | None = None  # the mixture's weights; default: each build's packed rows
    out: str
    model: str = "tiny"  # tiny | gemma2-2b | tiny-gemma3 | gemma3-1b (tzc_train.model.bases; tiny ones: random)
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
    eval_every: int | None = None  # default: see tzc_train.trainer.eval_interval
    eval_rows: int = 256  # a fixed subset of the eval split; 0: no eval
    save_every: int = 50
    time_limit: float | None = None  # seconds from the start of the command
    resume: bool = False
    remat: str = "block"  # none | block | decoder: tunix's RematConfig (tzc_train.model.views.prepare)
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


__all__ = ["DTYPES", "LORA_TARGETS", "RESUME_FIELDS", "RUN_CONFIG", "TrainConfig", "check_out", "check_resume",
           "identity", "parse_data_weights", "parse_mesh", "read_run_config", "recorded_lora", "write_run_config"]
