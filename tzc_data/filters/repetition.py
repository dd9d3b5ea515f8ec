"""Repetition signals for R1-style traces: each linear in the text, none a backtracking regex.

A loop is *degenerate* repetition: the same unit re-emitted with little new text between its
copies, or a cycle of a few units, growing to the end of the reasoning or the answer. Real R1
also repeats itself, at length and legitimately: it re-reads the question, restates a step a
dozen times in 50k characters, quotes data and options from the prompt. So every count here is
judged against the trace (its length, the share the copies cover, what comes between them), and
text the prompt holds is not counted. Each signal catches one way of looping:

* ``repeating_tail``: the end of the text is one unit repeated exactly: a phrase, a sentence, a
  1k-character paragraph, or two paragraphs in alternation. It runs on the text in lower case
  with digits removed, so a unit whose counters or numbers change from copy to copy ("Attempt 9:
  ... 12", "Attempt 10: ... 13") repeats exactly.
* ``cycling_tail``: the end is a few lines re-emitted over and over in varying order, with short
  fillers between ("Alternatively, the answer is X." / "Hmm." / "Thus, the final answer is X.").
* ``copy_run``: one line restated again and again after a short new remark each time.
* ``covering_unit`` / ``repeated_units``: the same paragraph or long sentence anywhere in the text,
  judged by the share of the text its copies cover (open-instruct's "same paragraph N times").
* ``dup_ngram_share`` / ``top_ngram_share``: Gopher-style shares: characters inside word 10-grams
  that occur more than once, and the share of the most frequent word 3-gram. Reasoning
  legitimately repeats "Wait, but" and "Let me", so the thresholds are set for reasoning text, not
  web text.
* ``compression_ratio``: zlib-compressed size over raw size, a cheap global signal.

The signals run on UTF-8 bytes: :func:`folded` (lower case, no digits) for the tail, the units
and the shares, :func:`cased` (lower case, digits kept) for the cycle and the run, whose copies
must match in their numbers too (a list of cases is not a loop). Bytes split, count and compare
faster than ``str``, and a loop is as visible in bytes as in characters. Every function takes a
text and returns numbers; :class:`RepetitionFilter` turns them into one verdict with a reason
per signal and stores every score for the stats. The loop signals are checked on the reasoning
and on the answer (the cycle and the run on the last 8,000 characters of each, where a loop grows);
the others on both together, and the share-based ones on the last few thousand characters, where
degenerate traces end up (which also bounds their cost).

The functions here are the definitions. :class:`RepetitionFilter` computes them in Python for its
first :data:`~tzc_data.filters.base.COMPILE_FROM` rows, then with :mod:`tzc_data.filters.compiled`
(numba, one call a row, about 4x faster; see there why it gives the same numbers, and
tests/tzc_data/filters/test_filter_compiled.py and test_filter_decisions.py for the checks): the
verdicts, reasons, details and scores are the same either way.
"""
from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import cached_property
from itertools import accumulate
from typing import NamedTuple

import numpy as np

from tzc_data.filters.base import FOLD, Switch, Verdict, clip
from tzc_data.record import Example

_DIGITS = b"0123456789"


def folded(text: str) -> bytes:
    """UTF-8 of ``text`` in (ASCII) lower case without digits: one ``bytes.translate`` pass.

    Copies that differ only in case or numbers ("Attempt 9: ... 12", "Attempt 10: ... 13") become
    equal. Every signal below works on these bytes: splitting, counting and comparing bytes runs
    at memchr speed, faster than the same on a ``str`` (measured: the repetition filter went from
    about 200 to about 150 µs per synthetic trace)."""
    return text.encode("utf-8", "surrogatepass").translate(FOLD, _DIGITS)


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


def repeated_units(text: str | bytes, *, min_paragraph: int = 100, min_sentence: int = 50,
                   prompt: str | bytes = "") -> Units:
    """How often the most repeated long paragraph and long sentence occur, anywhere in the text.

    Pass :func:`folded` bytes to compare copies in lower case without digits (a ``str`` is
    compared as it is). Paragraphs are cut at blank lines, sentences at ". ". Among equally
    frequent units the first one wins, so the result does not depend on hashing. A repeated unit
    that ``prompt`` holds (:func:`quoted`: data, options or code given in the question) is not
    counted: restating the question is not a loop.
    """
    blank, stop = (b"\n\n", b". ") if isinstance(text, bytes) else ("\n\n", ". ")
    is_quoted = quoter(prompt)
    paragraph, sentence = (_unit_stats(text, blank, min_paragraph, 2, is_quoted),
                           _unit_stats(text, stop, min_sentence, 2, is_quoted))
    return Units(paragraph[1], sentence[1], paragraph[0] if paragraph[1] >= 2 else sentence[0])


