"""The build, end to end. This is the one place that knows the order of the stages.

    read ─ hash prompt ─ excluded builds ─ split <think> ─ quality filters (language, repetition)
         ─ format checks ─ tokenize ─ length bound ─ exact dedup ─ near dedup
         ─ spool (train / eval by hash) ─┐
                                   └─ best-fit-decreasing per split ─ shards, stats, hashes, manifest

Exact and near dedup come after every other check so that the first *kept* occurrence wins
(a duplicate of a row that was later dropped for a loop is not lost with it). Each stage yields
every example, dropped or not, so the stats have one row per input row, in order.

Output is staged in a hidden sibling directory and renamed into place only when the manifest,
written last, is complete: a build that dies leaves no directory that looks finished. Every
``checkpoint_every`` rows the staging directory holds a checkpoint (closed stats parts, the sizes of
the append-only spool files, the counts, the next row); ``--resume`` truncates back to it and
continues, and the result is byte-identical to an uninterrupted build.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import xxhash
from tqdm import tqdm

from tzc_data import __version__, files
from tzc_data.config import BuildConfig
from tzc_data.dedupe import ExactIndex, drop_duplicates, drop_excluded, hash_prompts, split_of
from tzc_data.errors import ConfigError, GuardrailError, OutputError
from tzc_data.load import read_manifest
from tzc_data.filters import EnglishFilter, Filter, LengthFilter, RepetitionFilter, apply_filters
from tzc_data.format import format_examples, split_examples
from tzc_data.minhash import NearDupIndex, drop_near_duplicates
from tzc_data.pack import Spool, best_fit_decreasing, placement, rows_lower_bound
from tzc_data.read import Source, open_source, read, source_identity
from tzc_data.record import KEPT, REASONS, Example
from tzc_data.tokenize import Tokenizer, load_tokenizer, sha256_file, tokenize
from tzc_data.workers import ordered_chunks
from tzc_data.write import (MANIFEST, REJECTED_DIR, SHARD_DIR, STATS_DIR, RecordStats, RejectedRows, read_hashes,
                            record_layout, write_hashes, write_manifest, write_pack_stats, write_shards)

FORMAT_VERSION = 1


def build_filters(config: BuildConfig) -> list[Filter]:
    """The quality filters that run on the split text, in order."""
    filters: list[Filter] = []
    if config.language_filter:  # first: cheap, and a foreign trace is "non_english" whatever else it is
        filters.append(EnglishFilter(min_score=config.min_english_score))
    if config.loop_filter:
        filters.append(RepetitionFilter(
            tail_repeats=config.loop_min_repeats, tail_chars=config.loop_min_chars,
            cycle_repeats=config.loop_min_cycle_repeats, run_copies=config.loop_min_run,
            paragraph_repeats=config.max_paragraph_repeats, sentence_repeats=config.max_sentence_repeats,
            repeated_share=config.min_repeated_share,
            ngram_dup_share=config.max_ngram_dup_share, ngram_top_share=config.max_ngram_top_share,
            min_compression=config.min_compression_ratio))
    return filters


def row_stages(examples: Iterable[Example], config: BuildConfig, tokenizer: Tokenizer, quality: list[Filter],
               excluded: dict[bytes, str]) -> Iterator[Example]:
    """The per-row stages: each looks at one example at a time (``--workers`` runs them in processes)."""
    examples = hash_prompts(examples)
    examples = drop_excluded(examples, excluded)
    examples = split_examples(examples, keep_response=config.keep_rejected)
    examples = apply_filters(examples, quality)
    examples = format_examples(examples)
    examples = tokenize(examples, tokenizer)
    return apply_filters(examples, [LengthFilter(config.token_limit, config.min_answer_tokens,
                                                 config.min_reasoning_tokens)])


def dedup_stages(examples: Iterable[Example], config: BuildConfig, index: ExactIndex,
                 near: NearDupIndex | None = None) -> Iterator[Example]:
    """The stages that depend on every row before (first kept occurrence wins): in order, in one
    process. With near dedup on, one stage runs both checks (a prompt enters the exact index only
    once near dedup has kept it too)."""
    if near is not None:
        return drop_near_duplicates(examples, near, exact=index if config.dedup else None)
    if config.dedup:
        return drop_duplicates(examples, index)
    return examples


_WORKER: dict[str, Any] = {}  # a worker process's source, tokenizer and filters (``--workers``)


def _worker_setup(source: Source, config: BuildConfig, tokenizer_path: str, excluded: dict[bytes, str]) -> None:
    _WORKER.update(source=source, config=config, excluded=excluded, quality=build_filters(config),
                   tokenizer=load_tokenizer(tokenizer_path, system=config.system))


def _worker_rows(start: int, stop: int) -> list[Example]:
    """Rows ``[start, stop)`` through :func:`row_stages` (tokens are ``array('i')``, cheap to pickle)."""
    w = _WORKER
    return list(row_stages(read(w["source"], start, stop), w["config"], w["tokenizer"], w["quality"], w["excluded"]))


def _per_row(source: Source, start: int, config: BuildConfig, tokenizer: Tokenizer, quality: list[Filter],
             excluded: dict[bytes, str]) -> Iterator[Example]:
    if start >= config.stop:
        return iter(())
    if config.workers == 1:
        return row_stages(read(source, start, config.stop), config, tokenizer, quality, excluded)
    return ordered_chunks(_worker_rows, start, config.stop, workers=config.workers, setup=_worker_setup,
                          setup_args=(source, config, tokenizer.path, excluded))


def staging_path(out: str) -> str:
    """The hidden sibling a build into ``out`` is written in before it is renamed into place."""
    return os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.tzc-partial")


def _check_output(out: str, overwrite: bool) -> None:
    """Refuse an ``--out`` that a build may not write: a symlink, a file, a non-empty folder that
    is not provably a tzc build, a build without ``--overwrite``; and a leftover replaced build
    (``.NAME.tzc-partial.old``) that is not a build."""
    if os.path.islink(out):
        raise OutputError(f"--out {out} is a symlink; give the directory itself ({os.path.realpath(out)})")
    parent = os.path.dirname(out)
    if os.path.lexists(parent) and not os.path.isdir(parent):
        raise OutputError(f"--out {out}: {parent} is not a directory")
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


def _remove_replaced(staging: str) -> str:
    """Remove the build an earlier ``--overwrite`` renamed aside, if one was killed before it was
    gone (it is still provably a build: its manifest goes last); returns its path."""
    old = f"{staging}.old"
    if os.path.isdir(old) and not os.path.islink(old) and not os.listdir(old):
        os.rmdir(old)  # killed just before its last step
    elif os.path.lexists(old):
        files.remove_build(old)
    return old


def _publish(staging: str, out: str, overwrite: bool) -> None:
    """Rename the finished staging directory to ``out``. A build already there (``--overwrite``)
    is first renamed aside and removed only after the new one is in place, file by file."""
    stray = files.not_a_build(staging)
    if stray and os.path.isfile(os.path.join(staging, MANIFEST)):
        raise OutputError(f"the finished build in {staging} is not publishable: {stray}; move that away and run "
                          "the same command with --resume")
    old = _remove_replaced(staging)
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


def _guardrail(counts: Counter, read_rows: int, config: BuildConfig) -> None:
    kept = counts[KEPT]
    if read_rows and kept / read_rows < config.min_kept_ratio:
        drops = [(reason, n) for reason, n in counts.most_common() if reason != KEPT]
        worst, worst_count = drops[0]
        listing = ", ".join(f"{reason} {n:,}" for reason, n in drops[:4])
        raise GuardrailError(
            f"only {kept:,} of {read_rows:,} rows kept ({kept / read_rows:.1%} < --min-kept-ratio "
            f"{config.min_kept_ratio}); most were dropped as {worst!r} ({worst_count:,}: {REASONS[worst][0]}), "
            f"controlled by {REASONS[worst][1]}. Drops: {listing}"
        )


def load_excluded(config: BuildConfig, source: Source, near: NearDupIndex | None) -> dict[bytes, str]:
    """Prompt hashes of the builds given to ``--exclude`` (and their near-dup signatures, into
    ``near``); refuses a build whose rows overlap ours."""
    here = source_identity(source.describe())
    excluded: dict[bytes, str] = {}
    for path in config.exclude:
        manifest = read_manifest(path)
        other = manifest["range"]
        if source_identity(manifest["source"]) == here:
            low, high = max(other["start"], config.start), min(other["stop"], config.stop)
            if low < high:
                raise ConfigError(f"--exclude {path}: its rows {other['start']}:{other['stop']} overlap this build's "
                                  f"{config.start}:{config.stop} at rows {low}:{high} of the same source")
        try:
            hashes = read_hashes(path, manifest["hashes"])
        except (OSError, KeyError, ValueError) as err:
            raise ConfigError(f"--exclude {path}: cannot use its prompt hashes ({err})") from None
        raw = hashes.tobytes()
        for at in range(0, len(raw), 16):
            excluded.setdefault(raw[at:at + 16], path)
        if near is not None and manifest.get("near_dup"):
            entry = manifest["near_dup"]
            near_path = os.path.join(path, entry["file"])
            if sha256_file(near_path) != entry["sha256"]:
                raise ConfigError(f"--exclude {path}: {entry['file']} does not match the sha256 in its manifest")
            near.load(near_path, label=path)
    return excluded


CHECKPOINT = ".checkpoint.json"
NEAR_DUP = "near_dup.bin"


def _identity(config: BuildConfig, source: Source, tokenizer: Tokenizer) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed."""
    return {"config": config.recorded(), "source": source.describe(), "tokenizer": tokenizer.sha256}


