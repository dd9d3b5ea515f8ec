"""Stage 1: read a global row range ``[start, stop)`` from the hub, local files, or the synthetic generator.

One module per kind behind one :class:`Source` contract (:mod:`.base`): a source plans a range into
:class:`Unit` s, the data's natural pieces, and reads a unit, in any process. This module is the one
place that turns a ``--source`` spec into a source, and that maps a manifest's recorded
``source.kind`` to its class (:data:`KINDS`): nothing outside ``sources/`` switches on a kind.

- :mod:`.files`: Parquet (:mod:`.parquet`: a unit is a row group) and JSONL (:mod:`.jsonl`: a unit is
  a block of lines, or a whole ``.jsonl.gz``) files on disk, surveyed when opened.
- :mod:`.hub`: a hub dataset's Parquet files at one commit, through the same reader.
- :mod:`.synthetic`: the deterministic generator of :mod:`tzc_data.sources.generator`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tzc_data.errors import SourceError
from tzc_data.record import Example
from tzc_data.sources.base import Source, Unit, validate
from tzc_data.sources.files import FileSetSource, local_source
from tzc_data.sources.formats import GLAIVE, Format, parse_format
from tzc_data.sources.hub import HF_DATASET, HF_SPLIT, HubSource, hub_source
from tzc_data.sources.synthetic import SyntheticSource

KINDS: dict[str, type[Source]] = {cls.kind: cls for cls in (HubSource, FileSetSource, SyntheticSource)}


def open_source(spec: str, *, revision: str | None = None, seed: int = 0, format: str = GLAIVE,
                dataset: str | None = None, split: str | None = None) -> Source:
    """``hf`` (default: ``dataset`` and ``split`` on the hub), ``synthetic``, or a local path/glob, its
    rows read as ``format`` (:mod:`.formats`)."""
    if spec == "hf":
        return hub_source(dataset or HF_DATASET, split=split or HF_SPLIT, revision=revision, format=format)
    for option, value in (("--dataset", dataset), ("--split", split)):
        if value is not None:
            raise SourceError(f"{option} applies only to --source hf")
    if spec == "synthetic":
        return SyntheticSource.reopen({"seed": seed}, format=format)
    if revision is not None:
        raise SourceError("--revision applies only to --source hf")
    return local_source(spec, format=format)


def _kind(description: dict[str, Any]) -> type[Source]:
    kind = description.get("kind")
    if kind not in KINDS:
        raise SourceError(f"unknown source kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    return KINDS[kind]


def source_identity(description: dict[str, Any]) -> tuple:
    """What makes two sources the same row space (so that their row ranges can overlap): see each
    kind's :meth:`Source.identity`. A description of no known kind is identified by its kind and
    files, as local files are."""
    cls = KINDS.get(description.get("kind"), FileSetSource)
    return cls.identity(description)


def reopen(description: dict[str, Any], *, format: str = GLAIVE) -> Source:
    """The source a build recorded (its manifest's ``source``), opened again: the hub at the
    recorded commit, local files at the recorded spec, the generator at the recorded seed; its rows
    read as ``format`` (the build's ``config.format``)."""
    return _kind(description).reopen(description, format=format)


def changed_since(recorded: dict[str, Any], current: dict[str, Any]) -> str | None:
    """Why the source described by ``current`` (its :meth:`Source.describe`) is not the one a build
    recorded, or None when it is (see each kind's :meth:`Source.changes`)."""
    if recorded.get("kind") != current.get("kind"):
        return f"it is a {current.get('kind')} source now, the build read a {recorded.get('kind')} one"
    return KINDS.get(recorded.get("kind"), Source).changes(recorded, current)


def read(source: Source, start: int, stop: int) -> Iterator[Example]:
    """Stage 1: the rows of ``[start, stop)``, validated."""
    yield from source.rows(start, stop)


__all__ = ["KINDS", "Format", "FileSetSource", "parse_format", "HubSource", "Source", "SyntheticSource", "Unit", "changed_since",
           "hub_source", "local_source", "open_source", "read", "reopen", "source_identity", "validate"]
