"""Read a finished build back: the manifest (checked: :func:`read_manifest`), its stats, and the
packed rows as a Grain ``MapDataset``, read from the manifest's ``shards`` entries, the list verify checks.

Grain is imported lazily: the build itself does not need it.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import numbers
import os
import sys
from collections.abc import Sequence
from typing import Any, Union

from tzc_data.errors import ConfigError, OutputError
from tzc_data.files import MANIFEST, atomic_path, check_output_file
from tzc_data.pack import decode_row


FORMAT_VERSIONS = (1,)  # the manifest layouts this code reads (pipeline.FORMAT_VERSION writes the newest)

_NUMBER = (int, float)
# What each consumer (loaders, verify, stats, report, inspect, explain, --exclude, the trainer) reads
# from a manifest: key -> type, or a nested schema. ``None`` in a tuple allows null.
_SCHEMA: dict[str, Any] = {
    "format_version": int,
    "source": {"kind": str},
    "range": {"start": int, "stop": int},
    "config": {"seq_len": int, "system": str, "eval_fraction": _NUMBER, "near_dup": bool,
               "tokenizer": (str, None)},
    "tokenizer": {"sha256": str, "vocab_size": int, "file": str},
    "counts": {"read": int, "kept": int, "dropped": int, "by_status": dict},
    "packing": {"seq_len": int, "rows": int, "examples": int, "tokens": int, "loss_tokens": int,
                "fill": _NUMBER, "by_split": dict},
    "splits": dict,
    "shards": list,
    "hashes": {"file": str, "count": int, "sha256": str},
    "near_dup": (dict, None),
    "stats": dict,
}
_MINIMUM = {"seq_len": 1}  # every other integer of the schema is a count, an index or a version: >= 0
_SHARD = {"file": str, "split": str, "records": int, "sha256": str}
_NEAR_DUP = {"file": str, "sha256": str, "threshold": _NUMBER, "count": int}
_FILE = {"sha256": str}
_BY_SPLIT = {"rows": int, "examples": int, "tokens": int}


def tokenizer_label(manifest: dict[str, Any]) -> str:
    """The build's tokenizer in a few words: its name where the build records one (``gemma3``, the
    models it serves being named after it), else its file, and the start of its sha256."""
    recorded = manifest["tokenizer"]
    return f"{recorded.get('name') or recorded['file']} tokenizer, sha256 {recorded['sha256'][:12]}..."


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The build's manifest, checked to have the structure every reader relies on: a directory
    without one is not a finished build, and a manifest that is malformed, points outside its
    build or lists a shard twice is refused with one line naming what is wrong (:class:`OutputError`).
    """
    manifest = read_manifest_json(directory)
    problems = check_manifest(directory, manifest)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s); tzc-data verify lists them)" if len(problems) > 1 else ""
        raise OutputError(f"{os.path.join(directory, MANIFEST)}: {problems[0]}{more}")
    return manifest


def read_manifest_json(directory: str | os.PathLike) -> Any:
    """The manifest's JSON as it is, unchecked; raises :class:`OutputError` when there is none."""
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise OutputError(f"{directory} is not a finished tzc build: no {MANIFEST}") from None
    except IsADirectoryError:
        raise OutputError(f"{path} is a directory, not a manifest") from None
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise OutputError(f"{path} is not valid JSON: {str(err).splitlines()[0][:200]}") from None
    except OSError as err:
        raise OutputError(f"{path} cannot be read: {err.strerror or err}") from None


