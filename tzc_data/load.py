"""Read a finished build back: the manifest, and the packed rows as a Grain ``MapDataset``.

Grain is imported lazily: the build itself does not need it.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from tzc_data.errors import OutputError
from tzc_data.files import MANIFEST, atomic_path, check_output_file
from tzc_data.pack import decode_row


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


def _grain():
    """Grain, imported on first use; its import logs a warning about JAX's profiler through absl
    when JAX is absent (a data user has no JAX), which says nothing useful here."""
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)
    import grain

    return grain


def load(directory: str | os.PathLike, split: str = "train"):
    """Packed rows of ``split`` as a ``grain.MapDataset`` of dicts of int32 ``[seq_len]`` arrays
    (``tokens``, ``segment_ids``, ``positions``, ``loss_mask``), in shard order; random access."""
    records, seq_len = _records(directory, split)
    return records.map(functools.partial(decode_row, seq_len=seq_len))


# Measured on this project's machine (tools/bench_loader.py): with ReadOptions(num_threads=0,
# prefetch_buffer_size=0) the iterator decodes ~26k packed rows/s of 4096 tokens; Grain's defaults
# (16 threads, prefetch 500) give ~12k/s: the records are small and zstd is fast, so threads only add
# hand-over cost. Pass other options when reads are slow (network disks).
READ_OPTIONS = {"num_threads": 0, "prefetch_buffer_size": 0}


def batches(directory: str | os.PathLike, batch_size: int, *, seed: int, split: str = "train",
            num_epochs: int | None = None, shard_index: int = 0, shard_count: int = 1,
            drop_remainder: bool = True, read_options: dict[str, int] | None = None):
    """A shuffled, repeatable, checkpointable iterator of batches: dicts of int32 ``[batch, seq_len]``.

    * The order is a pure function of ``seed``: each epoch is a new permutation of the packed rows.
    * ``num_epochs=None`` repeats forever.
    * Multi-host: host ``shard_index`` of ``shard_count`` takes every ``shard_count``-th element of
      the global shuffled sequence, so hosts see disjoint rows and together see all of them.
    * The iterator has ``get_state()`` / ``set_state(state)`` (Grain): save the state with a
      checkpoint and a resumed job continues with the next batch.
    """
    grain = _grain()
    if batch_size < 1 or not 0 <= shard_index < shard_count:
        raise ValueError(f"need batch_size >= 1 and 0 <= shard_index < shard_count; got {batch_size}, "
                         f"{shard_index}, {shard_count}")
    records, seq_len = _records(directory, split)
    rows = records.seed(seed).shuffle().repeat(num_epochs)[shard_index::shard_count]
    # Batch the raw records and decode a whole batch into one array: a quarter faster than
    # decoding rows and stacking them (measured, tools/bench_loader.py).
    rows = rows.batch(batch_size, drop_remainder=drop_remainder,
                      batch_fn=functools.partial(_decode_batch, seq_len=seq_len))
    options = grain.ReadOptions(**(read_options or READ_OPTIONS))
    return iter(rows.to_iter_dataset(options))


def _records(directory: str | os.PathLike, split: str):
    """The raw records of ``split`` as a Grain MapDataset, and the build's seq_len."""
    grain = _grain()
    manifest = read_manifest(directory)
    if split not in manifest["splits"]:
        raise OutputError(f"{directory} has no split {split!r}; it has {', '.join(manifest['splits'])}")
    paths = [os.path.join(directory, name) for name in manifest["splits"][split]]
    return grain.MapDataset.source(grain.sources.ArrayRecordDataSource(paths)), manifest["config"]["seq_len"]


def _decode_batch(records: list[bytes], seq_len: int) -> dict[str, Any]:
    import numpy as np

    from tzc_data.pack import DTYPE, FIELDS

    out = np.empty((len(records), len(FIELDS), seq_len), dtype=DTYPE)
    for k, record in enumerate(records):
        out[k] = np.frombuffer(record, dtype=DTYPE).reshape(len(FIELDS), seq_len)
    return {name: out[:, i] for i, name in enumerate(FIELDS)}


def iter_rows(directory: str | os.PathLike, split: str = "train"):
    """Plain numpy: every packed row of ``split`` in shard order, as a dict of int32 arrays."""
    rows = load(directory, split)
    for index in range(len(rows)):
        yield rows[index]


def torch_dataset(directory: str | os.PathLike, split: str = "train"):
    """A ``torch.utils.data.Dataset`` of packed rows (dicts of int64 tensors); imports torch lazily."""
    import torch
    from torch.utils.data import Dataset

    rows = load(directory, split)

    class PackedRows(Dataset):
        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, index: int) -> dict[str, Any]:
            return {k: torch.from_numpy(v.astype("int64")) for k, v in rows[index].items()}

    return PackedRows()


def export_parquet(directory: str | os.PathLike, out: str | os.PathLike, split: str = "train",
                   rows_per_group: int = 256) -> int:
    """Write the packed rows of ``split`` as Parquet (four ``list<int32>`` columns); returns rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tzc_data.pack import FIELDS

    out = check_output_file(os.fspath(out))
    rows = load(directory, split)
    schema = pa.schema([(name, pa.list_(pa.int32())) for name in FIELDS])
    with atomic_path(out) as temporary, pq.ParquetWriter(temporary, schema) as writer:
        for start in range(0, len(rows), rows_per_group):
            group = [rows[i] for i in range(start, min(start + rows_per_group, len(rows)))]
            columns = {name: pa.array([row[name] for row in group], type=pa.list_(pa.int32())) for name in FIELDS}
            writer.write_table(pa.table(columns, schema=schema))
    return len(rows)


def hf_dataset(directory: str | os.PathLike, split: str = "train", *, cache_dir: str | None = None):
    """A Hugging Face ``datasets.Dataset`` of packed rows, through a Parquet export; imports lazily."""
    import tempfile

    import datasets

    folder = cache_dir or tempfile.mkdtemp(prefix="tzc-hf-")
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, f"{split}.parquet")
    export_parquet(directory, target, split)
    return datasets.Dataset.from_parquet(target, cache_dir=cache_dir)