class Covering(NamedTuple):
    copies: int        # occurrences of the unit
    share: float       # characters of all its copies over the text's characters
    unit: str | bytes


def covering_unit(text: str | bytes, separator: str | bytes, *, least: int, min_copies: int,
                  prompt: str | bytes = "") -> Covering:
    """The part (cut at ``separator``, at least ``least`` long, not :func:`quoted` from ``prompt``)
    with at least ``min_copies`` copies whose copies cover the largest share of the text (the
    first one wins a tie); ``Covering(0, 0.0, empty)`` if there is none.

    A count alone means different things in 2,000 and 60,000 characters: real R1 restates a
    60-character step a dozen times in a 50k-character trace (2% of it), while a pasted paragraph
    covers a tenth of a short one. The share is what the repeated-paragraph signal judges."""
    return _unit_stats(text, separator, least, max(2, min_copies), quoter(prompt))[2]


def _unit_stats(text: str | bytes, separator: str | bytes, least: int, min_copies: int,
                is_quoted: Callable[[str | bytes], bool]) -> tuple:
    """(most repeated unit, its occurrences, :class:`Covering`) of the parts of ``text`` cut at
    ``separator`` that are ``least`` or longer: :func:`repeated_units` and :func:`covering_unit`
    from one count. The most repeated unit has 1 occurrence when nothing repeats, and is empty
    with 0 when no part is long enough; units that ``is_quoted`` are passed over (asked only of
    the few that would win)."""
    parts = text.split(separator)
    empty = text[:0]
    none = Covering(0, 0.0, empty)
    counts = Counter(parts)  # counted at C speed
    if len(counts) < len(parts):  # something repeats (the usual case is that nothing does)
        repeated = {part: count for part, count in counts.items() if count >= 2 and len(part) >= least}
        # sorted() is stable: among equals, the first seen comes first
        unit = next((part for part in sorted(repeated, key=repeated.__getitem__, reverse=True)
                     if not is_quoted(part)), None)
        if unit is not None:
            wide = sorted((part for part, count in repeated.items() if count >= min_copies),
                          key=lambda part: repeated[part] * len(part), reverse=True)
            cover = next((part for part in wide if not is_quoted(part)), None)
            return unit, repeated[unit], none if cover is None else Covering(
                repeated[cover], repeated[cover] * len(cover) / len(text), cover)
    first = next((part for part in parts if len(part) >= least), None)
    return (empty, 0, none) if first is None else (first, 1, none)


_LONG_WORD = 12


def quoter(prompt: str | bytes) -> Callable[[str | bytes], bool]:
    """:func:`quoted` for one prompt: its word 3-grams and long words are gathered once, on the
    first unit that needs them."""
    known: dict[str, set] = {}

    def is_quoted(unit: str | bytes) -> bool:
        if not prompt or not unit:
            return False
        if unit in prompt:
            return True
        punctuation = b".,;:!?\"'()[]" if isinstance(unit, bytes) else ".,;:!?\"'()[]"
        if not known:
            words = [word.strip(punctuation) for word in prompt.split()]
            known["grams"] = set(zip(words, words[1:], words[2:]))
            known["long"] = {word for word in words if len(word) >= _LONG_WORD}
        grams, long_words = known["grams"], known["long"]
        words = [word.strip(punctuation) for word in unit.split()]
        covered = [len(word) >= _LONG_WORD and word in long_words for word in words]
        for k in range(len(words) - 2):
            if (words[k], words[k + 1], words[k + 2]) in grams:
                covered[k] = covered[k + 1] = covered[k + 2] = True
        chars = sum(map(len, words))
        return chars > 0 and sum(len(word) for word, hit in zip(words, covered) if hit) * 2 >= chars

    return is_quoted


def quoted(unit: str | bytes, prompt: str | bytes) -> bool:
    """Whether ``unit`` is mostly text the prompt already holds: the prompt contains it, or at least
    half of its characters lie in word 3-grams or long words (a DNA sequence, a formula, a code
    line: 12+ characters) that the prompt contains too, words compared without the punctuation
    around them. Compare both in the same form
    (:func:`folded` or :func:`cased` bytes for the filter)."""
    return quoter(prompt)(unit)


_ENDS = ((b". ", b".\n"), (b"? ", b"?\n"), (b"! ", b"!\n"))