def check_manifest(directory: str | os.PathLike, manifest: Any) -> list[str]:
    """Problems with the manifest's structure (empty: readers may index it as the schema says).

    Beyond types: every file it names is a relative path that stays inside ``directory`` (no
    absolute path, no ``..``, no symlink out), each shard is listed once, and ``splits`` is exactly
    the index of ``shards`` by split, so the one list of shards (``shards``) is what verify checks
    and what the loaders read.
    """
    if not isinstance(manifest, dict):
        return [f"the manifest is a JSON {_kind(manifest)}, not an object"]
    version = manifest.get("format_version")
    if "format_version" in manifest and isinstance(version, int) and version not in FORMAT_VERSIONS:
        return [f"format_version {version} is not one this tzc-data reads ({', '.join(map(str, FORMAT_VERSIONS))}); "
                "use the tzc version that wrote it, or rebuild"]
    problems = _check_schema(manifest, _SCHEMA, "")
    if problems:
        return problems
    for k, entry in enumerate(manifest["shards"]):
        problems += _check_schema(entry, _SHARD, f"shards[{k}]")
    if manifest["near_dup"] is not None:
        problems += _check_schema(manifest["near_dup"], _NEAR_DUP, "near_dup")
    for name, entry in manifest["stats"].items():
        problems += _check_schema(entry, _FILE, f"stats[{name!r}]")
    for name, entry in manifest["packing"]["by_split"].items():
        problems += _check_schema(entry, _BY_SPLIT, f"packing.by_split[{name!r}]")
    for name, count in manifest["counts"]["by_status"].items():
        if not _is(count, int) or count < 0:
            problems.append(f"'counts.by_status[{name!r}]' is {json.dumps(count)[:40]}, not a count")
    if problems:
        return problems
    if manifest["range"]["start"] > manifest["range"]["stop"]:
        problems.append(f"range {manifest['range']['start']}:{manifest['range']['stop']} ends before it starts")
    if manifest["config"]["near_dup"] and manifest["near_dup"] is None:
        problems.append("near_dup is null, but the build's config has near-dup on: its signatures are not recorded")
    files = [(f"shards[{k}]", e["file"]) for k, e in enumerate(manifest["shards"])]
    files += [(f"stats[{name!r}]", name) for name in manifest["stats"]]
    files += [("hashes", manifest["hashes"]["file"])]
    files += [("near_dup", manifest["near_dup"]["file"])] if manifest["near_dup"] else []
    for where, name in files:
        problem = unsafe_path(directory, name)
        if problem:
            problems.append(f"{where}: {problem}")
    return problems + _check_splits(manifest)


def _check_schema(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where or 'the manifest'} is a JSON {_kind(value)}, not an object"]
    problems = []
    for key, expected in schema.items():
        name = f"{where}.{key}" if where else key
        if key not in value:
            problems.append(f"no {name!r}")
        elif isinstance(expected, dict):
            problems += _check_schema(value[key], expected, name)
        elif not _is(value[key], expected):
            problems.append(f"{name!r} is a JSON {_kind(value[key])}, not {_describe(expected)}")
        elif expected is int and value[key] < _MINIMUM.get(key, 0):
            problems.append(f"{name!r} is {value[key]}, less than {_MINIMUM.get(key, 0)}")
    return problems


def _is(value: Any, expected: Any) -> bool:
    options = expected if isinstance(expected, tuple) else (expected,)
    for option in options:
        if option is None and value is None:
            return True
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if option is float and isinstance(value, float):
            return True
        if option not in (None, int, float) and isinstance(value, option):
            return True
    return False


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
            int: "number", float: "number"}.get(type(value), type(value).__name__)


def _describe(expected: Any) -> str:
    options = expected if isinstance(expected, tuple) else (expected,)
    names = {int: "an integer", float: "a number", str: "a string", dict: "an object", list: "an array",
             bool: "a boolean", None: "null"}
    return " or ".join(dict.fromkeys(names[o] for o in options))


def unsafe_path(directory: str | os.PathLike, name: str) -> str | None:
    """Why ``name`` (a path the manifest records) may not be read as a file of the build in
    ``directory``, or None: it must be relative, without ``..`` or empty parts, and must not leave
    the build through a symlink."""
    parts = name.replace("\\", "/").split("/")
    if not name or os.path.isabs(name) or name.startswith(("/", "\\")):
        return f"{name!r} is not a relative path inside the build"
    if any(part in ("", ".", "..") for part in parts):
        return f"{name!r} has an empty, '.' or '..' part: files of a build are named plainly inside it"
    root = os.path.realpath(directory)
    if os.path.commonpath([root, os.path.realpath(os.path.join(directory, name))]) != root:
        return f"{name!r} leads outside the build (a symlink)"
    return None


