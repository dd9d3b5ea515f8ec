"""The contract every source kind keeps, and the validation every file format shares.

A source is a row space: row ``i`` is one example, ``i`` its global index. A build asks it for a
range ``[start, stop)`` in two steps, so that the reading can be shared out:

- :meth:`Source.plan` turns the range into :class:`Unit` s, the data's natural pieces (a Parquet row
  group, a block of JSONL lines, a run of synthetic rows) clipped to the range. The plan depends on
  the data and the range only, never on how many workers will read it, so every engine reads the same
  pieces and a piece is read once.
- :meth:`Source.read_unit` yields exactly the unit's rows, in order, in any process: a source and its
  units pickle, and a unit read by a freshly unpickled source gives the same examples.

A row that cannot be read (missing or null field, wrong type, invalid UTF-8, an undecodable line)
comes out as an example dropped with reason ``malformed`` and a detail that names the file and the
line or row group; it never stops the build. A source that cannot be read as a whole raises a
one-line :class:`~tzc_data.errors.SourceError`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any, ClassVar

from tzc_data.errors import SourceError
from tzc_data.record import Example

COLUMNS = ("prompt", "response")


@dataclass(frozen=True, kw_only=True)
class Unit:
    """One piece of a plan: the rows ``[start, stop)`` of one natural piece of the data.

    ``where`` names the piece for messages and progress ("train-00000.parquet row group 3"); ``locator``
    is what the source needs to find it again, in any process (hashable and picklable)."""

    index: int
    start: int
    stop: int
    where: str
    locator: tuple

    def __post_init__(self) -> None:
        if not (0 <= self.start < self.stop):
            raise ValueError(f"a unit holds at least one row: {self.start}..{self.stop} in {self.where}")

    @property
    def rows(self) -> int:
        return self.stop - self.start


class Source(abc.ABC):
    """A readable row space. Subclasses plan units, read one, and say what they are."""

    kind: ClassVar[str]

    @abc.abstractmethod
    def plan(self, start: int, stop: int) -> list[Unit]:
        """The units that cover ``[start, stop)`` exactly once, in row order, numbered from 0.

        Raises :class:`SourceError` for a range past the end before any row is read."""

    @abc.abstractmethod
    def read_unit(self, unit: Unit) -> Iterator[Example]:
        """Exactly ``unit.stop - unit.start`` examples: rows ``unit.start..`` in order."""

    def rows(self, start: int, stop: int) -> Iterator[Example]:
        """Rows ``[start, stop)`` in order: the units of :meth:`plan`, read one after the other."""
        return chain.from_iterable(self.read_unit(unit) for unit in self.plan(start, stop))

    @abc.abstractmethod
    def check_range(self, start: int, stop: int) -> None:
        """Raise :class:`SourceError` when ``[start, stop)`` goes past the source's last row, before
        any row is read (the build calls it first; a range past the end would otherwise fail only
        after streaming every row there is)."""

    def folders(self) -> tuple[str, ...]:
        """The local folders (real paths) every file under which this source reads: no build may
        be written there. None by default."""
        return ()

    def resume_stamp(self) -> Any:
        """What a resumed build checks besides :meth:`describe`: facts of the input that a copy
        need not share, so they stay out of the manifest (a local file's size and mtime). None
        by default."""
        return None

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """What the manifest records to make the build reproducible (no timestamps)."""

    @classmethod
    @abc.abstractmethod
    def identity(cls, description: dict[str, Any]) -> tuple:
        """What makes two sources of this kind the same row space (so that their ranges can overlap)."""

    @classmethod
    @abc.abstractmethod
    def reopen(cls, description: dict[str, Any], *, format: str = "glaive") -> Source:
        """The source a manifest's ``description`` was made from, opened again, its rows read as
        ``format`` (:mod:`.formats`; the build records it in its config)."""

    @classmethod
    def changes(cls, recorded: dict[str, Any], current: dict[str, Any]) -> str | None:
        """Why ``current`` (a description of this kind) is not the source that was ``recorded``, or None.

        By default every recorded key must match."""
        return differing_key(recorded, current)


def differing_key(recorded: dict[str, Any], current: dict[str, Any], ignore: frozenset[str] = frozenset()) -> str | None:
    """The first key (in sorted order, but ``ignore``) whose value differs, said as a reason; or None."""
    for key in sorted((set(recorded) | set(current)) - ignore):
        if recorded.get(key) != current.get(key):
            return f"its {key} is {current.get(key)!r} now, the build recorded {recorded.get(key)!r}"
    return None


def whole_units(start: int, stop: int, size: int, where: Any, locator: Any) -> list[Unit]:
    """Units of ``size`` rows aligned to multiples of ``size``, clipped to ``[start, stop)``;
    ``where(lo, hi)`` and ``locator(lo, hi)`` describe the unit of rows ``lo..hi - 1``."""
    units = []
    lo = start
    while lo < stop:
        hi = min(stop, (lo // size + 1) * size)
        units.append(Unit(index=len(units), start=lo, stop=hi, where=where(lo, hi), locator=locator(lo, hi)))
        lo = hi
    return units


def check_start(start: int, stop: int) -> None:
    """Refuse what is not a range of rows (an empty range is one: its plan is empty)."""
    if start < 0 or stop < start:
        raise SourceError(f"range {start:,}:{stop:,} is not a range of rows (0 <= start <= stop)")


# ---------------------------------------------------------------------------------------------
# Validation shared by every file format


def validate(row: int, obj: Any) -> Example:
    """Turn one decoded record into an Example, or a ``malformed`` one that says what is wrong."""
    if not isinstance(obj, dict):
        return malformed(row, f"record is a {type(obj).__name__}, not an object")
    values = []
    for name in COLUMNS:
        value, problem = field_text(obj, name)
        if problem:
            return malformed(row, problem)
        values.append(value)
    return Example(row=row, prompt=values[0], response=values[1])


def field_text(obj: dict[str, Any], name: str) -> tuple[str, str | None]:
    """(the text of field ``name``, None), or ("", what is wrong with it): missing, null, not UTF-8,
    not a string, or holding a lone surrogate."""
    if name not in obj:
        return "", f"missing field {name!r}"
    value = obj[name]
    if value is None:
        return "", f"field {name!r} is null"
    if isinstance(value, bytes | bytearray):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as err:
            return "", f"field {name!r} is not valid UTF-8 (byte {err.start})"
    if not isinstance(value, str):
        return "", f"field {name!r} is {type(value).__name__}, not a string"
    try:
        if not value.isascii():  # O(1) for a str; ASCII holds no surrogate, so skip the copy
            value.encode("utf-8")
    except UnicodeEncodeError as err:
        return "", f"field {name!r} holds a lone surrogate at character {err.start}"
    return value, None


def malformed(row: int, detail: str) -> Example:
    example = Example(row=row)
    example.drop("malformed", detail)
    return example


def count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def missing(first: int, stop: int) -> str:
    return f"row {first:,} does not exist" if stop - first == 1 else f"rows {first:,}..{stop - 1:,} do not exist"


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
