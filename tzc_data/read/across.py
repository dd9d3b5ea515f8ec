"""What two builds must keep to be mixed or called disjoint: one tokenizer and one record layout,
no overlapping row range of the same source, no shared prompt, exact or near.

Both ``tzc_data.mixture`` (which refuses) and ``tzc-data verify`` (which lists every problem)
check builds by these rules, from the builds' prompt-hash and near-dup files, so they never disagree.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tzc_data.layout import RECORDS
from tzc_data.read.manifest import first_line, tokenizer_label
from tzc_data.text.minhash import RECORD as NEAR_RECORD
from tzc_data.text.minhash import NearDupIndex


def check_mixable(a: str, ma: dict[str, Any], b: str, mb: dict[str, Any]) -> list[str]:
    """Builds checked together are a mixture (``tzc_data.batches``): one tokenizer (a Gemma 2 and a
    Gemma 3 build hold ids of different vocabularies) and one record layout (``seq_len``)."""
    problems = []
    if ma["tokenizer"]["sha256"] != mb["tokenizer"]["sha256"]:
        problems.append(f"builds {a} and {b} were tokenized by different tokenizers ({tokenizer_label(ma)} and "
                        f"{tokenizer_label(mb)}): they cannot be mixed")
    if ma["config"]["seq_len"] != mb["config"]["seq_len"]:
        problems.append(f"builds {a} and {b} have seq_len {ma['config']['seq_len']} and {mb['config']['seq_len']}: "
                        "their packed rows differ in layout, they cannot be mixed")
    return problems


def check_disjoint(a: str, ma: dict[str, Any], ha: np.ndarray | None,
                   b: str, mb: dict[str, Any], hb: np.ndarray | None, *, near_a: np.ndarray | None = None,
                   near_b: np.ndarray | None = None, unchecked: list[str] | None = None) -> list[str]:
    """Row ranges of the same source must not overlap, and no kept prompt may be in both builds,
    exactly or nearly. Near duplicates are compared on each build's ``near_dup.bin``, or on
    ``near_a``/``near_b`` (the records of its decoded prompts) for a build without one; when a
    build has neither, that is a problem (or, with ``unchecked``, a note appended there)."""
    from tzc_data.sources import source_identity  # here: the loaders import no source reader

    problems = []
    if source_identity(ma["source"]) == source_identity(mb["source"]):
        low = max(ma["range"]["start"], mb["range"]["start"])
        high = min(ma["range"]["stop"], mb["range"]["stop"])
        if low < high:
            problems.append(f"builds {a} and {b}: row ranges overlap at rows {low}:{high} of the same source")
    try:
        problems += _near_duplicates_across(a, ma, b, mb, near_a, near_b, unchecked)
    except (OSError, ValueError) as err:
        problems.append(f"builds {a} and {b}: near-duplicate signatures cannot be compared ({first_line(err)})")
    if ha is not None and hb is not None:
        shared = np.intersect1d(ha, hb)
        if len(shared):
            examples = ", ".join(_describe_shared(h.ljust(16, b"\0").hex(), a, b) for h in shared[:3].tolist())
            problems.append(f"builds {a} and {b} share {len(shared)} prompt hashes, e.g. {examples}")
    return problems


def _near_duplicates_across(a: str, ma: dict[str, Any], b: str, mb: dict[str, Any], near_a: np.ndarray | None,
                            near_b: np.ndarray | None, unchecked: list[str] | None) -> list[str]:
    """Prompts of ``b`` that are near-duplicates of prompts kept in ``a``: on the stored keys, or on
    those of the decoded prompts; a build with neither is said, never passed in silence."""
    keys = []
    for build, manifest, decoded in ((a, ma, near_a), (b, mb, near_b)):
        if manifest.get("near_dup"):
            keys.append(np.fromfile(os.path.join(build, manifest["near_dup"]["file"]), dtype=NEAR_RECORD))
        elif decoded is not None:
            keys.append(decoded)
        else:
            note = (f"builds {a} and {b}: near-duplicate prompts were not checked: {build} has no near-dup keys "
                    f"(built with --no-near-dup) and its prompts were not decoded (tzc-data verify {a} {b} "
                    "decodes them)")
            if unchecked is None:
                return [note]
            unchecked.append(note)
            return []
    index = NearDupIndex(min(m["near_dup"]["threshold"] if m.get("near_dup")
                             else m["config"].get("near_dup_threshold", 0.8) for m in (ma, mb)))
    index.add_many(keys[0]["bands"], keys[0]["sketch"], keys[0]["row"].tolist())
    found = []
    for record in keys[1]:
        twin = index.find(record["bands"], record["sketch"])
        if twin is not None:
            found.append(f"row {twin[0]} in {a} ~ row {int(record['row'])} in {b} (Jaccard ~{twin[1]:.2f})")
    if not found:
        return []
    return [f"builds {a} and {b} share {len(found)} near-duplicate prompts (exact ones included), "
            f"e.g. {', '.join(found[:3])}"]


def _describe_shared(digest: str, a: str, b: str) -> str:
    import pyarrow as pa  # here: the loaders import no Arrow until they read a stats file
    import pyarrow.parquet as pq

    rows = []
    for build in (a, b):
        try:
            table = pq.read_table(os.path.join(build, RECORDS), columns=["row", "status", "prompt_hash"],
                                  filters=[("prompt_hash", "=", digest), ("status", "=", "kept")])
            hit = table.column("row").to_pylist()
        except (OSError, pa.ArrowException, ValueError):
            hit = []
        rows.append(str(hit[0]) if hit else "?")
    return f"{digest} (row {rows[0]} in {a}, row {rows[1]} in {b})"
