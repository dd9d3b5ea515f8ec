"""Read a global row range ``[start, stop)`` from the hub, local files, or the synthetic generator.

Three source kinds, one contract: :meth:`Source.rows` yields one :class:`Example` per row of the
range, in row order, each carrying its global row index. A row that cannot be read (missing or
null field, wrong type, invalid UTF-8, an undecodable JSONL line) comes out as an example dropped
with reason ``malformed`` and a detail; it never stops the build.

Seeking (defect 8 of the original pipeline streamed through 180,000 rows to reach row 180,000):
Parquet files are read through any fsspec filesystem. For each file in sorted name order we read
only the footer to learn its row count and row groups, skip whole files and row groups before
``start``, and read only the row groups that overlap the range. The hub source is the very same
code over ``HfFileSystem``; the tests run it over a local directory laid out like the hub and
check which byte ranges were actually read. JSONL has no index: its lines before ``start`` are
scanned (not parsed).

Knowing the source before reading it: :func:`local_source` surveys every file when it opens them
(a Parquet file's footer; a JSONL file is read once, which is the only way to count its rows), so
that :meth:`Source.check_range` refuses a range past the end before a single row is streamed, whole
files before ``start`` are skipped unopened, and the manifest records each file's size, row count
and fingerprint (sha256 of a Parquet footer, or of a JSONL file's bytes). ``explain`` compares the
fingerprints with :func:`changed_since` before it shows a row again.

Hostile files end as one-line :class:`SourceError` (a dangling symlink, a symlink loop, a directory
or a FIFO named ``*.jsonl``, an unreadable folder, a truncated gzip) or as ``malformed`` rows whose
detail names the file and the line or row group (JSON nested too deep to parse, an integer literal
past Python's 4,300-digit limit, two columns of one name, data pages that fail to decode or fail
their CRC). A UTF-8 byte order mark before a file's first line is not part of the row.
"""

from __future__ import annotations

import errno
import glob
import gzip
import hashlib
import io
import json
import os
import re
import stat
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow.parquet as pq

from tzc_data.errors import SourceError
from tzc_data.record import Example

HF_DATASET = "glaiveai/reasoning-v1-20m"
HF_SPLIT = "train"
COLUMNS = ("prompt", "response")
_BATCH_ROWS = 1024
_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz")
_BOM = b"\xef\xbb\xbf"
_SCAN_NOTICE_BYTES = 1 << 30  # JSONL beyond this gets a line on stderr: the survey reads it once