def _split(text: bytes) -> tuple[list[bytes], list[bytes]]:
    """``text`` cut into lines and sentences (at a newline and after ". ", "? ", "! "): the pieces
    as they are (their lengths give offsets in ``text``) and stripped."""
    for end, cut in _ENDS:  # the same length: offsets stay those of ``text``
        text = text.replace(end, cut)
    raw = text.split(b"\n")
    return raw, [line.strip() for line in raw]


def lines(text: bytes) -> list[bytes]:
    """``text`` cut into lines and sentences (at a newline and after ". ", "? ", "! "), stripped."""
    return _split(text)[1]


def cased(text: str) -> bytes:
    """UTF-8 of ``text`` in (ASCII) lower case, digits kept: the loop signals compare lines with
    their numbers (a list "1 on the first die, 6 on the second" is not a loop; the same fraction
    chain four times is)."""
    return text.encode("utf-8", "surrogatepass").translate(FOLD)


class Cycle(NamedTuple):
    repeats: float  # long lines in the cycling end over distinct ones: copies per line
    lines: int      # long lines (``least`` characters or more) in the cycling end
    span: int       # characters of those lines
    share: float    # characters of the lines that occur twice or more in it over ``span``
    unit: bytes     # its most frequent line


_SIZES = tuple(int(6 * 1.5 ** k) for k in range(16))  # ends of 6, 9, 13, 20, ... lines


def cycling_tail(text: bytes, *, repeats: float = 3.0, share: float = 0.5, least: int = 12,
                 prompt_lines: frozenset = frozenset(), window: int = 256) -> Cycle | None:
    """The longest end of ``text`` that is a few lines re-emitted over and over, or None.

    A degenerate trace does not always repeat exactly: it cycles through a handful of lines in
    varying order with a few new words between ("Alternatively, the answer is X." / "Hmm." /
    "Thus, the final answer is X."), or re-emits a block of steps under new headings. Of its long
    lines (:func:`lines` of ``least`` characters or more, not in ``prompt_lines``), the last
    6, 9, 13, 20, ... (each 1.5 times the last, up to ``window``) are its ends; one qualifies when
    its lines come ``repeats`` times or more each on average and those that occur twice or more
    in it cover ``share`` of its characters. Real R1 re-checks itself at length, but with new
    text between the checks, so its ends stay near one copy a line. Pass :func:`cased` bytes;
    cost: a set of each end's lines at C speed, and a count of the lines of those that qualify.
    """
    stripped = lines(text)
    return _cycle(stripped, Counter(stripped), repeats, share, least, prompt_lines, window)


def _cycle(stripped: list[bytes], counts: Counter, repeats: float, share: float, least: int,
           prompt_lines: frozenset, window: int) -> Cycle | None:
    """:func:`cycling_tail` on the lines and their counts (shared with :func:`_run`)."""
    if not any(len(line) >= least and line not in prompt_lines
               for line in [line for line, count in counts.items() if count >= repeats]):
        return None  # copies per line average ``repeats`` only where some line has that many
    parts = [line for line in stripped[-4 * window:] if len(line) >= least and line not in prompt_lines][-window:]
    best: Cycle | None = None
    for size in _SIZES:
        if size > len(parts):
            break
        end = parts[-size:]
        if size < repeats * len(set(end)):
            continue
        counts = Counter(end)
        chars = sum(map(len, end))
        copied = sum(len(line) * count for line, count in counts.items() if count >= 2)
        if copied >= share * chars:
            top = max(counts.values())
            unit = next(line for line, count in counts.items() if count == top)
            best = Cycle(size / len(counts), size, chars, copied / chars, unit)
    return best


class Run(NamedTuple):
    copies: int  # copies of the line in the run
    unit: bytes  # the line
    start: int   # offset of its first copy in the run
    end: int     # offset just after its last copy


def copy_run(text: bytes, *, least: int = 30, gap: float = 2.0, slack: int = 100, min_copies: int = 2,
             prompt: bytes = b"") -> Run | None:
    """The longest run of one line re-emitted with little new text between its copies, or None.

    A line (:func:`lines`, ``least`` characters or longer, not :func:`quoted` from ``prompt``)
    is in a run while each copy starts at most ``gap`` times its length plus ``slack``
    characters after the previous one ends: a line restated after a short remark, again and again
    ("\\frac{144}{132,600} = ..." / "However, to keep it simple:" / "\\frac{144}{132,600} = ...").
    Only lines with ``min_copies`` copies in all are looked at. Among runs of equal length the
    first one to reach it wins. Pass :func:`cased` bytes (numbers must match); cost: a count of
    the lines at C speed, then one step per copy of the lines that occur ``min_copies`` times.
    """
    raw, stripped = _split(text)
    return _run(raw, stripped, Counter(stripped), least, gap, slack, min_copies, quoter(prompt))