def _check_splits(manifest: dict[str, Any]) -> list[str]:
    """``splits`` must be ``shards`` grouped by split, in order: the loaders read ``shards``."""
    problems = []
    seen: set[str] = set()
    for k, entry in enumerate(manifest["shards"]):
        if entry["file"] in seen:
            problems.append(f"shards[{k}]: {entry['file']!r} is listed twice")
        seen.add(entry["file"])
        if entry["split"] not in manifest["splits"]:
            problems.append(f"shards[{k}]: split {entry['split']!r} is not in 'splits'")
    for name, files in manifest["splits"].items():
        derived = [e["file"] for e in manifest["shards"] if e["split"] == name]
        if not isinstance(files, list) or files != derived:
            problems.append(f"splits[{name!r}] is {_short(files)}, but the shards of split {name!r} are "
                            f"{_short(derived)}")
    if set(manifest["splits"]) != set(manifest["packing"]["by_split"]):
        problems.append(f"the splits {sorted(manifest['splits'])} are not packing.by_split's "
                        f"{sorted(manifest['packing']['by_split'])}")
    return problems


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 160 else text[:157] + "..."


def shard_entries(manifest: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """The manifest's ``shards`` entries of ``split``, in order: what the loaders read and verify checks."""
    if split not in manifest["splits"]:
        raise OutputError(f"no split {split!r}; the build has {', '.join(manifest['splits']) or 'none'}")
    return [entry for entry in manifest["shards"] if entry["split"] == split]


RECORDS, PACKS = "stats/records.parquet", "stats/packs.parquet"
# The columns a reader of the whole file relies on (explain, inspect): another file in its place is refused.
_NEEDED = {RECORDS: ("row", "status", "detail"), PACKS: ("split", "shard", "index", "rows"),
           "rejected/rejected.parquet": ("row",)}


def read_stats(directory: str | os.PathLike, name: str, columns: list[str] | None = None, *,
               manifest: dict[str, Any] | None = None):
    """One of the build's Parquet files (``stats/records.parquet``, ``stats/packs.parquet``,
    ``rejected/rejected.parquet``) as a Polars DataFrame, checked against the manifest's sha256;
    a missing, changed or unreadable file raises :class:`OutputError` naming it."""
    import polars as pl

    from tzc_data.tokenize import sha256_file

    manifest = read_manifest(directory) if manifest is None else manifest
    path = os.path.join(directory, name)
    if name not in manifest["stats"]:
        raise OutputError(f"{directory}: the manifest records no {name}")
    if not os.path.isfile(path):
        raise OutputError(f"{path} is {'a directory' if os.path.isdir(path) else 'missing'}")
    try:
        if sha256_file(path) != manifest["stats"][name]["sha256"]:
            raise OutputError(f"{path} does not match the sha256 in the manifest: the build was changed or "
                              f"damaged (tzc-data verify {directory})")
        frame = pl.read_parquet(path, columns=columns)
        missing = [c for c in _NEEDED.get(name, ()) if c not in frame.columns and columns is None]
        if missing:
            raise OutputError(f"{path} has no column {', '.join(missing)}: it is not the build's {name}; "
                              f"tzc-data verify {directory} says what else is wrong")
        return frame
    except OutputError:
        raise
    except Exception as err:  # pyarrow/polars raise their own error types on damaged files
        raise OutputError(f"{path} cannot be read as Parquet ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:200]


def _grain():
    """Grain, imported on first use; its import logs a warning about JAX's profiler through absl
    when JAX is absent (a data user has no JAX), which says nothing useful here."""
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)
    import grain

    return grain


def load(directory: Builds, split: str = "train", *, weights: Sequence[float] | None = None):
    """Packed rows of ``split`` as a ``grain.MapDataset`` of dicts of int32 ``[seq_len]`` arrays
    (``tokens``, ``segment_ids``, ``positions``, ``loss_mask``), in shard order; random access.

    ``directory`` may be a list of builds: their rows mixed by ``weights`` (see :func:`mixture`),
    unshuffled, ending when the first build runs out; without weights that is every row once."""
    builds = _as_builds(directory)
    if len(builds) == 1:
        _check_weights(builds, weights)
        records, seq_len = _records(builds[0], split)
        return records.map(functools.partial(decode_row, seq_len=seq_len))
    parts, seq_len, proportions = _mixture_parts(builds, split, weights)
    decode = functools.partial(decode_row, seq_len=seq_len)
    return _mix([records.map(decode) for records in parts], None if weights is None else proportions)


def _mix(parts: list, weights: Sequence[float] | None, *, repeats: int | None = 1):
    """``parts`` interleaved. By ``weights`` (normalised), Grain's mixture: its integer rounding of
    them, ending when the first part runs out. Without weights, each part weighs its length exactly:
    the first ``repeats`` times the total length holds every element of every part once per repeat
    (``repeats=None``: the parts repeat forever), spread evenly (:class:`_ExactInterleave`)."""
    grain = _grain()
    if weights is not None:
        return grain.MapDataset.mix(parts if repeats == 1 else [p.repeat(repeats) for p in parts], weights)
    selection = _ExactInterleave(tuple(len(p) for p in parts), repeats)
    return grain.MapDataset.select_from_datasets([p.repeat(None) for p in parts], selection)


class _ExactInterleave:
    """A ``grain.transforms.DatasetSelectionMap`` (by its interface: the loaders import Grain on
    first use). Position ``i`` of the interleaving of parts of ``sizes`` elements, each in proportion to its
    size: a pure, stateless function (Grain calls it from any process). Within each period of
    ``sum(sizes)`` positions part ``k`` holds its ``sizes[k]`` elements in order, each once
    (Grain's own rounds the proportions to integers, the smallest scaled to 100: rows were lost).
    The same recurrence as Grain's ``_dataset_and_key_of_next_element`` with the sizes themselves
    as the integer proportions: part ``k`` takes its share of what the parts after it leave."""

    def __init__(self, sizes: tuple[int, ...], repeats: int | None):
        self.sizes, self.period = sizes, sum(sizes)
        self.length = sys.maxsize if repeats is None else self.period * repeats

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[int, int]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} of an interleaving of {self.length} elements")
        period, at = divmod(index, self.period)
        remaining, low, high = self.period, at, at + 1
        for part, size in enumerate(self.sizes):
            next_low, next_high = low * (remaining - size) // remaining, high * (remaining - size) // remaining
            if low - next_low != high - next_high:  # position ``at`` is this part's (high - next_high)-th
                return part, period * size + high - next_high - 1
            remaining, low, high = remaining - size, next_low, next_high
        raise AssertionError("unreachable: the last part takes every position the others leave")


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
    grain = _grain()
    if batch_size < 1 or not 0 <= shard_index < shard_count:
        raise ValueError(f"need batch_size >= 1 and 0 <= shard_index < shard_count; got {batch_size}, "
                         f"{shard_index}, {shard_count}")
    builds = _as_builds(directory)
    if len(builds) == 1:
        _check_weights(builds, weights)
        records, seq_len = _records(builds[0], split)
        if len(records) == 0 and num_epochs is None:
            raise OutputError(f"split {split!r} of {builds[0]} has no packed rows: there is nothing to repeat "
                              "batches of (a finite num_epochs gives an empty iterator)")
        rows = records.seed(seed).shuffle().repeat(num_epochs)
    else:
        parts, seq_len, proportions = _mixture_parts(builds, split, weights)
        rows = _mix([records.seed(_build_seed(seed, k)).shuffle() for k, records in enumerate(parts)],
                    None if weights is None else proportions, repeats=num_epochs)
    if num_epochs is not None:
        rows = _equal_host_shares(rows, batch_size, shard_count, drop_remainder)
    rows = rows[shard_index::shard_count]
    # Batch the raw records and decode a whole batch into one array: a quarter faster than
    # decoding rows and stacking them (measured, tools/bench_loader.py).
    rows = rows.batch(batch_size, drop_remainder=drop_remainder,
                      batch_fn=functools.partial(_decode_batch, seq_len=seq_len))
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