def _read_checkpoint(staging: str, identity: dict[str, Any], start: int) -> dict[str, Any] | None:
    """The staging directory's checkpoint, checked: its own digest (a checkpoint edited by hand is
    refused), its fields, that it is of these inputs and options, and that its counts add up."""
    path = os.path.join(staging, CHECKPOINT)
    if not os.path.exists(path):
        return None
    damaged = OutputError(f"the checkpoint {path} is damaged; run without --resume to start over")
    try:
        with open(path, encoding="utf-8") as handle:
            checkpoint = json.load(handle)
        body = {k: v for k, v in checkpoint.items() if k != "digest"}
        if checkpoint.get("digest") != _checkpoint_digest(body):
            raise damaged
        made = checkpoint["identity"]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise damaged from None
    if made != json.loads(json.dumps(identity)):
        raise ConfigError(f"the interrupted build in {staging} was made from other inputs or options; "
                          "run without --resume to start over")
    if sum(checkpoint["counts"].values()) != checkpoint["next_row"] - start:
        raise damaged
    return checkpoint


def _checkpoint_digest(body: dict[str, Any]) -> str:
    return xxhash.xxh3_128_hexdigest(json.dumps(body, sort_keys=True).encode())


def _write_checkpoint(staging: str, checkpoint: dict[str, Any]) -> None:
    """Atomically: a reader sees the previous checkpoint or this one, never half of one."""
    path = os.path.join(staging, CHECKPOINT)
    with files.atomic_open(path, encoding="utf-8") as handle:
        json.dump({**checkpoint, "digest": _checkpoint_digest(checkpoint)}, handle, sort_keys=True)


