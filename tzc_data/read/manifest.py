"""A build's manifest and stats files, read and checked before anything trusts them.

:func:`read_manifest` refuses, in one line, a manifest that is not JSON, is of a format this code
does not read, or lacks a key or type any reader relies on (:func:`check_manifest` lists them all);
:func:`read_stats` refuses a stats file that is not the Parquet table its readers expect.
"""

from __future__ import annotations

import json
import os
from typing import Any

from tzc_data.errors import ConfigError, OutputError
from tzc_data.files import MANIFEST
from tzc_data.layout import FORMAT_VERSIONS, PACKS, RECORDS

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


# The columns a reader of the whole file relies on (explain, inspect): another file in its place is refused.
_NEEDED = {RECORDS: ("row", "status", "detail"), PACKS: ("split", "shard", "index", "rows"),
           "rejected/rejected.parquet": ("row",)}


def read_stats(directory: str | os.PathLike, name: str, columns: list[str] | None = None, *,
               manifest: dict[str, Any] | None = None):
    """One of the build's Parquet files (``stats/records.parquet``, ``stats/packs.parquet``,
    ``rejected/rejected.parquet``) as a Polars DataFrame, checked against the manifest's sha256;
    a missing, changed or unreadable file raises :class:`OutputError` naming it."""
    import polars as pl

    from tzc_data.files import sha256_file

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
        raise OutputError(f"{path} cannot be read as Parquet ({first_line(err)})") from None


def first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:200]


def utf8_path(path: str, what: str = "build") -> str:
    """``path`` as it is, or :class:`ConfigError` when it holds bytes that are not UTF-8 (surrogate
    escapes): the shard reader takes only UTF-8 paths, and a build records its paths as text."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = repr(path.encode("utf-8", "surrogateescape"))[1:]
        raise ConfigError(f"{what} {shown} is not valid UTF-8: paths must be valid UTF-8") from None
    return path
