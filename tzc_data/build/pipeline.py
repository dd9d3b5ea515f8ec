"""The build, end to end. This is the one place that knows the order of the stages.

    plan    the source cuts [start, stop) into units (row groups, blocks of lines): the data's
            pieces, the same for every engine and worker count    (tzc_data.sources, build.units)
    map     each unit through the per-row stages into its own files: read, hash, excluded
            builds, split <think>, quality filters, format, tokenize, length bound, MinHash
            keys; any engine, any order                            (build.rowstage, tzc_data.engines)
    dedup   exact and near dedup over the candidates' keys, in row order, in this process:
            first *kept* occurrence wins                           (build.dedup)
    pack    best-fit-decreasing per split over the kept lengths    (build.pack)
    write   shards, prompt hashes, near-dup keys, stats; the manifest last (build.write)
    publish rename the staging directory into place                (build.publish)

Dedup comes after every other check so that the first *kept* occurrence wins (a duplicate of a
row that was dropped for a loop is not lost with it); every input row has one stats row.

Output is staged in a hidden sibling directory and renamed into place only when the manifest,
written last, is complete: a build that dies leaves no directory that looks finished. A unit is
done when its marker is written (:mod:`tzc_data.build.units`); ``--resume`` runs the units without one
and redoes everything after the map, which is a pure function of the units' files, so the result
is byte-identical to an uninterrupted build, whatever engine or worker count ran which unit.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from tzc_data import __version__, files
from tzc_data.build import units
from tzc_data.build.config import BuildConfig
from tzc_data.build.dedup import Outcomes, final_batches, first_kept_wins, kept_examples, write_near_dup
from tzc_data.build.pack import Kept, packed_rows, placement, rows_lower_bound
from tzc_data.build.progress import progress_bar
from tzc_data.build.publish import (
    check_output,
    finished_as,
    guardrail,
    os_error_line,
    publish,
    remove_replaced,
    staging_path,
)
from tzc_data.build.rowstage import RowStage, score_names
from tzc_data.build.write import (
    REJECTED_BATCH,
    REJECTED_COLUMNS,
    TEXT_COLUMNS,
    ShardTask,
    shard_tasks,
    stats_schema,
    write_hashes,
    write_manifest,
    write_pack_stats,
    write_records,
    write_rejected,
    write_shard,
)
from tzc_data.engines import executor
from tzc_data.engines.base import Executor
from tzc_data.errors import ConfigError, GuardrailError, OutputError
from tzc_data.files import sha256_file
from tzc_data.layout import FORMAT_VERSION, NEAR_DUP, REJECTED_DIR, SHARD_DIR, STATS_DIR, read_hashes, record_layout
from tzc_data.process import not_reimported
from tzc_data.read.manifest import read_manifest
from tzc_data.record import KEPT
from tzc_data.sources import Source, Unit, open_source, source_identity
from tzc_data.text.decontaminate import BenchmarkIndex, benchmark_index
from tzc_data.text.decontaminate import report as contamination_report
from tzc_data.text.lengths import distribution, model_turn_counts
from tzc_data.text.minhash import NearDupIndex, outcome_reason
from tzc_data.text.tokenize import Tokenizer, load_tokenizer


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
        if near is None or not manifest.get("near_dup"):  # verify would then find the near duplicates kept
            why = ("with --no-near-dup, near duplicates of its prompts would be kept" if near is None else
                   "it has no near-dup keys (built with --no-near-dup), so near duplicates of its prompts cannot "
                   "be dropped")
            raise ConfigError(f"--exclude {path}: {why}, and tzc-data verify would report them; "
                              + ("leave near dedup on" if near is None else "rebuild it without --no-near-dup"))
        if near is not None and manifest.get("near_dup"):
            entry = manifest["near_dup"]
            near_path = os.path.join(path, entry["file"])
            if sha256_file(near_path) != entry["sha256"]:
                raise ConfigError(f"--exclude {path}: {entry['file']} does not match the sha256 in its manifest")
            near.load(near_path, label=path)
    return excluded


def _identity(config: BuildConfig, source: Source, tokenizer: Tokenizer,
              benchmarks: BenchmarkIndex | None = None) -> dict[str, Any]:
    """What the units of an interrupted build must have been made from to be resumed (a benchmark
    file of --decontaminate changed since is another input)."""
    identity = {"config": config.recorded(), "source": source.describe(), "tokenizer": tokenizer.sha256}
    if benchmarks is not None:
        identity["benchmarks"] = benchmarks.sha256s()
    return identity


def _plan_identity(identity: dict[str, Any], config: BuildConfig) -> dict[str, Any]:
    """:func:`_identity` and, with ``--exclude``, what each excluded build holds (the sha256 of its
    prompt hashes and near-dup keys, from its manifest): the units drop its prompts, so a build
    rebuilt in place since must not be resumed from them (its path alone is the same)."""
    if not config.exclude:
        return identity
    held = []
    for path in config.exclude:
        manifest = read_manifest(path)
        held.append({"path": path, "hashes_sha256": (manifest.get("hashes") or {}).get("sha256"),
                     "near_dup_sha256": (manifest.get("near_dup") or {}).get("sha256")})
    return {**identity, "excluded": held}


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
    staging directory and its finished units; ``config.resume`` runs the units left, or only
    publishes when the build had finished writing. Errors of the file system (disk full,
    read-only, a path under a file) become one-line :class:`OutputError` s; the staging
    directory stays resumable. With ``--engine processes`` a script that calls this must do so
    under ``if __name__ == "__main__":`` (each spawned worker runs the script again); one that
    does not fails in one line (:func:`~tzc_data.process.not_reimported`).
    """
    not_reimported()  # a spawned worker running the caller's script again: one line, before anything
    out = os.path.abspath(config.out)
    staging = staging_path(out)
    published = config.resume and not os.path.lexists(staging) and files.not_a_build(out) is None
    if not published:  # checked before the source and tokenizer load, to fail fast
        check_output(out, config.overwrite)
    started = time.perf_counter()
    source = source or open_source(config.source, revision=config.revision, seed=config.seed, format=config.format,
                                   dataset=config.dataset, split=config.hub_split)
    for folder in source.folders():
        if os.path.commonpath([os.path.realpath(out), folder]) == folder:
            raise OutputError(f"--out {config.out} is inside the source folder {folder}: the build would be read "
                              "as a source next time; write it elsewhere")
    planned = source.plan(config.start, config.stop)  # before a row is read: a range past the end fails now
    tokenizer = tokenizer or load_tokenizer(config.tokenizer, system=config.system)
    benchmarks = benchmark_index(config.decontaminate, config.decontaminate_ngram) if config.decontaminate else None
    identity = _identity(config, source, tokenizer, benchmarks)
    if published:
        if finished_as(out, identity, other_ok=True):  # killed after its rename into place: done
            manifest = read_manifest(out)
            remove_replaced(staging)
            manifest["run"] = _run_figures(started, manifest, 0, 0)
            return manifest
        check_output(out, config.overwrite)
    near = NearDupIndex(config.near_dup_threshold) if config.near_dup else None
    excluded = load_excluded(config, source, near)
    try:
        os.makedirs(os.path.dirname(out), exist_ok=True)
        lock = files.lock_staging(staging, config.out)
    except OSError as err:
        raise OutputError(os_error_line(err, out, staging, resumable=False)) from None
    try:
        return _build_locked(config, out, staging, identity, source, planned, tokenizer, near, excluded, started,
                             progress, benchmarks)
    except OSError as err:
        raise OutputError(os_error_line(err, out, staging, resumable=True)) from None
    finally:
        os.close(lock)


