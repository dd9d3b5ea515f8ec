"""Bytes read 8 at a time, and tables that group equal units of text: what every other compiled
step stands on.

Part of :mod:`tzc_data.filters.compiled` (see there why it decides as the Python definitions)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from tzc_data.filters.compiled.shared import MULTIPLIER, sources
from tzc_data.native import compiled_cache, numba_cache


@lru_cache(maxsize=None)
def _cache_folder() -> str:
    return compiled_cache(sources())


def _jit(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``numba.njit`` for every function of this package: cached in the folder of this package's
    version (see the package, and :func:`tzc_data.native.compiled_cache`), without the GIL."""
    def decorate(function: Callable[..., Any]) -> Any:
        with numba_cache(_cache_folder()):
            return numba.njit(cache=True, nogil=True, **options)(function)
    return decorate


# Constants the compiled code holds (numba freezes a global array into the code it compiles and
# caches, so they are written out here; a test checks them against repetition's _SIZES and
# quoted()'s punctuation).
SIZES = np.array([int(6 * 1.5 ** k) for k in range(16)], dtype=np.int64)  # the cycle's ends
PUNCTUATION = np.zeros(256, dtype=np.bool_)  # what quoted() strips off each word
PUNCTUATION[np.frombuffer(b".,;:!?\"'()[]", dtype=np.uint8)] = True
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_M1 = np.uint64(MULTIPLIER)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_ZERO = np.uint64(0)
_TAG = np.uint64(0xFFFFFFFF00000000)
_LOW = np.uint64(0xFFFFFFFF)
_U1 = np.uint64(1)
_U56 = np.uint64(56)
_U63 = np.uint64(63)


def padded(data: bytes) -> bytes:
    """``data`` and 8 to 15 zero bytes, to a multiple of 8: the buffers the functions below read
    8 bytes at a time (from any offset within the text, never past its padding)."""
    return data + bytes(8 + -len(data) % 8)


# -- bytes, 8 at a time ----------------------------------------------------------------------------

@_jit(inline="always")
def _load(words, i):
    """Bytes ``i`` to ``i + 7`` of the buffer whose 64-bit words are ``words``, as one word."""
    j = i >> 3
    shift = np.uint64((i & 7) * 8)
    return (words[j] >> shift) | ((words[j + 1] << _U1) << (_U63 - shift))


@_jit(inline="always")
def _equal(a, a0, b, b0, n):
    """``A[a0:a0 + n] == B[b0:b0 + n]`` for the buffers whose words are ``a`` and ``b``."""
    k = 0
    while k + 8 <= n:
        if _load(a, a0 + k) != _load(b, b0 + k):
            return False
        k += 8
    if k == n:
        return True
    return ((_load(a, a0 + k) ^ _load(b, b0 + k)) & (_ALL >> np.uint64(64 - 8 * (n - k)))) == _ZERO


@_jit(inline="always")
def _key(words, start, stop):
    """A 64-bit digest of ``buf[start:stop]``: its length, first and last 8 bytes. Only a hint of
    where to look in a table: equality is always decided by :func:`_equal`."""
    n = stop - start
    if n >= 8:
        head = _load(words, start)
        tail = _load(words, stop - 8)
    elif n > 0:
        head = _load(words, start) & (_ALL >> np.uint64(64 - 8 * n))
        tail = head
    else:
        head = _ZERO
        tail = _ZERO
    h = (head * _M1) ^ ((tail + np.uint64(n)) * _M2)
    return h ^ (h >> np.uint64(31))


@_jit(inline="always")
def _ids_key(ids, start, n):
    """A 64-bit digest of the word numbers ``ids[start:start + n]`` (an n-gram)."""
    h = np.uint64(n)
    for i in range(n):
        h = (h ^ np.uint64(ids[start + i])) * _M1
    return h ^ (h >> np.uint64(31))


@_jit(inline="always")
def _space(c):
    """``bytes.split()`` and ``strip()``'s whitespace: space, \\t, \\n, \\v, \\f, \\r."""
    return c == 32 or (c >= 9 and c <= 13)


