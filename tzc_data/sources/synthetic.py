"""The synthetic generator (:mod:`tzc_data.sources.generator`) as a source: row ``i`` is ``generate(seed, i)``.

Every row index exists and costs the same to reach, so units are runs of :data:`UNIT_ROWS` rows
aligned to multiples of it (clipped to the range): the same pieces for any range that holds them.
They are small (256 rows) because the synthetic source is for demos and tests: a killed build
loses little, and a test of a few hundred rows already has several units to resume, mix and
spread over workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from tzc_data.errors import SourceError
from tzc_data.record import Example
from tzc_data.sources.base import Source, Unit, check_start, validate, whole_units
from tzc_data.sources.formats import GLAIVE
from tzc_data.sources.generator import generate

UNIT_ROWS = 256
ROWS = 1 << 25  # 33,554,432: more than GlaiveAI's 22.2M rows; a plan of them is 131,072 units
GENERATOR = "tzc_data.sources.generator v1"


@dataclass(frozen=True)
class SyntheticSource(Source):
    kind: ClassVar[str] = "synthetic"

    seed: int = 0

    def plan(self, start: int, stop: int) -> list[Unit]:
        self.check_range(start, stop)
        return whole_units(start, stop, UNIT_ROWS, where=_where, locator=lambda lo, hi: ())

    def read_unit(self, unit: Unit) -> Iterator[Example]:
        for i in range(unit.start, unit.stop):
            row = generate(self.seed, i)
            yield validate(i, {"prompt": row.prompt, "response": row.response})

    def check_range(self, start: int, stop: int) -> None:
        """Row ``i`` is generated from ``(seed, i)``, for every ``i`` below :data:`ROWS` (a bound, so
        that a mistyped range is an error, not a plan that fills the memory)."""
        check_start(start, stop)
        if stop > ROWS:
            raise SourceError(f"range {start:,}:{stop:,} goes past the end of the synthetic source: it holds "
                              f"{ROWS:,} rows (more than GlaiveAI's 22.2M)")

    def describe(self) -> dict[str, Any]:
        return {"kind": "synthetic", "seed": self.seed, "generator": GENERATOR}

    @classmethod
    def identity(cls, description: dict[str, Any]) -> tuple:
        return ("synthetic", description.get("seed"), description.get("generator"))

    @classmethod
    def reopen(cls, description: dict[str, Any], *, format: str = GLAIVE) -> SyntheticSource:
        if format != GLAIVE:
            raise SourceError(f"--format {format} does not apply to the synthetic source: its rows are GlaiveAI's "
                              "layout (--format glaive)")
        return cls(seed=description["seed"])


def _where(lo: int, hi: int) -> str:
    return f"synthetic row {lo:,}" if hi - lo == 1 else f"synthetic rows {lo:,}..{hi - 1:,}"
