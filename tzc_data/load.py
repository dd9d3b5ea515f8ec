"""Read a finished build back: the manifest, and the packed rows as a Grain ``MapDataset``.

Grain is imported lazily: the build itself does not need it.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from tzc_data.errors import OutputError
from tzc_data.pack import decode_row
from tzc_data.write import MANIFEST


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The build's manifest; a directory without one is not a finished build."""
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise OutputError(f"{directory} is not a finished tzc build: no {MANIFEST}") from None
    except ValueError as err:
        raise OutputError(f"{path} is not valid JSON: {err}") from None


def load(directory: str | os.PathLike, split: str = "train"):
    """Packed rows of ``split`` as a ``grain.MapDataset`` of dicts of int32 ``[seq_len]`` arrays
    (``tokens``, ``segment_ids``, ``positions``, ``loss_mask``), in shard order; random access."""
    import grain

    manifest = read_manifest(directory)
    if split not in manifest["splits"]:
        raise OutputError(f"{directory} has no split {split!r}; it has {', '.join(manifest['splits'])}")
    paths = [os.path.join(directory, name) for name in manifest["splits"][split]]
    rows = grain.MapDataset.source(grain.sources.ArrayRecordDataSource(paths))
    return rows.map(functools.partial(decode_row, seq_len=manifest["config"]["seq_len"]))
