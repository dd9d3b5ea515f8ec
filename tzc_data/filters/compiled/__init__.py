"""The repetition signals of :mod:`tzc_data.filters.repetition` and the English score of
:mod:`tzc_data.filters.language`, compiled with numba.

:class:`~tzc_data.filters.repetition.RepetitionFilter` computes every signal on every row, since
each one's score goes to the stats. Written with ``bytes`` methods and ``Counter`` they cost about
300 µs a synthetic row (35-40% of a build's CPU), spread over a dozen steps of 5-50 µs, most of
it Python stepping through lines, units and words one at a time. Here the same steps run as loops
over the UTF-8 bytes, in one call a row (:func:`~tzc_data.filters.compiled.judge.judge`); zlib
(the compression ratio), rounding, and the verdict's words stay in Python
(:mod:`~tzc_data.filters.compiled.verdict`).

:func:`kernels` gives the three functions the filters call (``judge``, ``dup_share``,
``english_counts``): from the extension module :mod:`tzc_data.native` builds of them once per
machine and version of this package (loaded in a few milliseconds, without numba), else, where it
cannot be built, through numba's just-in-time compiler (half a second a process to load from its
cache). Importing this package imports no numba; its modules but ``shared`` and ``verdict`` do. A filter uses the
compiled code from its first row where the module is built (:func:`ready`), and otherwise once it
has judged :data:`~tzc_data.filters.base.COMPILE_FROM` rows (:class:`~tzc_data.filters.base.Switch`).

The modules, each built on the ones before: ``tables`` (bytes 8 at a time, tables of equal
units), ``split`` (lines, paragraphs, sentences, words), ``quotes`` (what the prompt holds),
``loops`` (the loop signals and the repeated units), ``judge`` (a row's signals in one call),
``english`` (the English score's counts), and ``verdict`` (the filter's verdict from them). Names
with a leading underscore are private to this package.

**Why the results are exactly those of the Python definitions.** Each function names the one it
mirrors; tests/tzc_data/filters/test_filter_compiled.py checks each against it on generated texts,
and tests/tzc_data/filters/test_filter_decisions.py pins the filters' decisions on every shared
trace and on 20,000 synthetic rows, both ways. What makes them equal:

* *Bytes.* The texts are the same UTF-8 bytes (``surrogatepass``). ``_cased`` sets bit 5 of
  exactly the bytes ``A``-``Z`` (``c - 65 < 26`` unsigned), which is ``translate(FOLD)``;
  ``_compact`` drops exactly the bytes ``0``-``9``, ``translate``'s delete set, so the two make
  :func:`~tzc_data.filters.repetition.folded`.
* *Splits.* Each is the ``bytes`` method's. Whitespace is ``bytes.split()`` and ``strip()``'s six
  ASCII bytes. ``_split``'s three ``replace`` calls turn exactly the spaces that follow ``.``,
  ``?`` or ``!`` into line breaks (a replacement removes a space, so it neither creates nor
  overlaps another match), which is the mark ``_lines`` sets. ``split(b"\\n\\n")`` cuts greedily
  from the left (``_parts`` skips a blank line that starts inside the last one); ``split(b". ")``
  cannot overlap itself. ``rsplit(None, most)`` less its unsplit rest is the last ``most`` words
  (``_last_words``). The marks are a byte array read back in order (``_marked``: the set bits of
  each 64-bit word, lowest first).
* *Equality.* Every comparison of two texts compares all their bytes (``_equal``, 8 at a time; a
  buffer holds 8 bytes or more past its text, so reading a word there is safe, and the bytes past
  the text are masked off). Equal units are grouped by an open-addressing table (``_intern``) that
  a 64-bit digest of each unit's length and first and last 8 bytes (``_key``) only points into: a
  unit joins a group only when its bytes equal the group's first unit, so different units with
  one digest stay apart (the probe moves on). Groups are numbered in order of first occurrence,
  the order of a ``dict`` or ``Counter`` of the same units, so every "the first one wins" tie is
  broken as in Python (and ``sorted(..., reverse=True)``, which is stable, is a scan for the
  largest key that keeps the first of equals). Word n-grams are compared as tuples of these group
  numbers: equal exactly when their words are. (``dup_ngram_share`` in Python compares 64-bit
  hashes of words and of n-grams, so it agrees with the exact count here unless two different
  10-grams of one text collide in 64 bits.)
* *Numbers.* Counts and lengths are integers; a share is one IEEE division of two integers below
  2**53, as in Python; the float comparisons (``size < repeats * distinct``,
  ``copied >= share * chars``, ``at - end <= gap * length + slack``, a share against its
  threshold) are the same double operations on the same values; rounding is done in Python.
* *Search.* ``rfind`` is a reverse Horspool search: after a mismatch at ``i``, an occurrence at
  ``i - k`` (``0 < k < width``) needs ``needle[k] == text[i]``, so moving back by the least such
  ``k`` (``width`` if there is none) skips no occurrence, and the first match met is the last one.
* *The cycle's ends* are nested (the last 6, 9, 13, ... lines), so each end's counts are the last
  one's plus the lines it adds: a line whose count goes from 1 to 2 adds both copies to the
  copied characters, one already at 2 or more adds its own; the most frequent line is the first
  one, from the end's start, with the top count (a ``Counter``'s first key with it).

**Numba's cache and this package.** numba reuses a cached function while its own file is
unchanged, and does not look at the files of the functions it calls (and inlines). Split over
several files, a change to ``tables`` would leave ``judge``'s cached code stale. So the functions
here are cached in a folder named by a digest of every file of this package
(:func:`tzc_data.native.compiled_cache`, through ``tables._jit``), never in numba's own places: any
change to any of them starts a fresh cache, and names a fresh extension module. (Python's own
``.pyc`` check, by a file's size and modification second, is not covered: a file rewritten within
one second at the same size may still run its old bytecode, here as anywhere in Python.)
"""