class Source:
    """A readable row space; subclasses implement :meth:`rows` and :meth:`describe`."""

    def rows(self, start: int, stop: int) -> Iterator[Example]:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:  # pragma: no cover - interface
        """What the manifest records to make the build reproducible (no timestamps)."""
        raise NotImplementedError

    def check_range(self, start: int, stop: int) -> None:  # pragma: no cover - interface
        """Raise :class:`SourceError` when ``[start, stop)`` goes past the source's last row, before
        any row is read (the build calls it first; a range past the end would otherwise fail only
        after streaming every row there is)."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# Validation shared by every file format


def validate(row: int, obj: Any) -> Example:
    """Turn one decoded record into an Example, or a ``malformed`` one that says what is wrong."""
    if not isinstance(obj, dict):
        return _malformed(row, f"record is a {type(obj).__name__}, not an object")
    values = []
    for name in COLUMNS:
        if name not in obj:
            return _malformed(row, f"missing field {name!r}")
        value = obj[name]
        if value is None:
            return _malformed(row, f"field {name!r} is null")
        if isinstance(value, bytes | bytearray):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError as err:
                return _malformed(row, f"field {name!r} is not valid UTF-8 (byte {err.start})")
        if not isinstance(value, str):
            return _malformed(row, f"field {name!r} is {type(value).__name__}, not a string")
        try:
            if not value.isascii():  # O(1) for a str; ASCII holds no surrogate, so skip the copy
                value.encode("utf-8")
        except UnicodeEncodeError as err:
            return _malformed(row, f"field {name!r} holds a lone surrogate at character {err.start}")
        values.append(value)
    return Example(row=row, prompt=values[0], response=values[1])


def _malformed(row: int, detail: str) -> Example:
    example = Example(row=row)
    example.drop("malformed", detail)
    return example


# ---------------------------------------------------------------------------------------------
# Parquet through fsspec: the hub and local files


def covering_row_groups(group_rows: Sequence[int], first_row: int, start: int, stop: int) -> list[tuple[int, int, int]]:
    """Row groups of one file that overlap ``[start, stop)``: (group index, skip, take) each.

    ``first_row`` is the global index of the file's first row; ``group_rows`` the row count of each
    of its row groups, from the footer.
    """
    plan = []
    begin = first_row
    for index, count in enumerate(group_rows):
        end = begin + count
        if end > start and begin < stop:
            skip = max(0, start - begin)
            plan.append((index, skip, min(end, stop) - begin - skip))
        begin = end
        if begin >= stop:
            break
    return plan


@dataclass(frozen=True)
class FileSetSource(Source):
    """Parquet and JSONL files read through one fsspec filesystem, in sorted path order.

    ``file_rows``, when known (a local source surveys its files), is each file's row count: files
    wholly before ``start`` are then skipped unopened, and a file that no longer holds that many
    rows is refused. ``opener`` exists for the tests: it wraps ``fs.open`` to record what is read.
    """

    fs: fsspec.AbstractFileSystem
    paths: tuple[str, ...]
    description: dict[str, Any]
    opener: Callable[[str], Any] | None = None
    file_rows: tuple[int, ...] | None = None

    def describe(self) -> dict[str, Any]:
        return self.description

    def _open(self, path: str):
        try:
            return self.opener(path) if self.opener else self.fs.open(path, "rb")
        except OSError as err:
            raise SourceError(f"cannot open {path}: {err.strerror or err}") from err

    def check_range(self, start: int, stop: int) -> None:
        total = 0
        for k, path in enumerate(self.paths):
            total += self.file_rows[k] if self.file_rows is not None else self._rows_of(path)
            if total >= stop:
                return
        raise SourceError(
            f"range {start:,}:{stop:,} goes past the end of the source: it holds only {_count(total, 'row')} "
            f"({_count(len(self.paths), 'file')}), so {_missing(max(total, start), stop)}"
        )

    def _rows_of(self, path: str) -> int:
        """A file's row count: the footer of a Parquet file; a JSONL file is scanned."""
        with self._open(path) as handle:
            if path.endswith(".parquet"):
                return _parquet_file(handle, path).metadata.num_rows
            return _scan_jsonl(handle, path)[0]

    def rows(self, start: int, stop: int) -> Iterator[Example]:
        first_row = 0
        for k, path in enumerate(self.paths):
            if first_row >= stop:
                return
            known = self.file_rows[k] if self.file_rows is not None else None
            if known is not None and first_row + known <= start:
                first_row += known
                continue
            reader = self._parquet if path.endswith(".parquet") else self._jsonl
            end = yield from reader(path, first_row, start, stop)
            if known is not None and end != first_row + known and end < stop:
                raise SourceError(f"{path} changed while the build read it: it held {known:,} rows when the "
                                  f"source was opened and now holds {end - first_row:,}")
            first_row = end if known is None else first_row + known
        if first_row < stop:
            raise SourceError(
                f"range ends at row {stop:,} but the source holds only {_count(first_row, 'row')} "
                f"({_count(len(self.paths), 'file')}); {_missing(max(first_row, start), stop)}"
            )

    def _parquet(self, path: str, first_row: int, start: int, stop: int):
        name = os.path.basename(path)
        with self._open(path) as handle:
            parquet = _parquet_file(handle, path)
            meta = parquet.metadata
            if first_row + meta.num_rows <= start:
                return first_row + meta.num_rows
            group_rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            begin_of = [first_row + sum(group_rows[:i]) for i in range(len(group_rows))]
            unusable = _column_problem(parquet.schema_arrow.names, name)
            for group, skip, take in covering_row_groups(group_rows, first_row, start, stop):
                row, end = begin_of[group] + skip, begin_of[group] + skip + take
                where = f"{name} row group {group}"
                if unusable:
                    yield from (_malformed(r, unusable) for r in range(row, end))
                    continue
                decoded = 0  # rows of the group decoded so far: where a batch that fails starts
                try:
                    for first, size, prompts, responses in _group_batches(parquet, group, skip, take):
                        for prompt, response in zip(prompts, responses):
                            yield _validate_in(where, row, prompt, response)
                            row += 1
                        decoded = first + size
                    problem = f"{where}: holds fewer rows than its footer says ({group_rows[group]:,})"
                except Exception as err:  # pyarrow raises OSError, ArrowInvalid… for corrupt pages
                    problem = f"{where}: rows {decoded:,}.. cannot be decoded: {_one_line(err)}"
                # The same rows and detail for any worker count: a group is always decoded from its
                # first row in batches of _BATCH_ROWS, so which batch fails is a property of the file.
                yield from (_malformed(r, problem) for r in range(row, end))
            return first_row + meta.num_rows

    def _jsonl(self, path: str, first_row: int, start: int, stop: int):
        row = first_row
        with self._open(path) as raw:
            handle = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
            try:
                for line_number, line in enumerate(handle, 1):
                    if line_number == 1 and line.startswith(_BOM):
                        line = line[len(_BOM):]  # a byte order mark is not part of the first row
                    if not line.strip():
                        continue  # blank lines are not rows (a trailing newline is not a row either)
                    if row < start:
                        row += 1
                        continue
                    if row >= stop:
                        return row
                    yield _decode_json_line(row, line, path, line_number)
                    row += 1
            except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as err:
                raise SourceError(f"{path} is truncated or corrupt after {row - first_row:,} rows: {err}") from err
        return row


