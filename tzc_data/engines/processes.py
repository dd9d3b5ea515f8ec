"""``--engine processes``: ``--workers N`` spawned processes on this machine.

Spawned, not forked: the parent may already run threads, SentencePiece's or tqdm's, and a fork
would copy their locks. Each worker gets the stage once and then units through a queue, at most
two a worker in flight. A worker dies with the build (a build killed with SIGKILL cannot stop its
pool), and a worker that dies (the OOM killer) fails the build with one line; its unit has no
marker, so ``--resume`` redoes it. Ctrl-C stops the build, not every worker with a traceback.
A script that starts a build must do it under ``if __name__ == "__main__":``, since each spawned
worker runs the script again; one that does not fails in one line from the worker and one from
the build (:func:`tzc_data.process.not_reimported`), not with multiprocessing's tracebacks.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any

from tzc_data.engines.base import Executor, run_unit
from tzc_data.errors import TzcError
from tzc_data.files import unnamed_file
from tzc_data.process import REIMPORTED, REIMPORTED_EXIT, refuse, refused

if TYPE_CHECKING:
    from tzc_data.build.units import UnitDone

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ProcessExecutor(Executor):
    def __init__(self, workers: int, *, ahead: int = 2):
        self.workers, self.ahead = workers, ahead

    def map(self, task: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """The tasks in ``workers`` spawned processes; results in order."""
        if len(items) < 2:
            return [task(item) for item in items]
        _check_main()
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(min(self.workers, len(items)), mp_context=context, initializer=_die_with,
                                   initargs=(os.getpid(), refused()))
        workers: list[Any] = []  # taken once they start: the pool may forget them before a break reaches us
        try:
            with _children_ignore_sigint():  # the pool starts its processes as the tasks are submitted
                futures = [pool.submit(task, item) for item in items]  # not pool.map: see below
            workers = _processes_of(pool)
            done = [future.result() for future in futures]
        except BrokenProcessPool:
            pool.shutdown()  # every worker joined: their exit codes are known
            if any(p.exitcode == REIMPORTED_EXIT for p in workers):
                raise TzcError(REIMPORTED) from None
            raise TzcError("a worker process died while writing shards (out of memory?); run again with "
                           "--resume, or with fewer --workers") from None
        except BaseException:  # Ctrl-C: do not wait for the shards in flight; their files are temporary ones
            # Killed, not cancelled: the pool fails the futures left when it finds its workers dead,
            # and it cannot fail a cancelled one (InvalidStateError, with a traceback, in its thread;
            # pool.map's results cancel theirs when dropped).
            pool.shutdown(wait=False)
            for process in workers or _processes_of(pool):
                process.kill()
            raise
        pool.shutdown()
        return done

    def run(self, stage: Callable[[Any], UnitDone], units: Sequence[Any]) -> Iterator[UnitDone]:
        if not units:
            return
        _check_main()
        # The stage reaches the workers through a file, not as their argument: spawn writes a worker's
        # arguments into a pipe whose reading end it holds too, so a worker that exits before it reads
        # them (one that meets the build in the script it runs again, or dies at start) would leave
        # the build waiting for ever on a stage of megabytes.
        with unnamed_file(ForkingPickler.dumps(stage), "tzc-stage-") as path:
            yield from self._run(path, units)

    def _run(self, stage_path: str, units: Sequence[Any]) -> Iterator[UnitDone]:
        context = multiprocessing.get_context("spawn")
        tasks, results = context.Queue(), context.Queue()
        count = min(self.workers, len(units))
        args = (os.getpid(), refused(), stage_path, tasks, results)
        pool = [context.Process(target=_serve, args=args, daemon=True) for _ in range(count)]
        finished = False
        try:
            with _children_ignore_sigint():
                for process in pool:
                    process.start()
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


def _processes_of(pool: ProcessPoolExecutor) -> list[Any]:
    """The pool's worker processes, for their exit codes or to kill them: it keeps them in a private
    dict (CPython 3.8-3.13); none where it does not."""
    return list((getattr(pool, "_processes", None) or {}).values())


def _check_main() -> None:
    """Refuse, in one line, to spawn workers that could not start: ``spawn`` runs the parent's
    script again in each worker, from its file, and a script read from standard input (``python -``)
    or from a file since removed has none: each worker would fail with a traceback."""
    main = sys.modules.get("__main__")
    where = getattr(main, "__file__", None) if getattr(main, "__spec__", None) is None else None
    if where is not None and not os.path.isfile(where):
        raise TzcError(f"--engine processes cannot start its workers from this script ({where}): each worker runs "
                       "the script again, from its file; save it to a file, or use --engine local")


def _take(units: Iterator[Any], n: int) -> list[Any]:
    return [unit for _, unit in zip(range(n), units)]


def _next_result(results: Any, pool: list[Any], in_flight: dict[int, Any]) -> tuple[int, Any, BaseException | None]:
    """The next finished unit; a worker that died fails the build naming a unit it may have held."""
    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            dead = [p for p in pool if not p.is_alive()]
            if any(p.exitcode == REIMPORTED_EXIT for p in dead):
                raise TzcError(REIMPORTED) from None
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


def _die_with(parent: int, imports: tuple[str, ...]) -> None:
    """Make this worker die with ``parent`` (a build killed with SIGKILL cannot stop its workers),
    and refuse the ``imports`` the parent refuses (:mod:`tzc_data.process`: none where the parent
    is a library call, pandas and SciPy where it is the ``tzc-data`` command)."""
    refuse(imports)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # no prctl: the worker only lingers
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _serve(parent: int, imports: tuple[str, ...], stage_path: str, tasks: Any, results: Any) -> None:
    """A worker's life: die with the parent, read the stage, then run units until told to stop."""
    _die_with(parent, imports)
    with open(stage_path, "rb") as handle:
        stage = pickle.load(handle)
    while (unit := tasks.get()) is not None:
        results.put((unit.index, *run_unit(stage, unit)))
