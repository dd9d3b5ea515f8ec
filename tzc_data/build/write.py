"""Write a build: ArrayRecord shards, Parquet stats, and ``manifest.json`` last.

Layout of an output directory::

    manifest.json                 written last: its presence means the build is complete
    shards/train-00000-of-00004.array_record
    stats/records.parquet         one row per input row of the range
    stats/packs.parquet           one row per packed row

Everything written is a pure function of the inputs and the config: no timestamps, no host
names, sorted JSON keys, so two builds of the same inputs are byte-identical.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from array_record.python.array_record_module import ArrayRecordWriter

from tzc_data.build.pack import Kept
from tzc_data.files import MANIFEST, atomic_open, atomic_path, sha256_file
from tzc_data.layout import HASH_DTYPE, HASHES, PLACEMENT_COLUMNS, RECORD_COLUMNS, SHARD_DIR, arrow_fields
from tzc_data.record import Example
from tzc_data.text.minhash import BANDS, NUM_PERM

STATS_BATCH = 8192  # rows a stats table (and a row group of records.parquet) holds

TEXT_COLUMNS = [("prompt", pa.string()), ("response", pa.string()), ("reasoning", pa.string()),
                ("answer", pa.string())]
# What a unit's table holds for the rows that passed every per-row stage (null for the others):
# what the serial dedup pass and packing need of them, never their text.
CANDIDATE_COLUMNS = [("split", pa.uint8()), ("hash16", pa.binary(16)), ("bands", pa.binary(8 * BANDS)),
                     ("sketch", pa.binary(NUM_PERM)), ("prompt_tokens", pa.int32())]


def unit_schema(score_names: Sequence[str], *, text: bool) -> pa.Schema:
    """A unit's table (see :mod:`tzc_data.build.units`): the stats columns, the candidates' dedup keys,
    and with ``--keep-rejected`` every row's text (a row kept here may still be dropped by dedup)."""
    return pa.schema(arrow_fields(RECORD_COLUMNS) + [(name, pa.float64()) for name in score_names] + CANDIDATE_COLUMNS
                     + (TEXT_COLUMNS if text else []))


class UnitRows:
    """The columns of one unit's table, a row at a time."""

    def __init__(self, score_names: Sequence[str], *, text: bool):
        self.score_names = list(score_names)
        self.schema = unit_schema(score_names, text=text)
        self.text = text
        self.columns: dict[str, list] = {name: [] for name in self.schema.names}

    def add(self, example: Example, split: int | None = None, bands: bytes | None = None,
            sketch: bytes | None = None) -> None:
        """Record one row; ``split``, ``bands`` and ``sketch`` for a row that passed the stages."""
        c = self.columns
        parsed = bool(example.reasoning or example.answer)
        has_tokens = example.tokens is not None
        c["row"].append(example.row)
        c["status"].append(example.status)
        c["detail"].append(example.detail)
        c["prompt_hash"].append(example.prompt_hash.hex() if example.prompt_hash else None)
        c["prompt_chars"].append(len(example.prompt) if example.status != "malformed" else None)
        c["reasoning_chars"].append(len(example.reasoning) if parsed else None)
        c["answer_chars"].append(len(example.answer) if parsed else None)
        c["tokens"].append(len(example.tokens) if has_tokens else None)
        c["loss_tokens"].append(len(example.tokens) - example.prompt_tokens if has_tokens else None)
        c["answer_tokens"].append(example.answer_tokens if has_tokens else None)
        c["twin"].append(example.twin)
        for name in self.score_names:
            c[name].append(example.scores.get(name))
        candidate = example.kept
        c["split"].append(split if candidate else None)
        c["hash16"].append(example.prompt_hash if candidate else None)
        c["bands"].append(bands if candidate else None)
        c["sketch"].append(sketch if candidate else None)
        c["prompt_tokens"].append(example.prompt_tokens if candidate else None)
        if self.text:
            for name in ("prompt", "response", "reasoning", "answer"):
                c[name].append(getattr(example, name))

    def write(self, path: str, *, durable: bool = True) -> None:
        write_unit_table(pa.table(self.columns, schema=self.schema), path, durable=durable, text=self.text)


