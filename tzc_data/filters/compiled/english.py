"""The English score's counts.

Part of :mod:`tzc_data.filters.compiled` (see there why it decides as the Python definitions)."""

from __future__ import annotations

import numpy as np

from tzc_data.filters.compiled.tables import _M1, _U56, _ZERO, _jit


@_jit()
def english_counts(text, words_of, table):
    """``language.english_score``'s counts on the UTF-8 ``text``: (the words of
    ``text.translate(words_of).split()`` that ``table`` holds, those words). A word is a run of
    bytes that ``words_of`` does not turn into a space (the only whitespace it leaves), taken through
    ``words_of`` (ASCII letters to lower case); one of 9 bytes or more is no stopword."""
    n = len(text)
    words = hits = 0
    i = 0
    while i < n:
        if words_of[text[i]] == 32:
            i += 1
            continue
        v = _ZERO
        length = 0
        while i < n and words_of[text[i]] != 32:
            if length < 8:
                v |= np.uint64(words_of[text[i]]) << np.uint64(8 * length)
            length += 1
            i += 1
        words += 1
        if length <= 8:
            slot = np.int64((v * _M1) >> _U56)
            while table[slot] != _ZERO:
                if table[slot] == v:
                    hits += 1
                    break
                slot = (slot + 1) & 255
    return hits, words
