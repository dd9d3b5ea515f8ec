"""The filter interface: a filter looks at one example and returns a :class:`Verdict`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tzc_data.record import Example


@dataclass(frozen=True)
class Verdict:
    reason: str | None = None  # None keeps the example
    detail: str = ""
    scores: dict[str, float] = field(default_factory=dict)


class Filter(Protocol):
    name: str
    score_names: tuple[str, ...]

    def __call__(self, example: Example) -> Verdict: ...


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