from __future__ import annotations

from functools import lru_cache
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np

from tzc_data import native
from tzc_data.filters.compiled.shared import MULTIPLIER, sources

NAME = "tzc_filters"  # the extension module's name


def ready() -> bool:
    """Whether this machine has the extension module of this package's version (built by an
    earlier process), so that compiled code costs next to nothing to load."""
    return native.load(NAME, sources()) is not None


def kernels(use_native: bool | None = None) -> ModuleType | SimpleNamespace:
    """``judge``, ``dup_share`` and ``english_counts``, compiled: from the extension module where
    ``use_native`` is not False (built now if need be: once per machine and version, about half a
    minute where numba's cache does not hold the functions yet, a few seconds where it does), else, or where
    it cannot be built and ``use_native`` is None, numba's just-in-time functions. Both are numba's
    code of the same functions. Found once a process for each ``use_native``."""
    return _kernels(use_native)


@lru_cache(maxsize=None)
def _kernels(use_native: bool | None) -> ModuleType | SimpleNamespace:
    if use_native is not False:
        module = native.load(NAME, sources()) or native.build(NAME, sources(), _exports)
        if module is not None:
            return module
        if use_native:
            raise RuntimeError(f"the native module {NAME} could not be built (see the tzc_data.native log)")
    from tzc_data.filters.compiled import english, judge

    return SimpleNamespace(judge=judge.judge, dup_share=judge.dup_share, english_counts=english.english_counts)


# What each function is exported with: exactly the types numba infers for what the filters pass
# (a test compares them), so the module converts nothing.
_COUNTS = ("uint8[C1]", "int64", "int64", "int64", "int64", "float64", "float64", "float64", "float64", "float64",
           "int64", "int64", "float64", "float64", "int64", "int64", "int64", "int64", "float64")
SPECS: dict[str, native.Spec] = {
    "judge": (_COUNTS, ("bytes", "bytes", "bytes", "float64[C1]")),
    "dup_share": ("float64", ("uint8[C1]", "int64", "int64", "int64")),
    "english_counts": (("int64", "int64"), ("bytes", "uint8[C1]", "uint64[C1]")),
}


def _exports() -> list[tuple[str, Any, native.Spec]]:
    from tzc_data.filters.compiled import english, judge

    functions = {"judge": judge.judge, "dup_share": judge.dup_share, "english_counts": english.english_counts}
    return [(name, functions[name], spec) for name, spec in SPECS.items()]


def stopword_table(stopwords: frozenset[bytes]) -> np.ndarray:
    """An open-addressing set of ``stopwords`` for ``english_counts``: each word (8 bytes or
    fewer, none of them zero) as the integer of its bytes, little-endian and zero-padded, which no
    other word of 8 bytes or fewer shares; slot ``(v * MULTIPLIER) >> 56``, then the next."""
    table = np.zeros(256, dtype=np.uint64)
    for word in stopwords:
        if not 0 < len(word) <= 8 or 0 in word:
            raise ValueError(f"stopword {word!r}: a table entry is 1 to 8 bytes, none of them zero")
        v = int.from_bytes(word, "little")
        slot = (v * MULTIPLIER) % 2**64 >> 56
        while table[slot]:
            slot = (slot + 1) % 256
        table[slot] = v
    return table
