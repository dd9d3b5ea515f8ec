"""Near-duplicate prompts: MinHash over word 3-shingles, LSH bands, a compact verification sketch.

Why these pieces (measured on 3,000 synthetic prompts, one core): signatures of 128 permutations
cost 13 µs a prompt with ``rensa`` (Rust), 40 µs with numpy over xxhash and 135 µs with
``datasketch``; rensa is used. Its digests are seeded, so they are the same in every process.

Step by step, for each prompt that survived everything else (first kept occurrence wins):
  1. normalise (as exact dedup does), cut into word 3-shingles, MinHash them (128 values);
  2. LSH: 16 bands of 8 values, each band hashed to 8 bytes. Two prompts with Jaccard 0.8 share
     a band with probability 95%; with Jaccard 0.4 only 1%;
  3. every kept prompt whose band is shared is a *candidate*; its Jaccard is estimated from a
     128-byte sketch (the low byte of each MinHash value, corrected for chance matches), and the
     first candidate at or above the threshold is the twin: reason ``near_duplicate``;
  4. otherwise the prompt is kept and its band keys enter the index.
Memory per kept prompt: 128 bytes of sketch plus 16 band keys in an open-addressing table of
8-byte keys and 4-byte values at most half full (at most 384 bytes); no document is stored.
The index is append-only on disk too, so a build resumes it from a checkpoint.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator

import numpy as np
import rensa
import xxhash

from tzc_data.dedupe import normalise
from tzc_data.record import Example

NUM_PERM = 128
BANDS = 16
ROWS = NUM_PERM // BANDS
SEED = 20261125
RECORD = np.dtype([("bands", "<u8", (BANDS,)), ("sketch", "u1", (NUM_PERM,)), ("row", "<i8")])


_PUNCT = re.compile(r"[^\w\s]+")


def signature(prompt: str) -> np.ndarray:
    """128 MinHash values (uint32) of the word 3-shingles of the normalised prompt without
    punctuation (a changed comma or question mark should not hide a twin)."""
    words = _PUNCT.sub(" ", normalise(prompt)).split()
    shingles = [" ".join(words[i:i + 3]) for i in range(max(1, len(words) - 2))]
    minhash = rensa.RMinHash(num_perm=NUM_PERM, seed=SEED)
    minhash.update(shingles)
    return np.asarray(minhash.digest(), dtype=np.uint32)


def band_keys(sig: np.ndarray) -> np.ndarray:
    """One 64-bit key per band (the band's index is part of the key; 0 never occurs)."""
    blocks = sig.reshape(BANDS, ROWS)
    keys = [xxhash.xxh3_64_intdigest(blocks[b].tobytes(), seed=b) | 1 for b in range(BANDS)]
    return np.array(keys, dtype=np.uint64)


def estimate_jaccard(sketch_a: np.ndarray, sketch_b: np.ndarray) -> float:
    """Jaccard from 1-byte sketches: a byte matches by chance with probability 1/256."""
    matches = float(np.count_nonzero(sketch_a == sketch_b)) / NUM_PERM
    return max(0.0, (matches - 1 / 256) / (1 - 1 / 256))


def fingerprint(prompt: str) -> tuple[np.ndarray, np.ndarray]:
    """(band keys, sketch) of a prompt: all the index keeps of it."""
    sig = signature(prompt)
    return band_keys(sig), (sig & 0xFF).astype(np.uint8)


class NearDupIndex:
    """Kept prompts' band keys and sketches; see the module docstring.

    Load excluded builds first (:meth:`load`), then :meth:`attach_journal`: the order in which
    prompts enter decides which twin a later prompt finds, so a resumed build must repeat it.
    """

    def __init__(self, threshold: float = 0.8):
        self.threshold = threshold
        self._keys = np.zeros(1024, dtype=np.uint64)
        self._values = np.zeros(1024, dtype=np.int32)
        self._used = 0
        self.sketches = bytearray()
        self.rows: list[int] = []
        self.labels: list[str | None] = []  # None: this build; else the excluded build it came from
        self._journal = None

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, path: str, label: str | None = None) -> int:
        """Add every record of a ``near_dup.bin`` file or journal; returns how many."""
        records = np.fromfile(path, dtype=RECORD)
        for record in records:
            self._insert(record["bands"], record["sketch"], int(record["row"]), label)
        return len(records)

    def attach_journal(self, path: str, *, resume_at: int | None = None) -> None:
        """Append this build's kept prompts to ``path``; on resume, truncate it and reload it."""
        if resume_at is None:
            open(path, "wb").close()
        else:
            os.truncate(path, resume_at)
            self.load(path)
        self._journal = open(path, "ab")

    def find(self, keys: np.ndarray, sketch: np.ndarray) -> tuple[int, float, str | None] | None:
        """(row, estimated Jaccard, build label) of the first indexed twin, or None."""
        seen = set()
        for key in keys:
            ordinal = self._lookup(key)
            if ordinal is None or ordinal in seen:
                continue
            seen.add(ordinal)
            other = np.frombuffer(self.sketches, dtype=np.uint8, count=NUM_PERM, offset=NUM_PERM * ordinal)
            jaccard = estimate_jaccard(sketch, other)
            if jaccard >= self.threshold:
                return self.rows[ordinal], jaccard, self.labels[ordinal]
        return None

    def add(self, keys: np.ndarray, sketch: np.ndarray, row: int) -> None:
        self._insert(keys, sketch, row, None)
        if self._journal is not None:
            record = np.zeros(1, dtype=RECORD)
            record["bands"], record["sketch"], record["row"] = keys, sketch, row
            self._journal.write(record.tobytes())

    def sync(self) -> int:
        """Flush the journal; its size is what a checkpoint records."""
        if self._journal is None:
            return 0
        self._journal.flush()
        os.fsync(self._journal.fileno())
        return self._journal.tell()

    def close(self) -> None:
        if self._journal is not None and not self._journal.closed:
            self._journal.close()

    # -- open addressing: key 0 marks an empty slot ------------------------------------------

    def _insert(self, keys: np.ndarray, sketch: np.ndarray, row: int, label: str | None) -> None:
        ordinal = len(self.rows)
        self.rows.append(row)
        self.labels.append(label)
        self.sketches += sketch.tobytes()
        for key in keys:
            if 2 * (self._used + 1) > len(self._keys):
                self._grow()
            self._place(int(key), ordinal)

    def _slot(self, key: int) -> int:
        mask = len(self._keys) - 1
        slot = (key * 0x9E3779B97F4A7C15 >> 20) & mask
        while self._keys[slot] and int(self._keys[slot]) != key:
            slot = (slot + 1) & mask
        return slot

    def _place(self, key: int, ordinal: int) -> None:
        slot = self._slot(key)
        if not self._keys[slot]:  # an existing key keeps its first (kept earlier) prompt
            self._keys[slot] = key
            self._values[slot] = ordinal
            self._used += 1

    def _lookup(self, key: np.uint64) -> int | None:
        slot = self._slot(int(key))
        return int(self._values[slot]) if self._keys[slot] else None

    def _grow(self) -> None:
        keys, values = self._keys, self._values
        self._keys = np.zeros(2 * len(keys), dtype=np.uint64)
        self._values = np.zeros(2 * len(keys), dtype=np.int32)
        self._used = 0
        for slot in np.flatnonzero(keys):
            self._place(int(keys[slot]), int(values[slot]))


def drop_near_duplicates(examples: Iterable[Example], index: NearDupIndex) -> Iterator[Example]:
    """Stage: drop a kept example whose prompt nearly equals one kept before (or in an excluded
    build); checks and registers in one step, so it must come after every other check."""
    for example in examples:
        if example.kept:
            keys, sketch = fingerprint(example.prompt)
            twin = index.find(keys, sketch)
            if twin is None:
                index.add(keys, sketch, example.row)
            else:
                row, jaccard, build = twin
                example.scores["near_dup_jaccard"] = round(jaccard, 3)
                if build is None:
                    example.twin = row
                    example.drop("near_duplicate", f"prompt ~{jaccard:.2f} Jaccard to row {row}")
                else:
                    example.drop("in_excluded_split", f"prompt ~{jaccard:.2f} Jaccard to row {row} of excluded "
                                                      f"build {build}")
        yield example