def _parquet_file(handle: Any, path: str) -> pq.ParquetFile:
    """The file's footer parsed; pages written with a CRC are checked against it when read."""
    try:
        return pq.ParquetFile(handle, page_checksum_verification=True)
    except Exception as err:  # pyarrow raises several types for a bad footer
        raise SourceError(f"cannot read the Parquet footer of {path}: {_one_line(err)}") from err


def _column_problem(names: list[str], file: str) -> str | None:
    """Why the ``prompt`` and ``response`` columns of a file cannot be read, or None."""
    for column in COLUMNS:
        count = names.count(column)
        if count == 0:
            return f"{file} has no column {column!r}"
        if count > 1:
            return f"{file} has {count} columns named {column!r}: which one is meant is unknown"
    return None


def _group_batches(parquet: pq.ParquetFile, group: int, skip: int,
                   take: int) -> Iterator[tuple[int, int, list[Any], list[Any]]]:
    """Each batch of one row group, decoded in turn from the group's first row: (its first row in
    the group, its size, the prompts and responses of its rows that fall in ``skip .. skip + take``)."""
    seen = 0
    for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, row_groups=[group], columns=list(COLUMNS)):
        lo, hi = max(skip - seen, 0), min(skip + take - seen, batch.num_rows)
        prompts = batch.column("prompt").slice(lo, hi - lo).to_pylist() if hi > lo else []
        responses = batch.column("response").slice(lo, hi - lo).to_pylist() if hi > lo else []
        yield seen, batch.num_rows, prompts, responses
        seen += batch.num_rows
        if seen >= skip + take:
            return


def _validate_in(where: str, row: int, prompt: Any, response: Any) -> Example:
    example = validate(row, {"prompt": prompt, "response": response})
    if not example.kept:
        example.detail = f"{where}: {example.detail}"
    return example


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _missing(first: int, stop: int) -> str:
    return f"row {first:,} does not exist" if stop - first == 1 else f"rows {first:,}..{stop - 1:,} do not exist"


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _decode_json_line(row: int, line: bytes, path: str, line_number: int) -> Example:
    where = f"{os.path.basename(path)} line {line_number}"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        return _malformed(row, f"{where}: invalid UTF-8 at byte {err.start}")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        return _malformed(row, f"{where}: not JSON ({err.msg} at column {err.colno})")
    except RecursionError:
        return _malformed(row, f"{where}: JSON nested too deep to parse (Python's limit is "
                               f"{sys.getrecursionlimit():,} levels)")
    except ValueError as err:  # an integer literal past Python's int_max_str_digits (4,300 by default)
        return _malformed(row, f"{where}: {_one_line(err)}")
    example = validate(row, obj)
    if not example.kept:
        example.detail = f"{where}: {example.detail}"
    return example


def _is_split_file(relpath: str, split: str) -> bool:
    """Hub convention: ``data/train-00000-of-00042.parquet`` or ``train/0000.parquet``."""
    return re.search(rf"(^|/){re.escape(split)}([-_./]|$)", relpath) is not None


def hub_source(repo: str = HF_DATASET, *, split: str = HF_SPLIT, revision: str | None = None) -> FileSetSource:
    """The dataset's Parquet files on the Hugging Face hub, listed at run time (never hard-coded)."""
    from huggingface_hub import HfApi, HfFileSystem

    try:
        sha = HfApi().dataset_info(repo, revision=revision).sha
        return parquet_tree_source(HfFileSystem(), f"datasets/{repo}@{sha}", split=split, description={
            "kind": "hf", "repo": repo, "split": split, "revision": revision or "main", "commit": sha,
        })
    except SourceError:
        raise
    except Exception as err:  # network, auth, missing repo: all user-facing
        raise SourceError(
            f"cannot list hub dataset {repo} (revision {revision or 'main'}): {type(err).__name__}: {err}. "
            "Use --source PATH to read a local copy."
        ) from err


