"""The data a run reads: this host's share of the train batches, the feed tunix draws them from, the eval set.

One step is ``--batch-size`` x ``--grad-accum`` packed rows (the effective batch); each host reads
its share (``tzc_data.batches`` with ``shard_index = jax.process_index()``, :func:`host_batches`),
so the rows of a step do not depend on the number of hosts. Several ``--data`` builds are a mixture
(``tzc_data.mixture``) by ``--data-weights``; an epoch is their packed rows together.

:class:`Feed` is the train iterator tunix reads: it hands out the batches until the session's
clock (:class:`tzc_train.session.Deadline`) says the next step could not finish and be saved in
time, and counts the tokens it handed out. On several hosts every host takes process 0's decision
(:func:`agreement`).

The eval set (:func:`eval_set`) is a fixed subset of the eval split, the same at every eval and in
every session; a mixture evaluates on the mixture of its builds' eval splits.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

import tzc_data
from tzc_train.config import TrainConfig
from tzc_train.session import Deadline


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


@dataclass
class Feed:
    """The train iterator tunix reads: hands out ``batches`` until ``deadline`` nears.

    Counts the non-padding tokens of every batch it hands out (also the ones tunix skips on
    resume, which are the earlier sessions' steps): ``tokens(k)`` is the number in the first ``k``.
    The step time it budgets is the longest interval between two requests after the first
    (the first holds the step's compilation), or that first one while it is all there is. On a
    resume, the ``skip`` batches tunix draws and discards to reach the checkpoint's step are not
    timed: the first interval after them is the one that holds the compilation.
    """

    batches: Iterator[dict[str, np.ndarray]]
    deadline: Deadline
    agree: Callable[[bool], bool] | None = None  # multi-host: every host takes process 0's decision
    skip: int = 0  # batches already trained on (a resumed run's checkpoint step)
    stopped: str | None = None
    _cumulative: list[int] = field(default_factory=lambda: [0])
    _first: float | None = None  # the first interval (compilation), then the longest since
    _longest: float | None = None
    _last: float | None = None

    def __iter__(self) -> Feed:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        served = len(self._cumulative) - 1
        if served >= self.skip and not self._go_on():
            self.stopped = "time limit"
            raise StopIteration
        try:
            batch = next(self.batches)
        except StopIteration:
            self.stopped = "end of data"
            raise
        self._cumulative.append(self._cumulative[-1] + int(np.count_nonzero(batch["segment_ids"])))
        if served >= self.skip:
            self._last = self.deadline.clock()
        return batch

    def _go_on(self) -> bool:
        """Whether the next step still fits; times the interval since the last batch handed out."""
        now = self.deadline.clock()
        if self._last is not None:
            if self._first is None:
                self._first = now - self._last
            else:
                self._longest = max(self._longest or 0.0, now - self._last)
        step = self._longest if self._longest is not None else (self._first or 0.0)
        go_on = self.deadline.leaves_room_for(step)
        return self.agree(go_on) if self.agree is not None else go_on

    def tokens(self, steps: int) -> int:
        """Non-padding tokens in the first ``steps`` batches handed out."""
        return self._cumulative[min(steps, len(self._cumulative) - 1)]


def agreement():
    """How hosts agree to stop for the time limit: all as process 0 decides (one host stopping
    alone would leave the others waiting in a collective). None on one host."""
    if jax.process_count() == 1:
        return None
    from jax.experimental import multihost_utils

    return lambda go_on: bool(multihost_utils.broadcast_one_to_all(np.asarray(go_on)))


__all__ = ["Feed", "agreement", "check_batch", "check_build", "eval_set", "host_batches", "mixture_eval_set",
           "split_rows"]
