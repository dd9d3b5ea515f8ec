"""Parquet and JSONL files: local ones opened with :func:`open`, and (see :mod:`.hub`) the hub's through fsspec.

Files are read in sorted path order and share one global row index. A unit is a Parquet row group
(:mod:`.parquet`), a block of :data:`JSONL_UNIT_ROWS` rows of a plain JSONL file, or a whole
``.jsonl.gz`` file (:mod:`.jsonl`), clipped to the planned range.

Knowing the source before reading it: :func:`local_source` surveys every file when it opens them (a
Parquet file's footer; a JSONL file is read once, which is the only way to count its rows), so that
:meth:`FileSetSource.check_range` refuses a range past the end before a single row is streamed, whole
files before ``start`` are skipped unopened, and the manifest records each file's size, row count and
fingerprint (sha256 of a Parquet footer, or of a JSONL file's bytes). ``explain`` compares the
fingerprints (:meth:`FileSetSource.changes`) before it shows a row again.

Hostile files end as one-line :class:`SourceError` (a dangling symlink, a symlink loop, a directory or
a FIFO named ``*.jsonl``, an unreadable folder, a truncated gzip, a file that changed while it was
read) or as ``malformed`` rows whose detail names the file and the line or row group.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from tzc_data.errors import SourceError
from tzc_data.record import Example
from tzc_data.sources import jsonl, parquet
from tzc_data.sources.base import Source, Unit, check_start, count, missing
from tzc_data.sources.formats import GLAIVE, Format, parse_format

if TYPE_CHECKING:
    import fsspec

JSONL_UNIT_ROWS = 10_000
SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz")
# a line break or other control character in a file name is written escaped (\n) in details and messages,
# which are one line each
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_SCAN_NOTICE_BYTES = 1 << 30  # JSONL beyond this gets a line on stderr: the survey reads it once


@dataclass(frozen=True)
class FileLayout:
    """What a plan needs of one file: its rows; a Parquet file's row counts per row group; a plain
    JSONL file's (byte offset, line number) of every ``block_rows``-th row. Never in the manifest."""

    rows: int
    groups: tuple[int, ...] = ()
    blocks: tuple[tuple[int, int], ...] = ()
    block_rows: int = JSONL_UNIT_ROWS