def _run(raw: list[bytes], stripped: list[bytes], counts: Counter, least: int, gap: float, slack: int,
         min_copies: int, is_quoted: Callable[[bytes], bool]) -> Run | None:
    """:func:`copy_run` on the split text and the lines' counts (shared with :func:`_cycle`)."""
    # only a line with min_copies copies can form such a run
    candidates = {line for line, count in counts.items() if count >= min_copies and len(line) >= least}
    if not candidates:
        return None
    starts = list(accumulate((len(line) + 1 for line in raw), initial=0))
    state: dict[bytes, list[int]] = {}  # line -> [copies in its current run, run start, end of last copy]
    best: Run | None = None
    for k in [k for k, line in enumerate(stripped) if line in candidates]:
        line, at = stripped[k], starts[k]
        run = state.get(line)
        if run is None:
            state[line] = [1, at, at + len(raw[k])]
            continue
        if at - run[2] <= gap * len(line) + slack:
            run[0] += 1
        else:
            run[0], run[1] = 1, at
        run[2] = at + len(raw[k])
        if run[0] >= 2 and (best is None or run[0] > best.copies) and not is_quoted(line):
            best = Run(run[0], line, run[1], run[2])
    return best


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


_NOT_NUMBERS = frozenset({"name", "score_names", "compiled", "_switch"})
_INTEGERS = ("tail_chars", "run_copies", "paragraph_repeats", "sentence_repeats", "loop_window", "min_chars",
             "window_chars", "max_words")


