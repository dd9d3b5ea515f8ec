"""Exact prompt deduplication: default-ignorables removed, NFKC, casefold, collapsed whitespace, xxh3-128.

First *kept* occurrence wins: the pipeline runs this stage after every other check (see
``tzc_data.build.pipeline``), so a row dropped for a looping trace or a length does not shadow a later,
clean row with the same prompt. The index holds the 16-byte hash and the kept row per prompt
(about 40 bytes a prompt: see :class:`ExactIndex`).
"""

from __future__ import annotations

import re
import unicodedata
from array import array
from collections.abc import Iterable, Iterator

import xxhash

from tzc_data.record import Example

# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt, 15.1): characters that render
# as nothing (zero-width space and joiners, soft hyphen, bidi controls, variation selectors, tags).
_IGNORABLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
                        "\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8"
                        "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]")


def normalise(text: str) -> str:
    """The form two prompts must share to count as the same: default-ignorable code points removed
    (a zero-width space or soft hyphen inside a word makes no visible difference), NFKC, casefold,
    single spaces (runs of Unicode whitespace, ``str.isspace``, collapsed and trimmed by
    ``split``/``join``). Ignorables are removed before NFKC (a soft hyphen would block a
    composition) and after (NFKC maps a few characters to one)."""
    if text.isascii():  # O(1); ASCII holds no ignorable and is its own NFKC
        return " ".join(text.casefold().split())
    text = _IGNORABLE.sub("", unicodedata.normalize("NFKC", _IGNORABLE.sub("", text)))
    return " ".join(text.casefold().split())


def prompt_hash(text: str) -> bytes:
    """xxh3-128 of the normalised prompt (16 bytes); also the split-overlap key in the manifest."""
    return xxhash.xxh3_128_digest(normalise(text).encode("utf-8"))


class ExactIndex:
    """Kept prompt hashes -> the row that was kept, in about 40 bytes a prompt.

    Why not a dict: a ``dict[bytes, int]`` costs about 140 bytes a prompt (a bytes object, an int
    object and the entry), and this index lives for the whole build. Here the hashes sit in one
    ``bytearray`` (16 bytes each, in the order they were kept), their rows in an ``array("q")``,
    and an open-addressing table of ordinals (``array("i")``, -1 = empty, at most half full) is
    indexed by the low bits of each hash (xxh3 bits are uniform) and probed linearly, comparing
    the whole 16 bytes. No Python object is held per prompt. Checking and adding a prompt costs
    about 2 µs against a dict's 0.2 (measured): nothing next to the rest of a row's work.
    """

    def __init__(self) -> None:
        self._hashes = bytearray()
        self._rows = array("q")
        self._table = array("i", [-1]) * 1024
        self._mask = len(self._table) - 1

    def __len__(self) -> int:
        return len(self._rows)

    def _slot(self, digest: bytes) -> tuple[int, int]:
        """(slot, ordinal): the slot that holds ``digest`` and its ordinal, or the empty slot where
        it would go and -1."""
        if len(digest) != 16:
            raise ValueError(f"a prompt hash is 16 bytes, not {len(digest)}")
        table, hashes, mask = self._table, self._hashes, self._mask
        slot = int.from_bytes(digest[:8], "little") & mask
        while True:
            ordinal = table[slot]
            if ordinal < 0 or hashes[16 * ordinal:16 * ordinal + 16] == digest:
                return slot, ordinal
            slot = (slot + 1) & mask

    def twin(self, digest: bytes) -> int | None:
        ordinal = self._slot(digest)[1]
        return None if ordinal < 0 else self._rows[ordinal]

    def add(self, digest: bytes, row: int) -> None:
        """Index ``digest`` as kept at ``row``; a digest already present keeps its first row."""
        slot, ordinal = self._slot(digest)
        if ordinal >= 0:
            return
        self._table[slot] = len(self._rows)
        self._hashes += digest
        self._rows.append(row)
        if 2 * len(self._rows) > len(self._table):
            self._grow()

    def _grow(self) -> None:
        self._table = array("i", [-1]) * (2 * len(self._table))
        self._mask = len(self._table) - 1
        table, mask, hashes = self._table, self._mask, self._hashes
        for ordinal in range(len(self._rows)):
            slot = int.from_bytes(hashes[16 * ordinal:16 * ordinal + 8], "little") & mask
            while table[slot] >= 0:
                slot = (slot + 1) & mask
            table[slot] = ordinal

    def nbytes(self) -> int:
        """Memory held: hashes, rows and the table (24 bytes a prompt plus 8 to 16 of table)."""
        return len(self._hashes) + self._rows.itemsize * len(self._rows) + self._table.itemsize * len(self._table)


def hash_prompts(examples: Iterable[Example]) -> Iterator[Example]:
    """Stage: attach each readable example's prompt hash (recorded in the stats even when dropped)."""
    for example in examples:
        if example.status != "malformed":
            example.normalised = normalise(example.prompt)  # near dedup shingles it later
            example.prompt_hash = xxhash.xxh3_128_digest(example.normalised.encode("utf-8"))
        yield example


def drop_duplicates(examples: Iterable[Example], index: ExactIndex) -> Iterator[Example]:
    """Stage: drop an example whose prompt was already kept; ``twin`` names the kept row.

    Checks and registers in one step, so it must see examples that passed everything else, and
    be the last stage that can drop one (with near dedup on, :func:`tzc_data.text.minhash.drop_near_duplicates`
    runs both checks instead, so that only rows that near dedup kept enter this index).
    """
    for example in examples:
        if example.kept and not is_duplicate(example, index):
            index.add(example.prompt_hash, example.row)
        yield example


def is_duplicate(example: Example, index: ExactIndex) -> bool:
    """Drop ``example`` as a duplicate if its prompt is in ``index`` (which holds kept rows only),
    naming the kept twin; True when it was dropped."""
    twin = index.twin(example.prompt_hash)
    if twin is None:
        return False
    example.twin = twin
    example.drop("duplicate", f"same normalised prompt as row {twin}")
    return True


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
