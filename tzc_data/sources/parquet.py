"""Parquet files: a footer tells each row group's row count, so a unit is one row group.

A unit's reader parses the footer, reads only that row group's column chunks and decodes them once,
in batches of :data:`BATCH_ROWS` from the group's first row, keeping the rows inside the unit. A
row group is therefore read once however the range is shared out, and a data page that fails to
decode (or fails its CRC) turns the same rows into ``malformed`` with the same detail for any plan:
which batch fails is a property of the file, not of the range.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow.parquet as pq

from tzc_data.errors import SourceError
from tzc_data.record import Example
from tzc_data.sources.base import Unit, malformed, one_line
from tzc_data.sources.formats import Format

BATCH_ROWS = 1024


def parquet_file(handle: Any, path: str) -> pq.ParquetFile:
    """The file's footer parsed; pages written with a CRC are checked against it when read."""
    try:
        return pq.ParquetFile(handle, page_checksum_verification=True)
    except Exception as err:  # pyarrow raises several types for a bad footer
        raise SourceError(f"cannot read the Parquet footer of {path}: {one_line(err)}") from err


def group_rows(parquet: pq.ParquetFile) -> tuple[int, ...]:
    meta = parquet.metadata
    return tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))


def footer_sha256(handle: Any, path: str, size: int) -> str:
    """sha256 of the footer and its length and magic: every row group's offsets, sizes and statistics."""
    handle.seek(size - 8)
    tail = handle.read(8)
    length = int.from_bytes(tail[:4], "little")
    if tail[4:] != b"PAR1" or length + 8 > size:
        raise SourceError(f"cannot read the Parquet footer of {path}: no footer at its end")
    handle.seek(size - 8 - length)
    return hashlib.sha256(handle.read(length + 8)).hexdigest()


def covering_row_groups(group_rows: Sequence[int], first_row: int, start: int, stop: int) -> list[tuple[int, int, int]]:
    """Row groups of one file that overlap ``[start, stop)``: (group index, skip, take) each.

    ``first_row`` is the global index of the file's first row; ``group_rows`` the row count of each
    of its row groups, from the footer.
    """
    plan = []
    begin = first_row
    for index, rows in enumerate(group_rows):
        end = begin + rows
        if rows and end > start and begin < stop:  # a group of 0 rows has no unit
            skip = max(0, start - begin)
            plan.append((index, skip, min(end, stop) - begin - skip))
        begin = end
        if begin >= stop:
            break
    return plan


def locator(file: int, group: int, skip: int, rows_in_group: int, rows_in_file: int) -> tuple:
    """A row group unit's locator: the file's index in the source, the group, the rows of the group
    before the unit, and the group's and the file's row counts when planned (checked when read)."""
    return (file, group, skip, rows_in_group, rows_in_file)


def read_group(handle: Any, path: str, unit: Unit, fmt: Format, name: str) -> Iterator[Example]:
    """The rows of one row group unit from an open file, as ``fmt`` reads them (see the module
    docstring); a row's detail names the file as ``name`` (its path in the source)."""
    _, group, skip, rows_in_group, rows_in_file = unit.locator
    parquet = parquet_file(handle, path)
    meta = parquet.metadata
    if meta.num_rows != rows_in_file or group >= meta.num_row_groups or meta.row_group(group).num_rows != rows_in_group:
        raise SourceError(f"{path} changed while the build read it: it held {rows_in_file:,} rows "
                          f"({rows_in_group:,} in row group {group}) when the source was opened and now holds "
                          f"{meta.num_rows:,} in {meta.num_row_groups:,} row groups")
    row, end = unit.start, unit.stop
    where = f"{name} row group {group}"
    columns = readable_columns(parquet, name, fmt)
    unusable = column_problem(parquet.schema_arrow.names, name, columns)
    if unusable:
        yield from (malformed(r, unusable) for r in range(row, end))
        return
    decoded = 0  # rows of the group decoded so far: where a batch that fails starts
    try:
        for first, size, values in _group_batches(parquet, group, skip, end - row, columns):
            for fields in zip(*values):
                yield fmt.example(row, dict(zip(columns, fields)), where)
                row += 1
            decoded = first + size
        problem = f"{where}: holds fewer rows than its footer says ({rows_in_group:,})"
    except Exception as err:  # pyarrow raises OSError, ArrowInvalid… for corrupt pages
        problem = f"{where}: rows {decoded:,}.. cannot be decoded: {one_line(err)}"
    yield from (malformed(r, problem) for r in range(row, end))


def readable_columns(parquet: pq.ParquetFile, file: str, fmt: Format) -> tuple[str, ...]:
    """The columns ``fmt`` reads in this file, or SourceError: one is missing or of a type that is no text."""
    schema = parquet.schema_arrow
    columns = fmt.columns_of(schema.names, file)
    fmt.check_types(schema, columns, file)
    return columns


def column_problem(names: list[str], file: str, columns: tuple[str, ...]) -> str | None:
    """Why the columns of a file that a format reads cannot be read, or None (two of one name)."""
    for column in columns:
        n = names.count(column)
        if n == 0:
            return f"{file} has no column {column!r}"
        if n > 1:
            return f"{file} has {n} columns named {column!r}: which one is meant is unknown"
    return None


def _group_batches(parquet: pq.ParquetFile, group: int, skip: int, take: int,
                   columns: tuple[str, ...]) -> Iterator[tuple[int, int, list[list[Any]]]]:
    """Each batch of one row group, decoded in turn from the group's first row: (its first row in
    the group, its size, each column's values of its rows that fall in ``skip .. skip + take``)."""
    seen = 0
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, row_groups=[group], columns=list(columns)):
        lo, hi = max(skip - seen, 0), min(skip + take - seen, batch.num_rows)
        values = [batch.column(c).slice(lo, hi - lo).to_pylist() if hi > lo else [] for c in columns]
        yield seen, batch.num_rows, values
        seen += batch.num_rows
        if seen >= skip + take:
            return
