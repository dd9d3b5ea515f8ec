"""Sessions that end on time: ``--time-limit`` and its clock, the run folder and its summary.

The run folder (``--out``) is the competition's ``CKPT_DIR``: checkpoints go to
``CKPT_DIR/actor/<step>/{model_params,optimizer_state}``, where the judges' cells list the all-digit
step folders and restore ``model_params`` of the largest; ``tzc_run.json``, ``summary.json`` and
``tensorboard/`` sit beside ``actor/``.

A Kaggle TPU session stops hard after 9 hours. A run given ``--time-limit 8h40m`` stops handing
batches to the trainer once the next step could not finish and be saved before the limit,
measured from the start of the command (imports, model loading and compilation included): the
:class:`Deadline` here says whether one more step fits, and the train feed
(:class:`tzc_train.feed.Feed`) asks it before each batch. tunix then ends its loop the way it ends
at the end of the data: it saves a checkpoint at the last step and closes, and ``--resume`` in the
next session continues from there with the same data order.

The run's summary (``--out/summary.json``) is rewritten at the end of every session: steps, tokens,
wall time, the last train and eval losses and perplexities, and one line per session.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SUMMARY = "summary.json"
CHECKPOINTS = "actor"  # the judges' cells read CKPT_DIR/actor/<step>/model_params

# Kept free at the end for what follows the last step: the steps still in flight (tunix runs up
# to two ahead) are budgeted from the longest step seen; this covers the final checkpoint (LoRA
# factors and optimizer state: about 0.5 GB at Gemma 2 2B, rank 64), the summary and exit.
SAVE_RESERVE_S = 60.0

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([hms])")


def checkpoint_root(run: str) -> str:
    """Where a run's step folders are: ``run/actor``; for a run written before that layout (step
    folders directly in ``run``, read-only: see :func:`legacy_layout`), ``run`` itself."""
    return run if legacy_layout(run) else os.path.join(run, CHECKPOINTS)


def step_folders(directory: str) -> list[int]:
    """The all-digit folder names in ``directory`` as steps, as the judges' cells list them."""
    if not os.path.isdir(directory):
        return []
    return sorted(int(n) for n in os.listdir(directory)
                  if n.isdigit() and os.path.isdir(os.path.join(directory, n)))


def legacy_layout(run: str) -> bool:
    """Whether ``run`` holds its checkpoints in the layout of tzc before the judges' (``run/<step>``)."""
    return not os.path.isdir(os.path.join(run, CHECKPOINTS)) and bool(step_folders(run))


def saved_step(run: str) -> int | None:
    """The latest checkpoint step of a run, or None."""
    steps = step_folders(checkpoint_root(run))
    return steps[-1] if steps else None


def format_seconds(seconds: float) -> str:
    """``1h02m``, ``4m05s``, ``12s``: a duration for a progress line."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def parse_duration(text: str) -> float:
    """Seconds in ``8h40m``, ``90m``, ``1h``, ``45s``, ``1.5h`` or a plain number of seconds."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        parts = _DURATION.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise ValueError(f"--time-limit {text!r}: write it like 8h40m, 90m or 3600 (seconds)") from None
        seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if not seconds > 0 or math.isinf(seconds):
        raise ValueError(f"--time-limit {text!r}: must be a positive duration")
    return seconds


@dataclass
class Deadline:
    """``limit`` seconds after ``started`` (a ``clock()`` reading), or never (``limit=None``)."""

    limit: float | None
    started: float
    reserve: float = SAVE_RESERVE_S
    clock: Callable[[], float] = time.monotonic

    def elapsed(self) -> float:
        return self.clock() - self.started

    def leaves_room_for(self, step_seconds: float) -> bool:
        """Whether one more step can start: its own time and the steps in flight (2 x the longest
        step), then the final save, still end before the limit."""
        if self.limit is None:
            return True
        return self.elapsed() + 2 * step_seconds + self.reserve < self.limit


def read_summary(out: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(out, SUMMARY), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def perplexity(loss: float | None) -> float | None:
    return None if loss is None else float(math.exp(min(loss, 700.0)))


def write_summary(out: str, new: list[dict[str, Any]], *, steps: int, max_steps: int, tokens: int,
                  train_loss: float | None, eval_loss: float | None, eval_step: int | None) -> dict[str, Any]:
    """Rewrite ``out/summary.json`` with the ``new`` sessions appended (this one, after any interrupted
    one it found: such an entry's ``wall_seconds`` is unknown, None, and not in the total);
    returns what it wrote.

    ``train_loss`` / ``eval_loss`` of None (a session that trained no step or ran no eval) keep
    the earlier session's values. Written to a temporary name and renamed into place.
    """
    previous = read_summary(out) or {}
    sessions = previous.get("sessions", []) + list(new)
    session = sessions[-1]
    if train_loss is None:
        train_loss = previous.get("train_loss")
    if eval_loss is None:
        eval_loss, eval_step = previous.get("eval_loss"), previous.get("eval_step")
    summary = {
        "status": session["stopped"], "steps": steps, "max_steps": max_steps, "tokens": tokens,
        "wall_seconds": round(sum(s["wall_seconds"] or 0 for s in sessions), 1),
        "train_loss": train_loss, "train_perplexity": perplexity(train_loss),
        "eval_loss": eval_loss, "eval_perplexity": perplexity(eval_loss), "eval_step": eval_step,
        "sessions": sessions,
    }
    temporary = os.path.join(out, f".{SUMMARY}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    os.replace(temporary, os.path.join(out, SUMMARY))
    return summary


__all__ = ["CHECKPOINTS", "SAVE_RESERVE_S", "SUMMARY", "Deadline", "checkpoint_root", "format_seconds",
           "legacy_layout", "parse_duration", "read_summary", "saved_step", "step_folders", "write_summary"]
