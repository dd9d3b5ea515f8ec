"""``stats/records.parquet`` against the shards: every input row kept or dropped with a reason,
every kept row placed in exactly one segment that holds its tokens and prompt, and the manifest's
counts, range and totals as the files say.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tzc_data.files import MANIFEST
from tzc_data.layout import PACKS, RECORDS, record_layout
from tzc_data.record import REASONS
from tzc_data.text.dedupe import split_of
from tzc_data.verify.layers import (
    PER_SHARD,
    RECORD_TYPES,
    STATS_BATCH,
    Layout,
    Packs,
    Segments,
    one_line,
    schema_problems,
)


def _check_config(build: str, config: dict[str, Any], start: int, stop: int,
                  records: RecordTotals | None) -> list[str]:
    """The recorded options the data can contradict: the range the build read and --max-tokens
    (no kept example is longer; unreadable stats are a problem of their own)."""
    problems = []
    if (config.get("start", start), config.get("stop", stop)) != (start, stop):
        problems.append(f"{build}: config records the range {config.get('start')}:{config.get('stop')}, the "
                        f"manifest's range is {start}:{stop}")
    limit = config.get("max_tokens")
    if "max_tokens" in config and not (_is_count(limit) and 1 <= limit <= config["seq_len"]):
        problems.append(f"{build}: config.max_tokens {json.dumps(limit)[:40]} is not a token count from 1 to "
                        f"config.seq_len ({config['seq_len']})")
    elif limit is not None and records is not None and records.longest > limit:  # None: a problem said why
        problems.append(f"{build}: a kept example of {RECORDS} holds {records.longest} tokens, more than "
                        f"config.max_tokens {limit}")
    return problems


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_RECORD_COLUMNS = ("row", "status", "prompt_hash", "tokens", "loss_tokens", "split", "shard", "pack", "segment")


@dataclass
class RecordTotals:
    """What records.parquet adds up to, for :func:`check_counts`."""

    height: int = 0
    by_status: Counter = field(default_factory=Counter)
    tokens: int = 0
    loss_tokens: int = 0
    by_split: Counter = field(default_factory=Counter)  # kept examples per split
    tokens_by_split: Counter = field(default_factory=Counter)
    unique_hashes: int | None = None
    longest: int = 0  # tokens of the longest kept example


def check_records(build: str, manifest: dict[str, Any], layout: Layout, packs: Packs | None,
                  segments: Segments | None, hashes: np.ndarray | None) -> tuple[RecordTotals | None, list[str]]:
    """One stats row per source row of the range; each kept row placed in exactly one segment that
    holds its tokens and its prompt; every segment claimed once; the prompt-hash file = kept prompts."""
    where = f"{build} {RECORDS}"
    path = os.path.join(build, RECORDS)
    if not os.path.isfile(path):
        return None, []  # check_files said why
    found: list[str] = []
    totals = RecordTotals()
    claimed = np.zeros(packs.segment_count if packs is not None else 0, dtype=np.int32)
    kept_hashes: list[np.ndarray] = []
    split_names = ("train", "eval") if manifest["config"]["eval_fraction"] > 0 else ("train",)
    try:
        parquet = pq.ParquetFile(path)
        wrong = schema_problems(where, parquet.schema_arrow, RECORD_TYPES)
        if wrong:
            return None, wrong
        next_row = manifest["range"]["start"]
        for batch in parquet.iter_batches(batch_size=STATS_BATCH, columns=list(_RECORD_COLUMNS)):
            next_row = _check_batch(where, batch, next_row, manifest, layout, packs, segments, claimed, totals,
                                    kept_hashes, split_names, found)
    except (OSError, pa.ArrowException, ValueError, TypeError) as err:
        return None, found[:PER_SHARD] + [f"{where}: cannot be read as Parquet ({one_line(err)})"]
    if packs is not None:
        found += _unclaimed(build, layout, packs, claimed)
    stacked = np.concatenate(kept_hashes) if kept_hashes else np.zeros((0, 16), np.uint8)
    unique = np.unique(np.ascontiguousarray(stacked).view("S16").ravel())
    totals.unique_hashes = len(unique)
    if hashes is not None:
        listed = np.frombuffer(hashes.astype("S16").tobytes(), dtype="S16")
        if len(listed) != len(unique) or not np.array_equal(np.sort(listed), unique):
            found.append(f"{build}: the prompt-hash file ({len(listed)}) does not list the kept prompts of "
                         f"{RECORDS} ({len(unique)})")
    problems = found[:PER_SHARD]
    if len(found) > PER_SHARD:
        problems.append(f"{where}: and {len(found) - PER_SHARD} more problems")
    return totals, problems


@dataclass
class _Kept:
    """The kept rows of one batch of records.parquet, column by column."""

    row: np.ndarray
    split: np.ndarray  # of str
    shard: np.ndarray
    pack: np.ndarray
    segment: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    hashes: np.ndarray  # uint8 [n, 16]

    def where(self, k: int, layout: Layout) -> str:
        return (f"placed in {layout.name(self.split[k], int(self.shard[k]))} row {int(self.pack[k])} segment "
                f"{int(self.segment[k])}")


def _check_batch(where: str, batch: pa.RecordBatch, next_row: int, manifest: dict[str, Any], layout: Layout,
                 packs: Packs | None, segments: Segments | None, claimed: np.ndarray, totals: RecordTotals,
                 kept_hashes: list[np.ndarray], split_names: tuple[str, ...], found: list[str]) -> int:
    """One batch of records.parquet: rows in order, known statuses, only kept rows placed; then
    the kept rows (:func:`_kept_rows`, :func:`_check_placement`). Returns the next row expected."""
    n = batch.num_rows
    col = {name: batch.column(name) for name in _RECORD_COLUMNS}
    rows = col["row"].to_numpy(zero_copy_only=False)
    expected = np.arange(next_row, next_row + n)
    if not np.array_equal(rows, expected):
        bad = int(np.flatnonzero(rows != expected)[0])
        found.append(f"{where}: holds row {rows[bad]} where row {expected[bad]} belongs (one stats row per source "
                     "row, in order)")
    status = np.array(col["status"].to_pylist(), dtype=object)
    totals.height += n
    totals.by_status.update(status.tolist())
    kept = status == "kept"
    unknown = sorted(set(totals.by_status) - set(REASONS) - {"kept"})
    if unknown and not any("is no drop reason tzc knows" in p for p in found):
        found.append(f"{where}: status {unknown[0]!r} is no drop reason tzc knows (near row {int(rows[0])})")
    placed = ~kept & ~np.asarray(col["shard"].is_null())
    if placed.any():
        first = int(np.flatnonzero(placed)[0])
        found.append(f"{where} row {int(rows[first])}: dropped ({status[first]}), but placed in a shard")
    found_kept = _kept_rows(where, col, rows, kept, found) if kept.any() else None
    if found_kept is None:
        return next_row + n
    kept_hashes.append(found_kept.hashes)
    totals.tokens += int(found_kept.tokens.sum())
    totals.longest = max(totals.longest, int(found_kept.tokens.max()))
    totals.loss_tokens += int(found_kept.loss.sum())
    for k, row in enumerate(found_kept.row.tolist()):
        split = found_kept.split[k]
        totals.by_split[split] += 1
        totals.tokens_by_split[split] += int(found_kept.tokens[k])
        assigned = split_names[split_of(found_kept.hashes[k].tobytes(), manifest["config"]["eval_fraction"])]
        if split != assigned:
            found.append(f"{where} row {row}: in split {split!r}, but its prompt hash assigns it to {assigned!r}")
    if packs is not None:
        _check_placement(where, layout, packs, segments, claimed, found_kept, found)
    return next_row + n


def _kept_rows(where: str, col: dict[str, pa.Array], rows: np.ndarray, kept: np.ndarray,
               found: list[str]) -> _Kept | None:
    """The kept rows' columns, or None (with the problem) when they lack a placement or a hash."""
    placed = ("split", "shard", "pack", "segment", "tokens", "loss_tokens", "prompt_hash")
    nulls = [name for name in placed if col[name].filter(pa.array(kept)).null_count]
    if nulls:
        found.append(f"{where}: kept rows with no {', '.join(nulls)} (e.g. near row {int(rows[kept][0])})")
        return None
    index = pa.array(np.flatnonzero(kept))
    numbers = [col[c].take(index).to_numpy().astype(np.int64) for c in ("shard", "pack", "segment", "tokens",
                                                                          "loss_tokens")]
    try:
        digests = b"".join(bytes.fromhex(d) for d in col["prompt_hash"].take(index).to_pylist())
        hashes = np.frombuffer(digests, dtype=np.uint8).reshape(-1, 16)
    except ValueError:
        found.append(f"{where}: a kept row's prompt_hash is not 32 hex digits (near row {int(rows[kept][0])})")
        return None
    return _Kept(rows[kept], np.array(col["split"].take(index).to_pylist(), dtype=object), *numbers, hashes)


