""":class:`~tzc_data.filters.repetition.RepetitionFilter`'s verdicts from the compiled judge.

:func:`~tzc_data.filters.compiled.judge.judge` gives a row's counts and shares exactly as the
Python functions compute them; here they become the same :class:`~tzc_data.filters.base.Verdict`
as ``RepetitionFilter._judge`` gives, by the same expressions: zlib's ratio of the n-grams' end,
the 10-gram share where zlib sees repetition, the rounded scores, and the detail's words. Each step
runs over a whole batch before the next (the judge, zlib, the verdicts), so that its code and
tables stay in the CPU's caches.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from tzc_data.filters.base import FOLD, Verdict, clip
from tzc_data.filters.compiled import kernels
from tzc_data.record import Example

# The filter's fields the judge reads, in the order of its ``params``; and the reasons by the
# numbers it gives them (5 and 6 are decided here, after zlib).
PARAMS = ("tail_repeats", "tail_chars", "cycle_repeats", "cycle_share", "run_copies", "paragraph_repeats",
          "sentence_repeats", "repeated_share", "ngram_dup_share", "ngram_top_share", "min_compression",
          "loop_window", "window_chars", "max_words", "dup_ngram_gate", "min_chars")
REASONS = (None, "loop", "loop", "loop", "repeated_paragraphs", "ngram_repetition", "compressible")


def judge_batch(check: Any, examples: list[Example], use_native: bool | None = None) -> list[Verdict]:
    """``[check._judge(e) for e in examples]`` for a ``RepetitionFilter`` ``check``, compiled
    (``use_native``: as :func:`~tzc_data.filters.compiled.kernels`)."""
    compiled = kernels(use_native)
    params = np.array([float(getattr(check, name)) for name in PARAMS], dtype=np.float64)
    judge = compiled.judge
    counts = [judge(e.reasoning.encode("utf-8", "surrogatepass"), e.answer.encode("utf-8", "surrogatepass"),
                    e.prompt.encode("utf-8", "surrogatepass"), params) for e in examples]
    ratios = [_ratio(c[0], c[1], c[2]) for c in counts]
    return [_verdict(check, example, c, ratio, compiled.dup_share)
            for example, c, ratio in zip(examples, counts, ratios)]


def _ratio(both: np.ndarray, length: int, words_from: int) -> float | None:
    """``compression_ratio`` of the n-grams' end, None for a text under ``min_chars``."""
    if words_from < 0:
        return None
    end = both[words_from:length].tobytes()
    return len(zlib.compress(end, 1)) / len(end) if end else 1.0


def _verdict(check: Any, example: Example, counts: tuple, ratio: float | None, dup_share: Any) -> Verdict:
    """The verdict from the judge's counts and zlib's ratio: ``RepetitionFilter._judge``'s steps
    after the signals, by the same expressions."""
    (both, length, words_from, reason, part, loop_repeats, loop_span, cycle_repeats, cycle_span, run_copies,
     paragraphs, sentences, share, top, d0, d1, d2, d3, d4) = counts
    scores: dict[str, float | None] = {
        "loop_repeats": round(loop_repeats, 2), "loop_span": loop_span,
        "cycle_repeats": round(cycle_repeats, 2), "cycle_span": cycle_span, "run_copies": run_copies,
        "paragraph_repeats": paragraphs, "sentence_repeats": sentences, "repeated_share": round(share, 4)}
    dup = None
    if ratio is not None:  # len(both) >= min_chars: the n-gram shares and the ratio
        # computed only where zlib sees repetition
        dup = dup_share(both, words_from, length, check.max_words) if ratio < check.dup_ngram_gate else None
        scores.update({"ngram_dup_share": None if dup is None else round(dup, 4), "ngram_top_share": round(top, 4),
                       "compression_ratio": round(ratio, 4)})
        if not reason:
            if (check.ngram_dup_share and dup is not None and dup >= check.ngram_dup_share) \
                    or (check.ngram_top_share and top >= check.ngram_top_share):
                reason = 5
            elif check.min_compression and ratio < check.min_compression:
                reason, d0 = 6, length - words_from
    if not reason:
        return Verdict(None, "", scores)
    return Verdict(REASONS[reason], _detail(check, example, reason, part, both, (d0, d1, d2, d3, d4), dup, top,
                                            ratio), scores)


def _detail(check: Any, example: Example, reason: int, part: int, both: np.ndarray, shown: tuple, dup: float | None,
            top: float, ratio: float | None) -> str:
    """The verdict's detail, in ``RepetitionFilter._judge``'s words, from what the judge showed."""
    d0, d1, d2, d3, d4 = shown
    name = ("reasoning", "answer")[part]
    if reason == 1:
        return f"{name} ends with {clip(both[d2:d3].tobytes())!r} x{d4:.1f} ({d1:,} chars)"
    if reason in (2, 3):  # offsets in the end of the part that the cycle and the run look at, cased
        body = getattr(example, name).encode("utf-8", "surrogatepass")
        unit = body[-check.loop_window:].translate(FOLD)[d2:d3]
        if reason == 2:
            return f"{name} ends cycling through {d0} lines, {d4:.1f} copies each ({d1:,} chars), " \
                   f"most often {clip(unit)!r}"
        return f"{name} re-emits {clip(unit)!r} x{d0} with little new text between the copies"
    if reason == 4:
        return f"repeats {clip(both[d2:d3].tobytes())!r} x{d0} ({d4:.0%} of the text)"
    if reason == 5:
        return f"{dup or 0:.0%} of characters in repeated 10-grams, top 3-gram {top:.1%}"
    return f"the last {d0:,} characters compress to {ratio:.0%} of their size"
