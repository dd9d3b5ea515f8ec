"""Exact prompt deduplication: NFKC, casefold, collapsed whitespace, xxh3-128.

First *kept* occurrence wins: the pipeline runs this stage after every other check (see
``pipeline.py``), so a row dropped for a looping trace or a length does not shadow a later,
clean row with the same prompt. The index holds the 16-byte hash and the kept row per prompt.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Iterable, Iterator

import xxhash

from tzc_data.record import Example

_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """The form two prompts must share to count as the same: NFKC, casefold, single spaces."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def prompt_hash(text: str) -> bytes:
    """xxh3-128 of the normalised prompt (16 bytes); also the split-overlap key in the manifest."""
    return xxhash.xxh3_128_digest(normalise(text).encode("utf-8"))


class ExactIndex:
    """Kept prompt hashes -> the row that was kept."""

    def __init__(self) -> None:
        self._rows: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def twin(self, digest: bytes) -> int | None:
        return self._rows.get(digest)

    def add(self, digest: bytes, row: int) -> None:
        self._rows.setdefault(digest, row)

    def nbytes(self) -> int:
        """Memory held: the dict, its 16-byte keys and its row numbers (about 140 bytes a prompt)."""
        return sys.getsizeof(self._rows) + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in self._rows.items())


def hash_prompts(examples: Iterable[Example]) -> Iterator[Example]:
    """Stage: attach each readable example's prompt hash (recorded in the stats even when dropped)."""
    for example in examples:
        if example.status != "malformed":
            example.normalised = normalise(example.prompt)  # near dedup shingles it later
            example.prompt_hash = xxhash.xxh3_128_digest(example.normalised.encode("utf-8"))
        yield example


def drop_duplicates(examples: Iterable[Example], index: ExactIndex) -> Iterator[Example]:
    """Stage: drop an example whose prompt was already kept; ``twin`` names the kept row.

    Checks and registers in one step, so it must see examples that passed everything else.
    """
    for example in examples:
        if example.kept:
            twin = index.twin(example.prompt_hash)
            if twin is None:
                index.add(example.prompt_hash, example.row)
            else:
                example.twin = twin
                example.drop("duplicate", f"same normalised prompt as row {twin}")
        yield example


def drop_excluded(examples: Iterable[Example], excluded: dict[bytes, str]) -> Iterator[Example]:
    """Stage: drop an example whose prompt hash is kept in an earlier build (``--exclude``).

    ``excluded`` maps each excluded prompt hash to the build it comes from.
    """
    for example in examples:
        if example.kept and excluded:
            build = excluded.get(example.prompt_hash)
            if build is not None:
                example.drop("in_excluded_split", f"prompt is kept in excluded build {build}")
        yield example


def split_of(digest: bytes, eval_fraction: float) -> int:
    """0 (train) or 1 (eval), a pure function of the prompt hash: stable when the range or the row
    order changes, and a prompt can never sit in both splits."""
    return int(xxhash.xxh3_64_intdigest(digest) < eval_fraction * 2**64)
