"""Engines: run a row stage over a build's units, here or in worker processes.

The seam is one method, :meth:`Executor.run`: call ``stage(unit)`` for every unit (the stage
writes the unit's files and returns its done-marker, :mod:`tzc_data.units`) and yield the
markers as units finish. Nothing flows back but the marker: tokens and stats stay in the unit's
files, so an engine ships only the stage (once per worker) and the units. The output is the same
for every engine and worker count because the units' files are a pure function of the unit, and
everything after them runs in one process, in unit order.

- ``local``: one process, units in order.
- ``processes``: ``--workers N`` spawned processes (spawned, not forked: the parent may already
  run threads, SentencePiece's or tqdm's, and a fork would copy their locks). Each gets the stage
  once and then units through a queue, at most two a worker in flight. A worker dies with the
  build (a build killed with SIGKILL cannot stop its pool), and a worker that dies (the OOM
  killer) fails the build with one line; its unit has no marker, so ``--resume`` redoes it.
- ``ray``: Ray Data on a Ray cluster or a local instance (:mod:`tzc_data.ray_engine`, the extra
  ``tzc[ray]``; imported only when chosen).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any

from tzc_data.config import ENGINES
from tzc_data.errors import TzcError
from tzc_data.units import UnitDone

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Executor:
    """An engine: :meth:`run` maps the row stage over units; :meth:`map` runs other independent
    tasks (one per output shard), here one after another unless an engine does better."""

    def run(self, stage: Callable[[Any], UnitDone], units: Sequence[Any]) -> Iterator[UnitDone]:
        """``stage(unit)`` for every unit; the markers as the units finish (in any order)."""
        raise NotImplementedError

    def map(self, task: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``[task(item) for item in items]``, in order."""
        return [task(item) for item in items]

    def close(self) -> None:
        """Let go of what the engine holds between :meth:`run` and :meth:`map` (a Ray connection)."""


class LocalExecutor(Executor):
    def run(self, stage: Callable[[Any], UnitDone], units: Sequence[Any]) -> Iterator[UnitDone]:
        for unit in units:
            yield stage(unit)


class ProcessExecutor(Executor):
    def __init__(self, workers: int, *, ahead: int = 2):
        self.workers, self.ahead = workers, ahead

    def map(self, task: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """The tasks in ``workers`` spawned processes; results in order."""
        if len(items) < 2:
            return [task(item) for item in items]
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(min(self.workers, len(items)), mp_context=context, initializer=_die_with,
                                   initargs=(os.getpid(),))
        try:
            with _children_ignore_sigint():  # the pool starts its processes as the tasks are submitted
                results = pool.map(task, items)
            done = list(results)
        except BrokenProcessPool:
            raise TzcError("a worker process died while writing shards (out of memory?); run again with "
                           "--resume, or with fewer --workers") from None
        except BaseException:  # Ctrl-C: do not wait for the shards in flight (the workers die with us)
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        return done

    def run(self, stage: Callable[[Any], UnitDone], units: Sequence[Any]) -> Iterator[UnitDone]:
        if not units:
            return
        context = multiprocessing.get_context("spawn")
        tasks, results = context.Queue(), context.Queue()
        count = min(self.workers, len(units))
        pool = [context.Process(target=_serve, args=(os.getpid(), stage, tasks, results), daemon=True)
                for _ in range(count)]
        with _children_ignore_sigint():
            for process in pool:
                process.start()
        finished = False
        try:
            pending = iter(units)
            in_flight: dict[int, Any] = {}
            for unit in _take(pending, count * self.ahead):
                tasks.put(unit)
                in_flight[unit.index] = unit
            while in_flight:
                index, done, failure = _next_result(results, pool, in_flight)
                unit = in_flight.pop(index)
                if failure is not None:
                    raise failure
                for more in _take(pending, 1):
                    tasks.put(more)
                    in_flight[more.index] = more
                yield done
            finished = True
        finally:
            for _ in pool:
                tasks.put(None)
            for process in pool:
                if finished:  # idle now: they stop when told; after a failure or Ctrl-C, at once
                    process.join(timeout=5)
                if process.is_alive():
                    process.kill()
                    process.join()
            tasks.close()
            results.close()


def executor(engine: str, workers: int, *, ray_address: str | None = None) -> Executor:
    """The engine ``--engine`` names (``processes`` with ``--workers N``; ``ray`` with
    ``--ray-address`` and, when given, ``--workers N`` actors)."""
    if engine == "local":
        return LocalExecutor()
    if engine == "processes":
        return ProcessExecutor(workers)
    if engine == "ray":  # imported here: tzc_data imports without Ray installed
        from tzc_data.ray_engine import RayExecutor

        return RayExecutor(address=ray_address, actors=workers or None)
    raise TzcError(f"--engine {engine!r}: choose one of {', '.join(ENGINES)}")


def _take(units: Iterator[Any], n: int) -> list[Any]:
    return [unit for _, unit in zip(range(n), units)]


def _next_result(results: Any, pool: list[Any], in_flight: dict[int, Any]) -> tuple[int, Any, BaseException | None]:
    """The next finished unit; a worker that died fails the build naming a unit it may have held."""
    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            dead = [p for p in pool if not p.is_alive()]
            if dead:
                where = ", ".join(u.where for u in list(in_flight.values())[:2])
                raise TzcError(f"a worker process died (exit code {dead[0].exitcode}; out of memory?) while units "
                               f"were in flight ({where}); run again with --resume, or with fewer --workers") from None


@contextmanager
def _children_ignore_sigint() -> Iterator[None]:
    """Processes started inside ignore SIGINT (an ignored signal stays ignored through the exec of
    a spawned child, and Python keeps it so): a Ctrl-C interrupts the build, which stops its
    workers, instead of raising KeyboardInterrupt with a traceback in every worker."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _die_with(parent: int) -> None:
    """Make this worker die with ``parent`` (a build killed with SIGKILL cannot stop its workers)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # no prctl: the worker only lingers
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _serve(parent: int, stage: Callable[[Any], UnitDone], tasks: Any, results: Any) -> None:
    """A worker's life: die with the parent, then run units until told to stop."""
    _die_with(parent)
    while (unit := tasks.get()) is not None:
        results.put((unit.index, *run_unit(stage, unit)))


def run_unit(stage: Callable[[Any], UnitDone], unit: Any) -> tuple[UnitDone | None, BaseException | None]:
    """``stage(unit)`` in a worker: its marker, or the error to raise in the build's process.

    A user-facing error (one line) or the file system's travels as it is, as in one process; a
    bug becomes a RuntimeError that keeps the worker's traceback in its message (a traceback does
    not survive pickling)."""
    try:
        return stage(unit), None
    except (TzcError, OSError) as err:
        return None, err
    except Exception as err:
        text = "".join(traceback.format_exception(err)).rstrip()
        return None, RuntimeError(f"{unit.where}: a worker failed:\n{text}")