def _build_locked(config: BuildConfig, out: str, staging: str, identity: dict[str, Any], source: Source,
                  planned: Sequence[Unit], tokenizer: Tokenizer, near: NearDupIndex | None,
                  excluded: dict[bytes, str], started: float, progress: bool | None,
                  benchmarks: BenchmarkIndex | None = None) -> dict[str, Any]:
    """:func:`build` once its staging directory is locked: resume or start over, write, publish."""
    manifest = finished_as(staging, identity) if config.resume else None
    reused = index_bytes = 0
    if manifest is None:
        resume = config.resume and os.path.exists(os.path.join(units.folder(staging), units.PLAN))
        if not resume:
            files.clear_staging(staging)
        units.start_plan(staging, _plan_identity(identity, config), [(u.start, u.stop) for u in planned],
                          resume=resume, stamp=source.resume_stamp())
        # Arrow's mimalloc pool kept the memory of every stats table and of the final merge: peak
        # RSS grew by about 1 KB per row. The system pool gives it back; a few tables at a time, it costs nothing.
        arrow_pool = pa.default_memory_pool()
        pa.set_memory_pool(pa.system_memory_pool())
        try:
            stage = RowStage.of(config, source, staging, tokenizer, excluded, benchmarks)
            engine = executor(config.engine, config.workers, ray_address=config.ray_address)
            try:
                done, reused = _map_units(engine, stage, planned, config, progress)
                manifest, index_bytes = _write_build(engine, staging, config, source, tokenizer, excluded, near, done,
                                                     benchmarks)
            finally:
                engine.close()
        except GuardrailError as err:  # the units stand: a resume may accept them with a lower ratio
            raise GuardrailError(f"{err}. The finished units stay in {staging}: the same command with --resume "
                                 "and a lower --min-kept-ratio builds from them") from None
        except ConfigError:
            files.clear_staging(staging, keep=())  # never started: nothing to resume
            os.rmdir(staging)
            raise
        finally:
            pa.set_memory_pool(arrow_pool)
    files.remove_scratch(staging)
    publish(staging, out, config.overwrite)
    manifest["run"] = _run_figures(started, manifest, reused, index_bytes)
    if config.engine == "processes" and config.workers > 1:  # each worker process's peak, on top of ours
        manifest["run"]["workers"] = config.workers
        manifest["run"]["worker_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    return manifest


def _map_units(engine: Executor, stage: RowStage, planned: Sequence[Unit], config: BuildConfig,
               progress: bool | None) -> tuple[list[units.UnitDone], int]:
    """Every unit's files: those an interrupted build finished are checked and kept, the others
    run on the chosen engine. Returns the markers in unit order, and how many were reused."""
    done = {u.index: d for u in planned if (d := units.read_done(stage.staging, u.index, u.start, u.stop))}
    todo = [u for u in planned if u.index not in done]
    total = config.stop - config.start
    bar = progress_bar(total, sum(d.stop - d.start for d in done.values()), progress)
    # Without a terminal (CI logs, nohup) a line every 30 s still shows that a long build is alive.
    log_lines = progress is None and bar.disable and total >= 50_000
    next_log = time.perf_counter() + 30
    kept = sum(d.counts.get(KEPT, 0) for d in done.values())
    # The markers of finished units are written here, in batches (units.write_markers: one sync
    # of the file system for many units, not three fsyncs a unit), at least every _MARK_EVERY
    # seconds, and whatever is pending when the map ends or fails: a resume keeps those units.
    pending: list[units.UnitDone] = []
    next_mark = time.perf_counter() + _MARK_EVERY
    try:
        for finished in engine.run(stage, todo):
            done[finished.index] = finished
            pending.append(finished)
            if time.perf_counter() >= next_mark:
                units.write_markers(stage.staging, pending)
                pending, next_mark = [], time.perf_counter() + _MARK_EVERY
            kept += finished.counts.get(KEPT, 0)
            bar.update(finished.stop - finished.start)
            bar.set_postfix(units=f"{len(done)}/{len(planned)}", passed=kept, refresh=False)
            if log_lines and time.perf_counter() >= next_log:
                next_log += 30
                print(f"tzc-data: {bar.n:,}/{total:,} rows, {len(done):,}/{len(planned):,} units, {kept:,} passed "
                      "the per-row stages", file=sys.stderr, flush=True)
    finally:
        units.write_markers(stage.staging, pending)
    bar.close()
    return [done[u.index] for u in planned], len(planned) - len(todo)


_MARK_EVERY = 0.5  # seconds between batches of done-markers while the map runs


def _run_figures(started: float, manifest: dict[str, Any], reused: int, index_bytes: int) -> dict[str, Any]:
    elapsed = max(time.perf_counter() - started, 1e-9)
    return {
        "seconds": round(elapsed, 2),
        "units_reused": reused,  # units an interrupted build had finished (--resume)
        "rows_per_second": round(manifest["counts"]["read"] / elapsed, 1),
        "tokens_per_second": round(manifest["packing"]["tokens"] / elapsed, 1),
        "peak_rss_mib": round(peak_rss_kib() / 1024, 1),
        "dedup_index_mib": round(index_bytes / 2**20, 1),  # exact + near-dup indexes: they grow with the range
    }


def _write_build(engine: Executor, staging: str, config: BuildConfig, source: Source, tokenizer: Tokenizer,
                 excluded: dict[bytes, str], near: NearDupIndex | None,
                 done: Sequence[units.UnitDone], benchmarks: BenchmarkIndex | None = None) -> tuple[dict[str, Any], int]:
    """Everything after the map, from the units' files: dedup, the guardrail, packing, shards,
    hashes, near-dup keys, stats and the manifest last. A pure function of those files: a build
    killed anywhere in here resumes by doing it again, with the same bytes. Nothing the map left
    is removed here; the caller removes it once the manifest is written."""
    outcomes = first_kept_wins(staging, done, config, near)
    index_bytes = outcomes.index_bytes
    if near is not None:
        near.close()  # the dedup indexes are done with: their memory goes before packing's comes
    counts = _counts(done, outcomes)
    guardrail(counts, sum(counts.values()), config)
    kept = kept_examples(staging, done, outcomes)
    where, packs_by_split, shards, bound = _pack(engine, staging, config, kept)
    hashes = write_hashes(staging, kept.hashes.tobytes())
    near_entry = None
    if near is not None:
        write_near_dup(os.path.join(staging, NEAR_DUP), staging, done, outcomes)
        near_entry = {"file": NEAR_DUP, "count": int(outcomes.kept.sum()), "threshold": config.near_dup_threshold,
                      "sha256": sha256_file(os.path.join(staging, NEAR_DUP)),
                      "algorithm": "MinHash (rensa, 128 permutations, seed 20261125) of word 3-shingles of the "
                                   "normalised prompt; 16 LSH bands of 8 as 8-byte keys; 128-byte sketch"}
    stats = _write_stats(staging, config, done, outcomes, where, packs_by_split)
    manifest = _manifest(staging, config, source, tokenizer, excluded, counts, kept, packs_by_split, bound, shards, hashes,
                         near_entry, stats)
    manifest.update(_length_and_contamination(stats[0], benchmarks))
    write_manifest(staging, manifest)
    return manifest, index_bytes


def _length_and_contamination(records: str, benchmarks: BenchmarkIndex | None) -> dict[str, Any]:
    """The manifest's ``model_turn`` (the kept examples' model-turn lengths against the judges'
    budgets, :mod:`tzc_data.text.lengths`) and, with --decontaminate, ``decontamination`` (per benchmark:
    items matched, rows dropped, the first of them), from ``stats/records.parquet``."""
    entries: dict[str, Any] = {"model_turn": distribution((), counts=model_turn_counts(records))}
    if benchmarks is not None:  # a batch at a time: memory holds the contaminated rows only
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        columns = ["row", "status", "contaminated_benchmark", "contaminated_item"]
        table = pa.Table.from_batches(
            [b.filter(pc.equal(b.column("status"), "contaminated"))
             for b in pq.ParquetFile(records).iter_batches(columns=columns, batch_size=65536)],
            schema=pq.read_schema(records).empty_table().select(columns).schema)
        entries["decontamination"] = contamination_report(
            benchmarks, table.column("contaminated_benchmark").to_pylist(),
            table.column("contaminated_item").to_pylist(), table.column("row").to_pylist())
    return entries


def _counts(done: Sequence[units.UnitDone], outcomes: Outcomes) -> Counter:
    """Rows by final status: the units' counts, with dedup's drops moved out of ``kept``."""
    counts: Counter = Counter()
    for unit in done:
        counts.update(unit.counts)
    dropped = Counter(outcomes.codes[outcomes.codes > 0].tolist())
    for code, n in dropped.items():
        counts[KEPT] -= n
        counts[outcome_reason(code, 0, 0.0, None)[0]] += n
    return Counter({k: v for k, v in counts.items() if v})


def _pack(engine: Executor, staging: str, config: BuildConfig, kept: Kept) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]],
                                                                 list[dict[str, Any]], int]:
    """Best-fit-decreasing per split, and the shards: (split, shard, pack, segment) of each kept
    example, the packs' stats columns per split, the shards' manifest entries, the rows' lower bound."""
    where = np.zeros((len(kept), 4), dtype=np.int32)
    packs_by_split: dict[str, dict[str, np.ndarray]] = {}
    tasks: list[ShardTask] = []
    bound = 0
    for code, name in enumerate(config.split_names):
        items = kept.items(code)
        lengths = kept.lengths_of(items)
        members, offsets = packed_rows(lengths, config.seq_len)
        members = items[members]
        bound += rows_lower_bound(lengths, config.seq_len)
        where[items, 0] = code
        packs_by_split[name] = placement(members, offsets, kept, config.seq_len, config.rows_per_shard, where[:, 1:])
        tasks += shard_tasks(os.path.join(staging, SHARD_DIR), kept, members, offsets, config.rows_per_shard,
                             config.seq_len, config.array_record_options, name)
    shards = engine.map(write_shard, tasks)
    return where, packs_by_split, shards, bound