Builds = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]


def _as_builds(directory: Builds) -> list[str]:
    """One build (a path) or several (a list or tuple of paths), as a list of paths."""
    if isinstance(directory, (str, os.PathLike)):
        return [utf8_path(os.fspath(directory))]
    if not isinstance(directory, Sequence) or not all(isinstance(d, (str, os.PathLike)) for d in directory):
        raise TypeError(f"a build is a path, and a mixture a list of paths; got {type(directory).__name__}")
    if not directory:
        raise ConfigError("no builds given: a mixture needs at least one")
    return [utf8_path(os.fspath(d)) for d in directory]


def utf8_path(path: str, what: str = "build") -> str:
    """``path`` as it is, or :class:`ConfigError` when it holds bytes that are not UTF-8 (surrogate
    escapes): the shard reader takes only UTF-8 paths, and a build records its paths as text."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = repr(path.encode("utf-8", "surrogateescape"))[1:]
        raise ConfigError(f"{what} {shown} is not valid UTF-8: paths must be valid UTF-8") from None
    return path


def _check_weights(builds: Sequence[str], weights: Sequence[float] | None) -> list[float] | None:
    """``weights`` normalised to sum to 1 (None stays None); one positive finite number per build."""
    if weights is None:
        return None
    weights = list(weights)
    if len(weights) != len(builds):
        raise ConfigError(f"{len(weights)} weight(s) for {len(builds)} build(s) ({', '.join(builds)}): "
                          "give one weight per build")
    for build, weight in zip(builds, weights):
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight) or weight <= 0:
            raise ConfigError(f"weight {weight!r} of build {build}: weights must be positive finite numbers")
    largest = max(float(weight) for weight in weights)  # scaled first: huge weights would overflow the sum
    scaled = [float(weight) / largest for weight in weights]
    return [weight / math.fsum(scaled) for weight in scaled]


def mixture(directories: Builds, weights: Sequence[float] | None = None,
            split: str = "train") -> list[float]:
    """Check that ``directories`` can be mixed and return their weights, normalised to sum to 1.

    Refused, each with one line naming the builds (:class:`ConfigError`): a build given twice,
    builds of different ``seq_len`` (the record layout) or tokenizer (its sha256), builds that
    ``tzc-data verify A B`` reports as sharing rows (overlapping row ranges of one source, shared
    or near-duplicate prompts: :func:`tzc_data.verify.check_disjoint`, which reads the builds'
    prompt hashes and near-dup signatures; a build without near-dup keys, ``--no-near-dup``, is
    mixed with a warning that its near duplicates were not checked: ``verify`` checks them), a
    split without packed rows, and weights that are not one positive finite number per build.
    Without weights, each build weighs its packed rows of ``split``: every row is equally likely,
    as if the builds were one.

    Grain mixes by a deterministic interleaving (``grain.MapDataset.mix``), not by sampling: any
    stretch of the mixture holds each build in proportion, to Grain's rounding of the weights to
    integers (the smallest scaled to 100: 0.7/0.3 draws 233 of every 333). Without weights the
    interleaving is exact: each pass over the builds' total rows holds every row once.
    """
    _, _, proportions = _mixture_parts(_as_builds(directories), split, weights)
    return proportions


def _mixture_parts(builds: list[str], split: str, weights: Sequence[float] | None):
    """The records of each build's ``split``, their common seq_len and the normalised weights."""
    proportions = _check_weights(builds, weights)
    manifests = [read_manifest(build) for build in builds]
    _check_compatible(builds, manifests)
    parts = []
    for build, manifest in zip(builds, manifests):
        records, _ = _records(build, split, manifest)
        if len(records) == 0:
            raise ConfigError(f"split {split!r} of {build} has no packed rows: a mixture cannot draw from it")
        parts.append(records)
    if proportions is None:
        total = sum(len(records) for records in parts)
        proportions = [len(records) / total for records in parts]
    return parts, manifests[0]["config"]["seq_len"], proportions