def parquet_tree_source(fs: fsspec.AbstractFileSystem, root: str, *, split: str, description: dict[str, Any],
                        opener: Callable[[str], Any] | None = None) -> FileSetSource:
    """A hub-style tree of Parquet files, filtered to one split (what :func:`hub_source` reads)."""
    root = root.rstrip("/")
    files = sorted(p for p in fs.find(root) if p.endswith(".parquet") and _is_split_file(p[len(root) + 1:], split))
    if not files:
        raise SourceError(f"no Parquet files for split {split!r} under {root}")
    description = {**description, "files": [p[len(root) + 1:] for p in files]}
    return FileSetSource(fs=fs, paths=tuple(files), description=description, opener=opener)


def local_source(spec: str) -> FileSetSource:
    """A file, a directory (searched recursively, symlinked folders too) or a glob of
    .parquet/.jsonl/.jsonl.gz files.

    Every file is surveyed here (:func:`survey`): what the manifest records of it, and its row count.
    """
    if os.path.isdir(spec):
        paths = _walk(spec)
    elif os.path.isfile(spec):
        paths = [spec]
    else:
        paths = glob.glob(spec, recursive=True)
        if not paths:
            raise SourceError(f"source {spec!r} is not a file, a directory, or a glob that matches anything")
    paths = sorted(p for p in paths if p.endswith(_SUFFIXES))
    if not paths:
        raise SourceError(f"source {spec!r} holds no .parquet, .jsonl or .jsonl.gz files")
    root = spec if os.path.isdir(spec) else os.path.dirname(spec) or "."
    sizes = [_regular_file_size(p) for p in paths]
    jsonl_bytes = sum(size for p, size in zip(paths, sizes) if not p.endswith(".parquet"))
    if jsonl_bytes >= _SCAN_NOTICE_BYTES:
        print(f"tzc-data: reading {jsonl_bytes / 2**30:,.1f} GiB of JSONL once to count its rows and fingerprint "
              "it (JSONL has no index)", file=sys.stderr, flush=True)
    files, rows = [], []
    for path in paths:
        entry, count = survey(path)
        files.append({"path": os.path.relpath(path, root), **entry})
        rows.append(count)
    return FileSetSource(fs=fsspec.filesystem("file"), paths=tuple(os.path.abspath(p) for p in paths),
                         description={"kind": "local", "spec": spec, "files": files}, file_rows=tuple(rows))


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


def survey(path: str) -> tuple[dict[str, Any], int]:
    """(what the manifest records of one local file, its row count).

    The record is the size and a fingerprint that any copy of the same bytes shares (an mtime does
    not survive a copy): the sha256 of a Parquet file's footer (which holds every row group's
    offsets, sizes and statistics), or of a JSONL file's bytes, read once to count its rows.
    """
    size = _regular_file_size(path)
    try:
        handle = open(path, "rb", buffering=1 << 20)
    except OSError as err:
        raise SourceError(f"cannot open {path}: {err.strerror or err}") from err
    with handle:
        if path.endswith(".parquet"):
            rows = _parquet_file(handle, path).metadata.num_rows
            return {"bytes": size, "rows": rows, "footer_sha256": _footer_sha256(handle, path, size)}, rows
        rows, digest = _scan_jsonl(handle, path)
    return {"bytes": size, "rows": rows, "sha256": digest}, rows


def _footer_sha256(handle: Any, path: str, size: int) -> str:
    handle.seek(size - 8)
    tail = handle.read(8)
    length = int.from_bytes(tail[:4], "little")
    if tail[4:] != b"PAR1" or length + 8 > size:
        raise SourceError(f"cannot read the Parquet footer of {path}: no footer at its end")
    handle.seek(size - 8 - length)
    return hashlib.sha256(handle.read(length + 8)).hexdigest()


class _Hashing(io.RawIOBase):
    """A reader that hashes every byte read through it (the raw bytes of a gzip file)."""

    def __init__(self, raw: Any, digest: Any) -> None:
        self.raw, self.digest = raw, digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        self.digest.update(memoryview(buffer)[:n])
        return n


