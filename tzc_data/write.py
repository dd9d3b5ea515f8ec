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

import itertools
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from array_record.python.array_record_module import ArrayRecordWriter

from tzc_data.errors import OutputError
from tzc_data.files import MANIFEST, atomic_open, atomic_path, file_digest
from tzc_data.pack import DTYPE, FIELDS
from tzc_data.record import Example
from tzc_data.tokenize import sha256_file

SHARD_DIR = "shards"
STATS_DIR = "stats"
_STATS_BATCH = 8192

RECORD_COLUMNS = [
    ("row", pa.int64()), ("status", pa.string()), ("detail", pa.string()), ("prompt_hash", pa.string()),
    ("prompt_chars", pa.int32()), ("reasoning_chars", pa.int32()), ("answer_chars", pa.int32()),
    ("tokens", pa.int32()), ("loss_tokens", pa.int32()), ("answer_tokens", pa.int32()), ("twin", pa.int64()),
]
PLACEMENT_COLUMNS = [("split", pa.string()), ("shard", pa.int32()), ("pack", pa.int32()), ("segment", pa.int32())]


def record_layout(seq_len: int) -> dict[str, Any]:
    """How to decode one shard record, as stored in the manifest."""
    return {
        "dtype": DTYPE.str, "shape": [len(FIELDS), seq_len], "fields": list(FIELDS),
        "decode": "numpy.frombuffer(record, dtype='<i4').reshape(4, seq_len)",
        "padding": "segment_ids == 0; tokens, positions and loss_mask are 0 there",
        "loss_mask": "1 where the token is a training target (the model turn of its segment)",
    }


class Parts:
    """One table written as numbered, closed Parquet part files: each :meth:`flush` leaves a file
    that a resumed build can trust, and :meth:`merged` reads them back in fixed-size tables so the
    final file does not depend on where the parts were cut."""

    def __init__(self, directory: str, stem: str, schema: pa.Schema, *, resume_parts: list[str] | None = None):
        """``resume_parts``: the digests a checkpoint recorded of the parts written before it;
        those parts must be there, unchanged, and any part written after it is removed."""
        os.makedirs(directory, exist_ok=True)
        self.directory, self.stem, self.schema = directory, stem, schema
        self.digests: list[str] = list(resume_parts or [])
        self.count = len(self.digests)
        for stale in self.paths(start=self.count):  # written after the checkpoint we resume from
            os.remove(stale)
        found = self.paths()
        if [os.path.basename(p) for p in found] != [self._name(k) for k in range(self.count)] or \
                [file_digest(p) for p in found] != self.digests:
            raise OutputError(f"cannot resume: the {stem} part files in {directory} are not the {self.count} its "
                              "checkpoint recorded; the staging folder is damaged: run without --resume to start over")
        self.columns: dict[str, list] = {name: [] for name in schema.names}

    def _name(self, index: int) -> str:
        return f".{self.stem}.part-{index:06d}.parquet"

    def paths(self, start: int = 0) -> list[str]:
        """The part files, in order (from the ``start``-th)."""
        pattern = re.compile(rf"\.{re.escape(self.stem)}\.part-(\d{{6}})\.parquet")
        found = sorted((int(m.group(1)), n) for n in os.listdir(self.directory) if (m := pattern.fullmatch(n)))
        return [os.path.join(self.directory, n) for k, n in found if k >= start]

    @property
    def buffered(self) -> int:
        return len(self.columns[self.schema.names[0]])

    def flush(self) -> None:
        if self.buffered:
            path = os.path.join(self.directory, self._name(self.count))
            with atomic_path(path) as temporary:
                pq.write_table(pa.table(self.columns, schema=self.schema), temporary)
            self.digests.append(file_digest(path))
            self.count += 1
            self.columns = {name: [] for name in self.schema.names}

    def merged(self, size: int = _STATS_BATCH) -> Iterator[pa.Table]:
        self.flush()
        yield from _rebatch((b for p in self.paths() for b in pq.ParquetFile(p).iter_batches()), size)


class RecordStats:
    """``stats/records.parquet``, streamed through :class:`Parts` (``chunk_rows`` rows each, a
    checkpoint per part), then written once packing has placed the kept examples (split, shard,
    pack, segment)."""

    def __init__(self, directory: str, score_names: Sequence[str], *, chunk_rows: int = _STATS_BATCH,
                 resume_parts: list[str] | None = None):
        self.directory = directory
        self.score_names = list(score_names)
        self.chunk_rows = chunk_rows
        schema = pa.schema(RECORD_COLUMNS + [(name, pa.float64()) for name in self.score_names])
        self.parts = Parts(directory, "records", schema, resume_parts=resume_parts)

    def add(self, example: Example) -> bool:
        """Record one row; True when that completed a part file (a point to checkpoint at)."""
        c = self.parts.columns
        split = bool(example.reasoning or example.answer)
        c["row"].append(example.row)
        c["status"].append(example.status)
        c["detail"].append(example.detail)
        c["prompt_hash"].append(example.prompt_hash.hex() if example.prompt_hash else None)
        c["prompt_chars"].append(len(example.prompt) if example.status != "malformed" else None)
        c["reasoning_chars"].append(len(example.reasoning) if split else None)
        c["answer_chars"].append(len(example.answer) if split else None)
        has_tokens = example.tokens is not None
        c["tokens"].append(len(example.tokens) if has_tokens else None)
        c["loss_tokens"].append(len(example.tokens) - example.prompt_tokens if has_tokens else None)
        c["answer_tokens"].append(example.answer_tokens if has_tokens else None)
        c["twin"].append(example.twin)
        for name in self.score_names:
            c[name].append(example.scores.get(name))
        if self.parts.buffered >= self.chunk_rows:
            self.parts.flush()
            return True
        return False

    def finish(self, placement: np.ndarray, split_names: Sequence[str]) -> str:
        """Write the final file. ``placement[k]`` = (split, shard, pack, segment) of the k-th kept example.

        Row groups are cut at fixed multiples of the batch size whatever the part sizes were, so a
        resumed build writes the same bytes as an uninterrupted one.
        """
        path = os.path.join(self.directory, "records.parquet")
        schema = pa.schema(list(self.parts.schema) + [pa.field(n, t) for n, t in PLACEMENT_COLUMNS])
        kept_so_far = 0
        with atomic_path(path) as temporary, pq.ParquetWriter(temporary, schema) as writer:
            for batch in self.parts.merged():
                kept = (batch.column("status").to_numpy(zero_copy_only=False) == "kept")
                ordinals = kept_so_far + np.cumsum(kept) - 1
                kept_so_far += int(kept.sum())
                placed = placement[np.where(kept, ordinals, 0)] if len(placement) else np.zeros((len(kept), 4), int)
                names = np.array(list(split_names), dtype=object)[placed[:, 0]]
                columns = list(batch.columns) + [pa.array(names, pa.string(), mask=~kept)]
                columns += [pa.array(placed[:, k].astype(np.int32), mask=~kept) for k in (1, 2, 3)]
                writer.write_table(pa.Table.from_arrays(columns, schema=schema))
        return path


