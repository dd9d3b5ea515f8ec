"""The map's progress: tqdm's bar where one is shown, else a tally of the rows done."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(total: int, initial: int, progress: bool | None) -> Any:
    """tqdm's bar on stderr where one is shown (``progress``, or None: where stderr is a terminal, as
    tqdm's own ``disable=None``), else a :class:`Tally` of the rows. tqdm is imported only for a bar:
    its import (``importlib.metadata``, and ``multiprocessing`` for its lock) cost 40 ms of a
    one-row build's 0.4 s."""
    if not (progress if progress is not None else hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return Tally(initial)
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="row", file=sys.stderr, mininterval=0.5, smoothing=0.1,
                desc="build")


class Tally:
    """What the map asks of a progress bar that is not shown: the rows done so far (``n``)."""

    disable = True

    def __init__(self, initial: int) -> None:
        self.n = initial

    def update(self, rows: int) -> None:
        self.n += rows

    def set_postfix(self, **_: Any) -> None:
        pass

    def close(self) -> None:
        pass
