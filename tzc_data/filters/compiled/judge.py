"""One call a row: every repetition signal of a row, and the 10-gram share.

Part of :mod:`tzc_data.filters.compiled` (see there why it decides as the Python definitions)."""

from __future__ import annotations

import numpy as np

from tzc_data.filters.compiled.loops import _part_loops, _tail, _units
from tzc_data.filters.compiled.quotes import _is_quoted, _prompt_words
from tzc_data.filters.compiled.split import _last_words, _lines, _parts
from tzc_data.filters.compiled.tables import (
    _LOW,
    _M1,
    _M2,
    _TAG,
    _ZERO,
    _cased,
    _compact,
    _equal,
    _folded,
    _intern,
    _intern_grams,
    _jit,
    _key,
    _table_size,
)


@_jit()
def _top_gram(buf, start, stop, most):
    """``top_ngram_share``'s numbers on the last ``most`` words of ``buf[start:stop]``: (their
    count, their characters, the top 3-gram's copies, its characters). A 3-gram is keyed by its
    words' digests and joins a group only when its three words equal the group's first 3-gram's,
    byte for byte."""
    starts, stops = _last_words(buf, start, stop, most)
    n = len(starts)
    total = 0
    for k in range(n):
        total += stops[k] - starts[k]
    if n <= 3:
        return n, total, 0, 0
    words = buf.view(np.uint64)
    keys = np.empty(n, dtype=np.uint64)
    for k in range(n):
        keys[k] = _key(words, starts[k], stops[k])
    grams = n - 2
    size = _table_size(grams)
    mask = size - 1
    table = np.zeros(size, dtype=np.uint64)
    info = np.empty(2 * grams, dtype=np.int64)
    first, count = info[:grams], info[grams:]
    groups = 0
    top = 0
    for k in range(grams):
        h = ((keys[k] * _M1) ^ keys[k + 1]) * _M2 ^ keys[k + 2]
        h ^= h >> np.uint64(29)
        tag = h & _TAG
        i = np.int64(h & np.uint64(mask))
        while True:
            slot = table[i]
            if slot == _ZERO:
                table[i] = tag | np.uint64(groups + 1)
                first[groups] = k
                count[groups] = 1
                top = max(top, 1)
                groups += 1
                break
            if slot & _TAG == tag:
                g = np.int64(slot & _LOW) - 1
                f = first[g]
                same = True
                for j in range(3):
                    length = stops[k + j] - starts[k + j]
                    if stops[f + j] - starts[f + j] != length or not _equal(words, starts[f + j], words,
                                                                              starts[k + j], length):
                        same = False
                        break
                if same:
                    count[g] += 1
                    top = max(top, count[g])
                    break
            i = (i + 1) & mask
    chars = 0
    for g in range(groups):
        if count[g] == top:
            f = first[g]
            chars = max(chars, stops[f] - starts[f] + stops[f + 1] - starts[f + 1] + stops[f + 2] - starts[f + 2])
    return n, total, top, chars


@_jit()
def _dup_covered(buf, start, stop, most):
    """On the last ``most`` words of ``buf[start:stop]``: (their count, their characters, the
    characters inside 10-grams that occur more than once). Words are grouped by their bytes and
    10-grams by their words' groups, so the count is exact."""
    starts, stops = _last_words(buf, start, stop, most)
    n = len(starts)
    total = 0
    for k in range(n):
        total += stops[k] - starts[k]
    covered = 0
    if n > 10:
        ids, _, _, _, _ = _intern(buf.view(np.uint64), starts, stops, n)
        grams = n - 9
        group, count = _intern_grams(ids, grams, 10)
        last = -1  # the words up to this one are counted already
        for k in range(grams):
            if count[group[k]] > 1:
                for j in range(max(k, last + 1), k + 10):
                    covered += stops[j] - starts[j]
                last = k + 9
    return n, total, covered


