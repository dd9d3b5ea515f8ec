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
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
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


class Source:
    """A readable row space; subclasses implement :meth:`rows` and :meth:`describe`."""

    def rows(self, start: int, stop: int) -> Iterator[Example]:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:  # pragma: no cover - interface
        """What the manifest records to make the build reproducible (no timestamps)."""
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

    ``opener`` exists for the tests: it wraps ``fs.open`` to record what is read.
    """

    fs: fsspec.AbstractFileSystem
    paths: tuple[str, ...]
    description: dict[str, Any]
    opener: Callable[[str], Any] | None = None

    def describe(self) -> dict[str, Any]:
        return self.description

    def _open(self, path: str):
        return self.opener(path) if self.opener else self.fs.open(path, "rb")

    def rows(self, start: int, stop: int) -> Iterator[Example]:
        first_row = 0
        for path in self.paths:
            if first_row >= stop:
                return
            if path.endswith(".parquet"):
                first_row = yield from self._parquet(path, first_row, start, stop)
            else:
                first_row = yield from self._jsonl(path, first_row, start, stop)
        if first_row < stop:
            raise SourceError(
                f"range ends at row {stop:,} but the source holds only {first_row:,} rows "
                f"({len(self.paths)} files); rows {max(first_row, start):,}..{stop:,} do not exist"
            )

    def _parquet(self, path: str, first_row: int, start: int, stop: int):
        with self._open(path) as handle:
            try:
                parquet = pq.ParquetFile(handle)
            except Exception as err:  # pyarrow raises several types for a bad footer
                raise SourceError(f"cannot read the Parquet footer of {path}: {err}") from err
            meta = parquet.metadata
            group_rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            if first_row + meta.num_rows <= start:
                return first_row + meta.num_rows
            names = set(parquet.schema_arrow.names)
            missing = [c for c in COLUMNS if c not in names]
            begin_of = [first_row + sum(group_rows[:i]) for i in range(len(group_rows))]
            for group, skip, take in covering_row_groups(group_rows, first_row, start, stop):
                row = begin_of[group] + skip
                if missing:
                    for r in range(row, row + take):
                        yield _malformed(r, f"{os.path.basename(path)} has no column {missing[0]!r}")
                    continue
                seen = 0
                for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, row_groups=[group], columns=list(COLUMNS)):
                    lo, hi = max(skip - seen, 0), min(skip + take - seen, batch.num_rows)
                    seen += batch.num_rows
                    if hi <= lo:
                        if seen >= skip + take:
                            break
                        continue
                    prompts = batch.column("prompt").slice(lo, hi - lo).to_pylist()
                    responses = batch.column("response").slice(lo, hi - lo).to_pylist()
                    for prompt, response in zip(prompts, responses):
                        yield validate(row, {"prompt": prompt, "response": response})
                        row += 1
                    if seen >= skip + take:
                        break
            return first_row + meta.num_rows

    def _jsonl(self, path: str, first_row: int, start: int, stop: int):
        row = first_row
        with self._open(path) as raw:
            handle = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
            try:
                for line_number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue  # blank lines are not rows (a trailing newline is not a row either)
                    if row < start:
                        row += 1
                        continue
                    if row >= stop:
                        return row
                    yield _decode_json_line(row, line, path, line_number)
                    row += 1
            except (EOFError, gzip.BadGzipFile, OSError) as err:
                raise SourceError(f"{path} is truncated or corrupt after {row - first_row:,} rows: {err}") from err
        return row


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
    """A file, a directory (searched recursively) or a glob of .parquet/.jsonl/.jsonl.gz files."""
    if os.path.isdir(spec):
        paths = [os.path.join(d, f) for d, _, names in os.walk(spec) for f in names]
    elif os.path.isfile(spec):
        paths = [spec]
    else:
        paths = glob.glob(spec, recursive=True)
        if not paths:
            raise SourceError(f"source {spec!r} is not a file, a directory, or a glob that matches anything")
    paths = sorted(p for p in paths if p.endswith(_SUFFIXES))
    if not paths:
        raise SourceError(f"source {spec!r} holds no .parquet, .jsonl or .jsonl.gz files")
    files = [{"path": os.path.relpath(p, spec if os.path.isdir(spec) else os.path.dirname(spec) or "."),
              "bytes": os.path.getsize(p)} for p in paths]
    return FileSetSource(fs=fsspec.filesystem("file"), paths=tuple(os.path.abspath(p) for p in paths),
                         description={"kind": "local", "spec": spec, "files": files})


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

    A hub revision does not change the identity: row 5 at two commits is still "row 5".
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


__all__ = ["Source", "FileSetSource", "covering_row_groups", "hub_source", "local_source", "open_source",
           "parquet_tree_source", "read", "source_identity", "validate"]
