"""The engines' base: what every engine is, and the one helper they share.

The seam is one method, :meth:`Executor.run`: call ``stage(unit)`` for every unit (the stage
writes the unit's files and returns its done-marker, :mod:`tzc_data.build.units`) and yield the
markers as units finish. Nothing flows back but the marker: tokens and stats stay in the unit's
files, so an engine ships only the stage (once per worker) and the units. The output is the same
for every engine and worker count because the units' files are a pure function of the unit, and
everything after them runs in one process, in unit order.

This module imports no engine; each engine (:mod:`.local`, :mod:`.processes`, :mod:`.ray`)
imports it, and :func:`tzc_data.engines.executor` picks one.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from tzc_data.errors import TzcError

if TYPE_CHECKING:  # a unit's done-marker: the engines run the stage, they do not read its files
    from tzc_data.build.units import UnitDone


class Executor:
    """An engine: :meth:`run` maps the row stage over units; :meth:`map` runs other independent
    tasks (one per output shard), here one after another unless an engine does better."""

    def run(self, stage: Callable[[Any], UnitDone], units: Sequence[Any]) -> Iterator[UnitDone]:
        """``stage(unit)`` for every unit; the markers as the units finish (in any order)."""
        raise NotImplementedError

    def map(self, task: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``[task(item) for item in items]``, in order."""
        return [task(item) for item in items]

    def close(self) -> None:
        """Let go of what the engine holds between :meth:`run` and :meth:`map` (a Ray connection)."""


def run_unit(stage: Callable[[Any], UnitDone], unit: Any) -> tuple[UnitDone | None, BaseException | None]:
    """``stage(unit)`` in a worker: its marker, or the error to raise in the build's process.

    A user-facing error (one line) or the file system's travels as it is, as in one process; a
    bug becomes a RuntimeError that keeps the worker's traceback in its message (a traceback does
    not survive pickling)."""
    try:
        return stage(unit), None
    except (TzcError, OSError) as err:
        return None, err
    except Exception as err:
        text = "".join(traceback.format_exception(err)).rstrip()
        return None, RuntimeError(f"{unit.where}: a worker failed:\n{text}")
