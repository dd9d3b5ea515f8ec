"""Splitting a text as the ``bytes`` methods the Python definitions use do: lines, paragraphs,
sentences, words.

Part of :mod:`tzc_data.filters.compiled` (see there why it decides as the Python definitions)."""

from __future__ import annotations

import numpy as np

from tzc_data.filters.compiled.tables import _jit, _marked, _space

# -- splitting -------------------------------------------------------------------------------------

@_jit()
def _lines(buf, m):
    """``repetition._split(buf[:m])``: the pieces between line breaks, a line break being a newline
    or a space after ``.``, ``?`` or ``!``. Returns (raw starts, raw stops, stripped starts,
    stripped stops, the number of pieces)."""
    mark = np.zeros(len(buf), dtype=np.uint8)
    if m > 0:
        mark[0] = buf[0] == 10
    for i in range(m - 1):  # a loop the compiler vectorises
        b, c = buf[i], buf[i + 1]
        mark[i + 1] = (c == 10) | ((c == 32) & ((b == 46) | (b == 63) | (b == 33)))
    cuts = _marked(mark, m)
    pieces = len(cuts) + 1
    spans = np.empty(4 * pieces, dtype=np.int64)
    raw0, raw1, start, stop = spans[:pieces], spans[pieces:2 * pieces], spans[2 * pieces:3 * pieces], \
        spans[3 * pieces:]
    s0 = 0
    for p in range(pieces):
        e0 = cuts[p] >> 3 if p < pieces - 1 else m
        raw0[p] = s0
        raw1[p] = e0
        s, e = s0, e0
        while s < e and _space(buf[s]):
            s += 1
        while e > s and _space(buf[e - 1]):
            e -= 1
        start[p] = s
        stop[p] = e
        s0 = e0 + 1
    return raw0, raw1, start, stop, pieces


@_jit()
def _parts(buf, m):
    """``buf[:m].split(b"\\n\\n")`` and ``buf[:m].split(b". ")``: (starts, stops) of each."""
    mark = np.zeros(len(buf), dtype=np.uint8)
    for i in range(m - 1):  # a loop the compiler vectorises: bit 0, a blank line; bit 1, ". "
        b, c = buf[i], buf[i + 1]
        mark[i] = (np.uint8(b == 10) & np.uint8(c == 10)) | ((np.uint8(b == 46) & np.uint8(c == 32)) << np.uint8(1))
    at = _marked(mark, m)
    blanks = stops = 0
    free = 0  # the first byte a blank line may start at (split cuts greedily from the left)
    for k in range(len(at)):  # count, then fill
        i = at[k] >> 3
        if at[k] & 7 == 0:
            if i >= free:
                blanks += 1
                free = i + 2
        else:
            stops += 1
    spans = np.empty(2 * (blanks + 1) + 2 * (stops + 1), dtype=np.int64)
    p_starts, p_stops = spans[:blanks + 1], spans[blanks + 1:2 * blanks + 2]
    s_starts, s_stops = spans[2 * blanks + 2:2 * blanks + stops + 3], spans[2 * blanks + stops + 3:]
    p_starts[0] = s_starts[0] = 0
    b = s = 0
    free = 0
    for k in range(len(at)):
        i = at[k] >> 3
        if at[k] & 7 == 0:
            if i >= free:
                p_stops[b] = i
                p_starts[b + 1] = i + 2
                b += 1
                free = i + 2
        else:
            s_stops[s] = i
            s_starts[s + 1] = i + 2
            s += 1
    p_stops[blanks] = m
    s_stops[stops] = m
    return p_starts, p_stops, s_starts, s_stops


@_jit()
def _words(buf, start, stop):
    """``buf[start:stop].split()``: (starts, stops) of the words."""
    starts = np.empty((stop - start + 1) // 2 + 1, dtype=np.int64)
    stops = np.empty((stop - start + 1) // 2 + 1, dtype=np.int64)
    k = 0
    i = start
    while i < stop:
        while i < stop and _space(buf[i]):
            i += 1
        if i == stop:
            break
        starts[k] = i
        while i < stop and not _space(buf[i]):
            i += 1
        stops[k] = i
        k += 1
    return starts[:k], stops[:k]


@_jit()
def _last_words(buf, start, stop, most):
    """``buf[start:stop].rsplit(None, most)`` less the unsplit rest: the last ``most`` words."""
    starts = np.empty(most, dtype=np.int64)
    stops = np.empty(most, dtype=np.int64)
    k = most
    i = stop
    while k > 0:
        while i > start and _space(buf[i - 1]):
            i -= 1
        if i == start:
            break
        k -= 1
        stops[k] = i
        while i > start and not _space(buf[i - 1]):
            i -= 1
        starts[k] = i
    return starts[k:], stops[k:]
