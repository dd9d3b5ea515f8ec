"""What ``verify`` reads of each layer before it binds them together: the manifest's shard layout
(:class:`Layout`), ``stats/packs.parquet`` (:class:`Packs`), the segments the shards hold, and
the tokenizer a build names. Shared by :mod:`.shards` and :mod:`.records`.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tzc_data.files import sha256_file
from tzc_data.layout import PACKS, PLACEMENT_COLUMNS, RECORD_COLUMNS, arrow_fields

if TYPE_CHECKING:
    from tzc_data.text.tokenize import Tokenizer


PER_SHARD = 20  # problems listed per shard (and per stats file) before the rest are counted


READ_CHUNK = 64  # records read from a shard at a time


STATS_BATCH = 65536  # rows of records.parquet read at a time


def one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:300]


@dataclass
class Layout:
    """Where the loaders find each packed row: the manifest's shards of each split, in order.

    ``packs.parquet`` lists packed rows split after split (in the order the splits first appear
    in ``shards``), shard after shard, row after row; ``start[k]`` is the packs row of shard
    entry ``k``'s first record."""

    manifest: dict[str, Any]
    splits: list[str] = field(init=False)
    entries: list[dict[str, Any]] = field(init=False)
    ordinal: list[int] = field(init=False)  # shard number of entry k within its split
    start: list[int] = field(init=False)
    by_split: dict[str, list[int]] = field(init=False)  # split -> entry indices in order

    def __post_init__(self) -> None:
        shards = self.manifest["shards"]
        self.splits = list(dict.fromkeys([e["split"] for e in shards] + list(self.manifest["splits"])))
        self.by_split = {s: [k for k, e in enumerate(shards) if e["split"] == s] for s in self.splits}
        self.entries, self.ordinal, self.start = shards, [0] * len(shards), [0] * len(shards)
        at = 0
        for split in self.splits:
            for n, k in enumerate(self.by_split[split]):
                self.ordinal[k], self.start[k] = n, at
                at += shards[k]["records"]
        self.rows = at

    def expected_keys(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(split code, shard, index) of each packs row, as the manifest's shards imply."""
        keys = np.zeros((3, self.rows), dtype=np.int64)
        for code, split in enumerate(self.splits):
            for k in self.by_split[split]:
                at, n = self.start[k], self.entries[k]["records"]
                keys[:, at:at + n] = [[code], [self.ordinal[k]], [0]]
                keys[2, at:at + n] = np.arange(n)
        return keys[0], keys[1], keys[2]

    def entry_of(self, p: int) -> int:
        """The shard entry that holds packs row ``p``."""
        held = sorted((self.start[k], k) for k in range(len(self.entries)) if self.entries[k]["records"])
        return held[bisect.bisect_right([s for s, _ in held], p) - 1][1]

    def name(self, split: str, shard: int) -> str:
        entries = self.by_split.get(split, [])
        return self.entries[entries[shard]]["file"] if 0 <= shard < len(entries) else f"{split} shard {shard}"


@dataclass
class Packs:
    """``stats/packs.parquet`` as arrays, its rows in :class:`Layout` order."""

    segments: np.ndarray
    tokens: np.ndarray
    loss_tokens: np.ndarray
    fill: np.ndarray
    rows: np.ndarray  # source row of each segment, packed row after packed row
    offsets: np.ndarray  # rows[offsets[p]:offsets[p + 1]] are the segments of packed row p

    @property
    def segment_count(self) -> int:
        return int(self.offsets[-1])


_PACK_COLUMNS = ("split", "shard", "index", "segments", "tokens", "loss_tokens", "fill", "rows")


_PACK_TYPES = {"split": pa.string(), "shard": pa.int32(), "index": pa.int32(), "segments": pa.int32(),
               "tokens": pa.int32(), "loss_tokens": pa.int32(), "fill": pa.float64(), "rows": pa.list_(pa.int64())}


RECORD_TYPES = dict(arrow_fields(RECORD_COLUMNS + PLACEMENT_COLUMNS))


def schema_problems(where: str, schema: pa.Schema, expected: dict[str, pa.DataType]) -> list[str]:
    """Columns missing, or of another type than the writer's (:mod:`tzc_data.build.write`)."""
    missing = [name for name in expected if name not in schema.names]
    problems = [f"{where}: no column {', '.join(missing)}"] if missing else []
    for name, kind in expected.items():
        if name in schema.names and _family(schema.field(name).type) != _family(kind):
            problems.append(f"{where}: column {name} is {schema.field(name).type}, not {kind}")
    return problems


def _family(kind: pa.DataType) -> str:
    """Types that read the same here (Polars writes large strings and 64-bit integers)."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return f"list of {_family(kind.value_type)}"
    for name, test in (("string", pa.types.is_string), ("string", pa.types.is_large_string),
                       ("integer", pa.types.is_integer), ("float", pa.types.is_floating)):
        if test(kind):
            return name
    return str(kind)


def read_packs(build: str, layout: Layout) -> tuple[Packs | None, list[str]]:
    """The packs table, or None with the problems that make it unusable for the cross-checks."""
    where = f"{build} {PACKS}"
    path = os.path.join(build, PACKS)
    if not os.path.isfile(path):
        return None, []  # check_files said why
    try:
        table = pq.ParquetFile(path).read()
        wrong = schema_problems(where, table.schema, _PACK_TYPES)
        if wrong:
            return None, wrong
        nulls = [c for c in _PACK_COLUMNS if table.column(c).null_count]
        if nulls:
            return None, [f"{where}: nulls in {', '.join(nulls)}"]
        split_names = table.column("split").to_pylist()
        columns = {c: table.column(c).to_numpy() for c in _PACK_COLUMNS[1:7]}
        listed = table.column("rows").combine_chunks()
        offsets = listed.offsets.to_numpy().astype(np.int64)
        rows = listed.values.to_numpy().astype(np.int64)[offsets[0]:offsets[-1]]
        offsets -= offsets[0]
    except (OSError, pa.ArrowException, ValueError, TypeError) as err:
        return None, [f"{where}: cannot be read as Parquet ({one_line(err)})"]
    codes = {s: k for k, s in enumerate(layout.splits)}
    split = np.array([codes.get(s, -1) for s in split_names], dtype=np.int64)
    got = (split, columns["shard"].astype(np.int64), columns["index"].astype(np.int64))
    miscounted = _miscounted(where, layout, got)
    if miscounted:  # before expected_keys: the manifest's counts may be anything
        return None, miscounted
    expected = layout.expected_keys()
    if any(not np.array_equal(a, b) for a, b in zip(got, expected)):
        return None, [_first_misplaced(where, layout, got, expected)]
    packs = Packs(columns["segments"].astype(np.int64), columns["tokens"].astype(np.int64),
                  columns["loss_tokens"].astype(np.int64), columns["fill"].astype(np.float64), rows, offsets)
    bad = np.flatnonzero(packs.segments != np.diff(offsets))
    if len(bad):
        return None, [f"{where} row {int(bad[0])}: {int(packs.segments[bad[0]])} segments, but it lists "
                      f"{int(np.diff(offsets)[bad[0]])} source rows"]
    return packs, []


def _miscounted(where: str, layout: Layout, got: tuple) -> list[str]:
    """Packed rows per shard in packs.parquet against the manifest's record counts."""
    keys, counts = np.unique(np.stack(got[:2]), axis=1, return_counts=True) if len(got[0]) else (
        np.zeros((2, 0), np.int64), np.zeros(0, np.int64))
    listed = {(int(c), int(s)): int(n) for (c, s), n in zip(keys.T.tolist(), counts.tolist())}
    problems = []
    for code, split in enumerate(layout.splits):
        for ordinal, k in enumerate(layout.by_split[split]):
            held, says = listed.pop((code, ordinal), 0), layout.entries[k]["records"]
            name = layout.entries[k]["file"]
            if held < says:
                problems.append(f"{where}: lists {held} packed rows of shard {name}, the manifest counts {says}: "
                                f"{name} row {held}{f'..{says - 1}' if says - held > 1 else ''} is in no row of "
                                f"{PACKS}")
            elif held > says:
                problems.append(f"{where}: lists {held} packed rows of shard {name}, the manifest counts {says}: "
                                f"{name} row {says}{f'..{held - 1}' if held - says > 1 else ''} is missing")
    for (code, shard), held in sorted(listed.items()):
        split = layout.splits[code] if code >= 0 else "(a split the manifest does not have)"
        problems.append(f"{where}: lists {held} packed rows of {split} shard {shard}, which is in no shard of "
                        "the manifest")
    return problems[:PER_SHARD] + ([f"{where}: and {len(problems) - PER_SHARD} more"]
                                    if len(problems) > PER_SHARD else [])


def _first_misplaced(where: str, layout: Layout, got: tuple, expected: tuple) -> str:
    """The first packs row out of the order the loaders read (counts per shard already agree)."""
    p = int(np.flatnonzero(np.any([a != b for a, b in zip(got, expected)], axis=0))[0])

    def key(parts: tuple) -> str:
        return f"{layout.name(layout.splits[int(parts[0][p])], int(parts[1][p]))} row {int(parts[2][p])}"

    return f"{where} row {p}: is {key(got)}, but the loaders read {key(expected)} there"


class Segments:
    """What the shards hold for each segment of packs.parquet (-1: not read)."""

    def __init__(self, count: int):
        self.tokens = np.full(count, -1, dtype=np.int32)
        self.loss = np.full(count, -1, dtype=np.int32)
        self.hashes = np.zeros((count, 16), dtype=np.uint8)
        self.hashed = np.zeros(count, dtype=bool)
        self.near: np.ndarray | None = None  # near-dup records of the decoded prompts, when asked for


def tokenizer_for(manifest: dict[str, Any], paths: Sequence[str], cache: dict[str, Tokenizer]) -> Tokenizer:
    key = f"{manifest['tokenizer']['sha256']} {manifest['config']['system']}"
    if key not in cache:
        from tzc_data.text.tokenize import find_tokenizer  # here: checking a mixture of builds loads no SentencePiece

        cache[key] = find_tokenizer(manifest, paths, memo=False)
    return cache[key]


def file_problem(path: str, expected: str, size: Any = None) -> str | None:
    """Why the file at ``path`` is not the one the manifest records (its sha256, and its size
    when the manifest records one), or None."""
    if not os.path.lexists(path):
        return "missing"
    if not os.path.isfile(path):
        return "is a directory, not a file" if os.path.isdir(path) else "is not a regular file"
    if size is not None and size != os.path.getsize(path):
        return f"{os.path.getsize(path)} bytes, the manifest says {json.dumps(size)[:40]}"
    try:
        digest = sha256_file(path)
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if digest != expected:
        return f"sha256 {digest[:16]}... is not the manifest's {expected[:16]}..."
    return None