def peak_rss_kib() -> int:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over an
    exec, so a build started by a big parent would report the parent's peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def build(config: BuildConfig, *, source: Source | None = None, tokenizer: Tokenizer | None = None,
          progress: bool | None = None) -> dict[str, Any]:
    """Run the build; returns the manifest plus a ``run`` section (timings, peak memory).

    ``progress=None`` shows a bar only when stderr is a terminal. An interrupted build keeps its
    staging directory and checkpoints; ``config.resume`` continues from the last checkpoint, or
    only publishes when the build had finished writing. Errors of the file system (disk full,
    read-only, a path under a file) become one-line :class:`OutputError` s; the staging
    directory stays resumable.
    """
    out = os.path.abspath(config.out)
    staging = staging_path(out)
    published = config.resume and not os.path.lexists(staging) and files.not_a_build(out) is None
    if not published:  # checked before the source and tokenizer load, to fail fast
        _check_output(out, config.overwrite)
    started = time.perf_counter()
    source = source or open_source(config.source, revision=config.revision, seed=config.seed)
    source.check_range(config.start, config.stop)  # before a row is read: a range past the end fails now
    tokenizer = tokenizer or load_tokenizer(config.tokenizer, system=config.system)
    identity = _identity(config, source, tokenizer)
    if published:
        if _finished_as(out, identity, other_ok=True):  # killed after its rename into place: done
            manifest = read_manifest(out)
            _remove_replaced(staging)
            manifest["run"] = _run_figures(started, manifest, None, 0)
            return manifest
        _check_output(out, config.overwrite)
    near = NearDupIndex(config.near_dup_threshold) if config.near_dup else None
    excluded = load_excluded(config, source, near)
    try:
        os.makedirs(os.path.dirname(out), exist_ok=True)
        lock = files.lock_staging(staging, config.out)
    except OSError as err:
        raise OutputError(_os_error_line(err, out, staging, resumable=False)) from None
    try:
        return _build_locked(config, out, staging, identity, source, tokenizer, near, excluded, started, progress)
    except OSError as err:
        raise OutputError(_os_error_line(err, out, staging, resumable=True)) from None
    finally:
        os.close(lock)


