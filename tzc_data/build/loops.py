"""The serial part's inner loops, written once as plain Python over numpy arrays and compiled with
numba when the input is large, or whenever this machine has their extension module.

Why numba: the loops (first kept wins over the rows that share a key, best-fit-decreasing over
every kept length, finding which keys repeat) are sequential by nature, one decision depending on
the last, so numpy cannot vectorise them; in the interpreter they cost about a microsecond a step,
and at 22.2M rows they were most of the serial part's eight minutes. axolotl's multipack packer
takes the same route. The very same functions run in the interpreter (there is one
implementation; the tests run every way and compare) where compiled code would cost more than it
saves: below :data:`COMPILE_FROM` items when this machine has not built the loops' extension
module (:mod:`tzc_data.native`: built once, seconds; loaded in a few milliseconds after that), or
where numba's just-in-time compiler is all there is (half a second a process to load its cache).

Compiled code is cached on disk (numba's ``cache=True``, in the folder
:func:`tzc_data.native.compiled_cache` gives: next to this file, or under tzc's cache folder when the
package folder is read-only), so only the first large build on a machine compiles.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from tzc_data import native
from tzc_data.native import compiled_cache, numba_cache

COMPILE_FROM = 4096  # items; below this the loops run in the interpreter (see the module docstring)


# Called from the loops: compiled with them.
_HELPERS = ("_bucketed", "_mask", "_slot", "_next_at_least", "_lowest", "_pop_min", "_meld")


@lru_cache(maxsize=None)
def _compiled(name: str) -> Callable[..., Any]:
    """The compiled loop ``name``: it and the helpers it calls, bound to each other's compiled
    versions (numba resolves a global when it compiles, and a plain Python function cannot be called
    from compiled code)."""
    import numba  # only here: tzc_data imports without paying for it

    scope = dict(globals())
    with numba_cache(compiled_cache([Path(__file__)])):
        for helper in (*_HELPERS, name):
            plain = globals()[helper]
            rebound = types.FunctionType(plain.__code__, scope, helper, plain.__defaults__)
            rebound.__module__, rebound.__qualname__ = plain.__module__, plain.__qualname__
            scope[helper] = numba.njit(cache=True, nogil=True)(rebound)
    return scope[name]


NAME = "tzc_loops"  # the extension module's name
SPECS: dict[str, native.Spec] = {  # what run() is given, in the types numba infers for it (a test compares)
    "mark_repeated": ("none", ("uint64[A1]", "bool[C1]", "int64")),
    "first_kept_wins": ("none", ("int64[C1]", "int64", "int64[C2]", "int64", "int64[C2]", "uint8[C2]", "uint8[C2]",
                                 "float64", "uint8[C1]", "int64[C1]", "float64[C1]", "int64[C1]")),
    "best_fit_decreasing": ("int64", ("int64[C1]", "int64[C1]", "int64", "int64", "int64[C1]")),
    "group_ids": ("int64", ("uint64[C1]", "int64[C1]", "int64")),
}


def _exports() -> list[tuple[str, Any, native.Spec]]:
    return [(name, _compiled(name), spec) for name, spec in SPECS.items()]


def module(build: bool) -> types.ModuleType | None:
    """The loops' extension module: loaded if built, else built now if ``build``; None if neither."""
    sources = [Path(__file__)]
    return native.load(NAME, sources) or (native.build(NAME, sources, _exports) if build else None)


def run(function: Callable[..., Any], size: int, *args: Any, compiled: bool | None = None) -> Any:
    """``function(*args)``: by the extension module where this machine has it (built now where
    ``size`` is at least :data:`COMPILE_FROM` or ``compiled`` says so) and ``args`` are the types it
    was built for; else compiled just in time in those cases; else in the interpreter. ``compiled``
    False forces the interpreter."""
    name = function.__name__
    wanted = size >= COMPILE_FROM if compiled is None else compiled
    if compiled is not False:
        found = module(build=wanted)
        if found is not None and native.matches(SPECS[name], args):
            return getattr(found, name)(*args)
    if wanted:
        return _compiled(name)(*args)
    with np.errstate(over="ignore"):  # the hashes' multiplications wrap, as they do compiled
        return function(*args)


