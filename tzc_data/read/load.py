"""The loaders: a finished build (or a mixture of builds) as packed rows, batches and exports.

:func:`load` gives random access to the packed rows (a Grain ``MapDataset``), :func:`batches` a
shuffled, checkpointable, multi-host iterator of batches, :func:`iter_rows` the rows in order, and
the exports hand a build to other frameworks. Each reads the manifest's ``shards`` entries, the
list ``verify`` checks (:mod:`.shards`); several builds are a mixture (:mod:`.mixture`). Grain is
imported on first use: the build itself does not need it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

from tzc_data.errors import OutputError
from tzc_data.files import atomic_path, check_output_file
from tzc_data.layout import FIELDS, decode_row
from tzc_data.read.mixture import Builds, as_builds, build_seed, check_weights, mix, mixture_parts
from tzc_data.read.shards import decode_batch, grain_module, split_records


def load(directory: Builds, split: str = "train", *, weights: Sequence[float] | None = None):
    """Packed rows of ``split`` as a ``grain.MapDataset`` of dicts of int32 ``[seq_len]`` arrays
    (``tokens``, ``segment_ids``, ``positions``, ``loss_mask``), in shard order; random access.

    ``directory`` may be a list of builds: their rows mixed by ``weights`` (see :func:`mixture`),
    unshuffled, ending when the first build runs out; without weights that is every row once."""
    builds = as_builds(directory)
    if len(builds) == 1:
        check_weights(builds, weights)
        records, seq_len = split_records(builds[0], split)
        return records.map(functools.partial(decode_row, seq_len=seq_len))
    parts, seq_len, proportions = mixture_parts(builds, split, weights)
    decode = functools.partial(decode_row, seq_len=seq_len)
    return mix([records.map(decode) for records in parts], None if weights is None else proportions)


# Measured on this project's machine (tools/bench_loader.py): with ReadOptions(num_threads=0,
# prefetch_buffer_size=0) the iterator decodes ~26k packed rows/s of 4096 tokens; Grain's defaults
# (16 threads, prefetch 500) give ~12k/s: the records are small and zstd is fast, so threads only add
# hand-over cost. Pass other options when reads are slow (network disks).
READ_OPTIONS = {"num_threads": 0, "prefetch_buffer_size": 0}


def batches(directory: Builds, batch_size: int, *, seed: int, split: str = "train",
            num_epochs: int | None = None, shard_index: int = 0, shard_count: int = 1,
            drop_remainder: bool = True, read_options: dict[str, int] | None = None,
            weights: Sequence[float] | None = None):
    """A shuffled, repeatable, checkpointable iterator of batches: dicts of int32 ``[batch, seq_len]``.

    * The order is a pure function of ``seed``: each epoch is a new permutation of the packed rows.
    * ``num_epochs=None`` repeats forever; a split without packed rows then raises OutputError, and
      with a finite ``num_epochs`` gives an iterator that yields nothing.
    * Multi-host: host ``shard_index`` of ``shard_count`` takes every ``shard_count``-th element of
      the global shuffled sequence, so hosts see disjoint rows. With a finite ``num_epochs`` every
      host gets the same number of batches (a multi-host step loop would stall otherwise): the
      sequence is cut to a multiple of ``shard_count`` rows (of ``shard_count * batch_size`` with
      ``drop_remainder``), and a warning says how many rows that leaves out.
    * The iterator has ``get_state()`` / ``set_state(state)`` (Grain): save the state with a
      checkpoint and a resumed job continues with the next batch.
    * A list of builds is a mixture (:func:`mixture`): each build shuffled and repeated on its own,
      then drawn from by ``weights``; with a finite ``num_epochs`` it ends when the first build has
      given its ``num_epochs`` passes. A list of one build reads that build exactly as on its own.
    """
    grain = grain_module()
    if batch_size < 1 or not 0 <= shard_index < shard_count:
        raise ValueError(f"need batch_size >= 1 and 0 <= shard_index < shard_count; got {batch_size}, "
                         f"{shard_index}, {shard_count}")
    builds = as_builds(directory)
    if len(builds) == 1:
        check_weights(builds, weights)
        records, seq_len = split_records(builds[0], split)
        if len(records) == 0 and num_epochs is None:
            raise OutputError(f"split {split!r} of {builds[0]} has no packed rows: there is nothing to repeat "
                              "batches of (a finite num_epochs gives an empty iterator)")
        rows = records.seed(seed).shuffle().repeat(num_epochs)
    else:
        parts, seq_len, proportions = mixture_parts(builds, split, weights)
        rows = mix([records.seed(build_seed(seed, k)).shuffle() for k, records in enumerate(parts)],
                    None if weights is None else proportions, repeats=num_epochs)
    if num_epochs is not None:
        rows = _equal_host_shares(rows, batch_size, shard_count, drop_remainder)
    rows = rows[shard_index::shard_count]
    # Batch the raw records and decode a whole batch into one array: a quarter faster than
    # decoding rows and stacking them (measured, tools/bench_loader.py).
    rows = rows.batch(batch_size, drop_remainder=drop_remainder,
                      batch_fn=functools.partial(decode_batch, seq_len=seq_len))
    options = grain.ReadOptions(**(read_options or READ_OPTIONS))
    return iter(rows.to_iter_dataset(options))


def _equal_host_shares(rows, batch_size: int, shard_count: int, drop_remainder: bool):
    """The finite sequence ``rows`` cut so that each of ``shard_count`` hosts gets the same rows, in
    whole batches with ``drop_remainder``; a warning names the rows left out."""
    import warnings

    total = len(rows)
    share = total // shard_count
    if drop_remainder:
        share -= share % batch_size
    if share * shard_count == total:
        return rows
    batches = share // batch_size if drop_remainder else -(-share // batch_size)
    why = (f"so that each of {shard_count:,} hosts gets the same {batches:,} batch(es) of {batch_size:,}"
           f"{'' if drop_remainder else ' or fewer rows'}" if shard_count > 1 else
           f"as drop_remainder leaves {batches:,} whole batch(es) of {batch_size:,}")
    warnings.warn(f"tzc_data.batches: {total - share * shard_count:,} of the {total:,} rows of the pass(es) are left "
                  f"out, {why}", stacklevel=3)
    return rows[:share * shard_count]


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
                   rows_per_group: int = 256, *, overwrite: bool = False) -> int:
    """Write the packed rows of ``split`` as Parquet (four ``list<int32>`` columns); returns rows
    written. An existing ``out`` is replaced only when ``overwrite``."""
    import pyarrow as pa
    import pyarrow.parquet as pq


    out = check_output_file(os.fspath(out), overwrite=overwrite)
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
    if export_parquet(directory, target, split, overwrite=True) == 0:  # the export this cache holds
        import pyarrow.parquet as pq

        # an empty split loads empty, with the same features (from_parquet refuses a file of no rows)
        return datasets.Dataset(datasets.table.InMemoryTable(pq.read_table(target)))
    return datasets.Dataset.from_parquet(target, cache_dir=cache_dir)
