"""The serial stages over the units' files: first kept wins, then what packing and the stats need.

Dedup depends on every earlier row, so it runs once every unit is done, in one process, in row
order, over the *candidates* (the rows that passed every per-row stage): exact dedup on the
prompt hash, near dedup on the LSH bands and sketch the row stage computed. The rule, exactly: a
row is dropped as a duplicate only of an earlier *kept* row (or of a build given to
``--exclude``), so every ``twin`` names a kept row. It reads only the keys, never text or tokens.

Then, from the same files: the kept examples' metadata for packing (:class:`~tzc_data.build.pack.Kept`,
the tokens stay in the units' files), ``near_dup.bin`` (the kept prompts' keys, for a later
``--exclude``), and the final stats: each unit's rows with the dedup outcome and the placement
applied (:func:`final_batches`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tzc_data import files
from tzc_data.build import loops, units
from tzc_data.build.config import BuildConfig
from tzc_data.build.pack import Kept
from tzc_data.build.write import STATS_BATCH, read_unit_table, unit_batches
from tzc_data.record import KEPT
from tzc_data.text.minhash import BANDS, DUPLICATE, NEAR_EXCLUDED, NUM_PERM, RECORD, NearDupIndex, outcome_reason

_KEYS = ["row", "status", "hash16", "bands", "sketch"]


@dataclass(frozen=True)
class Outcomes:
    """Per candidate, in row order: 0 (kept) or a :mod:`tzc_data.text.minhash` outcome code, the twin's
    row, the estimated Jaccard, and the excluded build of each ``in_excluded_split`` outcome."""

    codes: np.ndarray
    twins: np.ndarray
    jaccards: np.ndarray
    builds: dict[int, str]
    index_bytes: int = 0  # what the dedup pass held in its indexes and key arrays

    @property
    def kept(self) -> np.ndarray:
        return self.codes == 0


def _candidates(staging: str, index: int, columns: list[str]) -> pa.Table:
    """The rows of unit ``index`` that passed the row stage, with ``columns``."""
    table = read_unit_table(units.table_path(staging, index), ["status", *columns])
    return table.filter(pc.equal(table.column("status"), KEPT))


def fixed_width(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """A fixed-size binary column without nulls as a ``uint8[n, width]`` array, without a Python
    object per value."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    data = np.frombuffer(array.buffers()[1], dtype=np.uint8)
    return data[array.offset * width:(array.offset + len(array)) * width].reshape(-1, width)