@dataclass(frozen=True)
class FileSetSource(Source):
    """Parquet and JSONL files in sorted path order: local files (``fs`` None, opened with
    :func:`open`, so that a local build imports no fsspec), or files of an fsspec filesystem (the hub).

    ``layout``, when known (a local source surveys its files), is each file's :class:`FileLayout`:
    files wholly before ``start`` are then skipped unopened. Without it (the hub) a plan reads the
    footer of each file up to the end of the range. A file that no longer holds the rows it held
    when planned is refused when read. ``opener`` exists for the tests: it replaces the opening, to
    record what is read.
    """

    kind: ClassVar[str] = "local"

    fs: fsspec.AbstractFileSystem | None  # None: local files, opened with open() (no fsspec to import)
    paths: tuple[str, ...]
    description: dict[str, Any]
    opener: Callable[[str], Any] | None = None
    layout: tuple[FileLayout, ...] | None = None
    format: Format = parse_format(GLAIVE)
    read_folders: tuple[str, ...] = ()  # local folders whose every file is read (a folder, a ** glob)
    stamp: tuple[tuple[int, int], ...] = ()  # each local file's (size, mtime_ns), for a resume

    def folders(self) -> tuple[str, ...]:
        return self.read_folders

    def resume_stamp(self) -> Any:
        return [list(entry) for entry in self.stamp] or None

    @property
    def file_rows(self) -> tuple[int, ...] | None:
        return None if self.layout is None else tuple(f.rows for f in self.layout)

    def describe(self) -> dict[str, Any]:
        return self.description

    def _open(self, path: str):
        try:
            if self.opener:
                return self.opener(path)
            return open(path, "rb") if self.fs is None else self.fs.open(path, "rb")
        except OSError as err:
            raise SourceError(f"cannot open {path}: {err.strerror or err}") from err

    def _layout_of(self, k: int) -> FileLayout:
        """File ``k``'s layout: the survey's, or read now (a Parquet footer; a JSONL file is scanned)."""
        if self.layout is not None:
            return self.layout[k]
        path = self.paths[k]
        with self._open(path) as handle:
            if path.endswith(".parquet"):
                footer = parquet.parquet_file(handle, path)
                parquet.readable_columns(footer, self.name_of(k), self.format)
                groups = parquet.group_rows(footer)
                return FileLayout(rows=sum(groups), groups=groups)
            rows, _, blocks = jsonl.scan(handle, path, JSONL_UNIT_ROWS)
            return FileLayout(rows=rows, blocks=blocks)

    def check_range(self, start: int, stop: int) -> None:
        check_start(start, stop)
        total = 0
        for k in range(len(self.paths)):
            if total >= stop:
                return
            total += self._layout_of(k).rows
        if total < stop:
            raise self._past_the_end(start, stop, total)

    def _past_the_end(self, start: int, stop: int, total: int) -> SourceError:
        return SourceError(
            f"range {start:,}:{stop:,} goes past the end of the source: it holds only {count(total, 'row')} "
            f"({count(len(self.paths), 'file')}), so {missing(max(total, start), stop)}"
        )

    def plan(self, start: int, stop: int) -> list[Unit]:
        check_start(start, stop)
        units: list[Unit] = []
        first_row = 0
        for k in range(len(self.paths)):
            if first_row >= stop:
                break
            if self.layout is not None and first_row + self.layout[k].rows <= start:
                first_row += self.layout[k].rows  # wholly before the range: not opened
                continue
            layout = self._layout_of(k)
            if layout.rows and first_row + layout.rows > start and start < stop:  # a file of 0 rows has no unit
                pieces = self._parquet_units if self.paths[k].endswith(".parquet") else self._jsonl_units
                units += pieces(k, layout, first_row, start, stop, len(units))
            first_row += layout.rows
        if first_row < stop:
            raise self._past_the_end(start, stop, first_row)
        return units

    def _parquet_units(self, k: int, layout: FileLayout, first_row: int, start: int, stop: int,
                       index: int) -> list[Unit]:
        name = self.name_of(k)
        begin, begins = first_row, []
        for rows in layout.groups:
            begins.append(begin)
            begin += rows
        return [Unit(index=index + n, start=begins[group] + skip, stop=begins[group] + skip + take,
                     where=f"{name} row group {group}",
                     locator=parquet.locator(k, group, skip, layout.groups[group], layout.rows))
                for n, (group, skip, take) in enumerate(parquet.covering_row_groups(layout.groups, first_row,
                                                                                    start, stop))]

    def _jsonl_units(self, k: int, layout: FileLayout, first_row: int, start: int, stop: int,
                     index: int) -> list[Unit]:
        path = self.paths[k]
        lo, hi = max(start - first_row, 0), min(stop - first_row, layout.rows)  # rows of the file
        if jsonl.is_gzip(path):  # gzip cannot seek: the whole file is one unit
            pieces = [(lo, hi, 0, 1, 0)]
        else:
            size = layout.block_rows
            pieces = []
            for block in range(lo // size, (hi - 1) // size + 1):
                offset, line_number = layout.blocks[block]
                pieces.append((max(lo, block * size), min(hi, (block + 1) * size), offset, line_number, block * size))
        name = self.name_of(k)
        return [Unit(index=index + n, start=first_row + a, stop=first_row + b,
                     where=f"{name} row {a:,}" if b - a == 1 else f"{name} rows {a:,}..{b - 1:,}",
                     locator=jsonl.locator(k, offset, line_number, at, a - at))
                for n, (a, b, offset, line_number, at) in enumerate(pieces)]

    def read_unit(self, unit: Unit) -> Iterator[Example]:
        """The unit's rows; then, for a local file, a check that the file is still the one surveyed
        (its size and modification time), so that no row comes from bytes other than those its
        recorded sha256 describes: a file rewritten during the build fails the unit."""
        k = unit.locator[0]
        path = self.paths[k]
        with self._open(path) as handle:
            reader = parquet.read_group if path.endswith(".parquet") else jsonl.read_block
            yield from reader(handle, path, unit, self.format, self.name_of(k))
        if self.stamp:
            _check_unchanged(path, self.stamp[k], self.name_of(k))

    def name_of(self, k: int) -> str:
        """File ``k`` as details and unit names say it: its path in the source (as the manifest
        records it), so that two folders' ``rows.jsonl`` are told apart."""
        listed = self.description.get("files") or []
        entry = listed[k] if k < len(listed) else None
        name = entry.get("path") if isinstance(entry, dict) else entry
        name = name if isinstance(name, str) and name else os.path.basename(self.paths[k])
        return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), name)

    @classmethod
    def identity(cls, description: dict[str, Any]) -> tuple:
        """Local files are the same row space when they have the same paths and sizes; a
        fingerprint does not enter it, so builds of different ranges of one dataset are always the
        same source to ``--exclude`` and ``verify``."""
        return (description.get("kind"),
                tuple((f["path"], f["bytes"]) if isinstance(f, dict) else f for f in description.get("files", [])))

    @classmethod
    def reopen(cls, description: dict[str, Any], *, format: str = GLAIVE) -> FileSetSource:
        return local_source(description["spec"], format=format)

    @classmethod
    def changes(cls, recorded: dict[str, Any], current: dict[str, Any]) -> str | None:
        """The same files in the same order, each with the same size, row count and fingerprint. A
        build that recorded no fingerprints cannot be checked (an older build): that is a reason
        too, never a silent pass."""
        old, new = recorded.get("files") or [], current.get("files") or []
        old_paths, new_paths = [f.get("path") for f in old], [f.get("path") for f in new]
        if old_paths != new_paths:
            gone = [p for p in old_paths if p not in new_paths]
            added = [p for p in new_paths if p not in old_paths]
            what = (f"{gone[0]} is gone" if gone else f"{added[0]} was added" if added
                    else "its files are in another order")
            return f"{what} ({count(len(new_paths), 'file')} now, {len(old_paths):,} when built)"
        for before, now in zip(old, new):
            keys = [k for k in ("bytes", "rows", "footer_sha256", "sha256") if k in now]
            if not any(k in before for k in ("footer_sha256", "sha256")):
                return f"the build recorded no fingerprint of {before['path']} (made before tzc recorded them)"
            for key in keys:
                if before.get(key) != now.get(key):
                    return f"{now['path']} has {key} {now.get(key)} now, {before.get(key)} when built"
        return None