@_jit()
def _cased(src, start, stop):
    """``src[start:stop]`` in ASCII lower case, zero-padded as :func:`padded`: one loop the compiler
    vectorises (returns the buffer and the text's length)."""
    n = stop - start
    out = np.zeros((n + 7) // 8 * 8 + 8, dtype=np.uint8)
    part = src[start:stop]
    for i in range(n):
        c = part[i]
        out[i] = c | (np.uint8(np.uint8(c - np.uint8(65)) < np.uint8(26)) << np.uint8(5))
    return out, n


@_jit()
def _folded(src):
    """``src`` in ASCII lower case without its digits, zero-padded as :func:`padded` (returns the
    buffer and the text's length)."""
    out = np.zeros((len(src) + 7) // 8 * 8 + 8, dtype=np.uint8)
    m = 0
    for i in range(len(src)):
        c = src[i]
        if c < 48 or c > 57:
            out[m] = c | (np.uint8(np.uint8(c - np.uint8(65)) < np.uint8(26)) << np.uint8(5))
            m += 1
    return out[:(m + 7) // 8 * 8 + 8], m


@_jit()
def _compact(src, n, out, m):
    """Append ``src[:n]`` without its digits to ``out`` from ``m`` on; returns where it ends. With
    ``src`` from :func:`_cased`, ``repetition.folded``. No branch: each byte is written, and the
    end moves on unless it is a digit (the byte written past the end, if any, is never read)."""
    for i in range(n):
        c = src[i]
        out[m] = c
        m += np.int64(np.uint8(c - np.uint8(48)) >= np.uint8(10))
    return m


@_jit()
def _marked(mark, n):
    """The non-zero bits of ``mark[:n]`` (zero-padded to a multiple of 8; each byte 0, 1 or 2), in
    order, each as ``8 * offset + bit``."""
    bits = n  # room for a bit a byte in a short text (64 KiB at most); a long one's are counted
    if n > 8192:
        bits = 0
        for i in range(n):  # a loop the compiler vectorises
            bits += (mark[i] & 1) + (mark[i] >> 1)
    words = mark.view(np.uint64)
    at = np.empty(bits, dtype=np.int64)
    k = 0
    for j in range((n + 7) // 8):
        v = words[j]
        while v:
            at[k] = j * 64 + np.int64(trailing_zeros(v))
            k += 1
            v &= v - _U1
    return at[:k]


# -- tables of equal units ------------------------------------------------------------------------

@_jit()
def _table_size(n):
    """Slots for ``n`` units: a power of two, at most two thirds full."""
    size = 16
    while 2 * size < 3 * n:
        size *= 2
    return size


# A table slot is one 64-bit word: the digest's top 32 bits, and one more than the group (or the
# position) it stands for in the low 32 bits; 0 is an empty slot. The slot is chosen by the
# digest's low bits, so the top bits still tell most units apart before their bytes are compared.

@_jit()
def _intern(words, starts, stops, n):
    """Group the units ``buf[starts[k]:stops[k]]`` (k < n) by their bytes. Returns (the group of
    each unit, each group's first unit, each group's count, the number of groups, and the table);
    groups are numbered in order of first occurrence."""
    size = _table_size(n)
    mask = size - 1
    table = np.zeros(size, dtype=np.uint64)
    info = np.empty(3 * n, dtype=np.int64)
    group, first, count = info[:n], info[n:2 * n], info[2 * n:]
    groups = 0
    for k in range(n):
        start, stop = starts[k], stops[k]
        h = _key(words, start, stop)
        tag = h & _TAG
        i = np.int64(h & np.uint64(mask))
        while True:
            slot = table[i]
            if slot == _ZERO:
                table[i] = tag | np.uint64(groups + 1)
                first[groups] = k
                count[groups] = 1
                group[k] = groups
                groups += 1
                break
            if slot & _TAG == tag:
                g = np.int64(slot & _LOW) - 1
                f = first[g]
                if stops[f] - starts[f] == stop - start and _equal(words, starts[f], words, start, stop - start):
                    count[g] += 1
                    group[k] = g
                    break
            i = (i + 1) & mask
    return group, first, count, groups, table


@_jit()
def _lookup(table, twords, tstarts, tstops, first, words, start, stop):
    """The group of :func:`_intern`'s ``table`` (over ``twords``) whose units equal
    ``buf[start:stop]``, or -1."""
    mask = len(table) - 1
    h = _key(words, start, stop)
    tag = h & _TAG
    i = np.int64(h & np.uint64(mask))
    while True:
        slot = table[i]
        if slot == _ZERO:
            return -1
        if slot & _TAG == tag:
            g = np.int64(slot & _LOW) - 1
            f = first[g]
            if tstops[f] - tstarts[f] == stop - start and _equal(twords, tstarts[f], words, start, stop - start):
                return g
        i = (i + 1) & mask


@_jit()
def _intern_grams(ids, n, width):
    """Group the word n-grams ``ids[k:k + width]`` (k < n) by their words. Returns (the group of
    each n-gram, each group's count)."""
    size = _table_size(n)
    mask = size - 1
    table = np.zeros(size, dtype=np.uint64)
    info = np.empty(3 * n, dtype=np.int64)
    group, first, count = info[:n], info[n:2 * n], info[2 * n:]
    groups = 0
    for k in range(n):
        h = _ids_key(ids, k, width)
        tag = h & _TAG
        i = np.int64(h & np.uint64(mask))
        while True:
            slot = table[i]
            if slot == _ZERO:
                table[i] = tag | np.uint64(groups + 1)
                first[groups] = k
                count[groups] = 1
                group[k] = groups
                groups += 1
                break
            if slot & _TAG == tag:
                g = np.int64(slot & _LOW) - 1
                f = first[g]
                same = True
                for j in range(width):
                    if ids[f + j] != ids[k + j]:
                        same = False
                        break
                if same:
                    count[g] += 1
                    group[k] = g
                    break
            i = (i + 1) & mask
    return group, count
