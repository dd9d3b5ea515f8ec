"""Settings of a process tzc owns: the ``tzc-data`` command, and the worker processes of
``--engine processes``. Never made on ``import tzc_data``: a library import changes no
process-wide setting, so a notebook that calls :func:`tzc_data.build.pipeline.build` keeps its own.

Two settings, each made before the library it concerns loads:

- **Arrow's allocator.** Arrow's default (mimalloc) keeps the memory of every table a build writes
  and reads back: peak RSS grew by about 1 KB per row; the system allocator gives it back. Arrow
  reads ``ARROW_DEFAULT_MEMORY_POOL`` once, when it loads: only before that, and only when the user
  has not chosen a pool.
- **Imports nobody asked for.** Where pandas is installed, pyarrow imports it (0.18 s) on its first
  array built from Python values, only to ask whether they are pandas objects; where SciPy is,
  numba imports ``scipy.linalg`` and with it NumPy's f2py (0.21 s) the first time it loads compiled
  code, only to see whether ``np.dot`` has a BLAS. tzc gives pyarrow no pandas object and compiles
  no linear algebra: a ``tzc-data`` process refuses both imports, and the libraries go on without
  them, as where neither is installed. On a one-row build that is 0.4 s of 0.8 s with the compiled
  filters, 0.18 s of 0.6 s without (docs/benchmarks.md, section 13). A process that has already
  imported one of them keeps it, and a part of tzc that needs one lifts its refusal first
  (:func:`allow`: ``--engine ray``, whose Ray Data imports pandas).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

REFUSED = ("pandas", "scipy")  # top-level packages a tzc process does not import


class RefusedImports:
    """An import finder that refuses ``names`` (top-level packages) and everything under them,
    as an import of a package that is not installed fails: with :class:`ModuleNotFoundError`."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = set(names)

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (a tzc process does not import it)", name=name)


def own_process(refuse: Sequence[str] = REFUSED) -> None:
    """Make this process's settings (module docstring). Idempotent; refuses only what this process
    has not imported yet."""
    if "pyarrow" not in sys.modules:
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    names = [name for name in refuse if name not in sys.modules]
    if names and not any(isinstance(finder, RefusedImports) for finder in sys.meta_path):
        sys.meta_path.insert(0, RefusedImports(names))


def allow(*names: str) -> None:
    """Lift :func:`own_process`'s refusal of ``names`` in this process (a no-op where it made none).
    pyarrow and numba then use them as where they were importable from the start."""
    for finder in sys.meta_path:
        if isinstance(finder, RefusedImports):
            finder.names.difference_update(names)
