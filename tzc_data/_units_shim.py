"""TEMPORARY until tzc_data/sources/ lands: units over a source's rows(start, stop)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Unit:
    index: int
    start: int
    stop: int
    where: str
    locator: tuple = ()


def plan(source, start, stop, size=256):
    if hasattr(source, "plan"):
        return source.plan(start, stop)
    source.check_range(start, stop)
    out = []
    lo = start
    while lo < stop:
        hi = min((lo // size + 1) * size, stop)
        out.append(Unit(index=len(out), start=lo, stop=hi, where=f"rows {lo:,}..{hi - 1:,}"))
        lo = hi
    return out


def read_unit(source, unit):
    if hasattr(source, "read_unit"):
        return source.read_unit(unit)
    return source.rows(unit.start, unit.stop)
