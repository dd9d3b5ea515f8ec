"""Compiled code: where numba caches it, and the same functions built once into a plain extension module.

tzc's loops over bytes and arrays (the quality filters' signals, the serial part's loops) are
written for numba. Through numba's just-in-time compiler a process pays about half a second before
its first compiled call, even with the code in numba's cache (its import 0.2 s, loading cached code
0.3 s), so only builds of thousands of rows could use it. :func:`build` compiles the same functions
ahead of time with ``numba.pycc`` into an extension module, once per machine for each version of
their files; :func:`load` imports it in a few milliseconds, without numba. The module runs the
code numba's compiler makes of the very same functions (the tests compare both with the Python
definitions), for the host's architecture with no CPU-specific instructions, so a shared install
serves every machine of that architecture.

Promises:

* :func:`load` never compiles and never imports numba: a module is found, or None.
* A module is named by a digest of its source files (:func:`compiled_cache`'s folder), the
  Python ABI and NumPy's major version, so an edit, another Python or another NumPy finds none.
* :func:`build` writes the module under a temporary name beside its place and renames it there,
  under a lock: processes building at once compile it once and never load half a file. The
  module's size and a digest of its ends are kept beside it and checked before each load: a
  truncated or replaced file is never loaded (a warning), and the next build replaces it. Where a
  module cannot be built (no C compiler to link it, ``numba.pycc`` gone from numba)
  :func:`build` returns None and says why on the ``tzc_data.native`` logger; callers then use
  numba's just-in-time compiler.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import sysconfig
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import xxhash

from tzc_data.files import cache_dir

_NUMBA_CONFIG = threading.RLock()  # held while numba.config.CACHE_DIR points at a tzc folder
_BUILDING = threading.Lock()  # one build at a time within a process (the file lock serves processes)
# A function's signature, written without numba: (result, (argument, ...)), each a type name: a
# scalar ("int64", "float64", "bool", "none"), "bytes" (a bytes object), an array as
# "<dtype>[<layout><ndim>]" ("uint64[A1]": any strides; "int64[C2]": C-contiguous), or a tuple of them.
Spec = tuple[Any, tuple[Any, ...]]
Exports = Callable[[], Iterable[tuple[str, Callable[..., Any], Spec]]]


def _version(sources: Sequence[Path]) -> str:
    """A digest of the files ``sources``: read again only when one's size or modification time (in
    nanoseconds) changes, since every load asks (a build's serial loops, each filter's switch)."""
    stamps = []
    for path in sorted(sources):
        stat = path.stat()
        stamps.append((path, stat.st_mtime_ns, stat.st_size))
    return _hashed(tuple(stamps))


@lru_cache(maxsize=None)
def _hashed(stamps: tuple[tuple[Path, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for path, _, _ in stamps:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _roots(sources: Sequence[Path], numba_dir: str) -> list[Path]:
    return [Path(root) for root in (numba_dir, sources[0].parent / "__pycache__", cache_dir() / "numba") if root]


def compiled_cache(sources: Sequence[Path], numba_dir: str | None = None) -> str:
    """A folder for the compiled code of ``sources`` (Python files of one folder), named by a
    digest of them all, so that an edit to any of them starts a fresh cache: numba itself notices
    only a change to a cached function's own file. Under numba's cache folder if one is set
    (``numba_dir``, by default ``numba.config.CACHE_DIR``, which ``NUMBA_CACHE_DIR`` sets), else
    beside the code (its folder's ``__pycache__``), else under :func:`~tzc_data.files.cache_dir`:
    the first that can be written. If none can, a new temporary folder, removed when the process
    exits, where each process compiles the code afresh (slow, never wrong). Not numba's own
    locations, which would keep stale code, unless numba cannot write the folder given at the
    moment it decorates (a full disk) or ``NUMBA_CACHE_LOCATOR_CLASSES`` overrides where it looks:
    numba then falls back to its own."""
    if numba_dir is None:
        from numba.core import config  # only where compiled code is wanted

        numba_dir = config.CACHE_DIR
    version = _version(sources)
    for root in _roots(sources, numba_dir):
        folder = root / f"tzc-{version}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK | os.X_OK):
            return str(folder)
    folder = tempfile.mkdtemp(prefix=f"tzc-numba-{version}-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # made just now by this process: ours
    return folder


@contextmanager
def numba_cache(folder: str) -> Iterator[None]:
    """Functions decorated with numba's ``cache=True`` inside cache in ``folder``: numba picks a
    function's cache folder when it is decorated, from ``numba.config.CACHE_DIR``, set here for that
    moment only and then put back (under a lock: two threads would otherwise restore each other's)."""
    from numba.core import config

    with _NUMBA_CONFIG:
        saved = config.CACHE_DIR
        config.CACHE_DIR = folder
        try:
            yield
        finally:
            config.CACHE_DIR = saved


def _file_name(name: str) -> str:
    return f"{name}.numpy{np.__version__.split('.')[0]}{sysconfig.get_config_var('EXT_SUFFIX')}"


def _numba_dir() -> str:
    """numba's cache folder as ``NUMBA_CACHE_DIR`` sets it, read without importing numba."""
    return os.environ.get("NUMBA_CACHE_DIR", "")


def load(name: str, sources: Sequence[Path]) -> ModuleType | None:
    """The extension module ``name`` built by :func:`build` from these ``sources``, or None if none
    has been. Looks in each of :func:`compiled_cache`'s places; compiles nothing, imports no numba."""
    version, file_name = _version(sources), _file_name(name)
    for root in _roots(sources, _numba_dir()):
        path = root / f"tzc-{version}" / file_name
        module = _import_or_none(name, path) if path.is_file() else None
        if module is not None:
            return module
    return None


def _import_or_none(name: str, path: Path) -> ModuleType | None:
    """The module at ``path``; None, said on the log, where it is not the file :func:`build` wrote
    there or does not load (a damaged or foreign file); :func:`build` then replaces it."""
    try:
        return _import(name, path)
    except ImportError as error:
        logging.getLogger(__name__).warning("tzc: %s does not load (%s); it will be built again", path, error)
        return None


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".xxh3")


def _digest(path: str | Path) -> str:
    """A module file's size and the xxh3-128 of its first and last 64 KiB (the ELF header and the
    section headers at its end): a truncated or replaced file differs. Reading the whole file
    cost 4-10 ms in a fresh process here (its memory's page faults), against 2 ms for the load."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(1 << 16)
        handle.seek(max(0, size - (1 << 16)))
        return f"{size} {xxhash.xxh3_128(head + handle.read(1 << 16)).hexdigest()}"


@lru_cache(maxsize=None)  # a success only: a failure raises
def _import(name: str, path: Path) -> ModuleType:
    """Import the module at ``path`` once it is shown to be the file :func:`build` wrote (its
    :func:`_digest`, kept beside it): a truncated library can crash the process that maps it
    (SIGBUS), so no file is handed to the loader unchecked."""
    try:
        expected = _digest_path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ImportError(f"no record of its digest ({type(error).__name__})") from error
    if _digest(path) != expected:
        raise ImportError("its size or bytes are not those tzc built there")
    spec = importlib.util.spec_from_file_location(name, path)  # the loader calls PyInit_<name>
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: not an extension module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(name: str, sources: Sequence[Path], exports: Exports) -> ModuleType | None:
    """The extension module ``name`` of ``exports()`` (name, function, :data:`Spec`: functions
    decorated with ``numba.njit``, whose ``py_func`` is compiled), built from ``sources`` unless a process
    already has; None where it cannot be built (logged, with why). The first time, numba compiles
    the functions (filling its own cache on the way) and links them: 28 s for the quality filters
    here, about as long as numba's just-in-time compiler takes to fill its cache with the same code
    (22 s), or 6 s where its cache already holds them; then as :func:`load`."""
    with _BUILDING:
        found = load(name, sources)
        if found is not None:
            return found
        folder = Path(compiled_cache(sources, _numba_dir()))
        with open(folder / f"{name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            _remove_leftovers(name, folder)
            target = folder / _file_name(name)
            if not target.is_file() or _import_or_none(name, target) is None:
                try:
                    _compile(name, exports, folder, target)
                except Exception as error:  # noqa: BLE001 (any failure: the caller compiles just in time)
                    said = " ".join(str(error).split())
                    logging.getLogger(__name__).warning(
                        "tzc: could not build the native module %s (%s: %s); using numba's just-in-time compiler",
                        name, type(error).__name__, said if len(said) <= 300 else said[:297] + "...")
                    return None
            return _import(name, target)


def _remove_leftovers(name: str, folder: Path) -> None:
    """Remove the work folders of builds of ``name`` that were killed mid-compile: folders
    :func:`_compile` made here (``.<name>-`` and mkdtemp's 8 characters). Called under the lock,
    which every build holds while its folder exists, so none of them is in use."""
    pattern = re.compile(rf"\.{re.escape(name)}-[a-z0-9_]{{8}}")
    for entry in os.scandir(folder):
        if pattern.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)  # ours: see above


def _compile(name: str, exports: Exports, folder: Path, target: Path) -> None:
    """Compile ``exports`` with ``numba.pycc`` into a new folder beside ``target``, then rename the
    module onto ``target``; the new folder (made here) is removed either way."""
    with warnings.catch_warnings():  # pycc has been "pending deprecation" since numba 0.57; numba is pinned
        warnings.simplefilter("ignore")
        from numba.pycc import CC  # only where a module is built

    work = tempfile.mkdtemp(prefix=f".{name}-", dir=folder)
    try:
        compiler = CC(name)
        compiler.output_dir = work
        compiler.output_file = target.name
        compiler.verbose = False
        for export, function, spec in exports():
            compiler.export(export, numba_signature(spec))(function.py_func)
        compiler.compile()
        built = os.path.join(work, target.name)
        with open(os.path.join(work, "digest"), "w", encoding="ascii") as out:
            out.write(_digest(built) + "\n")
        os.replace(os.path.join(work, "digest"), _digest_path(target))  # a digest without its module: rebuilt
        os.replace(built, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # made just now by mkdtemp: ours


def _numba_type(name: Any) -> Any:
    from numba import types

    if isinstance(name, tuple):
        return types.Tuple(tuple(map(_numba_type, name)))  # a UniTuple where all are one type, as numba infers
    if name == "bytes":
        return types.Bytes(types.uint8, 1, "C", readonly=True)
    if array := _array(name):
        dtype, layout, ndim = array
        return types.Array(_numba_type(dtype), ndim, layout)
    return {"bool": types.boolean, "none": types.none}.get(name) or getattr(types, name)


def _array(name: str) -> tuple[str, str, int] | None:
    """An array's type name (``"uint64[A1]"``) as its dtype, layout and dimensions; None for another."""
    if not name.endswith("]"):
        return None
    dtype, shape = name[:-1].split("[")
    return dtype, shape[0], int(shape[1:])


def numba_signature(spec: Spec) -> Any:
    """numba's signature of ``spec``."""
    result, arguments = spec
    return _numba_type(result)(*map(_numba_type, arguments))


def matches(spec: Spec, arguments: Sequence[Any]) -> bool:
    """Whether ``arguments`` are of ``spec``'s types, so that its exported function reads them as
    numba's just-in-time function would: the module converts what it is given to the declared
    types without the dispatcher's checks (an int64 array read as float64, strides ignored)."""
    names = spec[1]
    return len(arguments) == len(names) and all(map(_matches, names, arguments))


def _matches(name: str, value: Any) -> bool:
    if array := _array(name):
        dtype, layout, ndim = array
        return isinstance(value, np.ndarray) and value.dtype == np.dtype(dtype) and value.ndim == ndim \
            and (layout == "A" or value.flags.c_contiguous) and value.dtype.isnative
    if name == "bytes":
        return type(value) is bytes
    if name in ("int64", "bool"):
        return isinstance(value, (int, np.integer)) and -2**63 <= value < 2**63
    return isinstance(value, (float, int, np.floating, np.integer))