def _write_stats(staging: str, config: BuildConfig, done: Sequence[units.UnitDone], outcomes: Outcomes,
                 where: np.ndarray, packs_by_split: dict[str, dict[str, np.ndarray]]) -> list[str]:
    """``stats/records.parquet``, ``stats/packs.parquet`` and, with ``--keep-rejected``,
    ``rejected/rejected.parquet``; returns their paths."""
    names = score_names(config)
    columns = stats_schema(names).names[:-4]
    os.makedirs(os.path.join(staging, STATS_DIR), exist_ok=True)
    records = write_records(os.path.join(staging, STATS_DIR, "records.parquet"),
                            final_batches(staging, done, outcomes, where, config.split_names, columns), names)
    paths = [records, write_pack_stats(os.path.join(staging, STATS_DIR), packs_by_split)]
    if config.keep_rejected:
        wanted = list(dict.fromkeys(REJECTED_COLUMNS + columns + [n for n, _ in TEXT_COLUMNS]))
        paths.append(write_rejected(os.path.join(staging, REJECTED_DIR, "rejected.parquet"),
                                    final_batches(staging, done, outcomes, where, config.split_names, wanted,
                                                  REJECTED_BATCH), names))
    return paths


def _manifest(staging: str, config: BuildConfig, source: Source, tokenizer: Tokenizer, excluded: dict[bytes, str], counts: Counter,
              kept: Kept, packs_by_split: dict[str, dict[str, np.ndarray]], bound: int, shards: list[dict[str, Any]],
              hashes: dict[str, Any], near_entry: dict[str, Any] | None, stats: list[str]) -> dict[str, Any]:
    read_rows = sum(counts.values())
    seq_len = config.seq_len
    token_total = int(kept.lengths.sum(dtype=np.int64))
    pack_rows = sum(len(p["shard"]) for p in packs_by_split.values())
    return {
        "tzc_version": __version__,
        "format_version": FORMAT_VERSION,
        "source": source.describe(),
        "range": {"start": config.start, "stop": config.stop},
        "config": config.recorded(),
        "tokenizer": {"sha256": tokenizer.sha256, "vocab_size": tokenizer.sp.get_piece_size(),
                      "file": os.path.basename(tokenizer.path), "name": tokenizer.name},
        "counts": {"read": read_rows, "kept": counts[KEPT], "dropped": read_rows - counts[KEPT],
                   "by_status": dict(sorted(counts.items()))},
        "packing": {
            "algorithm": "best-fit-decreasing per split, offline over the kept examples' lengths",
            "seq_len": seq_len, "rows": pack_rows, "examples": len(kept), "tokens": token_total,
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
        "stats": {os.path.relpath(p, staging): {"sha256": sha256_file(p), "bytes": os.path.getsize(p)} for p in stats},
    }