def _check_compatible(builds: list[str], manifests: list[dict[str, Any]]) -> None:
    """Refuse builds that cannot be mixed: see :func:`mixture`."""
    from tzc_data import verify
    from tzc_data.write import read_hashes

    first, head = builds[0], manifests[0]
    seen: dict[str, str] = {}
    for build in builds:
        real = os.path.realpath(build)
        if real in seen:
            raise ConfigError(f"refusing to mix: {seen[real]} and {build} are the same build, given twice")
        seen[real] = build
    for build, manifest in zip(builds[1:], manifests[1:]):
        if manifest["config"]["seq_len"] != head["config"]["seq_len"]:
            raise ConfigError(f"refusing to mix: {first} has seq_len {head['config']['seq_len']} and {build} "
                              f"{manifest['config']['seq_len']}; their packed rows differ in layout")
        if manifest["tokenizer"]["sha256"] != head["tokenizer"]["sha256"]:
            raise ConfigError(f"refusing to mix: {first} and {build} were tokenized by different tokenizers "
                              f"({tokenizer_label(head)} and {tokenizer_label(manifest)})")
    hashes = []
    for build, manifest in zip(builds, manifests):
        try:
            hashes.append(read_hashes(build, manifest["hashes"]))
        except (OSError, ValueError) as err:
            raise ConfigError(f"refusing to mix: {build}: its prompt hashes cannot be read ({_first_line(err)}); "
                              f"tzc-data verify {build} says what else is wrong") from None
    unchecked: list[str] = []
    for a, b in itertools.combinations(range(len(builds)), 2):
        problems = verify.check_disjoint(builds[a], manifests[a], hashes[a], builds[b], manifests[b], hashes[b],
                                         unchecked=unchecked)
        if problems:
            raise ConfigError(f"refusing to mix: {problems[0]} (tzc-data verify {builds[a]} {builds[b]} lists "
                              "every problem)")
    if unchecked:  # a build without near-dup keys: only verify, which decodes its prompts, can check them
        import warnings

        for note in unchecked:
            warnings.warn(f"tzc_data.mixture: {note}", stacklevel=4)