def _check_placement(where: str, layout: Layout, packs: Packs, segments: Segments, claimed: np.ndarray,
                     kept: _Kept, found: list[str]) -> None:
    """Each kept row's (split, shard, pack, segment) names a segment of packs.parquet listing that
    row, whose shard tokens, loss tokens and decoded prompt are the row's."""
    flat = np.full(len(kept.row), -1, dtype=np.int64)
    for k in range(len(kept.row)):
        entries = layout.by_split.get(kept.split[k], [])
        shard, pack, seg = int(kept.shard[k]), int(kept.pack[k]), int(kept.segment[k])
        if not 0 <= shard < len(entries) or not 0 <= pack < layout.entries[entries[shard]]["records"]:
            found.append(f"{where} row {int(kept.row[k])}: placed in {layout.name(kept.split[k], shard)} row {pack}, "
                         "which no shard of the manifest holds")
            continue
        p = layout.start[entries[shard]] + pack
        if not 1 <= seg <= int(packs.segments[p]):
            found.append(f"{where} row {int(kept.row[k])}: placed in segment {seg} of "
                         f"{layout.name(kept.split[k], shard)} row {pack}, which has {int(packs.segments[p])}")
            continue
        flat[k] = int(packs.offsets[p]) + seg - 1
    ok = flat >= 0
    np.add.at(claimed, flat[ok], 1)
    at, k_ok = flat[ok], np.flatnonzero(ok)
    listed = packs.rows[at]
    tokens, loss, hashed = segments.tokens[at], segments.loss[at], segments.hashed[at]
    checks = [  # (disagrees, what to say), row by row
        (hashed & np.any(segments.hashes[at] != kept.hashes[ok], axis=1),
         lambda i: "the shard's text there has another prompt (its hash differs)"),
        (listed != kept.row[ok], lambda i: f"{PACKS} lists source row {int(listed[i])} there"),
        ((tokens >= 0) & (tokens != kept.tokens[ok]),
         lambda i: f"{int(kept.tokens[k_ok[i]])} tokens, the shard holds {int(tokens[i])}"),
        ((loss >= 0) & (loss != kept.loss[ok]),
         lambda i: f"{int(kept.loss[k_ok[i]])} loss tokens, the shard holds {int(loss[i])}"),
    ]
    for i in np.flatnonzero(np.any([bad for bad, _ in checks], axis=0))[:PER_SHARD].tolist():
        said = "; ".join(message(i) for bad, message in checks if bad[i])
        found.append(f"{where} row {int(kept.row[k_ok[i]])} ({kept.where(int(k_ok[i]), layout)}): {said}")


