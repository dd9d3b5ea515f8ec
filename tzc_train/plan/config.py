"""What ``tzc-train plan`` plans: the run as ``tzc-train`` would start it, the hardware, and their figures.

:class:`PlanConfig` is validated on construction. The chips' figures are Google Cloud's public
ones; :class:`PlanError` is a user's mistake, :class:`DoesNotFit` the plan's verdict that the run
needs more memory than the chips have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tzc_train.model import bases

# Public figures per chip (Google Cloud TPU documentation): HBM, peak bfloat16 FLOP/s, and
# inter-chip interconnect bandwidth in bytes/s (v4 2,400 Gbps; v5e 1,600; v5p 4,800; v6e 3,584).
CHIPS = {"v4": (32 * 2**30, 275e12), "v5e": (16 * 2**30, 197e12), "v5p": (95 * 2**30, 459e12),
         "v6e": (32 * 2**30, 918e12)}
ICI_BYTES_PER_S = {"v4": 300e9, "v5e": 200e9, "v5p": 600e9, "v6e": 448e9}
LOAD_SECONDS = 300.0  # assumed: reading the base's weights and placing them (not measured here)
MODELS = tuple(bases.MODELS)


class PlanError(ValueError):
    """The options cannot describe a run (a user's mistake)."""


class DoesNotFit(PlanError):
    """The plan's verdict: the run needs more memory than the chips have."""


@dataclass(frozen=True, kw_only=True)
class PlanConfig:
    """A training run as ``tzc-train`` would start it, and the hardware to plan it for."""

    data: str
    model: str = "gemma2-2b"
    topology: str = "v5e:2x4"
    batch_size: int = 8
    grad_accum: int = 1
    seq_len: int | None = None  # default: the build's
    lora_rank: int = 64
    lora_alpha: float = 64.0
    lora_targets: str | None = None  # default: tzc_train.config.LORA_TARGETS
    mesh: tuple[int, int] | None = None  # (fsdp, tp); default (chips / tp, tp), tp = gcd(chips, 4)
    remat: str = "block"
    attention: str = "splash"
    epochs: float = 1.0
    steps: int | None = None
    mfu: float = 0.35
    hours: float = 9.0
    time_limit: float | None = None  # seconds of the session for the whole command; default: hours
    eval_rows: int = 256  # tzc-train's --eval-rows: packed rows per eval
    eval_every: int | None = None  # tzc-train's --eval-every; default: about 20 evals a run
    # XLA's least optimisation effort: compiles about 4x faster; peak memory within a few percent
    # (0.79 against 0.82 GiB on a 2-layer check). The run itself compiles at the default effort.
    fast_compile: bool = False

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise PlanError(f"--model {self.model!r}: choose one of {', '.join(MODELS)}")
        if self.batch_size < 1 or self.grad_accum < 1 or self.lora_rank < 1:
            raise PlanError("--batch-size, --grad-accum and --lora-rank must be >= 1")
        if not 0 < self.mfu <= 1:
            raise PlanError(f"--mfu {self.mfu}: a fraction in (0, 1]")
        if not (self.hours > 0 and math.isfinite(self.hours)) or (
                self.steps is None and not (self.epochs > 0 and math.isfinite(self.epochs))):
            raise PlanError(f"--hours {self.hours} and --epochs {self.epochs}: must be finite numbers > 0")
        if self.topology.split(":")[0] not in CHIPS:
            raise PlanError(f"--topology {self.topology!r}: one of {', '.join(CHIPS)} then :AxB, e.g. v5e:2x4")


def remat_advice(remat: str) -> str:
    """What else to try, for a plan that does not fit: ``block`` needs the least memory of the three
    (docs/training.md, "The plan at the entry's scale"), so only the others are told to use it."""
    return "" if remat == "block" else " or use --remat block"


__all__ = ["CHIPS", "ICI_BYTES_PER_S", "LOAD_SECONDS", "MODELS", "DoesNotFit", "PlanConfig", "PlanError",
           "remat_advice"]