@dataclass(frozen=True)
class RepetitionFilter:
    """All repetition signals on the reasoning and the answer; one drop reason per kind.

    Reasons: ``loop`` (the reasoning or the answer ends in degenerate repetition: a periodic tail,
    a cycle of a few lines, or one line re-emitted with little new text between its copies),
    ``repeated_paragraphs`` (copies of one paragraph or long sentence cover a large share of the
    text, anywhere), ``ngram_repetition`` (Gopher-style shares), ``compressible`` (zlib). Text
    the prompt holds (data, options, code given in the question) is not counted as repetition.
    Each threshold is a ``tzc-data build`` option; a threshold of 0 switches that signal off.
    """

    tail_repeats: float = 3.0  # the periodic tail's repeats
    tail_chars: int = 200      # the least characters the tail, or a cycle, must cover
    cycle_repeats: float = 3.0  # the cycle: copies per line (0 = off)
    cycle_share: float = 0.5    # the cycle: share of its characters in lines that occur twice or more
    run_copies: int = 4        # copies of one line in a run with little new text between (0 = off)
    paragraph_repeats: int = 3
    sentence_repeats: int = 8
    repeated_share: float = 0.08  # the share of the text those copies must cover (0: the count alone)
    ngram_dup_share: float = 0.9
    ngram_top_share: float = 0.4
    min_compression: float = 0.12
    loop_window: int = 8000  # the cycle and the run look at the end of each part, where a loop grows
    min_chars: int = 1000  # share-based signals need enough text to mean anything
    window_chars: int = 2500  # n-grams and compression look at the end, where a degenerate trace ends up
    max_words: int = 200
    dup_ngram_gate: float = 0.35
    name: str = "repetition"
    score_names: tuple[str, ...] = ("loop_repeats", "loop_span", "cycle_repeats", "cycle_span", "run_copies",
                                    "paragraph_repeats", "sentence_repeats", "repeated_share",
                                    "ngram_dup_share", "ngram_top_share", "compression_ratio")
    # How the signals are computed, never what they decide: True, the compiled judge
    # (:mod:`tzc_data.filters.compiled`); False, the Python functions above; None, compiled where
    # its module is built, else Python until this filter has judged COMPILE_FROM rows, then compiled
    # (see :class:`~tzc_data.filters.base.Switch`).
    compiled: bool | None = field(default=None, compare=False, repr=False)
    _switch: Switch = field(default_factory=Switch, init=False, compare=False, repr=False)

    def __call__(self, example: Example) -> Verdict:
        return self.judge_batch([example])[0]

    def judge_batch(self, examples: list[Example]) -> list[Verdict]:
        """``[self(e) for e in examples]``: by the Python functions above, or by the compiled judge
        (:func:`tzc_data.filters.compiled.verdict.judge_batch`, the same verdicts)."""
        if self._switch(self.compiled, len(examples)) and self._compilable:
            from tzc_data.filters.compiled.verdict import judge_batch  # loads compiled code: only here
            return judge_batch(self, examples)
        return [self._judge(example) for example in examples]

    @cached_property
    def _compilable(self) -> bool:
        """Whether the compiled judge computes what the Python functions do with these fields:
        each a number of at most 2**31 in size (so not NaN), the lengths and counts integers, and
        ``max_words`` not negative. Other values (a threshold of 10**400 or NaN, a fractional
        window) are judged in Python, whose answer (a verdict, or an error) is the definition."""
        numbers = [getattr(self, f.name) for f in fields(self) if f.name not in _NOT_NUMBERS]
        return all(type(v) in (int, float) and abs(v) <= 2**31 for v in numbers) \
            and all(type(getattr(self, name)) is int for name in _INTEGERS) and self.max_words >= 0

    def _judge(self, example: Example) -> Verdict:
        """The verdict from the Python functions above: the definition the compiled judge keeps."""
        # The loop signals belong to each part; the others look at both parts at once (one pass).
        low = {part: folded(getattr(example, part)) for part in ("reasoning", "answer")}
        is_quoted = quoter(folded(example.prompt))
        scores: dict[str, float] = {}
        reason, detail = self._loops(example, low, is_quoted, scores)
        both = low["reasoning"] + b"\n\n" + low["answer"]
        _, p_count, paragraph = _unit_stats(both, b"\n\n", 100, self.paragraph_repeats or 2, is_quoted)
        _, s_count, sentence = _unit_stats(both, b". ", 50, self.sentence_repeats or 2, is_quoted)
        cover = max((c for c, on in ((paragraph, self.paragraph_repeats), (sentence, self.sentence_repeats)) if on),
                    key=lambda c: c.share, default=Covering(0, 0.0, b""))
        scores |= {"paragraph_repeats": p_count, "sentence_repeats": s_count, "repeated_share": round(cover.share, 4)}
        if reason is None and cover.copies and cover.share >= self.repeated_share:
            reason, detail = "repeated_paragraphs", f"repeats {clip(cover.unit)!r} x{cover.copies} " \
                                                    f"({cover.share:.0%} of the text)"
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

    def _loops(self, example: Example, low: dict[str, bytes], is_quoted: Callable[[bytes], bool],
               scores: dict[str, float]) -> tuple[str | None, str | None]:
        """The three loop signals on each part, in order: periodic tail, cycle, run."""
        reason = detail = None
        longest: Repeat | None = None
        cycle: Cycle | None = None
        run: Run | None = None
        prompt = cased(example.prompt)
        prompt_lines, run_quoted = frozenset(lines(prompt)), quoter(prompt)
        for part in ("reasoning", "answer"):
            text = low[part]
            tail = repeating_tail(text)
            if tail and (longest is None or tail.copied > longest.copied):
                longest = tail
            if tail and reason is None and self.tail_repeats and tail.repeats >= self.tail_repeats \
                    and tail.span >= self.tail_chars and not is_quoted(text.rstrip()[-tail.span:]):
                reason, detail = "loop", \
                    f"{part} ends with {clip(tail.unit)!r} x{tail.repeats:.1f} ({tail.span:,} chars)"
            body = cased(getattr(example, part))
            raw, stripped = _split(body[-self.loop_window:])  # a loop that grows to the end fills the end
            counts = Counter(stripped)  # at C speed
            found = _cycle(stripped, counts, self.cycle_repeats or 3.0, self.cycle_share, 12, prompt_lines, 256)
            if found and (cycle is None or found.lines > cycle.lines):
                cycle = found
            if found and reason is None and self.cycle_repeats and found.span >= self.tail_chars:
                reason, detail = "loop", f"{part} ends cycling through {found.lines} lines, {found.repeats:.1f} " \
                                         f"copies each ({found.span:,} chars), most often {clip(found.unit)!r}"
            line_run = _run(raw, stripped, counts, 30, 2.0, 100, self.run_copies or 2, run_quoted)
            if line_run and (run is None or line_run.copies > run.copies):
                run = line_run
            if line_run and reason is None and self.run_copies and line_run.copies >= self.run_copies \
                    and 3 * (max(0, len(body) - self.loop_window) + line_run.end) >= 2 * len(body):  # in the last third
                reason, detail = "loop", f"{part} re-emits {clip(line_run.unit)!r} x{line_run.copies} " \
                                         "with little new text between the copies"
        scores["loop_repeats"] = round(longest.repeats, 2) if longest else 0.0
        scores["loop_span"] = float(longest.span) if longest else 0.0
        scores["cycle_repeats"] = round(cycle.repeats, 2) if cycle else 0.0
        scores["cycle_span"] = float(cycle.span) if cycle else 0.0
        scores["run_copies"] = float(run.copies) if run else 0.0
        return reason, detail