# -- which keys repeat -----------------------------------------------------------------------------


def _bucketed(keys: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The keys (and where each came from) in buckets by their top ``bits`` bits, in one counting
    pass and one placing pass: (bucket starts, bucketed keys, their positions, the size of a table
    that holds the largest bucket at most half full)."""
    n = len(keys)
    shift = np.uint64(64 - bits)
    starts = np.zeros((1 << bits) + 1, np.int64)
    for i in range(n):
        starts[np.int64(keys[i] >> shift) + 1] += 1
    largest = 0
    for b in range(1 << bits):
        largest = max(largest, starts[b + 1])
        starts[b + 1] += starts[b]
    at = starts[:-1].copy()
    bucketed, rows = np.empty(n, np.uint64), np.empty(n, np.int64)
    for i in range(n):
        b = np.int64(keys[i] >> shift)
        bucketed[at[b]], rows[at[b]] = keys[i], i
        at[b] += 1
    return starts, bucketed, rows, _mask(largest) + 1


def _mask(count: int) -> int:
    """The slot mask of an open-addressing table for ``count`` keys: a power of two (at least 4)
    at least twice ``count``, less one."""
    size = 4
    while size < 2 * count:
        size *= 2
    return size - 1


def _slot(table_keys: np.ndarray, taken: np.ndarray, key: np.uint64, mask: int) -> int:
    """Where ``key`` is in the table, or the empty slot (``taken`` < 0) where it goes: linear
    probing from a multiplicative hash of the key."""
    slot = np.int64((key * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)) & mask
    while taken[slot] >= 0 and table_keys[slot] != key:
        slot = (slot + 1) & mask
    return slot


def mark_repeated(keys: np.ndarray, marks: np.ndarray, bits: int) -> None:
    """Set ``marks[i]`` for every ``i`` whose ``keys[i]`` (uint64) occurs at least twice.

    No sort of the column and no copy of it in key order: one counting pass buckets the rows by
    the top ``bits`` bits of their key (keys are hashes, so the buckets are even), then each
    bucket's keys go through a small open-addressing table that stays in cache. Memory: 16 bytes
    a row (the bucketed keys and row numbers), freed on return.
    """
    starts, bucketed, rows, size = _bucketed(keys, bits)
    table_keys, table_rows = np.zeros(size, np.uint64), np.full(size, -1, np.int64)
    for b in range(1 << bits):
        lo, hi = starts[b], starts[b + 1]
        if hi - lo < 2:
            continue
        mask = _mask(hi - lo)
        for p in range(lo, hi):
            key = bucketed[p]
            slot = _slot(table_keys, table_rows, key, mask)
            if table_rows[slot] < 0:
                table_keys[slot], table_rows[slot] = key, rows[p]
            else:
                marks[rows[p]] = True
                marks[table_rows[slot]] = True
        table_rows[:mask + 1] = -1


def bucket_bits(n: int) -> int:
    """The top bits :func:`mark_repeated` and :func:`group_ids` bucket ``n`` keys by: buckets of
    about 256 keys, at most 65,536 of them."""
    return min(16, max(1, n.bit_length() - 8))


def group_ids(keys: np.ndarray, ids: np.ndarray, bits: int) -> int:
    """``ids[i]`` = a dense id of ``keys[i]`` (uint64): equal keys get the same id, different keys
    different ids, from 0 up; returns how many distinct keys there are. The ids are not in key
    order (only their equality means anything), which spares the sort ``np.unique`` needs for
    its inverse. The same passes as :func:`mark_repeated`: the keys bucketed by their top
    ``bits`` bits, then each bucket through a small open-addressing table that stays in cache.
    Memory: 16 bytes a key, freed on return.
    """
    starts, bucketed, rows, size = _bucketed(keys, bits)
    table_keys, table_ids = np.zeros(size, np.uint64), np.full(size, -1, np.int64)
    groups = 0
    for b in range(1 << bits):
        lo, hi = starts[b], starts[b + 1]
        mask = _mask(hi - lo)
        for p in range(lo, hi):
            key = bucketed[p]
            slot = _slot(table_keys, table_ids, key, mask)
            if table_ids[slot] < 0:
                table_keys[slot], table_ids[slot] = key, groups
                groups += 1
            ids[rows[p]] = table_ids[slot]
        table_ids[:mask + 1] = -1
    return groups


# -- first kept wins ---------------------------------------------------------------------------------


def first_kept_wins(exact_ids: np.ndarray, exact_groups: int, band_ids: np.ndarray, band_groups: int,
                    excluded: np.ndarray, sketches: np.ndarray, excluded_sketches: np.ndarray, threshold: float,
                    codes: np.ndarray, twins: np.ndarray, jaccards: np.ndarray, rows: np.ndarray) -> None:
    """Decide m candidates in row order (see :func:`tzc_data.text.minhash.decide_batch`, whose outcome
    this is, row for row): a candidate is a duplicate of the earlier kept row with its prompt hash
    (``exact_ids``: a dense id per distinct hash, or all -1 when exact dedup is off); else a near
    duplicate of the first prompt, in band order, that first held one of its band keys and whose
    sketch estimates a Jaccard at or above ``threshold``: an excluded build's (``excluded[j, b]``,
    its ordinal, or -1) before this build's kept candidates (``band_ids``: a dense id per distinct
    key, or an empty array when near dedup is off); else it is kept and holds each key it is the
    first to have. Writes ``codes`` (0 kept, 1 duplicate, 2 near duplicate, 3 near an excluded
    build), ``twins`` (the twin's row; for code 3, its ordinal in the excluded builds) and
    ``jaccards``.
    """
    m = len(codes)
    exact_holder = np.full(max(exact_groups, 1), -1, np.int64)  # row of the kept candidate with the hash
    band_holder = np.full(max(band_groups, 1), -1, np.int64)  # position of the kept candidate with the key
    near = band_ids.shape[0] == m and m > 0
    for j in range(m):
        group = exact_ids[j]
        if group >= 0 and exact_holder[group] >= 0:
            codes[j], twins[j], jaccards[j] = 1, exact_holder[group], 1.0
            continue
        found = False
        if near:
            for b in range(band_ids.shape[1]):
                other = excluded[j, b]
                outside = other >= 0
                if not outside:
                    other = band_holder[band_ids[j, b]]
                    if other < 0:
                        continue
                matches = 0
                for p in range(sketches.shape[1]):
                    if sketches[j, p] == (excluded_sketches[other, p] if outside else sketches[other, p]):
                        matches += 1
                jaccard = max(0.0, (float(matches) / sketches.shape[1] - 1 / 256) / (1 - 1 / 256))
                if jaccard >= threshold:
                    codes[j] = 3 if outside else 2
                    twins[j] = other if outside else rows[other]
                    jaccards[j] = jaccard
                    found = True
                    break
        if found:
            continue
        if group >= 0:
            exact_holder[group] = rows[j]
        if near:
            for b in range(band_ids.shape[1]):
                if excluded[j, b] < 0 and band_holder[band_ids[j, b]] < 0:
                    band_holder[band_ids[j, b]] = j


# -- best-fit-decreasing -------------------------------------------------------------------------------


def best_fit_decreasing(lengths: np.ndarray, order: np.ndarray, capacity: int, shortest: int,
                        row_of: np.ndarray) -> int:
    """Place items in ``order`` (longest first) into rows of ``capacity``: each in the open row
    with the least space left that fits it, ties to the lowest row number, else a new row; a row
    whose space left is below ``shortest`` is closed. Writes each item's row to ``row_of`` and
    returns the number of rows. Exactly :func:`tzc_data.build.pack.best_fit_decreasing`'s sorted-list
    rule (the key (space left, row)), with open rows kept per space left in pairing heaps of row
    numbers (a row is its own node) and the non-empty space-left values in a two-level bitmap.
    """
    n = len(order)
    words = capacity // 64 + 1
    level0 = np.zeros(words, np.uint64)  # bit s: some open row has s tokens left
    level1 = np.zeros(words // 64 + 1, np.uint64)  # bit w: level0[w] is not 0
    heads = np.full(capacity + 1, -1, np.int64)  # per space left: the root of its heap of rows
    child, sibling = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    pairs = np.empty(n + 1, np.int64)  # scratch for the heaps' two-pass merge
    left_of = np.zeros(n, np.int64)
    rows = 0
    one = np.uint64(1)
    for k in range(n):
        item = order[k]
        length = lengths[item]
        space = _next_at_least(level0, level1, length, words)
        if space < 0:
            row, left = rows, capacity - length
            rows += 1
        else:
            row = heads[space]
            heads[space] = _pop_min(row, child, sibling, pairs)
            if heads[space] < 0:
                level0[space >> 6] &= ~(one << np.uint64(space & 63))
                if level0[space >> 6] == 0:
                    level1[space >> 12] &= ~(one << np.uint64((space >> 6) & 63))
            left = left_of[row] - length
        row_of[item] = row
        left_of[row] = left
        if left >= shortest:
            child[row], sibling[row] = -1, -1
            head = heads[left]
            if head < 0:
                heads[left] = row
            elif row < head:
                sibling[head], child[row] = child[row], head
                heads[left] = row
            else:
                sibling[row], child[head] = child[head], row
            level0[left >> 6] |= one << np.uint64(left & 63)
            level1[left >> 12] |= one << np.uint64((left >> 6) & 63)
    return rows


def _next_at_least(level0: np.ndarray, level1: np.ndarray, at: int, words: int) -> int:
    """The smallest set bit >= ``at`` of the two-level bitmap, or -1."""
    word = at >> 6
    if word >= words:
        return -1
    bits = level0[word] >> np.uint64(at & 63)
    if bits:
        return at + _lowest(bits)
    summary = word + 1  # the next word of level0 to look at
    while (summary >> 6) < len(level1):
        above = level1[summary >> 6] >> np.uint64(summary & 63)
        if above:
            w = summary + _lowest(above)
            return (w << 6) + _lowest(level0[w])
        summary = ((summary >> 6) + 1) << 6
    return -1


def _lowest(bits: np.uint64) -> int:
    """The index of the lowest set bit of a non-zero word."""
    k = 0
    while not (bits >> np.uint64(k)) & np.uint64(1):
        k += 1
    return k


def _pop_min(root: int, child: np.ndarray, sibling: np.ndarray, pairs: np.ndarray) -> int:
    """Remove ``root`` from its pairing heap (a min-heap of row numbers); returns the new root."""
    count = 0
    node = child[root]
    while node >= 0:  # first pass: meld the children two by two, left to right
        a = node
        b = sibling[a]
        node = sibling[b] if b >= 0 else -1
        sibling[a] = -1
        if b >= 0:
            sibling[b] = -1
            a = _meld(a, b, child, sibling)
        pairs[count] = a
        count += 1
    merged = -1
    for k in range(count - 1, -1, -1):  # second pass: right to left
        merged = pairs[k] if merged < 0 else _meld(pairs[k], merged, child, sibling)
    return merged


def _meld(a: int, b: int, child: np.ndarray, sibling: np.ndarray) -> int:
    if b < a:
        a, b = b, a
    sibling[b] = child[a]
    child[a] = b
    return a
