"""What this package's numba code and its loader (the package itself) share, without numba: the
files its compiled code is made of, and a hash multiplier both sides compute with."""

from __future__ import annotations

from pathlib import Path

MULTIPLIER = 0x9E3779B97F4A7C15  # the tables' first hash multiplier (tables._M1; stopword_table's slots)


def sources() -> tuple[Path, ...]:
    """This package's files: what its compiled code is made of, and named by."""
    return tuple(sorted(Path(__file__).parent.glob("*.py")))
