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

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from array_record.python.array_record_module import ArrayRecordWriter

from tzc_data.pack import DTYPE, FIELDS
from tzc_data.record import Example
from tzc_data.tokenize import sha256_file

SHARD_DIR = "shards"
STATS_DIR = "stats"
MANIFEST = "manifest.json"
_STATS_BATCH = 8192

RECORD_COLUMNS = [
    ("row", pa.int64()), ("status", pa.string()), ("detail", pa.string()), ("prompt_hash", pa.string()),
    ("prompt_chars", pa.int32()), ("reasoning_chars", pa.int32()), ("answer_chars", pa.int32()),
    ("tokens", pa.int32()), ("loss_tokens", pa.int32()), ("answer_tokens", pa.int32()), ("twin", pa.int64()),
]
PLACEMENT_COLUMNS = [("shard", pa.int32()), ("pack", pa.int32()), ("segment", pa.int32())]


def record_layout(seq_len: int) -> dict[str, Any]:
    """How to decode one shard record, as stored in the manifest."""
    return {
        "dtype": DTYPE.str, "shape": [len(FIELDS), seq_len], "fields": list(FIELDS),
        "decode": "numpy.frombuffer(record, dtype='<i4').reshape(4, seq_len)",
        "padding": "segment_ids == 0; tokens, positions and loss_mask are 0 there",
        "loss_mask": "1 where the token is a training target (the model turn of its segment)",
    }


class RecordStats:
    """``stats/records.parquet``, streamed: rows are spooled to a partial file as they pass, then
    rewritten once packing has placed the kept ones (shard, pack, segment)."""

    def __init__(self, directory: str, score_names: Sequence[str]):
        self.directory = directory
        self.score_names = list(score_names)
        self.schema = pa.schema(RECORD_COLUMNS + [(name, pa.float64()) for name in self.score_names])
        self.partial = os.path.join(directory, ".records.partial.parquet")
        self._writer = pq.ParquetWriter(self.partial, self.schema)
        self._columns: dict[str, list] = {name: [] for name in self.schema.names}

    def add(self, example: Example) -> None:
        c = self._columns
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
        if len(c["row"]) >= _STATS_BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._columns["row"]:
            self._writer.write_table(pa.table(self._columns, schema=self.schema))
            self._columns = {name: [] for name in self.schema.names}

    def finish(self, placement: np.ndarray) -> str:
        """Write the final file; ``placement[k]`` = (shard, pack, segment) of the k-th kept example."""
        self._flush()
        self._writer.close()
        path = os.path.join(self.directory, "records.parquet")
        schema = pa.schema(list(self.schema) + [pa.field(n, t) for n, t in PLACEMENT_COLUMNS])
        kept_so_far = 0
        with pq.ParquetWriter(path, schema) as writer:
            for batch in pq.ParquetFile(self.partial).iter_batches(batch_size=_STATS_BATCH):
                kept = (batch.column("status").to_numpy(zero_copy_only=False) == "kept")
                ordinals = kept_so_far + np.cumsum(kept) - 1
                kept_so_far += int(kept.sum())
                placed = placement[np.where(kept, ordinals, 0)] if len(placement) else np.zeros((len(kept), 3))
                columns = list(batch.columns)
                columns += [pa.array(placed[:, k].astype(np.int32), mask=~kept) for k in range(3)]
                writer.write_table(pa.Table.from_arrays(columns, schema=schema))
        os.remove(self.partial)
        return path


def shard_name(index: int, count: int, split: str = "train") -> str:
    return f"{split}-{index:05d}-of-{count:05d}.array_record"


def write_shards(directory: str, rows: Iterable[np.ndarray], count: int, rows_per_shard: int,
                 options: str) -> list[dict[str, Any]]:
    """Write ``count`` packed rows into ArrayRecord shards; returns their manifest entries."""
    os.makedirs(directory, exist_ok=True)
    shard_count = max(1, -(-count // rows_per_shard))
    shards: list[dict[str, Any]] = []
    writer = None
    for index, row in enumerate(rows):
        if index % rows_per_shard == 0:
            if writer is not None:
                shards[-1].update(_close(writer, directory, shards[-1]["file"]))
            name = shard_name(len(shards), shard_count)
            writer = ArrayRecordWriter(os.path.join(directory, name), options)
            shards.append({"file": f"{SHARD_DIR}/{name}", "records": 0})
        writer.write(row.tobytes())
        shards[-1]["records"] += 1
    if writer is not None:
        shards[-1].update(_close(writer, directory, shards[-1]["file"]))
    return shards


def _close(writer: ArrayRecordWriter, directory: str, relative: str) -> dict[str, Any]:
    writer.close()
    path = os.path.join(directory, os.path.basename(relative))
    return {"sha256": sha256_file(path), "bytes": os.path.getsize(path)}


def write_pack_stats(directory: str, packs: dict[str, np.ndarray]) -> str:
    """``stats/packs.parquet`` from :func:`tzc_data.pack.placement`'s columns."""
    path = os.path.join(directory, "packs.parquet")
    columns = {name: pa.array(packs[name]) for name in ("shard", "index", "segments", "tokens", "loss_tokens", "fill")}
    columns["rows"] = pa.ListArray.from_arrays(pa.array(packs["rows_offsets"]), pa.array(packs["rows"]))
    pq.write_table(pa.table(columns), path)
    return path


def write_manifest(directory: str, manifest: dict[str, Any]) -> str:
    path = os.path.join(directory, MANIFEST)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True, ensure_ascii=False)
        handle.write("\n")
    return path
