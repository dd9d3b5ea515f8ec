"""JSONL and JSONL.gz files: one JSON object a line; blank lines are not rows.

JSONL has no index, so a local source reads every file once when it is opened (:func:`scan`): to
count its rows, to fingerprint its bytes, and, for a plain file, to note where each block of
``block_rows`` rows begins (the byte offset and line number of the block's first row). A unit is
one such block, counted from the file's first row and clipped to the range; its reader seeks to the
block and never reads the lines before it.

gzip cannot seek: a ``.jsonl.gz`` file is one unit (clipped to the range), read from its start.

A UTF-8 byte order mark before a file's first line is not part of the row. A line that cannot be
decoded (not UTF-8, not JSON, nested too deep, an integer past Python's 4,300-digit limit) is a
``malformed`` row whose detail names the file and the line.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import zlib
from collections.abc import Iterator
from typing import Any

from tzc_data.errors import SourceError
from tzc_data.record import Example
from tzc_data.sources.base import Unit, malformed, one_line
from tzc_data.sources.formats import Format

BOM = b"\xef\xbb\xbf"
READ_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, OSError)


def is_gzip(path: str) -> bool:
    return path.endswith(".gz")


def scan(handle: Any, path: str, block_rows: int) -> tuple[int, str, tuple[tuple[int, int], ...]]:
    """(rows, sha256 of the file's bytes, blocks) of a JSONL or JSONL.gz file, its rows counted as
    :func:`read_block` counts them. ``blocks`` holds (byte offset, line number) of rows 0,
    ``block_rows``, 2 × ``block_rows``… of a plain file; it is empty for a gzip file."""
    digest = hashlib.sha256()
    counted = [0]
    try:
        if is_gzip(path):
            hashing = _Hashing(handle, digest)
            with gzip.GzipFile(fileobj=hashing) as lines:
                _count_rows(lines, counted, block_rows, None)
            while hashing.read(1 << 20):  # whatever follows the last gzip member is part of the file
                pass
            blocks: list[tuple[int, int]] = []
        else:
            blocks = []
            _count_rows(_hashed_lines(handle, digest), counted, block_rows, blocks)
    except READ_ERRORS as err:
        raise SourceError(f"{path} is truncated or corrupt after {counted[0]:,} rows: {err}") from err
    return counted[0], digest.hexdigest(), tuple(blocks)


def _count_rows(lines: Any, counted: list[int], block_rows: int, blocks: list[tuple[int, int]] | None) -> None:
    """Count the rows of ``lines`` into ``counted[0]`` (so that a read error knows how far it got);
    when ``blocks`` is a list, note the (byte offset, line number) of every ``block_rows``-th row."""
    rows, offset = 0, 0
    for line_number, line in enumerate(lines, 1):
        size = len(line)
        if line_number == 1 and line.startswith(BOM):
            line = line[len(BOM):]
        if line.strip():
            if blocks is not None and rows % block_rows == 0:
                blocks.append((offset, line_number))
            rows += 1
            counted[0] = rows
        offset += size


def _hashed_lines(handle: Any, digest: Any) -> Iterator[bytes]:
    for line in handle:
        digest.update(line)
        yield line


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


def locator(file: int, offset: int, line_number: int, file_row: int, skip: int) -> tuple:
    """A JSONL unit's locator: the file's index in the source; the byte offset and line number of
    the row it starts reading at (a block's first row, or a gzip file's start), that row's index
    within the file, and how many rows from there come before the unit."""
    return (file, offset, line_number, file_row, skip)


def read_block(raw: Any, path: str, unit: Unit, fmt: Format, name: str) -> Iterator[Example]:
    """The rows of one JSONL unit from an open binary file, as ``fmt`` reads them (see the module
    docstring); a row's detail names the file as ``name`` (its path in the source)."""
    _, offset, line_number, file_row, skip = unit.locator
    row = unit.start - skip  # the global index of the row at ``offset``
    first_row = row - file_row  # ... and of the file's first row
    try:
        if is_gzip(path):
            handle = gzip.GzipFile(fileobj=raw)
        else:
            raw.seek(offset)
            handle = raw
        for number, line in enumerate(handle, line_number):
            if number == 1 and line.startswith(BOM):
                line = line[len(BOM):]  # a byte order mark is not part of the first row
            if not line.strip():
                continue  # blank lines are not rows (a trailing newline is not a row either)
            if row >= unit.start:
                yield decode_line(row, line, name, number, fmt)
            row += 1
            if row >= unit.stop:
                return
    except READ_ERRORS as err:
        raise SourceError(f"{path} is truncated or corrupt after {row - first_row:,} rows: {err}") from err
    raise SourceError(f"{path} changed while the build read it: it now ends after {row - first_row:,} rows; it held "
                      f"at least {unit.stop - first_row:,} when the source was opened")


def decode_line(row: int, line: bytes, name: str, line_number: int, fmt: Format) -> Example:
    where = f"{name} line {line_number}"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        return malformed(row, f"{where}: invalid UTF-8 at byte {err.start}")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        return malformed(row, f"{where}: not JSON ({err.msg} at column {err.colno})")
    except RecursionError:
        return malformed(row, f"{where}: JSON nested too deep to parse (Python's limit is "
                              f"{sys.getrecursionlimit():,} levels)")
    except ValueError as err:  # an integer literal past Python's int_max_str_digits (4,300 by default)
        return malformed(row, f"{where}: {one_line(err)}")
    return fmt.example(row, obj, where)
