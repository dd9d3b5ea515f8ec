"""Several builds read as one: the checks that refuse a mixture (:func:`mixture`), and the
interleavings the loaders draw by (weights, or each build in proportion to its rows, exactly).
"""

from __future__ import annotations

import itertools
import math
import numbers
import os
import sys
from collections.abc import Sequence
from typing import Any, Union

from tzc_data.errors import ConfigError
from tzc_data.layout import read_hashes
from tzc_data.read.across import check_disjoint
from tzc_data.read.manifest import first_line, read_manifest, tokenizer_label, utf8_path
from tzc_data.read.shards import grain_module, split_records


def mix(parts: list, weights: Sequence[float] | None, *, repeats: int | None = 1):
    """``parts`` interleaved. By ``weights`` (normalised), Grain's mixture: its integer rounding of
    them, ending when the first part runs out. Without weights, each part weighs its length exactly:
    the first ``repeats`` times the total length holds every element of every part once per repeat
    (``repeats=None``: the parts repeat forever), spread evenly (:class:`_ExactInterleave`)."""
    grain = grain_module()
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


Builds = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]


def as_builds(directory: Builds) -> list[str]:
    """One build (a path) or several (a list or tuple of paths), as a list of paths."""
    if isinstance(directory, (str, os.PathLike)):
        return [utf8_path(os.fspath(directory))]
    if not isinstance(directory, Sequence) or not all(isinstance(d, (str, os.PathLike)) for d in directory):
        raise TypeError(f"a build is a path, and a mixture a list of paths; got {type(directory).__name__}")
    if not directory:
        raise ConfigError("no builds given: a mixture needs at least one")
    return [utf8_path(os.fspath(d)) for d in directory]


def check_weights(builds: Sequence[str], weights: Sequence[float] | None) -> list[float] | None:
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
    or near-duplicate prompts: :func:`tzc_data.read.across.check_disjoint`, which reads the builds'
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
    _, _, proportions = mixture_parts(as_builds(directories), split, weights)
    return proportions


def mixture_parts(builds: list[str], split: str, weights: Sequence[float] | None):
    """The records of each build's ``split``, their common seq_len and the normalised weights."""
    proportions = check_weights(builds, weights)
    manifests = [read_manifest(build) for build in builds]
    _check_compatible(builds, manifests)
    parts = []
    for build, manifest in zip(builds, manifests):
        records, _ = split_records(build, split, manifest)
        if len(records) == 0:
            raise ConfigError(f"split {split!r} of {build} has no packed rows: a mixture cannot draw from it")
        parts.append(records)
    if proportions is None:
        total = sum(len(records) for records in parts)
        proportions = [len(records) / total for records in parts]
    return parts, manifests[0]["config"]["seq_len"], proportions


def _check_compatible(builds: list[str], manifests: list[dict[str, Any]]) -> None:
    """Refuse builds that cannot be mixed: see :func:`mixture`."""

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
            raise ConfigError(f"refusing to mix: {build}: its prompt hashes cannot be read ({first_line(err)}); "
                              f"tzc-data verify {build} says what else is wrong") from None
    unchecked: list[str] = []
    for a, b in itertools.combinations(range(len(builds)), 2):
        problems = check_disjoint(builds[a], manifests[a], hashes[a], builds[b], manifests[b], hashes[b],
                                         unchecked=unchecked)
        if problems:
            raise ConfigError(f"refusing to mix: {problems[0]} (tzc-data verify {builds[a]} {builds[b]} lists "
                              "every problem)")
    if unchecked:  # a build without near-dup keys: only verify, which decodes its prompts, can check them
        import warnings

        for note in unchecked:
            warnings.warn(f"tzc_data.mixture: {note}", stacklevel=4)


def build_seed(seed: int, k: int) -> int:
    """The shuffle seed of the ``k``-th build of a mixture: independent permutations per build."""
    import numpy as np

    return int(np.random.SeedSequence((seed, k)).generate_state(1, dtype=np.uint32)[0])
