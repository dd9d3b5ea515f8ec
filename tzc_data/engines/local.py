"""``--engine local``: one process, units in order. The reference every other engine's bytes
are compared with."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from tzc_data.engines.base import Executor

if TYPE_CHECKING:
    from tzc_data.build.units import UnitDone


class LocalExecutor(Executor):
    def run(self, stage: Callable[[Any], UnitDone], units: Sequence[Any]) -> Iterator[UnitDone]:
        for unit in units:
            yield stage(unit)