# ---------------------------------------------------------------------------------------------
# The local survey


def local_source(spec: str, *, format: str = GLAIVE, jsonl_unit_rows: int = JSONL_UNIT_ROWS) -> FileSetSource:
    """A file, a directory (searched recursively, symlinked folders too) or a glob of
    .parquet/.jsonl/.jsonl.gz files, read as ``format`` (:mod:`.formats`).

    Every file is surveyed here (:func:`survey`): what the manifest records of it, and its layout.
    ``jsonl_unit_rows`` is the size of a plain JSONL file's units (the tests make it small).
    """
    fmt = parse_format(format)
    if os.path.isdir(spec):
        paths = _walk(spec)
    elif os.path.isfile(spec):
        paths = [spec]
    else:
        paths = glob.glob(spec, recursive=True)
        if not paths:
            raise SourceError(f"source {spec!r} is not a file, a directory, or a glob that matches anything")
    paths = sorted(p for p in paths if p.endswith(SUFFIXES))
    if not paths:
        raise SourceError(f"source {spec!r} holds no .parquet, .jsonl or .jsonl.gz files")
    for path in paths:
        _check_utf8_name(path)
    root = spec if os.path.isdir(spec) else _fixed_part(spec) if glob.has_magic(spec) else os.path.dirname(spec) or "."
    sizes = [_regular_file_size(p) for p in paths]
    jsonl_bytes = sum(size for p, size in zip(paths, sizes) if not p.endswith(".parquet"))
    if jsonl_bytes >= _SCAN_NOTICE_BYTES:
        print(f"tzc-data: reading {jsonl_bytes / 2**30:,.1f} GiB of JSONL once to count its rows and fingerprint "
              "it (JSONL has no index)", file=sys.stderr, flush=True)
    files, layouts, stamps = [], [], []
    for path in paths:
        stamps.append(_stamp(path))  # before the survey: a change during it is caught too
        entry, layout = survey(path, fmt=fmt, jsonl_unit_rows=jsonl_unit_rows)
        files.append({"path": os.path.relpath(path, root), **entry})
        layouts.append(layout)
        _check_unchanged(path, stamps[-1], files[-1]["path"])
    return FileSetSource(fs=None, paths=tuple(os.path.abspath(p) for p in paths),
                         description={"kind": "local", "spec": spec, "files": files}, layout=tuple(layouts),
                         format=fmt, read_folders=_folders_read(spec), stamp=tuple(stamps))


def _check_unchanged(path: str, stamp: tuple[int, int], name: str) -> None:
    """SourceError when ``path`` is no longer the file of ``stamp`` (size, mtime): it changed while
    the build read it, and its recorded sha256 would describe other bytes than its rows."""
    try:
        now = _stamp(path)
    except OSError as err:
        raise SourceError(f"source file {name} cannot be read any more: {err.strerror or err}") from None
    if now != tuple(stamp):
        raise SourceError(f"source file {name} changed while the build read it (its size or modification time): "
                          "its rows would not be the bytes the manifest fingerprints; run the build again once "
                          "it no longer changes")