def _all_keys(staging: str, done: Sequence[units.UnitDone], near: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Every candidate's prompt hash (``uint8[n, 16]``) and, with near dedup, band keys (``uint64[n, 16]``)."""
    hashes, bands = [], []
    for unit in done:
        table = _candidates(staging, unit.index, ["hash16", "bands"] if near else ["hash16"])
        hashes.append(fixed_width(table.column("hash16"), 16))
        if near:
            bands.append(fixed_width(table.column("bands"), 8 * BANDS).view("<u8"))
    joined = np.concatenate(hashes) if hashes else np.zeros((0, 16), np.uint8)
    return joined, (np.concatenate(bands) if bands else np.zeros((0, BANDS), "<u8")) if near else None


def sharing_a_key(hashes: np.ndarray | None, bands: np.ndarray | None, near: NearDupIndex | None) -> np.ndarray:
    """Which candidates share a key with another candidate or with an excluded build: the first 8
    bytes of the prompt hash (exact dedup; a superset of the true matches) or any LSH band key.

    Only these can be dropped, or be anyone's twin: a candidate with no shared key is kept,
    whatever else is in the build, and never changes another's outcome. So the serial pass runs
    on these alone and decides exactly what a pass over every candidate would. One compiled pass
    per key column (:func:`tzc_data.build.loops.mark_repeated`), on views of the key arrays: no copy of
    a column, no sort of it, no Python object per row.
    """
    count = len(hashes) if hashes is not None else len(bands)
    involved = np.zeros(count, dtype=bool)
    columns = [hashes[:, :8].view("<u8")[:, 0]] if hashes is not None else []
    columns += [bands[:, b] for b in range(BANDS)] if bands is not None else []
    bits = loops.bucket_bits(count)
    for keys in columns:
        loops.run(loops.mark_repeated, count, keys, involved, bits)
    if near is not None and len(near) and bands is not None:  # keys of the builds given to --exclude
        for lo in range(0, count, 1 << 16):
            involved[lo:lo + (1 << 16)] |= (near.lookup_many(bands[lo:lo + (1 << 16)]) >= 0).any(axis=1)
    return involved


def first_kept_wins(staging: str, done: Sequence[units.UnitDone], config: BuildConfig,
                    near: NearDupIndex | None) -> Outcomes:
    """Decide every candidate of the units, in order; ``near`` holds the excluded builds' keys."""
    total = sum(d.candidates for d in done)
    codes, twins = np.zeros(total, np.uint8), np.full(total, -1, np.int64)
    jaccards, builds = np.full(total, np.nan), {}
    if not config.dedup and near is None:
        return Outcomes(codes, twins, jaccards, builds)
    hashes, bands = _all_keys(staging, done, near is not None)
    involved = np.flatnonzero(sharing_a_key(hashes if config.dedup else None, bands, near))
    keys = bands[involved] if bands is not None else np.zeros((0, BANDS), "<u8")
    del bands
    rows, sketches = _involved_rows(staging, done, involved, near is not None)
    decided = decide(hashes[involved] if config.dedup else None, keys, sketches, rows, near)
    codes[involved], twins[involved], jaccards[involved] = decided.codes, decided.twins, decided.jaccards
    builds = {int(involved[k]): b for k, b in decided.builds.items()}
    held = (near.nbytes() if near is not None else 0) + hashes.nbytes + keys.nbytes + sketches.nbytes
    return Outcomes(codes, twins, jaccards, builds, held + 17 * len(involved))


def _involved_rows(staging: str, done: Sequence[units.UnitDone], involved: np.ndarray,
                   near: bool) -> tuple[np.ndarray, np.ndarray]:
    """The source rows and (with near dedup) sketches of the candidates ``involved`` (ordinals)."""
    rows = np.zeros(len(involved), np.int64)
    sketches = np.zeros((len(involved) if near else 0, NUM_PERM), np.uint8)
    at = taken = 0
    for unit in done:
        if taken == len(involved):
            break
        if unit.candidates == 0 or involved[taken] >= at + unit.candidates:
            at += unit.candidates
            continue
        table = _candidates(staging, unit.index, ["row", "sketch"] if near else ["row"])
        mine = involved[taken:np.searchsorted(involved, at + table.num_rows)] - at
        at += table.num_rows
        table = table.take(pa.array(mine))
        rows[taken:taken + len(mine)] = table.column("row").to_numpy()
        if near:
            sketches[taken:taken + len(mine)] = fixed_width(table.column("sketch"), NUM_PERM)
        taken += len(mine)
    return rows, sketches


def decide(hashes: np.ndarray | None, keys: np.ndarray, sketches: np.ndarray, rows: np.ndarray,
           near: NearDupIndex | None, *, compiled: bool | None = None) -> Outcomes:
    """First kept wins over m candidates in row order: their prompt hashes (``uint8[m, 16]``, None
    when exact dedup is off), band keys (``uint64[m, 16]``) and sketches (``uint8[m, 128]``; both
    empty when near dedup is off) and source rows; ``near`` holds the excluded builds' keys.

    The outcome of :func:`tzc_data.text.minhash.decide_batch` over the same candidates, row for row, in
    one compiled loop (:func:`tzc_data.build.loops.first_kept_wins`) over dense ids of the keys: one sort
    of the hashes, and the band keys grouped by :func:`tzc_data.build.loops.group_ids` without a sort
    (docs/benchmarks.md, section 17), instead of a Python object and a hash-table probe per key.
    ``compiled`` forces (or forbids) the compiled loops, for the tests."""
    m = len(rows)
    codes, twins, jaccards = np.zeros(m, np.uint8), np.full(m, -1, np.int64), np.full(m, np.nan)
    exact_ids, exact_groups = np.full(m, -1, np.int64), 0
    if hashes is not None and m:
        words = np.ascontiguousarray(hashes).view("<u8").reshape(m, 2)
        order = np.lexsort((words[:, 1], words[:, 0]))
        ordered = words[order]
        new = np.concatenate([[True], (ordered[1:] != ordered[:-1]).any(axis=1)])
        exact_ids[order] = np.cumsum(new) - 1
        exact_groups = int(new.sum())
        del words, ordered, new, order
    band_ids, band_groups = np.zeros((0, BANDS), np.int64), 0
    excluded = np.zeros((0, BANDS), np.int64)
    excluded_sketches = np.zeros((0, NUM_PERM), np.uint8)
    if near is not None and m:
        flat = np.ascontiguousarray(keys, np.uint64).reshape(-1)
        band_ids = np.empty(len(flat), np.int64)
        band_groups = loops.run(loops.group_ids, len(flat), flat, band_ids, loops.bucket_bits(len(flat)),
                                compiled=compiled)
        band_ids = band_ids.reshape(m, BANDS)
        del flat
        excluded = near.lookup_many(keys).astype(np.int64)
        if len(near.sketches):
            excluded_sketches = np.frombuffer(near.sketches, np.uint8).reshape(-1, NUM_PERM)
    loops.run(loops.first_kept_wins, m, exact_ids, exact_groups, band_ids, band_groups, excluded,
              np.ascontiguousarray(sketches), excluded_sketches, float(near.threshold if near is not None else 1.0),
              codes, twins, jaccards, np.ascontiguousarray(rows, np.int64), compiled=compiled)
    builds = {}
    for k in np.flatnonzero(codes == NEAR_EXCLUDED).tolist():
        ordinal = int(twins[k])
        twins[k], builds[k] = near.rows[ordinal], near.label(ordinal)
    return Outcomes(codes, twins, jaccards, builds)


def kept_examples(staging: str, done: Sequence[units.UnitDone], outcomes: Outcomes) -> Kept:
    """The kept examples' metadata, and where each one's tokens are in its unit's file."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("rows", "lengths", "prompt", "splits", "hashes", "units",
                                                           "offsets")}
    at = 0
    for unit in done:
        table = _candidates(staging, unit.index, ["row", "tokens", "prompt_tokens", "split", "hash16"])
        lengths = table.column("tokens").to_numpy().astype(np.int32)
        keep = outcomes.kept[at:at + len(lengths)]
        at += len(lengths)
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)[:-1]]) if len(lengths) else lengths
        parts["rows"].append(table.column("row").to_numpy()[keep])
        parts["lengths"].append(lengths[keep])
        parts["prompt"].append(table.column("prompt_tokens").to_numpy().astype(np.int32)[keep])
        parts["splits"].append(table.column("split").to_numpy().astype(np.uint8)[keep])
        parts["hashes"].append(fixed_width(table.column("hash16"), 16)[keep].copy().view("S16").reshape(-1))
        parts["units"].append(np.full(int(keep.sum()), unit.index, np.int32))
        parts["offsets"].append(offsets.astype(np.int64)[keep])
    joined = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    paths = {d.index: units.tokens_path(staging, d.index) for d in done}
    return Kept([paths.get(i, "") for i in range(max(paths, default=-1) + 1)], rows=joined["rows"].astype(np.int64),
                lengths=joined["lengths"].astype(np.int32), prompt_lengths=joined["prompt"].astype(np.int32),
                splits=joined["splits"].astype(np.uint8), hashes=joined["hashes"].astype("S16"),
                units=joined["units"].astype(np.int32), offsets=joined["offsets"].astype(np.int64))


def write_near_dup(path: str, staging: str, done: Sequence[units.UnitDone], outcomes: Outcomes) -> None:
    """``near_dup.bin``: the kept prompts' band keys, sketch and row, in row order."""
    at = 0
    with files.atomic_path(path) as temporary, open(temporary, "wb") as out:
        for unit in done:
            table = _candidates(staging, unit.index, ["row", "bands", "sketch"])
            keep = outcomes.kept[at:at + table.num_rows]
            at += table.num_rows
            records = np.empty(int(keep.sum()), dtype=RECORD)
            records["bands"] = fixed_width(table.column("bands"), 8 * BANDS).view("<u8")[keep]
            records["sketch"] = fixed_width(table.column("sketch"), NUM_PERM)[keep]
            records["row"] = table.column("row").to_numpy()[keep]
            out.write(records.tobytes())


def final_batches(staging: str, done: Sequence[units.UnitDone], outcomes: Outcomes, where: np.ndarray,
                  split_names: Sequence[str], columns: list[str], size: int = STATS_BATCH) -> Iterator[pa.Table]:
    """The units' rows as the final stats see them, in tables of ``size`` rows: dedup's outcome
    applied to each candidate (status, detail, twin, ``near_dup_jaccard``) and the placement of
    each kept row (split, shard, pack, segment: ``where[k]`` for the k-th kept example).

    Each table is made as it is read, with Arrow's kernels over whole columns; only the rows that
    dedup dropped get a Python string (their detail), so a batch costs no Python object per row."""
    paths = [units.table_path(staging, d.index) for d in done]
    candidates_before = kept_before = 0
    names = pa.array(list(split_names), pa.string())
    for batch in unit_batches(paths, columns, size):
        candidate = pc.equal(batch.column("status"), KEPT).to_numpy()
        ordinals = candidates_before + np.arange(int(candidate.sum()))
        candidates_before += len(ordinals)
        codes = outcomes.codes[ordinals]
        kept = candidate.copy()
        if codes.any():
            batch = _apply_outcomes(batch, np.flatnonzero(candidate), ordinals, outcomes)
            kept[np.flatnonzero(candidate)[codes > 0]] = False
        placed = where[kept_before + np.cumsum(kept) - 1] if len(where) else np.zeros((len(kept), 4), np.int32)
        placed = np.where(kept[:, None], placed, 0)
        kept_before += int(kept.sum())
        batch = batch.append_column("split", pc.take(names, pa.array(placed[:, 0], mask=~kept)))
        for k, name in enumerate(("shard", "pack", "segment"), 1):
            batch = batch.append_column(name, pa.array(placed[:, k].astype(np.int32), mask=~kept))
        yield batch


def _apply_outcomes(batch: pa.Table, positions: np.ndarray, ordinals: np.ndarray, outcomes: Outcomes) -> pa.Table:
    """``batch`` with the dedup outcome of its candidates (at ``positions``) applied: the rows
    dedup dropped get their status, detail, twin and Jaccard, replaced in place by Arrow."""
    dropped = outcomes.codes[ordinals] > 0
    positions, ordinals = positions[dropped], ordinals[dropped]
    codes, row_twins = outcomes.codes[ordinals], outcomes.twins[ordinals]
    values = outcomes.jaccards[ordinals]
    reasons = [outcome_reason(int(code), int(twin), float(value), outcomes.builds.get(ordinal))
               for code, twin, value, ordinal in zip(codes.tolist(), row_twins.tolist(), values.tolist(),
                                                     ordinals.tolist())]

    def replaced(name: str, where: np.ndarray, new: pa.Array) -> pa.Table:
        mask = np.zeros(batch.num_rows, bool)
        mask[where] = True
        column = pc.replace_with_mask(batch.column(name).combine_chunks(), pa.array(mask), new)
        return batch.set_column(batch.column_names.index(name), name, column)

    batch = replaced("status", positions, pa.array([r[0] for r in reasons], pa.string()))
    batch = replaced("detail", positions, pa.array([r[1] for r in reasons], pa.string()))
    twinned = codes != NEAR_EXCLUDED
    batch = replaced("twin", positions[twinned], pa.array(row_twins[twinned], pa.int64()))
    if "near_dup_jaccard" in batch.column_names:
        near = codes != DUPLICATE
        batch = replaced("near_dup_jaccard", positions[near],
                         pa.array([round(v, 3) for v in values[near].tolist()], pa.float64()))
    return batch


__all__ = ["Outcomes", "decide", "final_batches", "first_kept_wins", "kept_examples", "write_near_dup"]
