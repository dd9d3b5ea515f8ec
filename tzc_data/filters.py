"""Quality filters. Each filter looks at one example and returns a :class:`Verdict`: keep, or drop
with a reason and a detail that shows what triggered it, plus named scores for the stats.

A filter is any object with ``name``, ``score_names`` and ``__call__(example) -> Verdict``;
:func:`apply_filters` runs a list of them (first drop wins, every score is recorded). Adding a
filter means writing one class and listing it in ``pipeline.build_filters``.

Every detector here is linear in the text length and runs in C-level string operations
(``str.rfind``, slice comparison). A backtracking regex such as ``(.{20,}?)\\1{3,}`` ran at 5
records/s on these traces: never use one for loop detection.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from tzc_data.record import Example

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Verdict:
    reason: str | None = None  # None keeps the example
    detail: str = ""
    scores: dict[str, float] = field(default_factory=dict)


class Filter(Protocol):
    name: str
    score_names: tuple[str, ...]

    def __call__(self, example: Example) -> Verdict: ...


class Repeat(NamedTuple):
    period: int    # characters in the repeated unit
    repeats: float  # span / period
    span: int      # characters at the end of the text covered by the repetition
    unit: str

    @property
    def copied(self) -> int:
        """Characters of the span beyond the unit's first copy: how much text is repetition."""
        return self.span - self.period


def repeating_tail(text: str, *, probe: int = 32, candidates: int = 8) -> Repeat | None:
    """The longest periodic tail of ``text`` (whitespace collapsed), or None.

    Step by step:
      1. take the last ``probe`` characters as a probe;
      2. each earlier occurrence of the probe (nearest first, up to ``candidates``) proposes a
         period ``p``: the distance between that occurrence and the end;
      3. for each ``p``, walk back from the end one block of ``p`` characters at a time while the
         block equals the block after it, then character by character: that is the span of the
         tail that has period ``p``;
      4. keep the period whose repetition covers the most text beyond its first copy
         (``span - p``): a multiple of the true period, or a far-away coincidence, covers less.
         A unit cut off mid-way at the very end (the generation limit) still has period ``p``.
    Cost: ``candidates`` scans of the text plus one comparison of the span: linear.
    """
    text = _SPACE.sub(" ", text).rstrip()
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
        while j > 0 and text[j - 1] == text[j - 1 + period]:
            j -= 1
        span = n - j
        found = Repeat(period, span / period, span, text[n - period:])
        if best is None or found.copied > best.copied:
            best = found
        end = at + width - 1
    return best


@dataclass(frozen=True)
class LoopFilter:
    """Drop an example whose reasoning or answer ends in a unit repeated ``min_repeats`` times
    over at least ``min_chars`` characters (reason ``loop``)."""

    min_repeats: float = 4.0
    min_chars: int = 200
    name: str = "loop"
    score_names: tuple[str, ...] = ("loop_repeats", "loop_span")

    def __call__(self, example: Example) -> Verdict:
        worst: tuple[str, Repeat] | None = None
        for part in ("reasoning", "answer"):
            found = repeating_tail(getattr(example, part))
            if found and (worst is None or found.copied > worst[1].copied):
                worst = (part, found)
        if worst is None:
            return Verdict(scores={"loop_repeats": 0.0, "loop_span": 0.0})
        part, found = worst
        scores = {"loop_repeats": round(found.repeats, 2), "loop_span": float(found.span)}
        if found.repeats >= self.min_repeats and found.span >= self.min_chars:
            unit = found.unit if len(found.unit) <= 80 else found.unit[:77] + "..."
            return Verdict("loop", f"{part} ends with {unit!r} x{found.repeats:.1f} ({found.span:,} chars)", scores)
        return Verdict(scores=scores)


@dataclass(frozen=True)
class LengthFilter:
    """Bound the templated example in tokens: longer than ``max_tokens`` is dropped (``too_long``),
    never truncated (defect 7 cut ``</answer>`` and ``<eos>`` off a quarter of the rows); an answer
    under ``min_answer_tokens`` is dropped (``answer_too_short``). Runs after tokenization."""

    max_tokens: int
    min_answer_tokens: int = 1
    name: str = "length"
    score_names: tuple[str, ...] = ()

    def __call__(self, example: Example) -> Verdict:
        count = len(example.tokens or ())
        if count > self.max_tokens:
            return Verdict("too_long", f"{count:,} tokens > --max-tokens {self.max_tokens:,}")
        if example.answer_tokens < self.min_answer_tokens:
            return Verdict("answer_too_short",
                           f"answer has {example.answer_tokens} tokens < --min-answer-tokens {self.min_answer_tokens}")
        return Verdict()


def apply_filters(examples: Iterable[Example], filters: Sequence[Filter]) -> Iterator[Example]:
    """Stage: run every filter on each kept example; the first drop wins, all scores are kept."""
    for example in examples:
        if example.kept:
            for check in filters:
                verdict = check(example)
                example.scores.update(verdict.scores)
                if verdict.reason is not None:
                    example.drop(verdict.reason, verdict.detail)
                    break
        yield example
