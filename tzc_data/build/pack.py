"""Pack tokenized examples into fixed-length rows, never splitting an example.

Why offline best-fit-decreasing: GlaiveAI examples are large relative to a 4096-token row (median
about 2k tokens), so an online packer that must decide as examples arrive wastes a lot (greedy
next-fit: ~81% fill). Sorting all lengths first and placing each example in the fullest row that
still fits it is the reference the issue measures against; doing exactly that gives its fill.

To keep memory flat as the range grows, tokens stay on disk: each unit's row stage writes the
tokens of its rows to its own file (:mod:`tzc_data.build.units`), and only per-example metadata is in
memory here (:class:`Kept`). Packing works on the lengths alone, and each packed row is assembled
by reading its examples back from those files.

The algorithm, step by step (:func:`best_fit_decreasing`):
  1. order the examples by length, longest first (ties: earlier example first);
  2. keep the open rows ordered by (space left, row id);
  3. for each example of length L, find the first key with space left >= L (bisect): the row
     whose space left is smallest but sufficient. If there is none, open a new row;
  4. put the example there and re-insert the row with its new space left, unless that space is
     below the shortest example of all (nothing can ever fit again: the row is closed);
  5. finally order the rows by their earliest example, and each row's examples by arrival, so the
     shards follow the source order (a trainer that reads sequentially sees no length
     curriculum) and the output is a pure function of the kept examples.

Packed row layout (one ArrayRecord record; ``decode_row`` reads it with numpy alone): little-endian
int32, shape ``[4, seq_len]``, the four rows being ``tokens``, ``segment_ids`` (0 = padding,
1..k in order), ``positions`` (restart at 0 for each segment, 0 on padding) and ``loss_mask``
(1 where the token is a training target: the model turn of its segment).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np

from tzc_data.build import loops
from tzc_data.errors import OutputError
from tzc_data.layout import DTYPE


def best_fit_decreasing(lengths: Sequence[int] | np.ndarray, capacity: int) -> list[list[int]]:
    """Bins of item indices, each summing to at most ``capacity`` (see the module docstring)."""
    members, offsets = packed_rows(lengths, capacity)
    flat = members.tolist()
    return [flat[lo:hi] for lo, hi in zip(offsets[:-1].tolist(), offsets[1:].tolist())]


def packed_rows(lengths: Sequence[int] | np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`best_fit_decreasing` as flat arrays: the items of packed row ``r`` are
    ``members[offsets[r]:offsets[r + 1]]`` (int64), no Python object per item.

    Steps 2 to 4 are one compiled loop (:func:`tzc_data.build.loops.best_fit_decreasing`: pairing heaps
    of rows per space left instead of a sorted list, with the same (space left, row) rule); the
    order of step 1 is one stable numpy sort (8 bytes an item); step 5 is two more."""
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    outside = (lengths > capacity) | (lengths <= 0)
    if outside.any():
        bad = int(np.argmax(outside))
        raise ValueError(f"item {bad} has length {lengths[bad]}, outside 1..{capacity}")
    if not len(lengths):
        return np.zeros(0, np.int64), np.zeros(1, np.int64)
    order = np.argsort(-lengths, kind="stable")  # longest first; equal lengths in arrival order
    row_of = np.empty(len(lengths), np.int64)
    count = loops.run(loops.best_fit_decreasing, len(lengths), lengths, order, capacity, int(lengths[order[-1]]),
                      row_of)
    del order
    first = np.full(count, len(lengths), np.int64)  # each row's earliest item: rows follow the source order
    np.minimum.at(first, row_of, np.arange(len(lengths)))
    rank = np.empty(count, np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(count)
    members = np.argsort(rank[row_of], kind="stable")  # by row, then by arrival within a row
    offsets = np.zeros(count + 1, np.int64)
    np.cumsum(np.bincount(rank[row_of], minlength=count), out=offsets[1:])
    return members, offsets


def fill(lengths: Sequence[int], bins: Sequence[Sequence[int]], capacity: int) -> float:
    """Share of non-padding tokens over all tokens of all rows."""
    return sum(lengths) / (len(bins) * capacity) if bins else 0.0


class Kept:
    """The examples that dedup kept, in row order: their metadata in memory (row, length, prompt
    length, split, prompt hash, and where their tokens are: a unit's tokens file and the offset in
    it; 45 bytes an example), their tokens on disk until a packed row is assembled."""

    def __init__(self, tokens_paths: Sequence[str], *, rows: np.ndarray, lengths: np.ndarray,
                 prompt_lengths: np.ndarray, splits: np.ndarray, hashes: np.ndarray, units: np.ndarray,
                 offsets: np.ndarray):
        self.tokens_paths = list(tokens_paths)  # by unit index
        self.rows, self.lengths, self.prompt_lengths = rows, lengths, prompt_lengths
        self.splits, self.hashes, self.units, self.offsets = splits, hashes, units, offsets

    def __len__(self) -> int:
        return len(self.lengths)

    def subset(self, members: np.ndarray) -> Kept:
        """The examples ``members``, renumbered 0..n-1 (what one shard's writer needs)."""
        return Kept(self.tokens_paths, rows=self.rows[members], lengths=self.lengths[members],
                    prompt_lengths=self.prompt_lengths[members], splits=self.splits[members],
                    hashes=self.hashes[members], units=self.units[members], offsets=self.offsets[members])

    def items(self, split: int) -> np.ndarray:
        """Indices of the examples assigned to ``split``, in row order."""
        return np.flatnonzero(self.splits == split)

    def lengths_of(self, items: np.ndarray) -> np.ndarray:
        return self.lengths[items]

    def read_rows(self, bins: Sequence[Sequence[int]], seq_len: int) -> Iterator[np.ndarray]:
        """Assemble each bin (of example indices) into a packed row, ``int32[4, seq_len]``."""
        itemsize = DTYPE.itemsize
        handles: dict[int, int] = {}
        try:
            for members in bins:
                packed = np.zeros((4, seq_len), dtype=DTYPE)
                at = 0
                for segment, item in enumerate(members, 1):
                    unit, length = int(self.units[item]), int(self.lengths[item])
                    fd = handles.get(unit)
                    if fd is None:
                        if len(handles) >= _OPEN_FILES:
                            os.close(handles.pop(next(iter(handles))))
                        fd = handles[unit] = os.open(self.tokens_paths[unit], os.O_RDONLY)
                    raw = os.pread(fd, length * itemsize, int(self.offsets[item]) * itemsize)
                    if len(raw) != length * itemsize:
                        raise OutputError(f"{self.tokens_paths[unit]} is shorter than its done-marker says; "
                                          "run without --resume to start over")
                    packed[0, at:at + length] = np.frombuffer(raw, dtype=DTYPE)
                    packed[1, at:at + length] = segment
                    packed[2, at:at + length] = np.arange(length, dtype=DTYPE)
                    packed[3, at + int(self.prompt_lengths[item]):at + length] = 1
                    at += length
                yield packed
        finally:
            for fd in handles.values():
                os.close(fd)


_OPEN_FILES = 64  # tokens files held open at once while rows are assembled


def placement(members: np.ndarray, offsets: np.ndarray, kept: Kept, seq_len: int, rows_per_shard: int,
              where: np.ndarray) -> dict[str, np.ndarray]:
    """Where each example of one split went, and one stats row per packed row, with numpy.

    Packed row ``r`` holds the example indices ``members[offsets[r]:offsets[r + 1]]`` (as
    :func:`packed_rows` gives them, mapped to indices into ``kept``). Fills ``where[k] = (shard,
    record in shard, segment id)`` for them and returns the columns of ``stats/packs.parquet``
    (``rows`` as flat source rows plus ``rows_offsets``).
    """
    count = len(offsets) - 1
    sizes = np.diff(offsets)
    flat = np.asarray(members, dtype=np.int64)
    number = np.arange(count)
    shard, index = number // rows_per_shard, number % rows_per_shard
    bin_of = np.repeat(number, sizes)  # the packed row of each entry of ``flat``
    where[flat] = np.stack([shard[bin_of], index[bin_of], np.arange(len(flat)) - offsets[bin_of] + 1], axis=1)

    def per_row(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values[flat], offsets[:-1]) if count else np.zeros(0, np.int64)

    lengths = kept.lengths.astype(np.int64)
    tokens = per_row(lengths)
    packs = {
        "shard": shard.astype(np.int32),
        "index": index.astype(np.int32),
        "segments": sizes.astype(np.int32),
        "tokens": tokens.astype(np.int32),
        "loss_tokens": per_row(lengths - kept.prompt_lengths).astype(np.int32),
        "fill": tokens / seq_len,
        "rows": kept.rows.astype(np.int64)[flat],
        "rows_offsets": offsets.astype(np.int32),
    }
    return packs


def rows_lower_bound(lengths: Sequence[int] | np.ndarray, capacity: int) -> int:
    """No packing that keeps examples whole uses fewer rows: enough for every token, and one row
    for each example longer than half a row (no two of them fit together)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return max(-(-int(lengths.sum()) // capacity), int(np.count_nonzero(2 * lengths > capacity)))
