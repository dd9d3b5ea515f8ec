"""``tzc-data verify``: prove that builds are intact and share nothing.

Each check returns problems as lines that name the build, the shard and the row, so a failing
verify says where to look. Nothing here trusts the manifest's own claims about itself: shards are
re-hashed and every packed row is decoded and checked.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import numpy as np
import polars as pl
from array_record.python.array_record_module import ArrayRecordReader

from tzc_data.errors import TzcError
from tzc_data.load import read_manifest
from tzc_data.minhash import RECORD as NEAR_RECORD
from tzc_data.minhash import NearDupIndex
from tzc_data.pack import check_row, decode_row
from tzc_data.read import source_identity
from tzc_data.tokenize import sha256_file
from tzc_data.write import read_hashes

_PER_SHARD = 20  # problems listed per shard before the rest are counted
_READ_CHUNK = 256


def verify(builds: list[str]) -> list[str]:
    """All problems found in ``builds`` and between them; empty means verified."""
    problems: list[str] = []
    loaded: list[tuple[str, dict[str, Any], np.ndarray | None]] = []
    for build in builds:
        try:
            manifest = read_manifest(build)
        except TzcError as err:
            problems.append(f"{build}: {err}")
            continue
        problems += check_shards(build, manifest)
        problems += check_stats(build, manifest)
        near = manifest.get("near_dup")
        if near and sha256_file(os.path.join(build, near["file"])) != near["sha256"]:
            problems.append(f"{build}: {near['file']} does not match the sha256 in the manifest")
        try:
            hashes = read_hashes(build, manifest["hashes"])
        except (OSError, KeyError, ValueError) as err:
            problems.append(f"{build}: prompt hashes: {err}")
            hashes = None
        if hashes is not None:
            problems += check_hashes_against_stats(build, hashes)
        loaded.append((build, manifest, hashes))
    for (a, ma, ha), (b, mb, hb) in itertools.combinations(loaded, 2):
        problems += check_disjoint(a, ma, ha, b, mb, hb)
    return problems


def check_shards(build: str, manifest: dict[str, Any]) -> list[str]:
    """Every shard is there, hashes as recorded, holds the recorded count, and every row is well formed."""
    problems: list[str] = []
    seq_len = manifest["config"]["seq_len"]
    for entry in manifest["shards"]:
        where = f"{build} shard {entry['file']}"
        path = os.path.join(build, entry["file"])
        if not os.path.exists(path):
            problems.append(f"{where}: missing")
            continue
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            problems.append(f"{where}: sha256 {digest[:16]}... is not the manifest's {entry['sha256'][:16]}...")
        try:
            reader = ArrayRecordReader(path)
            count = reader.num_records()
        except Exception as err:  # array_record raises plain RuntimeError/ValueError on damage
            problems.append(f"{where}: cannot be read ({str(err).splitlines()[0]})")
            continue
        if count != entry["records"]:
            problems.append(f"{where}: {count} records, the manifest says {entry['records']}")
        found = []
        try:
            for start in range(0, count, _READ_CHUNK):
                for offset, record in enumerate(reader.read(list(range(start, min(start + _READ_CHUNK, count))))):
                    try:
                        found += [f"{where} row {start + offset}: {p}" for p in check_row(decode_row(record, seq_len))]
                    except ValueError as err:
                        found.append(f"{where} row {start + offset}: {err}")
        except Exception as err:
            found.append(f"{where}: reading records failed ({str(err).splitlines()[0]})")
        try:
            reader.close()
        except Exception as err:  # a damaged file can fail only when its reader is closed
            found.append(f"{where}: damaged ({str(err).splitlines()[0]})")
        problems += found[:_PER_SHARD]
        if len(found) > _PER_SHARD:
            problems.append(f"{where}: and {len(found) - _PER_SHARD} more problems")
    return problems


def check_stats(build: str, manifest: dict[str, Any]) -> list[str]:
    """Stats files hash as recorded, and their counts agree with the manifest and the shards."""
    problems = []
    for name, entry in manifest["stats"].items():
        path = os.path.join(build, name)
        if not os.path.exists(path):
            problems.append(f"{build} {name}: missing")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{build} {name}: sha256 does not match the manifest")
    if problems:
        return problems
    records = pl.read_parquet(os.path.join(build, "stats", "records.parquet"), columns=["status"])
    counts = manifest["counts"]
    if records.height != counts["read"]:
        problems.append(f"{build}: stats hold {records.height} rows, the manifest read {counts['read']}")
    by_status = dict(records.group_by("status").len().iter_rows())
    if by_status != counts["by_status"]:
        problems.append(f"{build}: stats count {by_status}, the manifest {counts['by_status']}")
    packed = sum(entry["records"] for entry in manifest["shards"])
    if packed != manifest["packing"]["rows"]:
        problems.append(f"{build}: shards hold {packed} packed rows, the manifest {manifest['packing']['rows']}")
    return problems


def check_hashes_against_stats(build: str, hashes: np.ndarray) -> list[str]:
    kept = (pl.read_parquet(os.path.join(build, "stats", "records.parquet"), columns=["status", "prompt_hash"])
            .filter(pl.col("status") == "kept")["prompt_hash"].unique().sort().to_list())
    if [bytes.fromhex(h) for h in kept] != [h.ljust(16, b"\0") for h in hashes.tolist()]:
        return [f"{build}: the prompt-hash file ({len(hashes)}) does not list the kept prompts of the stats ({len(kept)})"]
    return []


def check_disjoint(a: str, ma: dict[str, Any], ha: np.ndarray | None,
                   b: str, mb: dict[str, Any], hb: np.ndarray | None) -> list[str]:
    """Row ranges of the same source must not overlap, and no kept prompt may be in both builds."""
    problems = []
    if source_identity(ma["source"]) == source_identity(mb["source"]):
        low = max(ma["range"]["start"], mb["range"]["start"])
        high = min(ma["range"]["stop"], mb["range"]["stop"])
        if low < high:
            problems.append(f"builds {a} and {b}: row ranges overlap at rows {low}:{high} of the same source")
    problems += _near_duplicates_across(a, ma, b, mb)
    if ha is not None and hb is not None:
        shared = np.intersect1d(ha, hb)
        if len(shared):
            examples = ", ".join(_describe_shared(h.ljust(16, b"\0").hex(), a, b) for h in shared[:3].tolist())
            problems.append(f"builds {a} and {b} share {len(shared)} prompt hashes, e.g. {examples}")
    return problems


def _near_duplicates_across(a: str, ma: dict[str, Any], b: str, mb: dict[str, Any]) -> list[str]:
    """Prompts of ``b`` that are near-duplicates of prompts kept in ``a`` (when both stored signatures)."""
    if not (ma.get("near_dup") and mb.get("near_dup")):
        return []
    index = NearDupIndex(min(ma["near_dup"]["threshold"], mb["near_dup"]["threshold"]))
    index.load(os.path.join(a, ma["near_dup"]["file"]), label=a)
    found = []
    for record in np.fromfile(os.path.join(b, mb["near_dup"]["file"]), dtype=NEAR_RECORD):
        twin = index.find(record["bands"], record["sketch"])
        if twin is not None:
            found.append(f"row {twin[0]} in {a} ~ row {int(record['row'])} in {b} (Jaccard ~{twin[1]:.2f})")
    if not found:
        return []
    return [f"builds {a} and {b} share {len(found)} near-duplicate prompts (exact ones included), "
            f"e.g. {', '.join(found[:3])}"]


def _describe_shared(digest: str, a: str, b: str) -> str:
    rows = []
    for build in (a, b):
        stats = pl.read_parquet(os.path.join(build, "stats", "records.parquet"), columns=["row", "status", "prompt_hash"])
        hit = stats.filter((pl.col("prompt_hash") == digest) & (pl.col("status") == "kept"))["row"].to_list()
        rows.append(str(hit[0]) if hit else "?")
    return f"{digest} (row {rows[0]} in {a}, row {rows[1]} in {b})"