def write_unit_table(table: pa.Table, path: str, *, durable: bool = True, text: bool = False) -> None:
    """A unit's table as an Arrow IPC file: scratch that the serial passes read back four times a
    unit, by memory map, at a tenth of a Parquet read's fixed cost (a build of many small units is
    bound by it). The texts of ``--keep-rejected`` are compressed (zstd); keys and counts are not."""
    options = pa.ipc.IpcWriteOptions(compression="zstd" if text else None)
    with atomic_path(path, durable=durable) as temporary:
        with pa.OSFile(temporary, "wb") as sink, pa.ipc.new_file(sink, table.schema, options=options) as writer:
            writer.write_table(table)


def read_unit_table(path: str, columns: Sequence[str] | None = None) -> pa.Table:
    """A unit's table (:func:`write_unit_table`), or its ``columns``."""
    with pa.memory_map(path) as source:
        table = pa.ipc.open_file(source).read_all()
    return table if columns is None else table.select(list(columns))


def stats_schema(score_names: Sequence[str]) -> pa.Schema:
    """``stats/records.parquet``: one row per input row, and where each kept row went."""
    return pa.schema(arrow_fields(RECORD_COLUMNS) + [(name, pa.float64()) for name in score_names]
                     + [pa.field(n, t) for n, t in arrow_fields(PLACEMENT_COLUMNS)])


def unit_batches(paths: Iterable[str], columns: list[str] | None = None,
                 size: int = STATS_BATCH) -> Iterator[pa.Table]:
    """The units' tables, one after another, in tables of exactly ``size`` rows (the last shorter):
    the final files' row groups do not depend on where the units were cut."""
    tables = (read_unit_table(p, columns) for p in paths)  # a unit at a time
    yield from _rebatch((b for table in tables for b in table.to_batches()), size)


def write_records(path: str, batches: Iterable[pa.Table], score_names: Sequence[str]) -> str:
    """``stats/records.parquet`` from final batches (see :func:`tzc_data.build.dedup.final_batches`)."""
    schema = stats_schema(score_names)
    with atomic_path(path) as temporary, pq.ParquetWriter(temporary, schema) as writer:
        for batch in batches:
            writer.write_table(batch.select(schema.names).cast(schema))
    return path


REJECTED_COLUMNS = ["row", "status", "detail", "prompt", "response", "reasoning", "answer", "twin"]
# Rows of full text held at a time: the batches read in, and the dropped rows of a row group out.
REJECTED_BATCH = 512


def write_rejected(path: str, batches: Iterable[pa.Table], score_names: Sequence[str]) -> str:
    """``rejected/rejected.parquet`` (``--keep-rejected``): every dropped row with its full text,
    reason, detail and scores, for audits and ``tzc-data explain``. ``batches`` should be small
    (:data:`REJECTED_BATCH` rows: they carry every row's text); the dropped rows are written in
    row groups of that many, so memory is bounded by the texts of two of them."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    types = dict(arrow_fields(RECORD_COLUMNS) + TEXT_COLUMNS)
    names = REJECTED_COLUMNS + list(score_names)
    schema = pa.schema([(n, types.get(n, pa.float64())) for n in names])

    def dropped_rows() -> Iterator[pa.RecordBatch]:
        for batch in batches:
            dropped = batch.filter(pc.not_equal(batch.column("status"), "kept"))
            yield from dropped.select(names).cast(schema).combine_chunks().to_batches()

    with atomic_path(path) as temporary, pq.ParquetWriter(temporary, schema) as writer:
        for table in _rebatch(dropped_rows(), REJECTED_BATCH):
            writer.write_table(table)
    return path


def _rebatch(batches: Iterable[pa.RecordBatch], size: int) -> Iterator[pa.Table]:
    """Tables of exactly ``size`` rows (the last one shorter), whatever sizes come in."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        while count >= size:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, size).combine_chunks()
            rest = table.slice(size)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(pending).combine_chunks()


def shard_name(index: int, count: int, split: str = "train") -> str:
    return f"{split}-{index:05d}-of-{count:05d}.array_record"


@dataclass(frozen=True, kw_only=True)
class ShardTask:
    """One output shard, everything needed to write it anywhere: its path and name, and its packed
    rows as bins of the examples in ``kept`` (only this shard's examples; their tokens are read
    from the units' files). Small to ship: about 30 bytes an example plus the tokens files' paths."""

    directory: str
    name: str
    split: str
    kept: Kept
    bins: list[list[int]]
    seq_len: int
    options: str


