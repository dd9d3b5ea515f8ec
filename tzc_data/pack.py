"""Pack tokenized examples into fixed-length rows, never splitting an example.

Why offline best-fit-decreasing: GlaiveAI examples are large relative to a 4096-token row (median
about 2k tokens), so an online packer that must decide as examples arrive wastes a lot (greedy
next-fit: ~81% fill). Sorting all lengths first and placing each example in the fullest row that
still fits it is the reference the issue measures against; doing exactly that gives its fill.

To keep memory flat as the range grows, examples are *spooled*: their tokens go to a file on
disk as they stream past, and only per-example metadata stays in memory (row, offset, length,
prompt length, split, prompt hash: 41 bytes). Packing then works on the lengths alone, and each packed row is
assembled by reading its examples back from the spool.

The algorithm, step by step (:func:`best_fit_decreasing`):
  1. order the examples by length, longest first (ties: earlier example first);
  2. keep the open rows in a sorted list keyed by (space left, row id);
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
import struct
from array import array
from collections.abc import Iterator, Sequence

import numpy as np
from sortedcontainers import SortedList

from tzc_data.errors import OutputError
from tzc_data.files import PrefixDigest, truncate_to_checkpoint

FIELDS = ("tokens", "segment_ids", "positions", "loss_mask")
DTYPE = np.dtype("<i4")
_ID_BITS = 32


def best_fit_decreasing(lengths: Sequence[int] | np.ndarray, capacity: int) -> list[list[int]]:
    """Bins of item indices, each summing to at most ``capacity`` (see the module docstring).

    The order of step 1 is one stable numpy sort (8 bytes an item), not a sort keyed by Python
    tuples (about 100 bytes an item, part of the packing phase that set the build's peak memory)."""
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    outside = (lengths > capacity) | (lengths <= 0)
    if outside.any():
        bad = int(np.argmax(outside))
        raise ValueError(f"item {bad} has length {lengths[bad]}, outside 1..{capacity}")
    if not len(lengths):
        return []
    order = np.argsort(-lengths, kind="stable")  # longest first; equal lengths in arrival order
    shortest = int(lengths[order[-1]])
    mask = (1 << _ID_BITS) - 1
    open_rows = SortedList()
    bins: list[list[int]] = []
    for item, length in zip(order.tolist(), lengths[order].tolist()):
        at = open_rows.bisect_left(length << _ID_BITS)
        if at < len(open_rows):
            key = open_rows.pop(at)
            row, left = key & mask, (key >> _ID_BITS) - length
            bins[row].append(item)
        else:
            row, left = len(bins), capacity - length
            bins.append([item])
        if left >= shortest:
            open_rows.add((left << _ID_BITS) | row)
    for members in bins:
        members.sort()
    bins.sort(key=lambda members: members[0])
    return bins


def fill(lengths: Sequence[int], bins: Sequence[Sequence[int]], capacity: int) -> float:
    """Share of non-padding tokens over all tokens of all rows."""
    return sum(lengths) / (len(bins) * capacity) if bins else 0.0


JOURNAL = np.dtype([("row", "<i8"), ("length", "<i4"), ("prompt_length", "<i4"), ("split", "u1"), ("hash", "S16")])
_JOURNAL_RECORD = struct.Struct("<qiiB16s")  # one JOURNAL record, packed without numpy


class Spool:
    """Tokens of kept examples on disk, plus an append-only journal of their metadata.

    Both files only grow, so a checkpoint is just their two sizes: resuming truncates them to
    those sizes and rebuilds the in-memory arrays from the journal (row, length, prompt length,
    split, prompt hash: 33 bytes per kept example on disk, 25 in memory).
    """

    def __init__(self, directory: str, *, resume_at: tuple[int, int, str, str] | None = None):
        self.tokens_path = os.path.join(directory, ".spool.tokens")
        self.journal_path = os.path.join(directory, ".spool.journal")
        self.rows, self.offsets = array("q"), array("q")
        self.lengths, self.prompt_lengths = array("i"), array("i")
        self.splits, self.hashes = array("B"), bytearray()
        self._offset = 0
        if resume_at is None:
            open(self.tokens_path, "wb").close()
            open(self.journal_path, "wb").close()
            self._digests = (PrefixDigest(self.tokens_path), PrefixDigest(self.journal_path))
        else:
            self._digests = (truncate_to_checkpoint(self.tokens_path, resume_at[0], resume_at[2]),
                             truncate_to_checkpoint(self.journal_path, resume_at[1], resume_at[3],
                                                    record_size=JOURNAL.itemsize))
            journal = np.fromfile(self.journal_path, dtype=JOURNAL)
            for record in journal:
                self._remember(int(record["row"]), int(record["length"]), int(record["prompt_length"]),
                               int(record["split"]), bytes(record["hash"]).ljust(16, b"\0"))
            if self._offset * array("i").itemsize != resume_at[0]:
                raise OutputError(f"cannot resume: the journal {self.journal_path} accounts for {self._offset} tokens, "
                                  f"{self.tokens_path} holds {resume_at[0] // 4}; run without --resume to start over")
        self._tokens = open(self.tokens_path, "ab")
        self._journal = open(self.journal_path, "ab")

    def __len__(self) -> int:
        return len(self.lengths)

    def _remember(self, row: int, length: int, prompt_length: int, split: int, digest: bytes) -> None:
        self.rows.append(row)
        self.offsets.append(self._offset)
        self.lengths.append(length)
        self.prompt_lengths.append(prompt_length)
        self.splits.append(split)
        self.hashes += digest
        self._offset += length

    def add(self, row: int, tokens: Sequence[int], prompt_length: int, split: int = 0, digest: bytes = bytes(16)) -> None:
        data = tokens if isinstance(tokens, array) and tokens.typecode == "i" else array("i", tokens)
        self._tokens.write(data)
        self._journal.write(_JOURNAL_RECORD.pack(row, len(data), prompt_length, split, digest))
        self._remember(row, len(data), prompt_length, split, digest)

    def sync(self) -> tuple[int, int, str, str]:
        """Flush both files to disk; returns what a checkpoint records: their sizes and the
        digests of their contents (a resume refuses a spool whose bytes changed)."""
        for handle in (self._tokens, self._journal):
            handle.flush()
            os.fsync(handle.fileno())
        sizes = self._tokens.tell(), self._journal.tell()
        return (*sizes, *(digest.advance(size) for digest, size in zip(self._digests, sizes)))

    def close(self) -> None:
        for handle in (self._tokens, self._journal):
            if not handle.closed:
                handle.close()

    def items(self, split: int) -> np.ndarray:
        """Spool indices of the examples assigned to ``split``, in arrival order."""
        return np.flatnonzero(np.frombuffer(self.splits, dtype=np.uint8) == split)

    def lengths_of(self, items: np.ndarray) -> np.ndarray:
        """Token counts of the spooled examples ``items``."""
        return np.frombuffer(self.lengths, dtype=np.int32)[items]

    def read_rows(self, bins: Sequence[Sequence[int]], seq_len: int) -> Iterator[np.ndarray]:
        """Assemble each bin (of spool indices) into a packed row, ``int32[4, seq_len]``."""
        self.close()
        itemsize = array("i").itemsize
        fd = os.open(self.tokens_path, os.O_RDONLY)
        try:
            for members in bins:
                packed = np.zeros((4, seq_len), dtype=DTYPE)
                at = 0
                for segment, item in enumerate(members, 1):
                    length = self.lengths[item]
                    raw = os.pread(fd, length * itemsize, self.offsets[item] * itemsize)
                    packed[0, at:at + length] = np.frombuffer(raw, dtype=np.int32)
                    packed[1, at:at + length] = segment
                    packed[2, at:at + length] = np.arange(length, dtype=DTYPE)
                    packed[3, at + self.prompt_lengths[item]:at + length] = 1
                    at += length
                yield packed
        finally:
            os.close(fd)


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


def placement(bins: Sequence[Sequence[int]], spool: Spool, seq_len: int, rows_per_shard: int,
              where: np.ndarray) -> dict[str, np.ndarray]:
    """Where each example of one split went, and one stats row per packed row, with numpy.

    Fills ``where[k] = (shard, record in shard, segment id)`` for the spool indices in ``bins``
    and returns the columns of ``stats/packs.parquet`` for them (``rows`` as flat source rows
    plus ``rows_offsets``).
    """
    sizes = np.fromiter((len(b) for b in bins), dtype=np.int64, count=len(bins))
    flat = np.fromiter((i for b in bins for i in b), dtype=np.int64, count=int(sizes.sum()))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    number = np.arange(len(bins))
    shard, index = number // rows_per_shard, number % rows_per_shard
    bin_of = np.repeat(number, sizes)  # the packed row of each entry of ``flat``
    where[flat] = np.stack([shard[bin_of], index[bin_of], np.arange(len(flat)) - offsets[bin_of] + 1], axis=1)

    def per_row(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values[flat], offsets[:-1]) if len(bins) else np.zeros(0, np.int64)

    lengths = np.frombuffer(spool.lengths, dtype=np.int32).astype(np.int64)
    tokens = per_row(lengths)
    packs = {
        "shard": shard.astype(np.int32),
        "index": index.astype(np.int32),
        "segments": sizes.astype(np.int32),
        "tokens": tokens.astype(np.int32),
        "loss_tokens": per_row(lengths - np.frombuffer(spool.prompt_lengths, dtype=np.int32)).astype(np.int32),
        "fill": tokens / seq_len,
        "rows": np.frombuffer(spool.rows, dtype=np.int64)[flat],
        "rows_offsets": offsets.astype(np.int32),
    }
    return packs


def rows_lower_bound(lengths: Sequence[int] | np.ndarray, capacity: int) -> int:
    """No packing that keeps examples whole uses fewer rows: enough for every token, and one row
    for each example longer than half a row (no two of them fit together)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return max(-(-int(lengths.sum()) // capacity), int(np.count_nonzero(2 * lengths > capacity)))