def _build_seed(seed: int, k: int) -> int:
    """The shuffle seed of the ``k``-th build of a mixture: independent permutations per build."""
    import numpy as np

    return int(np.random.SeedSequence((seed, k)).generate_state(1, dtype=np.uint32)[0])


def _records(directory: str | os.PathLike, split: str, manifest: dict[str, Any] | None = None):
    """The raw records of ``split`` as a Grain MapDataset, and the build's seq_len.

    The shards are the manifest's ``shards`` entries of ``split`` (:func:`shard_entries`), the
    list ``verify`` checks; a split without packed rows gives an empty dataset."""
    grain = _grain()
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

        from tzc_data.pack import DTYPE, FIELDS

        self.directory, self.paths, self.row_bytes = directory, paths, len(FIELDS) * seq_len * DTYPE.itemsize
        self.seq_len, self._bisect = seq_len, bisect_right
        self.sources, self.starts = [], [0]
        for path in paths:
            try:
                self.sources.append(_grain().sources.ArrayRecordDataSource([path]))
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
        cause = f" ({_first_line(err)})" if err is not None else ""
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
                   rows_per_group: int = 256, *, overwrite: bool = False) -> int:
    """Write the packed rows of ``split`` as Parquet (four ``list<int32>`` columns); returns rows
    written. An existing ``out`` is replaced only when ``overwrite``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tzc_data.pack import FIELDS

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
