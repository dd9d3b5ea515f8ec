"""A cheap English detector: the share of words that are common English function words.

English prose of any topic is full of "the", "of", "is", "to"…; Spanish, German or French prose
shares only a few of them, and text in a non-Latin script shares none. Measured on the prompt plus
the start of the reasoning (what the competition's English-only rule is about), it costs one
``split`` and a set lookup per word. Maths-heavy English scores lower than prose but far above
other languages; docs/building.md reports the false-drop rate on the real prompts and traces in
``../shared/data``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from tzc_data.filters.base import Switch, Verdict
from tzc_data.record import Example

STOPWORDS = frozenset(b"""
a an the and or but if then so of to in on at by for with from as is are was were be been being it its
this that these those there here i you he she we they me him her us them my your his our their what which
who whom how why when where not no do does did doing have has had can could will would should may might must
shall let let's i'm it's that's don't doesn't isn't
""".split())
# One bytes.translate pass: ASCII letters to lower case, every other ASCII byte but digits and "'"
# to a space; bytes >= 128 (non-ASCII letters in UTF-8) stay, so foreign words stay words.
_WORDS = bytes(c + 32 if 65 <= c <= 90 else c if (97 <= c <= 122 or 48 <= c <= 57 or c in (39, 95) or c >= 128)
               else 32 for c in range(256))
_LETTER = re.compile(r"[^\W\d_]")
_LATIN = re.compile(r"[A-Za-z]")


def english_score(text: str, *, compiled: bool = False) -> float:
    """Share of words that are English function words (0 for text that is mostly non-Latin letters).
    ``compiled``: the words and the function words counted by
    :func:`tzc_data.filters.compiled.english.english_counts` (the same counts; see
    :func:`tzc_data.filters.compiled.kernels`)."""
    if not text.isascii():
        letters = len(_LETTER.findall(text))
        if letters and len(_LATIN.findall(text)) / letters < 0.5:
            return 0.0
    if compiled:
        count, words_of, table = _compiled()
        hits, words = count(text.encode("utf-8", "surrogatepass"), words_of, table)
        return hits / words if words else 0.0
    words = text.encode("utf-8", "surrogatepass").translate(_WORDS).split()
    if not words:
        return 0.0
    return sum(map(STOPWORDS.__contains__, words)) / len(words)


@lru_cache(maxsize=None)
def _compiled() -> tuple[Any, np.ndarray, np.ndarray]:
    """The compiled counter, the word table it reads and its table of :data:`STOPWORDS` (loaded once)."""
    from tzc_data.filters.compiled import kernels, stopword_table  # compiles, or loads compiled code: only here

    return kernels().english_counts, np.frombuffer(_WORDS, dtype=np.uint8).copy(), stopword_table(STOPWORDS)


@dataclass(frozen=True)
class EnglishFilter:
    """Drop rows whose prompt and opening reasoning are not English (reason ``non_english``)."""

    min_score: float = 0.12
    sample_chars: int = 400
    name: str = "language"
    score_names: tuple[str, ...] = ("english_score",)
    # How the words are counted, never the score: as RepetitionFilter.compiled
    compiled: bool | None = field(default=None, compare=False, repr=False)
    _switch: Switch = field(default_factory=Switch, init=False, compare=False, repr=False)

    def __call__(self, example: Example) -> Verdict:
        score = english_score(f"{example.prompt}\n{example.reasoning[: self.sample_chars]}",
                              compiled=self._switch(self.compiled, 1))
        scores = {"english_score": round(score, 4)}
        if score < self.min_score:
            return Verdict("non_english", f"{score:.0%} English function words (< {self.min_score:.0%})", scores)
        return Verdict(scores=scores)
