"""The on-disk format of a finished build: what the build writes and the read side reads.

Both sides import it and nothing else of each other, so a change of format is made here once.
Layout of a build folder::

    manifest.json                 written last: its presence means the build is complete
    shards/train-00000-of-00004.array_record
    stats/records.parquet         one row per input row of the range
    stats/packs.parquet           one row per packed row
    prompt_hashes.bin             the kept prompts' hashes, sorted, 16 bytes each
    near_dup.bin                  the kept prompts' near-duplicate keys (unless --no-near-dup)
    rejected/rejected.parquet     the dropped rows' text (with --keep-rejected)

A packed row is one ArrayRecord record: little-endian int32, shape ``[4, seq_len]``, the rows
being ``tokens``, ``segment_ids`` (0 = padding, 1..k in order), ``positions`` (restarting at 0 for
each segment, 0 on padding) and ``loss_mask`` (1 where the token is a training target: the model
turn of its segment). :func:`decode_row` reads it with numpy alone.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from tzc_data.files import sha256_file

FORMAT_VERSION = 1  # the manifest layout this code writes
FORMAT_VERSIONS = (1,)  # the manifest layouts this code reads

SHARD_DIR = "shards"
STATS_DIR = "stats"
RECORDS, PACKS = "stats/records.parquet", "stats/packs.parquet"
REJECTED_DIR = "rejected"
NEAR_DUP = "near_dup.bin"

FIELDS = ("tokens", "segment_ids", "positions", "loss_mask")
DTYPE = np.dtype("<i4")

# The stats columns every records.parquet row has, as (name, Arrow type alias); :func:`arrow_fields`
# makes them Arrow fields (this module imports no Arrow: ``import tzc_data`` stays light).
RECORD_COLUMNS = (
    ("row", "int64"), ("status", "string"), ("detail", "string"), ("prompt_hash", "string"),
    ("prompt_chars", "int32"), ("reasoning_chars", "int32"), ("answer_chars", "int32"),
    ("tokens", "int32"), ("loss_tokens", "int32"), ("answer_tokens", "int32"), ("twin", "int64"),
)
PLACEMENT_COLUMNS = (("split", "string"), ("shard", "int32"), ("pack", "int32"), ("segment", "int32"))


def arrow_fields(columns: tuple[tuple[str, str], ...]) -> list[tuple[str, Any]]:
    """``columns`` as ``(name, pyarrow.DataType)`` pairs."""
    import pyarrow as pa

    return [(name, pa.type_for_alias(kind)) for name, kind in columns]


def record_layout(seq_len: int) -> dict[str, Any]:
    """How to decode one shard record, as stored in the manifest."""
    return {
        "dtype": DTYPE.str, "shape": [len(FIELDS), seq_len], "fields": list(FIELDS),
        "decode": "numpy.frombuffer(record, dtype='<i4').reshape(4, seq_len)",
        "padding": "segment_ids == 0; tokens, positions and loss_mask are 0 there",
        "loss_mask": "1 where the token is a training target (the model turn of its segment)",
    }


HASHES = "prompt_hashes.bin"
HASH_DTYPE = np.dtype("S16")


def read_hashes(directory: str, entry: dict[str, Any]) -> np.ndarray:
    """A build's prompt hashes (``S16``), checked against its manifest entry; raises ValueError."""
    path = os.path.join(directory, entry["file"])
    if sha256_file(path) != entry["sha256"]:
        raise ValueError(f"{path} does not match the sha256 in the manifest")
    hashes = np.fromfile(path, dtype=HASH_DTYPE)
    if len(hashes) != entry["count"]:
        raise ValueError(f"{path} holds {len(hashes)} hashes, the manifest says {entry['count']}")
    return hashes


def decode_row(record: bytes, seq_len: int) -> dict[str, np.ndarray]:
    """One shard record -> ``{"tokens", "segment_ids", "positions", "loss_mask"}``, int32 [seq_len]."""
    if len(record) != 4 * seq_len * DTYPE.itemsize:
        raise ValueError(f"record has {len(record)} bytes; a row of seq_len {seq_len} has {16 * seq_len}")
    array2d = np.frombuffer(record, dtype=DTYPE).reshape(4, seq_len)
    return dict(zip(FIELDS, array2d))


def check_row(row: dict[str, np.ndarray]) -> list[str]:
    """Invariants of one packed row; returns the problems found (empty when it is well formed)."""
    problems = []
    seg, pos, mask, tokens = row["segment_ids"], row["positions"], row["loss_mask"], row["tokens"]
    used = seg > 0
    if used.any() and not used[: int(used.sum())].all():
        problems.append("padding before the last segment")
    ids = seg[used]
    if ids.size and (ids[0] != 1 or np.any(np.diff(ids) < 0) or np.any(np.diff(ids) > 1)):
        problems.append("segment ids are not contiguous from 1")
    starts = np.flatnonzero(np.diff(seg, prepend=0) != 0) if ids.size else np.array([], int)
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else int(used.sum())
        if not np.array_equal(pos[start:end], np.arange(end - start)):
            problems.append(f"positions of segment {seg[start]} do not restart at 0 and count up")
    if np.any(mask[~used]) or np.any(pos[~used]) or np.any(tokens[~used]):
        problems.append("padding carries tokens, positions or loss")
    if np.any((mask != 0) & (mask != 1)):
        problems.append("loss mask is not 0/1")
    return problems
