"""``tzc-data verify``'s entry: one build checked layer by layer, and builds against each other.

The layers are checked by :mod:`.layers` (what each stats file holds), :mod:`.shards` (every packed
row against the tokenizer's template) and :mod:`.records` (every input row's fate and the
manifest's counts); builds against each other by :mod:`tzc_data.read.across`, the same rules
``tzc_data.mixture`` enforces."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tzc_data.errors import TzcError
from tzc_data.files import MANIFEST, stray_entry
from tzc_data.layout import PACKS, RECORDS, read_hashes
from tzc_data.read.across import check_disjoint, check_mixable
from tzc_data.read.manifest import check_manifest, read_manifest_json, utf8_path
from tzc_data.text.minhash import RECORD as NEAR_RECORD
from tzc_data.verify.layers import Layout, Segments, file_problem, one_line, read_packs, tokenizer_for
from tzc_data.verify.records import check_counts, check_records
from tzc_data.verify.shards import Template, check_shards

if TYPE_CHECKING:
    from tzc_data.text.tokenize import Tokenizer


def verify(builds: Sequence[str], tokenizers: Sequence[str] = ()) -> list[str]:
    """All problems found in ``builds`` and between them; empty means verified.

    ``tokenizers``: SentencePiece models to try for builds whose recorded tokenizer is not found
    (each build uses the one whose sha256 its manifest records)."""
    problems: list[str] = []
    loaded: list[tuple[str, dict[str, Any], np.ndarray | None, np.ndarray | None]] = []
    cache: dict[str, Tokenizer] = {}
    for build in builds:
        try:
            manifest = read_manifest_json(utf8_path(build))
        except TzcError as err:
            problems.append(f"{build}: {err}")
            continue
        structure = check_manifest(build, manifest)
        if structure:
            problems += [f"{build} {MANIFEST}: {p}" for p in structure]
            continue
        near: list[np.ndarray] = []
        found, hashes = check_build(build, manifest, tokenizers, cache, near_out=near if len(builds) > 1 else None)
        problems += found
        loaded.append((build, manifest, hashes, near[0] if near else None))
    for (a, ma, ha, na), (b, mb, hb, nb) in itertools.combinations(loaded, 2):
        problems += check_mixable(a, ma, b, mb)
        problems += check_disjoint(a, ma, ha, b, mb, hb, near_a=na, near_b=nb)
    return problems


def check_build(build: str, manifest: dict[str, Any], tokenizers: Sequence[str] = (),
                cache: dict[str, Tokenizer] | None = None,
                near_out: list[np.ndarray] | None = None) -> tuple[list[str], np.ndarray | None]:
    """Every check of one build (whose manifest has passed :func:`check_manifest`); returns the
    problems and the build's prompt hashes (None when they cannot be trusted).

    ``near_out``: for a build without near-dup keys (``--no-near-dup``), a list that receives the
    near-dup records (:data:`tzc_data.text.minhash.RECORD`) of its decoded prompts, so that
    :func:`check_disjoint` checks its near duplicates all the same (256 bytes per kept example)."""
    problems = check_files(build, manifest)
    hashes = None
    try:
        hashes = read_hashes(build, manifest["hashes"])
    except (OSError, ValueError) as err:
        problems.append(f"{build}: prompt hashes: {one_line(err)}")
    template = None
    try:
        template = Template(tokenizer_for(manifest, tokenizers, cache if cache is not None else {}))
    except TzcError as err:
        problems.append(f"{build}: {err}; token ids and texts were not checked")
    if template is not None and template.vocab != manifest["tokenizer"]["vocab_size"]:
        problems.append(f"{build} {MANIFEST}: tokenizer.vocab_size is {manifest['tokenizer']['vocab_size']}, the "
                        f"build's tokenizer has {template.vocab} ids")
    layout = Layout(manifest)
    packs, found = read_packs(build, layout)
    problems += found
    segments = Segments(packs.segment_count) if packs is not None else None
    decode_near = near_out is not None and not manifest["near_dup"] and template is not None and packs is not None
    if decode_near:
        segments.near = np.zeros(packs.segment_count, dtype=NEAR_RECORD)
        segments.near["row"] = packs.rows[:packs.segment_count]
    problems += check_shards(build, manifest, layout, packs, segments, template)
    if decode_near:
        near_out.append(segments.near[segments.hashed])
    records, found = check_records(build, manifest, layout, packs, segments, hashes)
    problems += found
    problems += check_counts(build, manifest, layout, packs, records)
    return problems, hashes


# ---------------------------------------------------------------------------------------------
# Files the manifest names


def check_files(build: str, manifest: dict[str, Any]) -> list[str]:
    """Stats, hash and near-dup files: present, regular files, hashed as recorded."""
    problems = []
    for name in (RECORDS, PACKS):
        if name not in manifest["stats"]:
            problems.append(f"{build} {MANIFEST}: 'stats' does not record {name}")
    files = [(name, entry["sha256"], entry.get("bytes")) for name, entry in manifest["stats"].items()]
    if manifest["near_dup"]:
        files.append((manifest["near_dup"]["file"], manifest["near_dup"]["sha256"], None))
    for name, expected, size in files:
        problem = file_problem(os.path.join(build, name), expected, size)
        if problem:
            problems.append(f"{build} {name}: {problem}")
    stray = stray_entry(build)
    if stray:  # a loader would not read it, but --overwrite could no longer prove the folder a build
        problems.append(f"{build}: {stray}")
    return problems