REJECTED_DIR = "rejected"


class RejectedRows:
    """``rejected/rejected.parquet`` (``--keep-rejected``): every dropped row with its full text,
    reason, detail and scores, for audits and ``tzc-data explain``. Parts are cut at the same
    checkpoints as the stats."""

    def __init__(self, directory: str, score_names: Sequence[str], *, resume_parts: list[str] | None = None):
        self.directory = directory
        self.score_names = list(score_names)
        schema = pa.schema([("row", pa.int64()), ("status", pa.string()), ("detail", pa.string()),
                            ("prompt", pa.string()), ("response", pa.string()), ("reasoning", pa.string()),
                            ("answer", pa.string()), ("twin", pa.int64())]
                           + [(name, pa.float64()) for name in self.score_names])
        self.parts = Parts(directory, "rejected", schema, resume_parts=resume_parts)

    def add(self, example: Example) -> None:
        c = self.parts.columns
        for name in ("row", "status", "detail", "prompt", "response", "reasoning", "answer", "twin"):
            c[name].append(getattr(example, name))
        for name in self.score_names:
            c[name].append(example.scores.get(name))

    def finish(self) -> str:
        path = os.path.join(self.directory, "rejected.parquet")
        with atomic_path(path) as temporary, pq.ParquetWriter(temporary, self.parts.schema) as writer:
            for table in self.parts.merged():
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


def write_shards(directory: str, rows: Iterable[np.ndarray], count: int, rows_per_shard: int,
                 options: str, split: str = "train") -> list[dict[str, Any]]:
    """Write ``count`` packed rows of ``split`` into ArrayRecord shards of ``rows_per_shard`` rows,
    each under a temporary name until it is closed; returns their manifest entries."""
    os.makedirs(directory, exist_ok=True)
    shard_count = max(1, -(-count // rows_per_shard))
    rows = iter(rows)
    shards: list[dict[str, Any]] = []
    for index in range(shard_count if count else 0):
        name = shard_name(index, shard_count, split)
        path = os.path.join(directory, name)
        records = 0
        with atomic_path(path) as temporary:
            writer = ArrayRecordWriter(temporary, options)
            for row in itertools.islice(rows, rows_per_shard):
                writer.write(row.tobytes())
                records += 1
            writer.close()
        shards.append({"file": f"{SHARD_DIR}/{name}", "split": split, "records": records,
                       "sha256": sha256_file(path), "bytes": os.path.getsize(path)})
    return shards


def write_pack_stats(directory: str, packs_by_split: dict[str, dict[str, np.ndarray]]) -> str:
    """``stats/packs.parquet`` from :func:`tzc_data.pack.placement`'s columns, split after split."""
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


HASHES = "prompt_hashes.bin"
HASH_DTYPE = np.dtype("S16")


def write_hashes(directory: str, hashes: bytes | bytearray) -> dict[str, Any]:
    """The kept examples' prompt hashes, sorted and unique, 16 raw bytes each: what ``--exclude``
    and ``verify`` compare between builds. Returns the manifest entry."""
    unique = np.unique(np.frombuffer(bytes(hashes), dtype=HASH_DTYPE))
    path = os.path.join(directory, HASHES)
    with atomic_path(path) as temporary:
        unique.tofile(temporary)  # the buffer keeps all 16 bytes; only conversion to Python bytes strips zeros
    return {"file": HASHES, "count": int(len(unique)), "sha256": sha256_file(path),
            "algorithm": "xxh3-128 of the NFKC, casefolded, whitespace-collapsed prompt; sorted, unique, 16 bytes each"}


def read_hashes(directory: str, entry: dict[str, Any]) -> np.ndarray:
    """A build's prompt hashes (``S16``), checked against its manifest entry; raises ValueError."""
    path = os.path.join(directory, entry["file"])
    if sha256_file(path) != entry["sha256"]:
        raise ValueError(f"{path} does not match the sha256 in the manifest")
    hashes = np.fromfile(path, dtype=HASH_DTYPE)
    if len(hashes) != entry["count"]:
        raise ValueError(f"{path} holds {len(hashes)} hashes, the manifest says {entry['count']}")
    return hashes


def write_manifest(directory: str, manifest: dict[str, Any]) -> str:
    path = os.path.join(directory, MANIFEST)
    with atomic_open(path, encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True, ensure_ascii=False)
        handle.write("\n")
    return path
