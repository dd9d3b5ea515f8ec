"""Whether a unit is quoted from the prompt (``repetition.quoted``), with the prompt's words
and 3-grams gathered once, and only when a unit needs them.

Part of :mod:`tzc_data.filters.compiled` (see there why it decides as the Python definitions)."""

from __future__ import annotations

import numpy as np

from tzc_data.filters.compiled.split import _words
from tzc_data.filters.compiled.tables import (
    _LOW,
    _TAG,
    _U1,
    _ZERO,
    PUNCTUATION,
    _equal,
    _ids_key,
    _intern,
    _jit,
    _key,
    _lookup,
    _table_size,
)

# -- quoted ----------------------------------------------------------------------------------------

@_jit()
def _strip_punctuation(buf, starts, stops):
    for k in range(len(starts)):
        s, e = starts[k], stops[k]
        while s < e and PUNCTUATION[buf[s]]:
            s += 1
        while e > s and PUNCTUATION[buf[e - 1]]:
            e -= 1
        starts[k] = s
        stops[k] = e


@_jit(inline="always")
def _bit(words, start, stop):
    """Which of 4,096 bits stands for ``buf[start:stop]``: the top 12 bits of its digest."""
    return np.int64(_key(words, start, stop) >> np.uint64(52))


@_jit()
def _prompt_words(prompt, m):
    """The first of what ``quoter(prompt)`` gathers: the prompt's words without the punctuation
    around them, and a 4,096-bit set of them (a bit per word, :func:`_bit`; two words may share
    one), with empty places for the rest of :func:`_prompt_index`."""
    starts, stops = _words(prompt, 0, m)
    _strip_punctuation(prompt, starts, stops)
    bits = np.zeros(64, dtype=np.uint64)
    words = prompt.view(np.uint64)
    for k in range(len(starts)):
        b = _bit(words, starts[k], stops[k])
        bits[b >> 6] |= _U1 << np.uint64(b & 63)
    empty = np.zeros(0, dtype=np.int64)
    return starts, stops, bits, empty, empty, np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint64)


@_jit()
def _prompt_index(prompt, words_index):
    """The rest of what ``quoter(prompt)`` gathers, from :func:`_prompt_words`: the words grouped
    by their bytes, and the set of the prompt's word 3-grams (as triples of groups; a slot holds
    one more than where the 3-gram starts)."""
    starts, stops, bits, _, _, _, _ = words_index
    n = len(starts)
    group, first, _, _, table = _intern(prompt.view(np.uint64), starts, stops, n)
    grams = max(n - 2, 0)
    size = _table_size(grams)
    gram_table = np.zeros(size, dtype=np.uint64)
    mask = size - 1
    for k in range(grams):
        h = _ids_key(group, k, 3)
        tag = h & _TAG
        i = np.int64(h & np.uint64(mask))
        while True:
            slot = gram_table[i]
            if slot == _ZERO:
                gram_table[i] = tag | np.uint64(k + 1)
                break
            g = np.int64(slot & _LOW) - 1
            if slot & _TAG == tag and group[g] == group[k] and group[g + 1] == group[k + 1] \
                    and group[g + 2] == group[k + 2]:
                break
            i = (i + 1) & mask
    return starts, stops, bits, group, first, table, gram_table


@_jit()
def _contains(hay, hay_length, needle, start, stop):
    """``needle[start:stop] in hay[:hay_length]`` (for a non-empty needle)."""
    m = stop - start
    first, last = needle[start], needle[stop - 1]
    hay_words, needle_words = hay.view(np.uint64), needle.view(np.uint64)
    for i in range(hay_length - m + 1):
        if hay[i] == first and hay[i + m - 1] == last and _equal(hay_words, i, needle_words, start, m):
            return True
    return False


@_jit()
def _quoted(buf, start, stop, prompt, prompt_length, index):
    """``quoted(buf[start:stop], prompt[:prompt_length])`` for a non-empty unit the prompt does not
    contain, ``index`` being the prompt's :func:`_prompt_index`: whether words the prompt holds
    cover half the unit's characters."""
    p_starts, p_stops, _, p_group, p_first, table, gram_table = index
    starts, stops = _words(buf, start, stop)
    _strip_punctuation(buf, starts, stops)
    n = len(starts)
    words, prompt_words = buf.view(np.uint64), prompt.view(np.uint64)
    ids = np.empty(n, dtype=np.int64)
    covered = np.zeros(n, dtype=np.bool_)
    chars = 0
    for k in range(n):
        ids[k] = _lookup(table, prompt_words, p_starts, p_stops, p_first, words, starts[k], stops[k])
        length = stops[k] - starts[k]
        chars += length
        covered[k] = length >= 12 and ids[k] >= 0
    mask = len(gram_table) - 1
    for k in range(n - 2):
        if ids[k] < 0 or ids[k + 1] < 0 or ids[k + 2] < 0:
            continue
        h = _ids_key(ids, k, 3)
        tag = h & _TAG
        i = np.int64(h & np.uint64(mask))
        while True:
            slot = gram_table[i]
            if slot == _ZERO:
                break
            g = np.int64(slot & _LOW) - 1
            if slot & _TAG == tag and p_group[g] == ids[k] and p_group[g + 1] == ids[k + 1] \
                    and p_group[g + 2] == ids[k + 2]:
                covered[k] = True
                covered[k + 1] = True
                covered[k + 2] = True
                break
            i = (i + 1) & mask
    hit = 0
    for k in range(n):
        if covered[k]:
            hit += stops[k] - starts[k]
    return chars > 0 and hit * 2 >= chars


@_jit()
def _is_quoted(buf, start, stop, prompt, prompt_length, index, ready):
    """``quoted(buf[start:stop], prompt[:prompt_length])``, gathering the prompt's words
    (:func:`_prompt_words`, ``ready`` 1) and then its groups and 3-grams (:func:`_prompt_index`,
    ``ready`` 2) the first time each is needed: (quoted, the index, how far it is built).

    Before the 3-grams: every word a quote covers is a word of the prompt (a long word it holds,
    or a word of a 3-gram it holds), so its bit is set; if the words whose bits are set come to
    less than half the unit's characters, the covered ones do too, and the unit is not quoted."""
    if prompt_length == 0 or stop == start:
        return False, index, ready
    if _contains(prompt, prompt_length, buf, start, stop):
        return True, index, ready
    if ready == 0:
        index = _prompt_words(prompt, prompt_length)
        ready = 1
    starts, stops = _words(buf, start, stop)
    _strip_punctuation(buf, starts, stops)
    bits = index[2]
    words = buf.view(np.uint64)
    chars = bound = 0
    for k in range(len(starts)):
        length = stops[k] - starts[k]
        chars += length
        b = _bit(words, starts[k], stops[k])
        if bits[b >> 6] & (_U1 << np.uint64(b & 63)):
            bound += length
    if chars == 0 or bound * 2 < chars:
        return False, index, ready
    if ready == 1:
        index = _prompt_index(prompt, index)
        ready = 2
    return _quoted(buf, start, stop, prompt, prompt_length, index), index, ready