def _check_utf8_name(path: str) -> None:
    """Refuse a file whose name is not UTF-8: the manifest, the stats and a row's detail record
    the name as text, and such a name cannot be written there (nor shown but escaped)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise SourceError(f"source file {shown} is not valid UTF-8 in its name: rename it (the manifest and the "
                          "stats record each file's name as text)") from None


def _folders_read(spec: str) -> tuple[str, ...]:
    """The folder a directory source reads whole, or the fixed part of a recursive glob."""
    if os.path.isdir(spec):
        return (os.path.realpath(spec),)
    if "**" in spec:
        return (os.path.realpath(_fixed_part(spec)),)
    return ()


def _fixed_part(pattern: str) -> str:
    """The folder a glob starts from: its path up to the first part with a wildcard
    (``data/**/*.jsonl`` -> ``data``); the manifest records the files' paths from there."""
    fixed = []
    for part in pattern.split(os.sep):
        if glob.has_magic(part):
            break
        fixed.append(part)
    return os.sep.join(fixed) or ("/" if pattern.startswith(os.sep) else ".")


def _stamp(path: str) -> tuple[int, int]:
    """A file's size and modification time: an edit in place since the build started changes them,
    even one that keeps a Parquet footer's bytes."""
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns


def survey(path: str, *, fmt: Format = parse_format(GLAIVE),
           jsonl_unit_rows: int = JSONL_UNIT_ROWS) -> tuple[dict[str, Any], FileLayout]:
    """(what the manifest records of one local file, its layout).

    The record is the size and a fingerprint that any copy of the same bytes shares (an mtime does
    not survive a copy): the sha256 of a Parquet file's footer (which holds every row group's
    offsets, sizes and statistics), or of a JSONL file's bytes, read once to count its rows. A Parquet
    file without the columns ``fmt`` reads is refused here.
    """
    size = _regular_file_size(path)
    try:
        handle = open(path, "rb", buffering=1 << 20)
    except OSError as err:
        raise SourceError(f"cannot open {path}: {err.strerror or err}") from err
    with handle:
        if path.endswith(".parquet"):
            footer = parquet.parquet_file(handle, path)
            parquet.readable_columns(footer, os.path.basename(path), fmt)
            groups = parquet.group_rows(footer)
            entry = {"bytes": size, "rows": sum(groups), "footer_sha256": parquet.footer_sha256(handle, path, size)}
            return entry, FileLayout(rows=sum(groups), groups=groups)
        rows, digest, blocks = jsonl.scan(handle, path, jsonl_unit_rows)
    return {"bytes": size, "rows": rows, "sha256": digest}, FileLayout(rows=rows, blocks=blocks,
                                                                          block_rows=jsonl_unit_rows)


def _walk(root: str) -> list[str]:
    """Every file under ``root``, symlinked folders followed; a folder reached twice (a link to a
    parent, two links to one folder) is read once, under its first path in sorted order, so a loop
    ends and no file's rows are read twice."""
    seen: set[tuple[int, int]] = set()
    paths = []
    for folder, folders, names in os.walk(root, followlinks=True, onerror=_walk_error):
        status = os.stat(folder)
        if (status.st_dev, status.st_ino) in seen:
            folders[:] = []
            continue
        seen.add((status.st_dev, status.st_ino))
        folders.sort()  # in place: os.walk descends in this order
        paths += (os.path.join(folder, name) for name in names)
    return paths


def _walk_error(err: OSError) -> None:
    raise SourceError(f"cannot list {err.filename}: {err.strerror or err}") from err


def _regular_file_size(path: str) -> int:
    """The size of a source file, or SourceError for what cannot be one (named ``*.jsonl`` or not)."""
    try:
        status = os.stat(path)  # follows symlinks: a link to a file is that file
    except OSError as err:
        if os.path.islink(path) and not os.path.exists(path):
            why = "a symlink loop" if err.errno == errno.ELOOP else f"a dangling symlink to {os.readlink(path)!r}"
            raise SourceError(f"source file {path} is {why}") from err
        raise SourceError(f"cannot read source file {path}: {err.strerror or err}") from err
    if stat.S_ISDIR(status.st_mode):
        raise SourceError(f"source {path} is a directory, not a file; give the directory itself as --source to "
                          "read the files inside it")
    if not stat.S_ISREG(status.st_mode):
        raise SourceError(f"source file {path} is not a regular file (a FIFO, socket or device)")
    return status.st_size
