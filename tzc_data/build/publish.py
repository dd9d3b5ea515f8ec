"""Publish: a build is written in a hidden staging folder beside ``--out`` and renamed into place
whole, so that ``--out`` holds either the old build or the new one, never part of one.

The rules that keep "never destroy what is not ours": an ``--out`` that is not provably a tzc
build (:mod:`tzc_data.files`) is refused before anything is written, a build replaced with
``--overwrite`` is renamed aside and removed only once the new one is in place, and a finished
staging folder is recognised by its manifest (written last) so that ``--resume`` only publishes it.
The guardrail (``--min-kept-ratio``) stops a build that kept too few rows before it is published.
"""

from __future__ import annotations

import errno
import json
import math
import os
from collections import Counter
from typing import Any

from tzc_data import files
from tzc_data.build.config import BuildConfig
from tzc_data.errors import ConfigError, GuardrailError, OutputError
from tzc_data.files import MANIFEST
from tzc_data.read.manifest import read_manifest
from tzc_data.record import KEPT, REASONS, controlled_by


def staging_path(out: str) -> str:
    """The hidden sibling a build into ``out`` is written in before it is renamed into place."""
    return os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.tzc-partial")


def check_output(out: str, overwrite: bool) -> None:
    """Refuse an ``--out`` that a build may not write: a symlink, a file, a non-empty folder that
    is not provably a tzc build, a build without ``--overwrite``; and a leftover replaced build
    (``.NAME.tzc-partial.old``) that is not a build."""
    if os.path.islink(out):
        raise OutputError(f"--out {out} is a symlink; give the directory itself ({os.path.realpath(out)})")
    parent = os.path.dirname(out)
    if os.path.lexists(parent) and not os.path.isdir(parent):
        raise OutputError(f"--out {out}: {parent} is not a directory")
    inside = os.path.lexists(parent) and files.enclosing_build(parent)
    if inside:
        raise OutputError(f"--out {out} is inside the tzc build {inside}; a build's folders hold only its own "
                          "files: write it elsewhere")
    old = staging_path(out) + ".old"
    if os.path.islink(old):
        raise OutputError(f"{old} is a symlink where tzc keeps a build it replaces; move it away")
    if os.path.lexists(old) and files.not_a_build(old) and not (os.path.isdir(old) and not os.listdir(old)):
        raise OutputError(f"{old} is left from an earlier replacement and is not a tzc build "
                          f"({files.not_a_build(old)}); move it away")
    if not os.path.lexists(out):
        return
    if not os.path.isdir(out):
        raise OutputError(f"--out {out} exists and is not a directory")
    if not os.listdir(out):
        return
    why = files.not_a_build(out)
    if why:
        raise OutputError(f"--out {out} exists, is not empty and is not a tzc build ({why}); choose another directory")
    if not overwrite:
        try:
            with open(os.path.join(out, MANIFEST), encoding="utf-8") as handle:
                old_manifest = json.load(handle)
            held = f"range {old_manifest['range']['start']}:{old_manifest['range']['stop']} of " \
                   f"{old_manifest['source'].get('kind')}"
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            held = "an unreadable manifest"
        raise OutputError(f"--out {out} already holds a build ({held}); pass --overwrite to replace it")


def remove_replaced(staging: str) -> str:
    """Remove the build an earlier ``--overwrite`` renamed aside, if one was killed before it was
    gone (it is still provably a build: its manifest goes last); returns its path."""
    old = f"{staging}.old"
    if os.path.isdir(old) and not os.path.islink(old) and not os.listdir(old):
        os.rmdir(old)  # killed just before its last step
    elif os.path.lexists(old):
        files.remove_build(old)
    return old


def publish(staging: str, out: str, overwrite: bool) -> None:
    """Rename the finished staging directory to ``out``. A build already there (``--overwrite``)
    is first renamed aside and removed only after the new one is in place, file by file."""
    stray = files.not_a_build(staging)
    if stray and os.path.isfile(os.path.join(staging, MANIFEST)):
        raise OutputError(f"the finished build in {staging} is not publishable: {stray}; move that away and run "
                          "the same command with --resume")
    old = remove_replaced(staging)
    if os.path.isdir(out) and not os.path.islink(out) and os.listdir(out):
        if not overwrite:
            raise OutputError(f"--out {out} now holds a build (written while this one ran); pass --overwrite "
                              "and --resume to replace it")
        why = files.not_a_build(out)
        if why:
            raise OutputError(f"--out {out} is no longer a tzc build ({why}: written while this build ran); "
                              f"nothing was replaced: move it away and run the same command with --resume")
        files.remove_marker(staging)
        os.rename(out, old)
        os.rename(staging, out)
        files.remove_build(old)
    else:  # absent, or an empty folder (which a rename replaces)
        files.remove_marker(staging)
        os.rename(staging, out)


def guardrail(counts: Counter, read_rows: int, config: BuildConfig) -> None:
    kept = counts[KEPT]
    if read_rows and kept / read_rows < config.min_kept_ratio:
        drops = [(reason, n) for reason, n in counts.most_common() if reason != KEPT]
        worst, worst_count = drops[0]
        listing = ", ".join(f"{reason} {n:,}" for reason, n in drops[:4])
        raise GuardrailError(
            f"only {kept:,} of {read_rows:,} rows kept ({kept / read_rows:.1%} < --min-kept-ratio "
            f"{config.min_kept_ratio}); most were dropped as {worst!r} ({worst_count:,}: {REASONS[worst][0]}), "
            f"{controlled_by(worst)}. Drops: {listing}"
            + (f". A length bound keeps fewer rows by design: if {kept / read_rows:.1%} is the share you expect, "
               f"say so with --min-kept-ratio {math.floor(1000 * kept / read_rows) / 1000:g}"
               if kept and worst in ("model_turn_too_long", "too_long") else "")
        )


def finished_as(directory: str, identity: dict[str, Any], *, other_ok: bool = False) -> dict[str, Any] | None:
    """The manifest in ``directory`` when it is a finished build of these inputs and options;
    None when there is none (or, with ``other_ok``, one of others); else ConfigError."""
    # In staging, the manifest is written last (through a temporary name): its presence means the
    # build is complete, whatever scratch files its clean-up had not removed yet.
    if not os.path.isfile(os.path.join(directory, MANIFEST)) or (other_ok and files.not_a_build(directory)):
        return None
    manifest = read_manifest(directory)
    made = {"config": manifest.get("config"), "source": manifest.get("source"),
            "tokenizer": (manifest.get("tokenizer") or {}).get("sha256")}
    if isinstance(manifest.get("decontamination"), dict):
        made["benchmarks"] = [{"path": b.get("path"), "sha256": b.get("sha256")}
                              for b in manifest["decontamination"].get("benchmarks") or []]
    if made != json.loads(json.dumps(identity)):
        if other_ok:
            return None
        raise ConfigError(f"the finished build in {directory} was made from other inputs or options; "
                          "run without --resume (and with --overwrite) to replace it")
    return manifest


def os_error_line(err: OSError, out: str, staging: str, *, resumable: bool) -> str:
    """One line for a file-system error while writing a build: the path, the cause, what next."""
    path = err.filename or staging
    cause = "no space left on the device" if err.errno == errno.ENOSPC else (err.strerror or str(err))
    hint = (f"; {staging} keeps the finished units: fix the cause and run the same command with --resume"
            if resumable and os.path.isdir(staging) else "")
    return f"cannot write the build for --out {out}: {path}: {cause}{hint}"