def _unclaimed(build: str, layout: Layout, packs: Packs, claimed: np.ndarray) -> list[str]:
    """Segments that no kept row, or more than one, claims."""
    problems = []
    bad = np.flatnonzero(claimed != 1)
    if not len(bad):
        return []
    packed = np.searchsorted(packs.offsets, bad, side="right") - 1
    for s, p in zip(bad[:PER_SHARD].tolist(), packed[:PER_SHARD].tolist()):
        k = layout.entry_of(p)
        p_in_shard = p - layout.start[k]
        what = "no kept row of" if claimed[s] == 0 else f"{int(claimed[s])} kept rows of"
        problems.append(f"{build} shard {layout.entries[k]['file']} row {p_in_shard} segment "
                        f"{s - int(packs.offsets[p]) + 1}: {what} {RECORDS} placed there ({PACKS} lists source "
                        f"row {int(packs.rows[s])})")
    if len(bad) > PER_SHARD:
        problems.append(f"{build}: and {len(bad) - PER_SHARD} more segments claimed by no kept row or several")
    return problems


def check_counts(build: str, manifest: dict[str, Any], layout: Layout, packs: Packs | None,
                 records: RecordTotals | None) -> list[str]:
    """The manifest's counts, range and packing totals against the shards, packs and records."""
    problems = []
    counts, packing, config = manifest["counts"], manifest["packing"], manifest["config"]
    start, stop = manifest["range"]["start"], manifest["range"]["stop"]

    def differ(what: str, found: Any, says: Any) -> None:
        if found != says:
            problems.append(f"{build}: {what} {found}, the manifest says {says}")

    differ("the range holds rows:", stop - start, counts["read"])
    differ("rows read = kept + dropped:", counts["kept"] + counts["dropped"], counts["read"])
    differ("by_status adds up to", sum(counts["by_status"].values()), counts["read"])
    differ("by_status counts kept:", counts["by_status"].get("kept", 0), counts["kept"])
    differ("config.seq_len is", config["seq_len"], packing["seq_len"])
    problems += _check_config(build, config, start, stop, records)
    if manifest.get("record_layout") != json.loads(json.dumps(record_layout(config["seq_len"]))):
        problems.append(f"{build} {MANIFEST}: record_layout does not describe rows of seq_len {config['seq_len']} "
                        "as this tzc writes them")
    differ("the shards hold packed rows:", layout.rows, packing["rows"])
    for split in layout.splits:
        rows = sum(layout.entries[k]["records"] for k in layout.by_split[split])
        differ(f"the shards of {split!r} hold packed rows:", rows, packing["by_split"][split]["rows"])
    if packs is not None:
        differ(f"{PACKS} holds segments (examples):", packs.segment_count, packing["examples"])
        differ(f"{PACKS} holds tokens:", int(packs.tokens.sum()), packing["tokens"])
        differ(f"{PACKS} holds loss tokens:", int(packs.loss_tokens.sum()), packing["loss_tokens"])
        fill = round(int(packs.tokens.sum()) / (layout.rows * config["seq_len"]), 6) if layout.rows else 0.0
        differ("the fill is", fill, packing["fill"])
    if records is not None:
        differ(f"{RECORDS} holds rows:", records.height, counts["read"])
        differ(f"{RECORDS} counts by status", dict(sorted(records.by_status.items())),
               dict(sorted(counts["by_status"].items())))
        differ(f"{RECORDS} counts kept rows:", records.by_status.get("kept", 0), packing["examples"])
        differ(f"{RECORDS} kept rows hold tokens:", records.tokens, packing["tokens"])
        differ(f"{RECORDS} kept rows hold loss tokens:", records.loss_tokens, packing["loss_tokens"])
        for split in layout.splits:
            differ(f"{RECORDS} kept rows of {split!r}:", records.by_split.get(split, 0),
                   packing["by_split"][split]["examples"])
            differ(f"{RECORDS} tokens of {split!r}:", records.tokens_by_split.get(split, 0),
                   packing["by_split"][split]["tokens"])
        unknown = set(records.by_split) - set(layout.splits)
        if unknown:
            problems.append(f"{build}: {RECORDS} places kept rows in splits {sorted(unknown)} the manifest does "
                            "not have")
        differ(f"{RECORDS} kept rows have distinct prompts:", records.unique_hashes, manifest["hashes"]["count"])
    return problems
