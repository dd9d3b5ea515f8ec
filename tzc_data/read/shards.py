"""The packed rows of one build's split as a Grain ``MapDataset``, read from the manifest's
``shards`` entries: the list ``verify`` checks. Grain is imported on first use.
"""

from __future__ import annotations

import os
from typing import Any

from tzc_data.errors import OutputError
from tzc_data.layout import DTYPE, FIELDS
from tzc_data.read.manifest import first_line, read_manifest, shard_entries


def grain_module():
    """Grain, imported on first use; its import logs a warning about JAX's profiler through absl
    when JAX is absent (a data user has no JAX), which says nothing useful here."""
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)
    import grain

    return grain


def split_records(directory: str | os.PathLike, split: str, manifest: dict[str, Any] | None = None):
    """The raw records of ``split`` as a Grain MapDataset, and the build's seq_len.

    The shards are the manifest's ``shards`` entries of ``split`` (:func:`shard_entries`), the
    list ``verify`` checks; a split without packed rows gives an empty dataset."""
    grain = grain_module()
    manifest = read_manifest(directory) if manifest is None else manifest
    paths, seq_len = shard_paths(directory, split, manifest), manifest["config"]["seq_len"]
    if not paths:
        return grain.MapDataset.source([]), seq_len
    return grain.MapDataset.source(_ShardRecords(os.fspath(directory), paths, seq_len)), seq_len


class _ShardRecords:
    """The records of a split's shards, in order, as a Grain data source (``len`` and random access).

    A shard Riegeli cannot open or read (truncated, a flipped byte) or a record that is not one
    packed row of the manifest's seq_len raises :class:`OutputError` naming the shard and record
    and pointing at ``tzc-data verify``, never the reader's raw RuntimeError."""

    def __init__(self, directory: str, paths: list[str], seq_len: int):
        from bisect import bisect_right


        self.directory, self.paths, self.row_bytes = directory, paths, len(FIELDS) * seq_len * DTYPE.itemsize
        self.seq_len, self._bisect = seq_len, bisect_right
        self.sources, self.starts = [], [0]
        for path in paths:
            try:
                self.sources.append(grain_module().sources.ArrayRecordDataSource([path]))
            except Exception as err:  # noqa: BLE001 - Riegeli raises RuntimeError (and others) on damaged files
                raise self._damaged(path, "cannot be opened", err) from None
            self.starts.append(self.starts[-1] + len(self.sources[-1]))

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, index: int) -> bytes:
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} of {len(self)}")
        shard = self._bisect(self.starts, index) - 1
        at = index - self.starts[shard]
        try:
            record = self.sources[shard][at]
        except Exception as err:  # noqa: BLE001 - as above
            raise self._damaged(self.paths[shard], f"record {at} cannot be read", err) from None
        if len(record) != self.row_bytes:
            raise self._damaged(self.paths[shard], f"record {at} has {len(record)} bytes, not the "
                                f"{self.row_bytes} of a row of seq_len {self.seq_len}", None)
        return record

    def _damaged(self, path: str, what: str, err: BaseException | None) -> OutputError:
        cause = f" ({first_line(err)})" if err is not None else ""
        return OutputError(f"shard {path}: {what}{cause}: the build is damaged or was changed; "
                           f"tzc-data verify {self.directory} says what else is wrong")


def shard_paths(directory: str | os.PathLike, split: str = "train",
                manifest: dict[str, Any] | None = None) -> list[str]:
    """Paths of the shards of ``split``, in order; each must be a file (OutputError otherwise)."""
    manifest = read_manifest(directory) if manifest is None else manifest
    try:
        entries = shard_entries(manifest, split)
    except OutputError as err:
        raise OutputError(f"{directory}: {err}") from None
    paths = [os.path.join(directory, entry["file"]) for entry in entries]
    for path in paths:
        if not os.path.isfile(path):
            what = "a directory" if os.path.isdir(path) else "missing"
            raise OutputError(f"shard {path} is {what}; tzc-data verify {directory} says what else is wrong")
    return paths


def decode_batch(records: list[bytes], seq_len: int) -> dict[str, Any]:
    import numpy as np


    out = np.empty((len(records), len(FIELDS), seq_len), dtype=DTYPE)
    for k, record in enumerate(records):
        out[k] = np.frombuffer(record, dtype=DTYPE).reshape(len(FIELDS), seq_len)
    return {name: out[:, i] for i, name in enumerate(FIELDS)}