def _scan_jsonl(handle: Any, path: str) -> tuple[int, str]:
    """(rows, sha256 of the file's bytes) of a JSONL or JSONL.gz file, counted as :meth:`FileSetSource._jsonl`
    counts them: a line that is blank once a first line's byte order mark is gone is not a row."""
    digest = hashlib.sha256()
    rows = 0
    try:
        if path.endswith(".gz"):
            hashing = _Hashing(handle, digest)
            with gzip.GzipFile(fileobj=hashing) as lines:
                rows = _count_rows(lines)
            while hashing.read(1 << 20):  # whatever follows the last gzip member is part of the file
                pass
        else:
            rows = _count_rows(_hashed_lines(handle, digest))
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as err:
        raise SourceError(f"{path} is truncated or corrupt after {rows:,} rows: {err}") from err
    return rows, digest.hexdigest()


def _hashed_lines(handle: Any, digest: Any) -> Iterator[bytes]:
    for line in handle:
        digest.update(line)
        yield line


def _count_rows(lines: Iterable[bytes]) -> int:
    rows = 0
    for line_number, line in enumerate(lines, 1):
        if line_number == 1 and line.startswith(_BOM):
            line = line[len(_BOM):]
        if line.strip():
            rows += 1
    return rows


def changed_since(recorded: dict[str, Any], current: dict[str, Any]) -> str | None:
    """Why the source described by ``current`` (its :meth:`Source.describe`) is not the one a build
    recorded, or None when it is: same kind, same files in the same order, each with the same size,
    row count and fingerprint. A build that recorded no fingerprints cannot be checked (an older
    build): that is a reason too, never a silent pass."""
    if recorded.get("kind") != current.get("kind"):
        return f"it is a {current.get('kind')} source now, the build read a {recorded.get('kind')} one"
    if recorded.get("kind") != "local":
        for key in sorted((set(recorded) | set(current)) - {"revision"}):  # explain pins the hub commit
            if recorded.get(key) != current.get(key):
                return f"its {key} is {current.get(key)!r} now, the build recorded {recorded.get(key)!r}"
        return None
    old, new = recorded.get("files") or [], current.get("files") or []
    old_paths, new_paths = [f.get("path") for f in old], [f.get("path") for f in new]
    if old_paths != new_paths:
        gone = [p for p in old_paths if p not in new_paths]
        added = [p for p in new_paths if p not in old_paths]
        what = f"{gone[0]} is gone" if gone else f"{added[0]} was added" if added else "its files are in another order"
        return f"{what} ({_count(len(new_paths), 'file')} now, {len(old_paths):,} when built)"
    for before, now in zip(old, new):
        keys = [k for k in ("bytes", "rows", "footer_sha256", "sha256") if k in now]
        if not any(k in before for k in ("footer_sha256", "sha256")):
            return f"the build recorded no fingerprint of {before['path']} (made before tzc recorded them)"
        for key in keys:
            if before.get(key) != now.get(key):
                return f"{now['path']} has {key} {now.get(key)} now, {before.get(key)} when built"
    return None


def open_source(spec: str, *, revision: str | None = None, seed: int = 0) -> Source:
    """``hf`` (default), ``synthetic``, or a local path/glob."""
    if spec == "hf":
        return hub_source(revision=revision)
    if spec == "synthetic":
        from tzc_data.synthetic import SyntheticSource

        return SyntheticSource(seed=seed)
    if revision is not None:
        raise SourceError("--revision applies only to --source hf")
    return local_source(spec)


def source_identity(description: dict[str, Any]) -> tuple:
    """What makes two sources the same row space (so that their row ranges can overlap).

    A hub revision does not change the identity: row 5 at two commits is still "row 5". Nor does a
    local file's fingerprint: the identity of local files is their paths and sizes, so builds of
    different ranges of one dataset are always the same source to ``--exclude`` and ``verify``.
    """
    kind = description.get("kind")
    if kind == "hf":
        return ("hf", description.get("repo"), description.get("split"))
    if kind == "synthetic":
        return ("synthetic", description.get("seed"), description.get("generator"))
    return (kind, tuple((f["path"], f["bytes"]) if isinstance(f, dict) else f for f in description.get("files", [])))


def read(source: Source, start: int, stop: int) -> Iterator[Example]:
    """Stage 1: the rows of ``[start, stop)``, validated."""
    yield from source.rows(start, stop)


__all__ = ["Source", "FileSetSource", "changed_since", "covering_row_groups", "hub_source", "local_source",
           "open_source", "parquet_tree_source", "read", "source_identity", "survey", "validate"]
