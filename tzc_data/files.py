"""What tzc may write and what it may delete: the one module that removes files.

Promises, each checked here rather than at the call sites:

- **Nothing is written in place.** Every output file is written under a temporary name in its
  final directory and renamed over the final name once complete (:func:`atomic_path`), so a
  reader sees the old file or the new one, never half of one.
- **Only a tzc build is ever replaced.** A directory is a build when its ``manifest.json`` is a
  tzc manifest and every entry in it is one that a build writes (:func:`not_a_build` says why
  not). Replacing one removes exactly those entries (:func:`remove_build`), never a folder
  wholesale: a user's ``thesis.txt`` beside a stray ``manifest.json`` makes the folder not a
  build, and it is refused, not emptied.
- **One writer per output.** A build holds an exclusive lock on its staging directory
  (:func:`lock_staging`) for its whole life; a second build into the same ``--out`` is refused,
  naming the first one's pid. Staging directories carry a marker, so a folder that merely has
  the staging name is never taken for ours.
- **What is removed wholesale is what this process made.** Only a temporary folder it created
  itself for compiled code (:func:`compiled_cache`), at its exit.
- **No command writes over a build.** :func:`check_output_file` refuses an output path inside
  a build directory (``report -o BUILD/manifest.json``).
- **A private temporary file has no name for long.** :func:`unnamed_file` makes one with
  ``mkstemp`` and removes its name as soon as it is written, where the process's descriptor can be
  opened by path (Linux's ``/proc``), else on the way out: a killed process leaves nothing.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import xxhash

from tzc_data.errors import OutputError

MANIFEST = "manifest.json"
STAGING_MARKER = ".tzc-staging.json"
UNITS_DIR = ".units"  # a build's units (tzc_data.build.units): scratch, gone once the manifest is written

# Every entry a finished build may hold: top-level names, and for each folder the names inside it.
_BUILD_FILES = frozenset({MANIFEST, "prompt_hashes.bin", "near_dup.bin"})
_BUILD_FOLDERS = {
    "shards": re.compile(r"[a-z][a-z0-9_]*-\d{5}-of-\d{5}\.array_record"),
    "stats": re.compile(r"(records|packs)\.parquet"),
    "rejected": re.compile(r"rejected\.parquet"),
}
# What else a staging directory holds: the units' files (tzc_data.build.units) and atomic_path's temporaries.
_UNIT_FILE = re.compile(r"u\d{6,}\.(arrow|tokens|json)|plan\.json")
_TEMPORARY = re.compile(r"\..+\.tzc-tmp-\d+")


@contextmanager
def unnamed_file(data: bytes, prefix: str) -> Iterator[str]:
    """A path from which other processes of this machine read ``data``, while this block runs:
    a file of this process's own in the temporary folder (``mkstemp``: created here, mode 0600).
    Where ``/proc/<pid>/fd`` opens this process's descriptor of it, its name is removed at once and
    that path is given: the file lives only while this process does, so even SIGKILL leaves
    nothing. Elsewhere the name is given, and removed on the way out. Raises :class:`OutputError`
    naming the folder or file that could not be written."""
    import tempfile

    try:
        handle, path = tempfile.mkstemp(prefix=prefix)
    except OSError as err:
        raise OutputError(f"cannot write a temporary file in {tempfile.gettempdir()}: {err.strerror}; set TMPDIR "
                          "to a folder with room") from None
    named = True
    try:
        try:
            with os.fdopen(handle, "wb", closefd=False) as out:
                out.write(data)
        except OSError as err:
            raise OutputError(f"cannot write the temporary file {path}: {err.strerror}; set TMPDIR to a folder "
                              "with room") from None
        held = f"/proc/{os.getpid()}/fd/{handle}"
        if os.path.exists(held):
            os.remove(path)
            named, path = False, held
        yield path
    finally:
        os.close(handle)
        if named:
            os.remove(path)


@contextmanager
def atomic_path(path: str, *, durable: bool = True) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed to ``path``,
    on failure removed. For writers that want a file name (Parquet, ArrayRecord, numpy).
    ``durable=False`` skips the fsync: for files that something written later makes durable
    (a unit's files: :func:`tzc_data.build.units.write_markers` syncs them before their marker)."""
    folder, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(folder, f".{name}.tzc-tmp-{os.getpid()}")
    try:
        yield temporary
        if durable:
            fd = os.open(temporary, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.remove(temporary)
        raise


def sync_folder(path: str) -> None:
    """Make every file written so far on ``path``'s file system durable: one ``syncfs`` (Linux)
    for many files, where an fsync each cost about 10 ms a file; ``os.sync`` elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
    except (OSError, AttributeError):
        os.sync()
        return
    try:
        if getattr(libc, "syncfs", None) is None or libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str, mode: str = "w", **kwargs) -> Iterator:
    """``open`` for writing, through :func:`atomic_path`."""
    with atomic_path(path) as temporary:
        with open(temporary, mode, **kwargs) as handle:
            yield handle


def _read_marker_manifest(path: str) -> str | None:
    """None when ``path/manifest.json`` is a tzc manifest, else why not."""
    manifest = os.path.join(path, MANIFEST)
    if os.path.islink(manifest) or not os.path.isfile(manifest):
        return f"it has no {MANIFEST}"
    try:
        with open(manifest, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return f"its {MANIFEST} is not readable JSON"
    if not isinstance(data, dict) or "tzc_version" not in data or "format_version" not in data:
        return f"its {MANIFEST} is not a tzc manifest"
    return None


def _listed_sizes(path: str) -> dict[str, int | None]:
    """The files a manifest says its build holds, with their recorded sizes where it records one."""
    with open(os.path.join(path, MANIFEST), encoding="utf-8") as handle:
        manifest = json.load(handle)
    listed: dict[str, int | None] = {MANIFEST: None}
    for entry in manifest.get("shards") or []:
        listed[entry["file"]] = entry.get("bytes")
    for name, entry in (manifest.get("stats") or {}).items():
        listed[name] = entry.get("bytes")
    for key in ("hashes", "near_dup"):
        if isinstance(manifest.get(key), dict):
            listed[manifest[key]["file"]] = None
    return listed


def not_a_build(path: str) -> str | None:
    """None when ``path`` is provably a finished tzc build (see the module docstring), else the
    reason it is not, for an error message: a tzc manifest, and every file in the folder one
    that a build writes and that the manifest lists (with its recorded size)."""
    if os.path.islink(path) or not os.path.isdir(path):
        return "it is not a directory"
    why = _read_marker_manifest(path)
    if why:
        return why
    try:
        listed = _listed_sizes(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"its {MANIFEST} does not list its files"
    stray = stray_entry(path, listed)
    if stray:
        return stray
    for relative, size in listed.items():
        full = os.path.join(path, relative)
        if size is not None and os.path.isfile(full) and os.path.getsize(full) != size:
            return f"its {relative} is not the size its {MANIFEST} records"
    return None


def stray_entry(path: str, listed: dict[str, int | None] | None = None) -> str | None:
    """Why the build folder ``path`` holds something besides its build (a file a build does not
    write, or one its manifest does not list), or None. ``verify`` reports it too."""
    listed = _listed_sizes(path) if listed is None else listed
    try:
        for relative, is_folder in _entries(path):
            if not is_folder and relative != STAGING_MARKER and relative not in listed:
                return f"it holds {relative!r}, which its {MANIFEST} does not list"
    except _NotOurs as why:
        return f"it holds {why}, which a build does not write"
    return None


class _NotOurs(Exception):
    """An entry that a build does not write (its name, quoted, as the message)."""


def _entries(path: str, *, staging: bool = False) -> list[tuple[str, bool]]:
    """Every entry under the build folder ``path`` as (relative path, is a folder), each folder after
    its contents; raises :class:`_NotOurs` naming the first one a build does not write. A
    ``staging`` folder (a build in progress) may also hold ``.units/`` and atomic_path's
    temporaries. The marker a staging folder carries until its rename is one of them either way."""
    folders = {**_BUILD_FOLDERS, UNITS_DIR: _UNIT_FILE} if staging else _BUILD_FOLDERS
    found: list[tuple[str, bool]] = []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        plain_file = os.path.isfile(full) and not os.path.islink(full)
        if plain_file and (name in _BUILD_FILES or name == STAGING_MARKER or staging and _TEMPORARY.fullmatch(name)):
            found.append((name, False))
            continue
        pattern = folders.get(name)
        if pattern is None or os.path.islink(full) or not os.path.isdir(full):
            raise _NotOurs(repr(name))
        for inner in sorted(os.listdir(full)):
            item = os.path.join(full, inner)
            if not (pattern.fullmatch(inner) or staging and _TEMPORARY.fullmatch(inner)) or os.path.islink(item) \
                    or not os.path.isfile(item):
                raise _NotOurs(f"{name}/{inner!r}")
            found.append((f"{name}/{inner}", False))
        found.append((name, True))
    return found


def _staging_entries(path: str) -> list[tuple[str, bool]]:
    """:func:`_entries` of a staging folder, or OutputError naming what a build does not write there:
    emptying one never removes a file that is not ours, whatever its marker says."""
    try:
        return _entries(path, staging=True)
    except _NotOurs as why:
        raise OutputError(f"{path} holds {why}, which a build does not write; move it away") from None


def remove_build(path: str) -> None:
    """Delete a finished build: only the files a build writes, then its (now empty) folders.
    Refuses anything that :func:`not_a_build` does not accept."""
    why = not_a_build(path)
    if why:
        raise OutputError(f"{path} is not a tzc build ({why}); refusing to delete it")
    _remove(path, [entry for entry in _entries(path) if entry[0] != MANIFEST])
    os.remove(os.path.join(path, MANIFEST))  # last: until now the folder still says what it is
    os.rmdir(path)


def _remove(path: str, entries: list[tuple[str, bool]]) -> None:
    """Remove these entries of :func:`_entries` under ``path`` (folders come after their contents)."""
    for relative, is_folder in entries:
        (os.rmdir if is_folder else os.remove)(os.path.join(path, relative))


def is_staging(path: str) -> bool:
    """A staging directory of ours: it carries the marker, or it is a complete build that only
    needs publishing (the marker is removed just before the rename)."""
    return os.path.isfile(os.path.join(path, STAGING_MARKER)) or not_a_build(path) is None


def clear_staging(path: str, keep: tuple[str, ...] = (STAGING_MARKER,)) -> None:
    """Empty one of our staging directories (a build that starts over), keeping ``keep``: only
    the entries a build writes there are removed, and any other entry refuses the whole clear."""
    if not is_staging(path):
        raise OutputError(f"{path} is not a tzc staging directory; refusing to empty it")
    _remove(path, [entry for entry in _staging_entries(path) if entry[0] not in keep])


def lock_staging(path: str, out: str) -> int:
    """Create (if needed) and lock the staging directory ``path`` for the build into ``out``;
    returns the lock's file descriptor (closing it releases the lock).

    A directory of that name that is neither empty nor ours is refused; so is one that another
    live build holds (the lock is ``flock`` on the directory, released by the kernel when that
    process dies, however it dies)."""
    try:
        os.mkdir(path)
    except FileExistsError:
        if os.path.islink(path) or not os.path.isdir(path):
            raise OutputError(f"{path} (the staging name for --out {out}) exists and is not a directory") from None
        if os.listdir(path) and not is_staging(path):
            raise OutputError(f"{path} (the staging name for --out {out}) exists and is not tzc's; "
                              "move it away") from None
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        raise OutputError(f"another build{_owner(path)} is writing --out {out} (staging {path}); "
                          "wait for it to finish or stop it") from None
    # Written in place, not through a temporary name: its presence is what makes the folder ours,
    # so a build killed while writing it must leave it (empty at worst), not a temporary file.
    with open(os.path.join(path, STAGING_MARKER), "w", encoding="utf-8") as handle:
        json.dump({"pid": os.getpid(), "out": out}, handle)
    return fd


def _owner(path: str) -> str:
    try:
        with open(os.path.join(path, STAGING_MARKER), encoding="utf-8") as handle:
            return f" (pid {int(json.load(handle)['pid'])})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def check_output_file(path: str, option: str = "-o", *, overwrite: bool = False) -> str:
    """The absolute path a command may write its output file to: not empty, not a directory, not
    an existing file unless ``overwrite`` (it may be a user's; nothing proves it ours), and not
    inside a tzc build (a build's files are its own; a stray file would also make the build no
    longer provably one). Raises OutputError naming ``option``."""
    if not path or not path.strip():
        raise OutputError(f"{option} is empty")
    full = os.path.realpath(path)  # a symlinked folder must not lead into a build
    if os.path.isdir(full):
        raise OutputError(f"{option} {path} is a directory; give a file name")
    folder = os.path.dirname(full)
    if not os.path.isdir(folder):
        raise OutputError(f"{option} {path}: the folder {folder} does not exist")
    build = enclosing_build(folder)
    if build:
        raise OutputError(f"{option} {path} is inside the tzc build {build}; write it elsewhere")
    if os.path.lexists(path) and not overwrite:
        raise OutputError(f"{option} {path} exists; pass --overwrite to replace it")
    return full


def enclosing_build(folder: str) -> str | None:
    """The tzc build that ``folder`` is, or is inside (symlinks resolved), or None: a build's
    folders hold only its own files, so nothing else may be written there."""
    probe = os.path.realpath(folder)
    while True:
        if _read_marker_manifest(probe) is None:
            return probe
        parent = os.path.dirname(probe)
        if parent == probe:
            return None
        probe = parent


def remove_scratch(staging: str) -> None:
    """Remove what a staging directory holds besides the build itself (the units' files, and
    temporaries), keeping the marker. Run once the manifest is written, so every moment before
    it can still resume."""
    if not is_staging(staging):
        raise OutputError(f"{staging} is not a tzc staging directory; refusing to clean it")
    _remove(staging, [(relative, is_folder) for relative, is_folder in _staging_entries(staging)
                      if relative.startswith(UNITS_DIR) or _TEMPORARY.fullmatch(os.path.basename(relative))])


def remove_marker(staging: str) -> None:
    """The last step before a finished staging directory is renamed into place."""
    marker = os.path.join(staging, STAGING_MARKER)
    if os.path.lexists(marker):
        os.remove(marker)


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file, read in 1 MiB pieces: what a manifest records of each file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: str) -> str:
    """xxh3-128 of a whole file, read in 1 MiB pieces: what a unit's done-marker records of its files."""
    digest = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        while piece := handle.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


def cache_dir() -> Path:
    """tzc's own cache folder (tokenizers, their proofs, compiled code): ``$TZC_CACHE``, else
    ``~/.cache/tzc``."""
    return Path(os.environ.get("TZC_CACHE", Path.home() / ".cache" / "tzc"))
