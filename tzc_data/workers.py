"""Run a per-row function over a row range in worker processes; get the results in row order.

``--workers N``: the build's per-row stages (read, hash, split, filters, format, tokenize, length
bound) look at one row at a time, so they can run anywhere; the dedup stages that follow depend on
every row before, so they stay in the main process. This module cuts ``[start, stop)`` into
chunks, hands them to ``N`` processes, keeps at most ``ahead`` chunks per process in flight (memory
stays flat however far the workers could run ahead) and yields each chunk's examples in row order.
The output is therefore the same as with one process, byte for byte (a test checks it).

Processes are spawned, not forked: the parent may already run threads (SentencePiece, tqdm), and
a fork would copy their locks. Each worker runs ``setup(*setup_args)`` once (load the tokenizer,
open the source) and then ``work(lo, hi)`` per chunk.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from tzc_data.errors import TzcError
from tzc_data.record import Example

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def ordered_chunks(work: Callable[[int, int], list[Example]], start: int, stop: int, *, workers: int,
                   setup: Callable[..., None], setup_args: tuple[Any, ...], chunk_rows: int = 256,
                   ahead: int = 2) -> Iterator[Example]:
    """Every example of ``work(lo, hi)`` over ``[start, stop)`` in chunks of ``chunk_rows``, in order."""
    context = multiprocessing.get_context("spawn")
    bounds = ((lo, min(lo + chunk_rows, stop)) for lo in range(start, stop, chunk_rows))
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(os.getpid(), setup, setup_args)) as pool:
        pending: deque[tuple[int, Future]] = deque()
        for lo, hi in bounds:
            pending.append((lo, pool.submit(work, lo, hi)))
            if len(pending) >= workers * ahead:
                yield from _result(*pending.popleft())
        while pending:
            yield from _result(*pending.popleft())


def _start_worker(parent: int, setup: Callable[..., None], setup_args: tuple[Any, ...]) -> None:
    """Die with the parent: a build killed with SIGKILL (or the OOM killer) cannot shut its pool
    down, and its workers would otherwise wait on their queue for ever (seen: they outlived it)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # no prctl: the worker only lingers
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    setup(*setup_args)


def _result(lo: int, future: Future) -> list[Example]:
    try:
        return future.result()
    except BrokenProcessPool as err:
        raise TzcError(f"a worker process died while handling rows from {lo} (out of memory?): {err}; "
                       "run again with --resume, or with fewer --workers") from None
