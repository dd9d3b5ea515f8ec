"""Engines: run a build's row stage over its units, and its shard writers, somewhere.

- ``local`` (:mod:`.local`): one process, units in order.
- ``processes`` (:mod:`.processes`): ``--workers N`` spawned processes on this machine.
- ``ray`` (:mod:`.ray`): Ray Data on a Ray cluster or a local instance (the extra ``tzc[ray]``).

Every engine is an :class:`~tzc_data.engines.base.Executor` and gives the same bytes. Each is
imported only when chosen, so ``tzc_data`` imports without Ray.
"""

from __future__ import annotations

from tzc_data.engines.base import Executor
from tzc_data.errors import TzcError

ENGINES = ("local", "processes", "ray")  # what --engine accepts; each a module here


def executor(engine: str, workers: int, *, ray_address: str | None = None) -> Executor:
    """The engine ``--engine`` names (``processes`` with ``--workers N``; ``ray`` with
    ``--ray-address`` and, when given, ``--workers N`` actors)."""
    if engine == "local":
        from tzc_data.engines.local import LocalExecutor

        return LocalExecutor()
    if engine == "processes":
        from tzc_data.engines.processes import ProcessExecutor

        return ProcessExecutor(workers)
    if engine == "ray":  # imported here: tzc_data imports without Ray installed
        from tzc_data.engines.ray import RayExecutor

        return RayExecutor(address=ray_address, actors=workers or None)
    raise TzcError(f"--engine {engine!r}: choose one of {', '.join(ENGINES)}")
