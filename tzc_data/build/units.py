"""A build's units on disk: what the row stage wrote for one unit, and the marker that says it is done.

A source cuts the build's range into units (a Parquet row group, a block of JSONL lines, a slice
of the synthetic source: see ``tzc_data/sources``). The row stage turns one unit into three
files in the staging directory's ``.units/`` folder::

    u000042.arrow     one row per input row of the unit: its stats, and for each row that passed
                      the per-row stages its dedup keys (prompt hash, LSH bands, sketch); an Arrow
                      IPC file, which the serial passes map and read four times a unit
    u000042.tokens    int32 tokens of those rows, one after the other, in row order
    u000042.json      the done-marker, written last: the unit, its counts, each file's size and
                      xxh3-128 digest, and the marker's own digest

A unit is done exactly when its marker is there; a resumed build runs the units without one, and
refuses one whose files are not what its marker recorded (a staging folder damaged by hand or by
a failing disk gives wrong bytes otherwise). ``plan.json``, written before the first unit, holds
what the units were made from (config, source, tokenizer) and the plan itself: a resume with
other inputs is refused, never mixed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import xxhash

from tzc_data import files
from tzc_data.errors import ConfigError, OutputError

UNITS_DIR = files.UNITS_DIR
PLAN = "plan.json"
# Options that only the steps after the map read (the guardrail, the shards): a resume may change them.
AFTER_MAP = ("min_kept_ratio", "rows_per_shard", "compression")


@dataclass(frozen=True, kw_only=True)
class UnitDone:
    """What a finished unit's marker records."""

    index: int
    start: int
    stop: int
    counts: dict[str, int]  # status -> rows, before dedup (a row kept here may still be a duplicate)
    candidates: int  # rows that passed every per-row stage: they are in the tokens file
    tokens: int  # tokens in the tokens file
    files: dict[str, list]  # name -> [bytes, xxh3-128]


def folder(staging: str) -> str:
    return os.path.join(staging, UNITS_DIR)


def table_path(staging: str, index: int) -> str:
    return os.path.join(staging, UNITS_DIR, f"u{index:06d}.arrow")


def tokens_path(staging: str, index: int) -> str:
    return os.path.join(staging, UNITS_DIR, f"u{index:06d}.tokens")


def _marker_path(staging: str, index: int) -> str:
    return os.path.join(staging, UNITS_DIR, f"u{index:06d}.json")


def _digest(body: dict[str, Any]) -> str:
    return xxhash.xxh3_128_hexdigest(json.dumps(body, sort_keys=True).encode())


def finished(staging: str, *, index: int, start: int, stop: int, counts: dict[str, int], candidates: int,
             tokens: int) -> UnitDone:
    """Unit ``index``'s marker once its table and tokens files are in place (not yet written: see
    :func:`write_markers`)."""
    recorded = {os.path.basename(p): [os.path.getsize(p), files.file_digest(p)]
                for p in (table_path(staging, index), tokens_path(staging, index))}
    return UnitDone(index=index, start=start, stop=stop, counts=dict(sorted(counts.items())), candidates=candidates,
                    tokens=tokens, files=recorded)


def write_markers(staging: str, done: Sequence[UnitDone]) -> None:
    """Write the markers of finished units, durably and after their files: sync the file system
    (the units' files, written without an fsync each), write the markers under temporary names,
    sync again, rename them into place. A crash anywhere leaves each unit either with a marker
    whose files are on disk, or without one (it runs again). One unit's three fsyncs cost about
    30 ms here; the build writes markers in batches (:func:`tzc_data.build.pipeline.build`)."""
    if not done:
        return
    where = folder(staging)
    files.sync_folder(where)
    written = []
    try:
        for unit in done:
            body = unit.__dict__.copy()
            path = _marker_path(staging, unit.index)
            temporary = os.path.join(where, f".{os.path.basename(path)}.tzc-tmp-{os.getpid()}")
            written.append((temporary, path))
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump({**body, "digest": _digest(body)}, handle, sort_keys=True)
        files.sync_folder(where)
        for temporary, path in written:
            os.replace(temporary, path)
    except BaseException:
        for temporary, _ in written:
            if os.path.lexists(temporary):
                os.remove(temporary)
        raise


def read_done(staging: str, index: int, start: int, stop: int) -> UnitDone | None:
    """Unit ``index``'s marker, checked against the plan and its files; None when it has none."""
    path = _marker_path(staging, index)
    if not os.path.exists(path):
        return None
    damaged = f"cannot resume: {{}} is not what the done-marker {path} recorded; the staging folder is damaged: " \
              "run without --resume to start over"
    try:
        with open(path, encoding="utf-8") as handle:
            body = json.load(handle)
        digest = body.pop("digest")
        done = UnitDone(**body)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        raise OutputError(damaged.format("the marker itself")) from None
    if digest != _digest(body) or (done.index, done.start, done.stop) != (index, start, stop):
        raise OutputError(damaged.format("the marker itself"))
    expected = {os.path.basename(table_path(staging, index)), os.path.basename(tokens_path(staging, index))}
    if set(done.files) != expected:  # an older tzc's unit files (Parquet tables): not what this one reads
        raise OutputError(f"cannot resume: the units in {folder(staging)} were written by another version of tzc "
                          f"({', '.join(sorted(done.files))}); run without --resume to start over")
    for name, (size, digest) in sorted(done.files.items()):
        full = os.path.join(folder(staging), name)
        if not os.path.isfile(full) or os.path.getsize(full) != size or files.file_digest(full) != digest:
            raise OutputError(damaged.format(full))
    return done