@_jit()
def judge(reasoning, answer, prompt, params):
    """:meth:`RepetitionFilter._judge <tzc_data.filters.repetition.RepetitionFilter._judge>`'s
    counts and shares, and its reason as far as zlib's ratio is not involved.

    ``reasoning``, ``answer`` and ``prompt`` are the UTF-8 texts (``bytes``), ``params`` the
    filter's fields (:data:`PARAMS`). Returns, in order:

    * ``both``, the folded reasoning, ``\\n\\n`` and the folded answer, then 8 bytes or more of
      padding; its length; where the n-grams' end starts in it (-1 for a text under
      ``min_chars``, which has no n-gram shares and no ratio);
    * the reason's number, 0 for none (1 the periodic tail, 2 the cycle, 3 the run, 4 repeated
      paragraphs), and the part it concerns (0 the reasoning, 1 the answer);
    * the scores before rounding: loop repeats, loop span, cycle repeats, cycle span, run copies,
      paragraph repeats, sentence repeats, repeated share, top 3-gram share (the 10-gram share is
      :func:`dup_share`'s);
    * what the reason's detail shows: four integers and a float.
    """
    (tail_repeats, tail_chars, cycle_repeats, cycle_share, run_copies, paragraph_repeats, sentence_repeats,
     repeated_share) = params[:8]
    loop_window, window_chars, max_words, min_chars = np.int64(params[11]), np.int64(params[12]), \
        np.int64(params[13]), params[15]
    cased_parts = (_cased(reasoning, 0, len(reasoning))[0], _cased(answer, 0, len(answer))[0])
    both = np.zeros((len(reasoning) + len(answer) + 2 + 7) // 8 * 8 + 8, dtype=np.uint8)
    reasoning_end = _compact(cased_parts[0], len(reasoning), both, 0)
    both[reasoning_end] = 10
    both[reasoning_end + 1] = 10
    length = _compact(cased_parts[1], len(answer), both, reasoning_end + 2)
    ends = (reasoning_end, length)  # where each part ends in both
    begins = (0, reasoning_end + 2)
    bodies = (len(reasoning), len(answer))
    cased, cased_length = _cased(prompt, 0, len(prompt))
    _, _, p_start, p_stop, _ = _lines(cased, cased_length)
    low, low_length = _folded(prompt)
    index = _prompt_words(low, 0)  # the folded prompt's, once a unit needs it
    ready = 0
    reason = part = 0
    d0 = d1 = d2 = d3 = 0
    d4 = 0.0
    loop_copied = loop_span = -1
    loop_repeats = 0.0
    cycle_lines = cycle_span = 0
    cycle_repeats_ = 0.0
    run_best = 0
    for k in range(2):
        period, span, end = _tail(both, begins[k], ends[k])
        if period and (loop_copied < 0 or span - period > loop_copied):
            loop_copied, loop_span, loop_repeats = span - period, span, span / period
        if period and reason == 0 and tail_repeats != 0 and span / period >= tail_repeats and span >= tail_chars:
            q, index, ready = _is_quoted(both, end - span, end, low, low_length, index, ready)
            if not q:
                reason, part, d0, d1, d2, d3, d4 = 1, k, period, span, end - period, end, span / period
        (lines, distinct, chars, unit_start, unit_stop, copies, run_start, run_stop, begun, ended) = \
            _part_loops(cased_parts[k], bodies[k], loop_window, cycle_repeats if cycle_repeats != 0 else 3.0,
                        cycle_share, run_copies if run_copies != 0 else 2.0, cased, cased_length, p_start, p_stop)
        if lines and lines > cycle_lines:
            cycle_lines, cycle_span, cycle_repeats_ = lines, chars, lines / distinct
        if lines and reason == 0 and cycle_repeats != 0 and chars >= tail_chars:
            reason, part, d0, d1, d2, d3, d4 = 2, k, lines, chars, unit_start, unit_stop, lines / distinct
        if copies and copies > run_best:
            run_best = copies
        if copies and reason == 0 and run_copies != 0 and copies >= run_copies \
                and 3 * (max(0, bodies[k] - loop_window) + ended) >= 2 * bodies[k]:
            reason, part, d0, d1, d2, d3, d4 = 3, k, copies, 0, run_start, run_stop, 0.0
    p_starts, p_stops, s_starts, s_stops = _parts(both, length)
    (p_count, p_copies, p_unit_start, p_unit_stop), index, ready = _units(
        both, p_starts, p_stops, 100, paragraph_repeats if paragraph_repeats != 0 else 2.0, low, low_length, index,
        ready)
    (s_count, s_copies, s_unit_start, s_unit_stop), index, ready = _units(
        both, s_starts, s_stops, 50, sentence_repeats if sentence_repeats != 0 else 2.0, low, low_length, index,
        ready)
    p_share = p_copies * (p_unit_stop - p_unit_start) / length if p_copies else 0.0
    s_share = s_copies * (s_unit_stop - s_unit_start) / length if s_copies else 0.0
    cover_copies, cover_share, cover_start, cover_stop = 0, 0.0, 0, 0  # max(): the first of the widest
    if paragraph_repeats != 0:
        cover_copies, cover_share, cover_start, cover_stop = p_copies, p_share, p_unit_start, p_unit_stop
    if sentence_repeats != 0 and (paragraph_repeats == 0 or s_share > p_share):
        cover_copies, cover_share, cover_start, cover_stop = s_copies, s_share, s_unit_start, s_unit_stop
    if reason == 0 and cover_copies and cover_share >= repeated_share:
        reason, part, d0, d1, d2, d3, d4 = 4, 0, cover_copies, 0, cover_start, cover_stop, cover_share
    top = 0.0
    words_from = -1
    if length >= min_chars:  # both[-window_chars:]
        words_from = max(0, length - window_chars) if window_chars > 0 else (
            0 if window_chars == 0 else min(length, -window_chars))
        words, total, top_copies, top_chars = _top_gram(both, words_from, length, max_words)
        top = min(1.0, top_copies * top_chars / total) if words > 3 else 0.0
    return (both, length, words_from, reason, part, loop_repeats, float(max(loop_span, 0)), cycle_repeats_,
            float(cycle_span), float(run_best), p_count, s_count, cover_share, top, d0, d1, d2, d3, d4)


@_jit()
def dup_share(both, start, stop, most):
    """``dup_ngram_share`` of the last ``most`` words of ``both[start:stop]`` (the 10-gram share,
    which the filter only computes where zlib already sees repetition)."""
    words, total, covered = _dup_covered(both, start, stop, most)
    return covered / total if words > 10 else 0.0
