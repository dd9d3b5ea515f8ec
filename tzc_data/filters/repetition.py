"""Repetition signals for R1-style traces: each linear in the text, none a backtracking regex.

Degenerate traces repeat in several ways, and each signal here catches one of them:

* ``repeating_tail``: the end of the text is one unit repeated many times: a phrase, a sentence, a
  1k-character paragraph, or two paragraphs in alternation. It runs on the text in lower case
  with digits removed, so a unit whose counters or numbers change from copy to copy ("Attempt 9:
  ... 12", "Attempt 10: ... 13") repeats exactly.
* ``repeated_units``: the same paragraph, or the same long sentence, many times anywhere in the
  text (open-instruct's "same paragraph N times").
* ``dup_ngram_share`` / ``top_ngram_share``: Gopher-style shares: characters inside word 10-grams that occur more than once,
  and the share of the most frequent word 3-gram. Reasoning legitimately repeats "Wait, but" and
  "Let me", so the thresholds are set for reasoning text, not web text.
* ``compression_ratio``: zlib-compressed size over raw size, a cheap global signal.

The signals run on :func:`folded` UTF-8 bytes (lower case, no digits): bytes split, count and
compare faster than ``str``, and a loop is as visible in bytes as in characters.
Every function takes a text and returns numbers; :class:`RepetitionFilter` turns them into one
verdict with a reason per signal and stores every score for the stats. The tail is checked on
the reasoning and on the answer; the other signals on both together, and the share-based ones on
the last few thousand characters, where degenerate traces end up (which also bounds their cost).
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from tzc_data.filters.base import Verdict
from tzc_data.record import Example

_FOLD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
_DIGITS = b"0123456789"


def folded(text: str) -> bytes:
    """UTF-8 of ``text`` in (ASCII) lower case without digits: one ``bytes.translate`` pass.

    Copies that differ only in case or numbers ("Attempt 9: ... 12", "Attempt 10: ... 13") become
    equal. Every signal below works on these bytes: splitting, counting and comparing bytes runs
    at memchr speed, faster than the same on a ``str`` (measured: the repetition filter went from
    about 200 to about 150 µs per synthetic trace)."""
    return text.encode("utf-8", "surrogatepass").translate(_FOLD, _DIGITS)


def lowered(text: str) -> str:
    """:func:`folded` as text, for display (``tzc-data explain``)."""
    return folded(text).decode("utf-8", "replace")


def skeleton(text: str) -> str:
    """:func:`lowered` with whitespace collapsed."""
    return " ".join(lowered(text).split())


class Repeat(NamedTuple):
    period: int    # characters (bytes, for a bytes text) in the repeated unit
    repeats: float  # span / period
    span: int      # characters at the end of the text covered by the repetition
    unit: str | bytes

    @property
    def copied(self) -> int:
        """Characters of the span beyond the unit's first copy: how much text is repetition."""
        return self.span - self.period