def start_plan(staging: str, identity: dict[str, Any], plan: Sequence[tuple[int, int]], *, resume: bool,
               stamp: Any = None) -> None:
    """Record what the units are made of (a fresh build), or check it against the interrupted
    build's record (``resume``): other inputs or options, or a source file changed since (its
    ``stamp``, see ``Source.resume_stamp``), are refused, naming the first difference."""
    path = os.path.join(folder(staging), PLAN)
    record = json.loads(json.dumps({"identity": identity, "units": [list(u) for u in plan], "stamp": stamp}))
    if resume and os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as handle:
                found = json.load(handle)
        except (OSError, ValueError):
            raise OutputError(f"cannot resume: {path} is damaged; run without --resume to start over") from None
        if _comparable(found) != _comparable(record):
            raise ConfigError(f"the interrupted build in {staging} was made from other inputs or options "
                              f"({_difference(found, record)}); run without --resume to start over")
        return
    os.makedirs(folder(staging), exist_ok=True)
    with files.atomic_open(path, encoding="utf-8") as handle:
        json.dump(record, handle, sort_keys=True)


def _comparable(record: Any) -> Any:
    """A plan record without the options a resume may change (:data:`AFTER_MAP`)."""
    if not isinstance(record, dict) or not isinstance(record.get("identity"), dict) \
            or not isinstance(record["identity"].get("config"), dict):
        return record
    config = {k: v for k, v in record["identity"]["config"].items() if k not in AFTER_MAP}
    return {**record, "identity": {**record["identity"], "config": config}}


def _difference(found: Any, record: dict[str, Any]) -> str:
    """The first difference between an interrupted build's plan record and this build's, in words."""
    if not isinstance(found, dict):
        return "its plan.json is not a record"
    found, record = _comparable(found), _comparable(record)
    if found.get("identity") == record["identity"] and found.get("units") == record["units"]:
        files_now = record["identity"].get("source", {}).get("files") or []
        for k, (before, now) in enumerate(zip(found.get("stamp") or [], record["stamp"] or [])):
            if before != now and k < len(files_now):
                return f"the source file {files_now[k]['path']} changed since: its size or modification time"
        return "a source file changed since"
    where = _first_difference(found.get("identity"), record["identity"], "")
    if where is None:
        return "the source's units differ"
    key, before, now = where
    identity = found.get("identity") if isinstance(found.get("identity"), dict) else {}
    if key in ("config.start", "config.stop"):
        config = identity.get("config") or {}
        return (f"--range was {config.get('start')}:{config.get('stop')}, now {record['identity']['config']['start']}:"
                f"{record['identity']['config']['stop']}")
    if key.startswith("source") and isinstance(identity.get("source"), dict):
        from tzc_data.sources import changed_since

        why = changed_since(identity["source"], record["identity"]["source"])
        if why:
            return f"the source changed since: {why}"
    if key.startswith("excluded["):
        path = record["identity"]["excluded"][int(key[len("excluded["):].split("]")[0])]["path"]
        return f"--exclude {path} changed since (it was rebuilt: its prompt hashes or near-dup keys differ)"
    if key == "config.max_tokens" and identity.get("config", {}).get("seq_len") != record["identity"]["config"].get(
            "seq_len"):  # --max-tokens defaults to --seq-len, and sorts first: name the option that changed
        key, before, now = "config.seq_len", identity["config"].get("seq_len"), record["identity"]["config"]["seq_len"]
    if key.startswith("config.") and key.count(".") == 1 and "[" not in key:
        key = "--" + key.removeprefix("config.").replace("_", "-")  # the option, as the user wrote it
    return f"{key} was {before!r}, now {now!r}"


def _first_difference(before: Any, now: Any, key: str) -> tuple[str, Any, Any] | None:
    """(dotted key, old value, new value) of the first leaf where two JSON values differ, or None."""
    if isinstance(before, dict) and isinstance(now, dict):
        for name in sorted(set(before) | set(now)):
            found = _first_difference(before.get(name), now.get(name), f"{key}.{name}" if key else name)
            if found:
                return found
        return None
    if isinstance(before, list) and isinstance(now, list) and len(before) == len(now):
        for k, (a, b) in enumerate(zip(before, now)):
            found = _first_difference(a, b, f"{key}[{k}]")
            if found:
                return found
        return None
    return None if before == now else (key, before, now)