def shard_tasks(directory: str, kept: Kept, members: np.ndarray, offsets: np.ndarray, rows_per_shard: int,
                seq_len: int, options: str, split: str = "train") -> list[ShardTask]:
    """The shards of one split's packed rows, ``rows_per_shard`` each: packed row ``r`` holds the
    indices into ``kept`` ``members[offsets[r]:offsets[r + 1]]``."""
    rows = len(offsets) - 1
    count = -(-rows // rows_per_shard)
    tasks = []
    for index in range(count):
        lo, hi = index * rows_per_shard, min((index + 1) * rows_per_shard, rows)
        start = int(offsets[lo])
        bounds = (offsets[lo:hi + 1] - start).tolist()
        local = [list(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]
        tasks.append(ShardTask(directory=directory, name=shard_name(index, count, split), split=split,
                               kept=kept.subset(members[start:int(offsets[hi])]), bins=local, seq_len=seq_len,
                               options=options))
    return tasks


def write_shard(task: ShardTask) -> dict[str, Any]:
    """Write one shard under a temporary name until it is closed; returns its manifest entry."""
    os.makedirs(task.directory, exist_ok=True)
    path = os.path.join(task.directory, task.name)
    with atomic_path(path) as temporary:
        try:
            writer = ArrayRecordWriter(temporary, task.options)
            for row in task.kept.read_rows(task.bins, task.seq_len):
                writer.write(row.tobytes())
            writer.close()
        except RuntimeError as err:  # ArrayRecord's C++ status: "write() failed: No space left on device; ..."
            raise writer_error(err, path) from None
    return {"file": f"{SHARD_DIR}/{task.name}", "split": task.split, "records": len(task.bins),
            "sha256": sha256_file(path), "bytes": os.path.getsize(path)}


def writer_error(err: RuntimeError, path: str) -> OSError:
    """The OSError (errno, cause, ``path``) that an ArrayRecord writer's RuntimeError reports, so
    that disk full is the one line every other write gives, in every engine (an OSError pickles)."""
    message = str(err)
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO, errno.EFBIG):
        if os.strerror(code) in message:
            return OSError(code, os.strerror(code), path)
    return OSError(errno.EIO, f"the ArrayRecord writer failed: {' '.join(message.split())[:300]}", path)


def write_pack_stats(directory: str, packs_by_split: dict[str, dict[str, np.ndarray]]) -> str:
    """``stats/packs.parquet`` from :func:`tzc_data.build.pack.placement`'s columns, split after split."""
    path = os.path.join(directory, "packs.parquet")
    tables = []
    for split, packs in packs_by_split.items():
        columns = {"split": pa.array([split] * len(packs["shard"]), pa.string())}
        columns |= {name: pa.array(packs[name]) for name in ("shard", "index", "segments", "tokens", "loss_tokens",
                                                              "fill")}
        columns["rows"] = pa.ListArray.from_arrays(pa.array(packs["rows_offsets"]), pa.array(packs["rows"]))
        tables.append(pa.table(columns))
    with atomic_path(path) as temporary:
        pq.write_table(pa.concat_tables(tables), temporary)
    return path


def write_hashes(directory: str, hashes: bytes | bytearray) -> dict[str, Any]:
    """The kept examples' prompt hashes, sorted and unique, 16 raw bytes each: what ``--exclude``
    and ``verify`` compare between builds. Returns the manifest entry."""
    unique = np.unique(np.frombuffer(bytes(hashes), dtype=HASH_DTYPE))
    path = os.path.join(directory, HASHES)
    with atomic_path(path) as temporary:
        unique.tofile(temporary)  # the buffer keeps all 16 bytes; only conversion to Python bytes strips zeros
    return {"file": HASHES, "count": int(len(unique)), "sha256": sha256_file(path),
            "algorithm": "xxh3-128 of the NFKC, casefolded, whitespace-collapsed prompt without default-ignorable "
                         "code points; sorted, unique, 16 bytes each"}


def write_manifest(directory: str, manifest: dict[str, Any]) -> str:
    path = os.path.join(directory, MANIFEST)
    with atomic_open(path, encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True, ensure_ascii=False)
        handle.write("\n")
    return path