def repeating_tail(text: str | bytes, *, probe: int = 32, candidates: int = 8) -> Repeat | None:
    """The longest periodic tail of ``text`` (a ``str``, or :func:`folded` bytes), or None. Pass a
    :func:`skeleton` to match copies that differ in case, numbers or spacing.

    Step by step:
      1. take the last ``probe`` characters as a probe;
      2. each earlier occurrence of the probe (nearest first, up to ``candidates``) proposes a
         period ``p``: the distance between that occurrence and the end;
      3. for each ``p``, walk back from the end one block of ``p`` characters at a time while the
         block equals the block after it, then find the longest partial block that still does by
         bisection (if k characters match, so do fewer): that is the span of the tail that has
         period ``p``;
      4. keep the period whose repetition covers the most text beyond its first copy
         (``span - p``): a multiple of the true period, or a far-away coincidence, covers less.
         A unit cut off mid-way at the very end (the generation limit) still has period ``p``.
    Cost: ``candidates`` scans of the text plus one comparison of the span: linear.
    """
    text = text.rstrip()
    n = len(text)
    width = min(probe, n // 2)
    if width < 4:
        return None
    needle = text[n - width:]
    best: Repeat | None = None
    end = n - 1
    for _ in range(candidates):
        at = text.rfind(needle, 0, end)
        if at < 0:
            break
        period = n - width - at
        j = n - period
        while j - period >= 0 and text[j - period:j] == text[j:j + period]:
            j -= period
        low, high = 0, min(j, period)  # then the longest partial block, by bisection (matches are monotone)
        while low < high:
            mid = (low + high + 1) // 2
            if text[j - mid:j] == text[j - mid + period:j + period]:
                low = mid
            else:
                high = mid - 1
        j -= low
        span = n - j
        found = Repeat(period, span / period, span, text[n - period:])
        if best is None or found.copied > best.copied:
            best = found
        end = at + width - 1
    return best


class Units(NamedTuple):
    paragraph_repeats: int  # occurrences of the most repeated paragraph (>= min_paragraph chars)
    sentence_repeats: int   # occurrences of the most repeated sentence (>= min_sentence chars)
    unit: str | bytes       # that paragraph or sentence


def repeated_units(text: str | bytes, *, min_paragraph: int = 100, min_sentence: int = 50) -> Units:
    """How often the most repeated long paragraph and long sentence occur, anywhere in the text.

    Pass :func:`folded` bytes to compare copies in lower case without digits (a ``str`` is
    compared as it is). Paragraphs are cut at blank lines, sentences at ". ". Among equally
    frequent units the first one wins, so the result does not depend on hashing.
    """
    blank, stop = (b"\n\n", b". ") if isinstance(text, bytes) else ("\n\n", ". ")
    (paragraph, p_count), (sentence, s_count) = (_most_repeated(text.split(blank), min_paragraph),
                                                 _most_repeated(text.split(stop), min_sentence))
    return Units(p_count, s_count, paragraph if p_count >= 2 else sentence)


def _most_repeated(parts: list, least: int) -> tuple:
    """(unit, occurrences) of the most frequent part at least ``least`` long; (empty, 0) if none."""
    counts = Counter(parts)  # counted at C speed
    empty = parts[0][:0]
    if len(counts) == len(parts):  # the usual case: nothing repeats
        return next(((part, 1) for part in parts if len(part) >= least), (empty, 0))
    best, top = empty, 0
    for part, count in counts.items():
        if count > top and len(part) >= least:
            best, top = part, count
    return best, top


_MULT = np.uint64(0x9E3779B97F4A7C15)


def _ngram_hashes(word_hashes: np.ndarray, n: int) -> np.ndarray:
    """One 64-bit hash per word n-gram (polynomial over the words' hashes; wraps mod 2**64)."""
    count = len(word_hashes) - n + 1
    h = np.zeros(count, dtype=np.uint64)
    for k in range(n):
        h = h * _MULT + word_hashes[k:k + count]
    return h


def _repeated(hashes: np.ndarray) -> np.ndarray:
    """One sort: the mask of items whose value occurs more than once."""
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    same = ordered[1:] == ordered[:-1]
    repeated = np.zeros(len(hashes), dtype=bool)
    repeated[order[1:][same]] = True
    repeated[order[:-1][same]] = True
    return repeated


def _word_arrays(words: list[str]) -> tuple[np.ndarray, np.ndarray]:
    hashes = np.fromiter(map(hash, words), dtype=np.int64, count=len(words)).view(np.uint64)
    return hashes, np.fromiter(map(len, words), dtype=np.int64, count=len(words))


def dup_ngram_share(words: list[str], n: int = 10) -> float:
    """Share of characters inside word ``n``-grams that occur more than once (Gopher counts every
    copy, the first one included; so do we). Words are compared by value: Python's ``hash`` of
    each word is only a fast stand-in for it."""
    if len(words) <= n:
        return 0.0
    with np.errstate(over="ignore"):
        hashes, lengths = _word_arrays(words)
        repeated = _repeated(_ngram_hashes(hashes, n))
        covered = np.convolve(repeated.astype(np.int8), np.ones(n, dtype=np.int8))[: len(words)] > 0
        return float(lengths[covered].sum() / lengths.sum())


def top_ngram_share(words: list, n: int = 3) -> float:
    """Share of characters taken by the copies of the most frequent word ``n``-gram (at most 1).
    Among equally frequent n-grams the longest counts (hash order would differ between processes).
    A ``Counter`` of word tuples: faster than numpy for the few hundred words it is given."""
    if len(words) <= n:
        return 0.0
    counts = Counter(zip(*(words[k:] for k in range(n))))
    top = max(counts.values())
    chars = max(sum(map(len, gram)) for gram, count in counts.items() if count == top)
    return min(1.0, top * chars / sum(map(len, words)))


def compression_ratio(text: str | bytes) -> float:
    """zlib (level 1) size over UTF-8 size: about 0.4-0.5 for prose, far lower for loops."""
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    return len(zlib.compress(raw, 1)) / len(raw) if raw else 1.0


@dataclass(frozen=True)
class RepetitionFilter:
    """All repetition signals on the reasoning and the answer; one drop reason per signal.

    Reasons: ``loop`` (repeating tail), ``repeated_paragraphs`` (a paragraph or long sentence
    many times anywhere), ``ngram_repetition`` (Gopher-style shares), ``compressible`` (zlib).
    Each threshold is a ``tzc-data build`` option; a threshold of 0 switches that signal off.
    """

    tail_repeats: float = 3.0
    tail_chars: int = 200
    paragraph_repeats: int = 3
    sentence_repeats: int = 8
    ngram_dup_share: float = 0.9
    ngram_top_share: float = 0.4
    min_compression: float = 0.12
    min_chars: int = 1000  # share-based signals need enough text to mean anything
    window_chars: int = 2500  # n-grams and compression look at the end, where a degenerate trace ends up
    max_words: int = 200
    dup_ngram_gate: float = 0.35
    name: str = "repetition"
    score_names: tuple[str, ...] = ("loop_repeats", "loop_span", "paragraph_repeats", "sentence_repeats",
                                    "ngram_dup_share", "ngram_top_share", "compression_ratio")

    def __call__(self, example: Example) -> Verdict:
        scores: dict[str, float] = {}
        reason = detail = None
        # The tail belongs to each part; the other signals look at both parts at once (one pass).
        low = {part: folded(getattr(example, part)) for part in ("reasoning", "answer")}
        longest: Repeat | None = None
        for part in ("reasoning", "answer"):
            tail = repeating_tail(low[part])
            if tail and (longest is None or tail.copied > longest.copied):
                longest = tail
            if tail and reason is None and self.tail_repeats and tail.repeats >= self.tail_repeats \
                    and tail.span >= self.tail_chars:
                reason, detail = "loop", f"{part} ends with {_clip(tail.unit)!r} x{tail.repeats:.1f} ({tail.span:,} chars)"
        scores["loop_repeats"] = round(longest.repeats, 2) if longest else 0.0
        scores["loop_span"] = float(longest.span) if longest else 0.0

        both = low["reasoning"] + b"\n\n" + low["answer"]
        units = repeated_units(both)
        scores["paragraph_repeats"], scores["sentence_repeats"] = units.paragraph_repeats, units.sentence_repeats
        if reason is None and ((self.paragraph_repeats and units.paragraph_repeats >= self.paragraph_repeats)
                               or (self.sentence_repeats and units.sentence_repeats >= self.sentence_repeats)):
            count = max(units.paragraph_repeats, units.sentence_repeats)
            reason, detail = "repeated_paragraphs", f"repeats {_clip(units.unit)!r} x{count}"
        if len(both) < self.min_chars:
            return Verdict(reason, detail or "", scores)
        end = both[-self.window_chars:]
        words = end.rsplit(None, self.max_words)  # the last max_words words, and the rest unsplit
        words = words[1:] if len(words) > self.max_words else words
        ratio = compression_ratio(end)
        top = top_ngram_share(words)
        # Text whose 10-grams are 90% repeats is mostly back-references for zlib: it cannot compress
        # as badly as prose does. So the 10-gram share is only computed where zlib already sees
        # repetition (labelled loops that reach 0.9 compress to 0.27 at most); elsewhere it is null.
        dup = dup_ngram_share(words) if ratio < self.dup_ngram_gate else None
        scores |= {"ngram_dup_share": None if dup is None else round(dup, 4), "ngram_top_share": round(top, 4),
                   "compression_ratio": round(ratio, 4)}
        if reason is None and ((self.ngram_dup_share and dup is not None and dup >= self.ngram_dup_share)
                               or (self.ngram_top_share and top >= self.ngram_top_share)):
            reason, detail = "ngram_repetition", f"{dup or 0:.0%} of characters in repeated 10-grams, " \
                                                 f"top 3-gram {top:.1%}"
        if reason is None and self.min_compression and ratio < self.min_compression:
            reason, detail = "compressible", f"the last {len(end):,} characters compress to {ratio:.0%} of their size"
        return Verdict(reason, detail or "", scores)


def _clip(text: str | bytes, width: int = 80) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text if len(text) <= width else text[: width - 3] + "..."