def _build_locked(config: BuildConfig, out: str, staging: str, identity: dict[str, Any], source: Source,
                  tokenizer: Tokenizer, near: NearDupIndex | None, excluded: dict[bytes, str], started: float,
                  progress: bool | None) -> dict[str, Any]:
    """:func:`build` once its staging directory is locked: resume or start over, write, publish."""
    manifest = _finished_as(staging, identity) if config.resume else None
    checkpoint = None
    index_bytes = 0
    if manifest is None:
        checkpoint = _read_checkpoint(staging, identity, config.start) if config.resume else None
        if checkpoint is None:
            files.clear_staging(staging)
        # Arrow's mimalloc pool kept the memory of every stats part and of the final merge: peak RSS
        # grew by about 1 KB per row (50,000 rows: 324 MiB, against 267 MiB with the system allocator).
        # tzc_data/__init__.py picks the system pool when it loads before Arrow; this covers the rest
        # of the build when Arrow was loaded first. A few tables at a time: the system pool costs nothing.
        arrow_pool = pa.default_memory_pool()
        pa.set_memory_pool(pa.system_memory_pool())
        try:
            manifest, index_bytes = _build_into(staging, config, source, tokenizer, excluded, near, identity,
                                                checkpoint, progress)
        except (GuardrailError, ConfigError):
            files.clear_staging(staging, keep=())  # finished, or never started: nothing to resume
            os.rmdir(staging)
            raise
        finally:
            pa.set_memory_pool(arrow_pool)
    files.remove_scratch(staging)
    _publish(staging, out, config.overwrite)
    manifest["run"] = _run_figures(started, manifest, checkpoint, index_bytes)
    if config.workers > 1:  # each worker process's own peak, on top of this process's
        manifest["run"]["workers"] = config.workers
        manifest["run"]["worker_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    return manifest


def _finished_as(directory: str, identity: dict[str, Any], *, other_ok: bool = False) -> dict[str, Any] | None:
    """The manifest in ``directory`` when it is a finished build of these inputs and options;
    None when there is none (or, with ``other_ok``, one of others); else ConfigError."""
    # In staging, the manifest is written last (through a temporary name): its presence means the
    # build is complete, whatever scratch files its clean-up had not removed yet.
    if not os.path.isfile(os.path.join(directory, MANIFEST)) or (other_ok and files.not_a_build(directory)):
        return None
    manifest = read_manifest(directory)
    made = {"config": manifest.get("config"), "source": manifest.get("source"),
            "tokenizer": (manifest.get("tokenizer") or {}).get("sha256")}
    if made != json.loads(json.dumps(identity)):
        if other_ok:
            return None
        raise ConfigError(f"the finished build in {directory} was made from other inputs or options; "
                          "run without --resume (and with --overwrite) to replace it")
    return manifest


def _run_figures(started: float, manifest: dict[str, Any], checkpoint: dict[str, Any] | None,
                 index_bytes: int) -> dict[str, Any]:
    elapsed = max(time.perf_counter() - started, 1e-9)
    return {
        "seconds": round(elapsed, 2),
        "resumed_at_row": checkpoint["next_row"] if checkpoint else None,
        "rows_per_second": round(manifest["counts"]["read"] / elapsed, 1),
        "tokens_per_second": round(manifest["packing"]["tokens"] / elapsed, 1),
        "peak_rss_mib": round(peak_rss_kib() / 1024, 1),
        "dedup_index_mib": round(index_bytes / 2**20, 1),  # exact + near-dup indexes: they grow with the range
    }


def _os_error_line(err: OSError, out: str, staging: str, *, resumable: bool) -> str:
    """One line for a file-system error while writing a build: the path, the cause, what next."""
    path = err.filename or staging
    cause = "no space left on the device" if err.errno == errno.ENOSPC else (err.strerror or str(err))
    hint = (f"; {staging} keeps the last checkpoint: fix the cause and run the same command with --resume"
            if resumable and os.path.isdir(staging) else "")
    return f"cannot write the build for --out {out}: {path}: {cause}{hint}"


def _build_into(staging: str, config: BuildConfig, source: Source, tokenizer: Tokenizer,
                excluded: dict[bytes, str], near: NearDupIndex | None, identity: dict[str, Any],
                checkpoint: dict[str, Any] | None, progress: bool | None) -> tuple[dict[str, Any], int]:
    quality = build_filters(config)
    score_names = [name for f in quality for name in f.score_names] + (["near_dup_jaccard"] if near else [])
    near_journal = os.path.join(staging, ".near_dup.journal")
    if near is not None:
        near.attach_journal(near_journal, resume_at=checkpoint["near_dup"][0] if checkpoint else None,
                            digest=checkpoint["near_dup"][1] if checkpoint else None)
    stats = RecordStats(os.path.join(staging, STATS_DIR), score_names, chunk_rows=config.checkpoint_every,
                        resume_parts=checkpoint["parts"] if checkpoint else None)
    rejected = RejectedRows(os.path.join(staging, REJECTED_DIR), score_names,
                            resume_parts=checkpoint["rejected_parts"] if checkpoint else None) \
        if config.keep_rejected else None
    spool = Spool(staging, resume_at=tuple(checkpoint["spool"]) if checkpoint else None)
    counts: Counter = Counter(checkpoint["counts"] if checkpoint else {})
    index = ExactIndex()
    for k in range(len(spool)):
        index.add(bytes(spool.hashes[16 * k:16 * k + 16]), spool.rows[k])
    next_row = checkpoint["next_row"] if checkpoint else config.start

    def save(next_row: int) -> None:
        if rejected:
            rejected.parts.flush()
        near_size = near.sync(next_row) if near else 0
        _write_checkpoint(staging, {"identity": identity, "next_row": next_row, "counts": dict(counts),
                                    "parts": stats.parts.digests, "spool": list(spool.sync()),
                                    "rejected_parts": rejected.parts.digests if rejected else [],
                                    "near_dup": [near_size, near.journal_digest(near_size) if near else None]})

    total = config.stop - config.start
    bar = tqdm(total=total, initial=next_row - config.start, unit="row", file=sys.stderr, mininterval=0.5,
               disable=None if progress is None else not progress, smoothing=0.1, desc="build")
    # Without a terminal (CI logs, nohup) a line every 30 s still shows that a long build is alive.
    log_lines = progress is None and bar.disable and total >= 50_000
    next_log = time.perf_counter() + 30
    examples = _per_row(source, next_row, config, tokenizer, quality, excluded)
    examples = dedup_stages(examples, config, index, near)
    for n, example in enumerate(examples, next_row - config.start + 1):
        counts[example.status] += 1
        chunk_done = stats.add(example)
        if rejected is not None and not example.kept:
            rejected.add(example)
        if example.kept:
            spool.add(example.row, example.tokens, example.prompt_tokens,
                      split_of(example.prompt_hash, config.eval_fraction), example.prompt_hash)
        if chunk_done:
            save(example.row + 1)
        if n % 256 == 0:
            bar.update(256)
            bar.set_postfix(kept=counts[KEPT], dropped=n - counts[KEPT], refresh=False)
            if log_lines and time.perf_counter() >= next_log:
                next_log += 30
                print(f"tzc-data: {n:,}/{total:,} rows, kept {counts[KEPT]:,}, dropped {n - counts[KEPT]:,}",
                      file=sys.stderr, flush=True)
    bar.update(total - bar.n)
    bar.close()
    stats.parts.flush()
    save(config.stop)
    read_rows = sum(counts.values())
    _guardrail(counts, read_rows, config)
    index_bytes = index.nbytes() + (near.nbytes() if near is not None else 0)
    near_entry = None
    if near is not None:
        near_entry = {"file": NEAR_DUP, "count": len(near) - near.excluded_count,
                      "threshold": config.near_dup_threshold,
                      "algorithm": "MinHash (rensa, 128 permutations, seed 20261125) of word 3-shingles of the "
                                   "normalised prompt; 16 LSH bands of 8 as 8-byte keys; 128-byte sketch"}
        near.close()  # the dedup indexes are done with: their memory goes before packing's comes
    del index, examples
    return _write_outputs(staging, config, source, tokenizer, excluded, spool, stats, rejected, near_entry,
                          counts), index_bytes


def _write_outputs(staging: str, config: BuildConfig, source: Source, tokenizer: Tokenizer,
                   excluded: dict[bytes, str], spool: Spool, stats: RecordStats, rejected: RejectedRows | None,
                   near_entry: dict[str, Any] | None, counts: Counter) -> dict[str, Any]:
    """Pack the spooled examples, write shards, hashes and stats, and the manifest last.

    Nothing the streaming stages left (spool, journals, parts, checkpoint) is removed here: a
    build killed at any point before the manifest resumes from its final checkpoint and redoes
    this, with the same bytes; the caller removes them once the manifest is written."""
    near_journal = os.path.join(staging, ".near_dup.journal")
    read_rows = sum(counts.values())
    seq_len = config.seq_len
    where = np.zeros((len(spool), 4), dtype=np.int32)  # split, shard, pack, segment of each kept example
    packs_by_split: dict[str, dict[str, np.ndarray]] = {}
    shards: list[dict[str, Any]] = []
    bound = 0
    for code, name in enumerate(config.split_names):
        items = spool.items(code)
        lengths = spool.lengths_of(items)
        bins = [items[members].tolist() for members in best_fit_decreasing(lengths, seq_len)]
        bound += rows_lower_bound(lengths, seq_len)
        where[items, 0] = code
        packs_by_split[name] = placement(bins, spool, seq_len, config.rows_per_shard, where[:, 1:])
        shards += write_shards(os.path.join(staging, SHARD_DIR), spool.read_rows(bins, seq_len), len(bins),
                               config.rows_per_shard, config.array_record_options, name)
    hashes = write_hashes(staging, spool.hashes)
    if near_entry is not None:  # a copy: until the manifest is written, a killed build resumes from the journal
        with files.atomic_path(os.path.join(staging, NEAR_DUP)) as temporary:
            shutil.copyfile(near_journal, temporary)
        near_entry["sha256"] = sha256_file(os.path.join(staging, NEAR_DUP))
    token_total, example_total = int(np.frombuffer(spool.lengths, dtype=np.int32).sum(dtype=np.int64)), len(spool)
    spool.close()
    records_path = stats.finish(where, config.split_names)
    packs_path = write_pack_stats(os.path.join(staging, STATS_DIR), packs_by_split)
    rejected_paths = [rejected.finish()] if rejected else []

    pack_rows = sum(len(p["shard"]) for p in packs_by_split.values())
    manifest = {
        "tzc_version": __version__,
        "format_version": FORMAT_VERSION,
        "source": source.describe(),
        "range": {"start": config.start, "stop": config.stop},
        "config": config.recorded(),
        "tokenizer": {"sha256": tokenizer.sha256, "vocab_size": tokenizer.sp.get_piece_size(),
                      "file": os.path.basename(tokenizer.path)},
        "counts": {"read": read_rows, "kept": counts[KEPT], "dropped": read_rows - counts[KEPT],
                   "by_status": dict(sorted(counts.items()))},
        "packing": {
            "algorithm": "best-fit-decreasing per split, offline over spooled examples",
            "seq_len": seq_len, "rows": pack_rows, "examples": example_total, "tokens": token_total,
            "loss_tokens": int(sum(p["loss_tokens"].sum() for p in packs_by_split.values())),
            "fill": round(token_total / (pack_rows * seq_len), 6) if pack_rows else 0.0,
            # No packing that keeps examples whole can use fewer rows than this, or fill more than this.
            "rows_lower_bound": bound,
            "fill_upper_bound": round(token_total / (bound * seq_len), 6) if bound else 0.0,
            "by_split": {name: {"rows": len(p["shard"]), "examples": int(p["segments"].sum()),
                                "tokens": int(p["tokens"].sum())} for name, p in packs_by_split.items()},
        },
        "record_layout": record_layout(seq_len),
        "splits": {name: [s["file"] for s in shards if s["split"] == name] for name in config.split_names},
        "shards": shards,
        "hashes": hashes,
        "near_dup": near_entry,
        "excluded": [{"path": path, "hashes": len([1 for b in excluded.values() if b == path])}
                     for path in config.exclude],
        "stats": {
            os.path.relpath(p, staging): {"sha256": sha256_file(p), "bytes": os.path.getsize(p)}
            for p in (records_path, packs_path, *rejected_paths)
        },
    }
    write_manifest(staging, manifest)
    return manifest
