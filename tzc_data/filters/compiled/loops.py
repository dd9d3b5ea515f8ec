"""The loop signals: the periodic tail, the cycle and the run of each part, and the units
(paragraphs, sentences) that repeat.

Part of :mod:`tzc_data.filters.compiled` (see there why it decides as the Python definitions)."""

from __future__ import annotations

import numpy as np

from tzc_data.filters.compiled.quotes import _is_quoted, _prompt_words
from tzc_data.filters.compiled.split import _lines
from tzc_data.filters.compiled.tables import SIZES, _cased, _equal, _intern, _jit, _lookup, _space

# -- the signals -----------------------------------------------------------------------------------

@_jit()
def _rfind(buf, a, needle, width, stop, shift):
    """``buf[a:].rfind(buf[needle:needle + width], 0, stop)`` (offsets from ``a``)."""
    i = stop - width
    while i >= 0:
        j = 0
        while j < width and buf[a + i + j] == buf[needle + j]:
            j += 1
        if j == width:
            return i
        i -= shift[buf[a + i]]
    return -1


@_jit()
def _tail(buf, a, b):
    """``repeating_tail(buf[a:b])`` (probe 32, 8 candidates): (period, span, where the stripped text
    ends), period 0 for None."""
    words = buf.view(np.uint64)
    while b > a and _space(buf[b - 1]):
        b -= 1
    n = b - a
    width = min(32, n // 2)
    if width < 4:
        return 0, 0, b
    needle = b - width
    shift = np.full(256, width, dtype=np.uint8)  # width <= 32
    for k in range(width - 1, 0, -1):
        shift[buf[needle + k]] = k
    best_period = 0
    best_span = 0
    end = n - 1
    for _ in range(8):
        at = _rfind(buf, a, needle, width, end, shift)
        if at < 0:
            break
        period = n - width - at
        j = n - period
        while j - period >= 0 and _equal(words, a + j - period, words, a + j, period):
            j -= period
        low, high = 0, min(j, period)
        while low < high:
            mid = (low + high + 1) // 2
            if _equal(words, a + j - mid, words, a + j - mid + period, mid):
                low = mid
            else:
                high = mid - 1
        j -= low
        span = n - j
        if best_period == 0 or span - period > best_span - best_period:
            best_period = period
            best_span = span
        end = at + width - 1
    return best_period, best_span, b


@_jit()
def _cycle(buf, start, stop, group, first, count, groups, pieces, table, repeats, share, prompt, p_start, p_stop):
    """``repetition._cycle`` (least 12, window 256) given the table of the lines (:func:`_intern`) and
    the lines of the prompt (``prompt[p_start[k]:p_stop[k]]``, cased): (lines, distinct lines,
    chars, the unit's piece), lines 0 for None."""
    long = np.zeros(groups, dtype=np.bool_)
    some = False
    for g in range(groups):
        f = first[g]
        long[g] = stop[f] - start[f] >= 12
        if count[g] >= repeats and long[g]:
            some = True
    if not some:
        return 0, 0, 0, -1
    words, prompt_words = buf.view(np.uint64), prompt.view(np.uint64)
    eligible = long  # long enough and not a line of the prompt
    for q in range(len(p_start)):
        g = _lookup(table, words, start, stop, first, prompt_words, p_start[q], p_stop[q])
        if g >= 0:
            eligible[g] = False
    some = False
    for g in range(groups):
        if eligible[g] and count[g] >= repeats:
            some = True
    if not some:
        return 0, 0, 0, -1
    low = max(0, pieces - 4 * 256)
    parts = np.empty(pieces - low, dtype=np.int64)
    m = 0
    for k in range(low, pieces):
        if eligible[group[k]]:
            parts[m] = k
            m += 1
    if m > 256:
        parts = parts[m - 256:m]
        m = 256
    # The ends are nested: each size's counts are the last one's plus the lines it adds.
    local = np.zeros(groups, dtype=np.int64)
    distinct = chars = copied = top = added = 0
    best = (0, 0, 0, -1)
    for size in SIZES:
        if size > m:
            break
        while added < size:
            k = parts[m - 1 - added]
            g = group[k]
            length = stop[k] - start[k]
            seen = local[g]
            if seen == 0:
                distinct += 1
            elif seen == 1:
                copied += 2 * length  # the copy already counted, of the same length, now occurs twice
            else:
                copied += length
            local[g] = seen + 1
            top = max(top, seen + 1)
            chars += length
            added += 1
        if not size < repeats * distinct and copied >= share * chars:
            unit = -1
            for j in range(m - size, m):
                if local[group[parts[j]]] == top:
                    unit = parts[j]
                    break
            best = (size, distinct, chars, unit)
    return best


@_jit()
def _run(buf, raw0, raw1, start, stop, group, first, count, groups, pieces, min_copies, prompt, prompt_length):
    """``repetition._run`` (least 30, gap 2.0, slack 100) with ``quoter(prompt[:prompt_length])``
    (cased): (copies, the unit's piece, start, end), copies 0 for None."""
    candidate = np.zeros(groups, dtype=np.bool_)
    some = False
    for g in range(groups):
        f = first[g]
        if count[g] >= min_copies and stop[f] - start[f] >= 30:
            candidate[g] = True
            some = True
    if not some:
        return 0, -1, 0, 0
    copies = np.zeros(groups, dtype=np.int64)
    begun = np.zeros(groups, dtype=np.int64)
    ended = np.zeros(groups, dtype=np.int64)
    quoted = np.full(groups, -1, dtype=np.int8)
    index = _prompt_words(prompt, 0)  # the prompt's, once one is needed
    ready = 0
    best = (0, -1, 0, 0)
    for k in range(pieces):
        g = group[k]
        if not candidate[g]:
            continue
        at = raw0[k]
        if copies[g] == 0:
            copies[g] = 1
            begun[g] = at
            ended[g] = raw1[k]
            continue
        if at - ended[g] <= 2.0 * (stop[k] - start[k]) + 100:
            copies[g] += 1
        else:
            copies[g] = 1
            begun[g] = at
        ended[g] = raw1[k]
        if copies[g] >= 2 and (best[0] == 0 or copies[g] > best[0]):
            if quoted[g] < 0:
                q, index, ready = _is_quoted(buf, start[k], stop[k], prompt, prompt_length, index, ready)
                quoted[g] = 1 if q else 0
            if quoted[g] == 0:
                best = (copies[g], k, begun[g], ended[g])
    return best


@_jit()
def _part_loops(cased, n, window, repeats, share, min_copies, prompt, prompt_length, p_start, p_stop):
    """The cycle and the run of one part, ``cased[:n]`` (from :func:`_cased`), on its last
    ``window`` bytes (``text[-window:]``): (lines, distinct lines, chars, unit start, unit stop;
    copies, unit start, unit stop, start, end), offsets in that end of the part."""
    begin = max(0, n - window) if window > 0 else (0 if window == 0 else min(n, -window))
    if begin % 8 == 0:  # read in place
        buf, m = cased[begin:], n - begin
    else:
        buf, m = _cased(cased, begin, n)
    raw0, raw1, start, stop, pieces = _lines(buf, m)
    group, first, count, groups, table = _intern(buf.view(np.uint64), start, stop, pieces)
    lines, distinct, chars, unit = _cycle(buf, start, stop, group, first, count, groups, pieces, table, repeats,
                                          share, prompt, p_start, p_stop)
    copies, run_unit, run_start, run_end = _run(buf, raw0, raw1, start, stop, group, first, count, groups, pieces,
                                                min_copies, prompt, prompt_length)
    return (lines, distinct, chars, start[unit] if unit >= 0 else 0, stop[unit] if unit >= 0 else 0,
            copies, start[run_unit] if run_unit >= 0 else 0, stop[run_unit] if run_unit >= 0 else 0,
            run_start, run_end)


@_jit()
def _units(buf, starts, stops, least, min_copies, prompt, prompt_length, index, ready):
    """``repetition._unit_stats`` of the parts ``buf[starts[k]:stops[k]]`` with
    ``quoter(prompt[:prompt_length])``: (the most repeated unit's count, the covering unit's copies,
    start, stop), and the prompt's index and how far it is built (see :func:`_is_quoted`)."""
    n = len(starts)
    group, first, count, groups, _ = _intern(buf.view(np.uint64), starts, stops, n)
    if groups < n:  # something repeats
        repeated = np.empty(groups, dtype=np.int64)  # in order of first occurrence, as in the Counter
        r = 0
        for g in range(groups):
            f = first[g]
            if count[g] >= 2 and stops[f] - starts[f] >= least:
                repeated[r] = g
                r += 1
        quoted = np.full(r, -1, dtype=np.int8)
        unit = -1
        while True:  # sorted(repeated, by count, reverse=True), which is stable, up to the first unquoted
            best = -1
            for j in range(r):
                if quoted[j] < 0 and (best < 0 or count[repeated[j]] > count[repeated[best]]):
                    best = j
            if best < 0:
                break
            g = repeated[best]
            q, index, ready = _is_quoted(buf, starts[first[g]], stops[first[g]], prompt, prompt_length, index, ready)
            quoted[best] = 1 if q else 0
            if not q:
                unit = g
                break
        if unit >= 0:
            tried = np.zeros(r, dtype=np.bool_)
            cover = -1
            while True:  # the same by copies x length, among those with min_copies
                best = -1
                for j in range(r):
                    g = repeated[j]
                    if not tried[j] and count[g] >= min_copies and (best < 0 or count[g] * (
                            stops[first[g]] - starts[first[g]]) > count[repeated[best]] * (
                            stops[first[repeated[best]]] - starts[first[repeated[best]]])):
                        best = j
                if best < 0:
                    break
                tried[best] = True
                g = repeated[best]
                if quoted[best] < 0:
                    q, index, ready = _is_quoted(buf, starts[first[g]], stops[first[g]], prompt, prompt_length,
                                                 index, ready)
                    quoted[best] = 1 if q else 0
                if quoted[best] == 0:
                    cover = g
                    break
            if cover < 0:
                return (count[unit], 0, 0, 0), index, ready
            return (count[unit], count[cover], starts[first[cover]], stops[first[cover]]), index, ready
    for k in range(n):
        if stops[k] - starts[k] >= least:
            return (1, 0, 0, 0), index, ready
    return (0, 0, 0, 0), index, ready
