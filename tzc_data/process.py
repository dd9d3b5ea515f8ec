"""Settings of a process tzc owns: the ``tzc-data`` command (:func:`tzc_data.cli.run`). Never made
on ``import tzc_data`` or by :func:`tzc_data.cli.main`: a library call changes no process-wide
setting, so a notebook that calls :func:`tzc_data.build.pipeline.build` keeps its own, and so do
the workers its engines start.

Three settings, the first two made before the library they concern loads:

- **Arrow's allocator.** Arrow's default (mimalloc) keeps the memory of every table a build writes
  and reads back: peak RSS grew by about 1 KB per row; the system allocator gives it back. Arrow
  reads ``ARROW_DEFAULT_MEMORY_POOL`` once, when it loads: only before that, and only when the user
  has not chosen a pool. Worker processes inherit it with the environment.
- **Imports nobody asked for.** Where pandas is installed, pyarrow imports it (0.18 s) on its first
  array built from Python values, only to ask whether they are pandas objects; where SciPy is,
  numba imports ``scipy.linalg`` and with it NumPy's f2py (0.21 s) the first time it loads compiled
  code, only to see whether ``np.dot`` has a BLAS. tzc gives pyarrow no pandas object and compiles
  no linear algebra: a ``tzc-data`` process refuses both imports, and the libraries go on without
  them, as where neither is installed (an import fails with :class:`ModuleNotFoundError`; a probe
  with ``importlib.util.find_spec`` raises it too, where a missing package gives None: none of the
  libraries a build loads probes so). The workers of ``--engine processes`` refuse what their
  parent refuses (:func:`refused`, :func:`refuse`). A process that has already imported one of
  them keeps it, and a part of tzc that needs one lifts its refusal first (:func:`allow`:
  ``--engine ray``, whose Ray Data imports pandas). docs/benchmarks.md, section 14: a one-row build
  0.65 s -> 0.41 s, a 5,000-row build that loads the compiled filters 4.1 -> 3.5 CPU s.
- **Ctrl-C once.** The first SIGINT stops the build (one line, resumable); later ones are ignored
  while it stops its workers (:func:`interrupt_once`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterable
from typing import Any

REFUSED = ("pandas", "scipy")  # top-level packages a tzc process does not import
REIMPORTED_EXIT = 3  # the exit code of a spawned worker that met a build in its parent's script (not_reimported)
REIMPORTED = ("a worker process of --engine processes runs the script that started the build again, and that "
              "script starts the build as it runs: put the script's top level under "
              "`if __name__ == \"__main__\":`")


class RefusedImports:
    """An import finder that refuses ``names`` (top-level packages) and everything under them,
    as an import of a package that is not installed fails: with :class:`ModuleNotFoundError`."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = set(names)

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (a tzc process does not import it)", name=name)


def own_process() -> None:
    """Make this process's settings (module docstring). Idempotent."""
    if "pyarrow" not in sys.modules:
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    refuse(REFUSED)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, interrupt_once)


def interrupt_once(signum: int, frame: Any) -> None:
    """SIGINT's handler in a tzc process: KeyboardInterrupt the first time, and from then on the
    signal is ignored. A second Ctrl-C while the first stops the workers (killed at once: under a
    second) would cut that short, with a traceback from the middle of the clean-up, or leave the
    process waiting for ever on a worker's lock; SIGTERM and SIGKILL still end it, resumable."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def refuse(names: Iterable[str]) -> None:
    """Refuse to import ``names`` from now on, those this process has not imported yet."""
    names = [name for name in names if name not in sys.modules]
    if not names:
        return
    finder = next((f for f in sys.meta_path if isinstance(f, RefusedImports)), None)
    if finder is None:
        sys.meta_path.insert(0, RefusedImports(names))
    else:
        finder.names.update(names)


def refused() -> tuple[str, ...]:
    """What this process refuses to import: what its workers refuse too."""
    return tuple(sorted({name for f in sys.meta_path if isinstance(f, RefusedImports) for name in f.names}))


def allow(*names: str) -> None:
    """Lift the refusal of ``names`` in this process (a no-op where it made none). pyarrow and
    numba then use them as where they were importable from the start."""
    for finder in sys.meta_path:
        if isinstance(finder, RefusedImports):
            finder.names.difference_update(names)


def not_reimported() -> None:
    """Exit with one line (:data:`REIMPORTED`, exit code :data:`REIMPORTED_EXIT`) where this process
    is a spawned worker still running its parent's script: ``spawn`` runs it again in every worker
    (as ``__mp_main__``) before the worker reads its task, and a build started from the script's
    top level would start workers of its own, which multiprocessing refuses with a traceback in
    each worker. The flag read is the one multiprocessing checks; a process that never imported
    multiprocessing is no spawned worker (and does not import it here: 8 ms).
    """
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is not None and getattr(multiprocessing.current_process(), "_inheriting", False):
        print(f"tzc: {REIMPORTED}", file=sys.stderr, flush=True)
        raise SystemExit(REIMPORTED_EXIT)
