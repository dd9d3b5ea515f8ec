"""The build, end to end. This is the one place that knows the order of the stages.

    read ─ hash prompt ─ split <think> ─ quality filters (loop) ─ format checks ─ tokenize
         ─ length bound ─ exact dedup ─ spool ─┐
                                              └─ best-fit-decreasing ─ shards, stats, manifest

Exact dedup comes after every other check so that the first *kept* occurrence of a prompt wins
(a duplicate of a row that was later dropped for a loop is not lost with it). Each stage yields
every example, dropped or not, so the stats have one row per input row, in order.

Output is staged in a hidden sibling directory and renamed into place only when the manifest,
written last, is complete: a build that dies leaves no directory that looks finished.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm import tqdm

from tzc_data import __version__
from tzc_data.config import BuildConfig
from tzc_data.dedupe import ExactIndex, drop_duplicates, hash_prompts
from tzc_data.errors import GuardrailError, OutputError
from tzc_data.filters import Filter, LengthFilter, LoopFilter, apply_filters
from tzc_data.format import format_examples, split_examples
from tzc_data.pack import Spool, best_fit_decreasing, placement, rows_lower_bound
from tzc_data.read import Source, open_source, read
from tzc_data.record import KEPT, REASONS, Example
from tzc_data.tokenize import Tokenizer, load_tokenizer, sha256_file, tokenize
from tzc_data.write import (MANIFEST, SHARD_DIR, STATS_DIR, RecordStats, record_layout, write_manifest,
                            write_pack_stats, write_shards)

FORMAT_VERSION = 1


def build_filters(config: BuildConfig) -> list[Filter]:
    """The quality filters that run on the split text, in order."""
    filters: list[Filter] = []
    if config.loop_filter:
        filters.append(LoopFilter(min_repeats=config.loop_min_repeats, min_chars=config.loop_min_chars))
    return filters


def stages(examples: Iterable[Example], config: BuildConfig, tokenizer: Tokenizer,
           quality: list[Filter], index: ExactIndex) -> Iterator[Example]:
    """Compose the per-example stages (everything before the spool)."""
    examples = hash_prompts(examples)
    examples = split_examples(examples)
    examples = apply_filters(examples, quality)
    examples = format_examples(examples)
    examples = tokenize(examples, tokenizer)
    examples = apply_filters(examples, [LengthFilter(config.token_limit, config.min_answer_tokens)])
    if config.dedup:
        examples = drop_duplicates(examples, index)
    return examples


def _check_output(out: str, overwrite: bool) -> None:
    if not os.path.exists(out):
        return
    if not os.path.isdir(out):
        raise OutputError(f"--out {out} exists and is not a directory")
    if not os.listdir(out):
        return
    manifest = os.path.join(out, MANIFEST)
    if not os.path.exists(manifest):
        raise OutputError(f"--out {out} exists, is not empty and is not a tzc build; choose another directory")
    if not overwrite:
        try:
            with open(manifest, encoding="utf-8") as handle:
                old = json.load(handle)
            held = f"range {old['range']['start']}:{old['range']['stop']} of {old['source'].get('kind')}"
        except (OSError, ValueError, KeyError, TypeError):
            held = "an unreadable manifest"
        raise OutputError(f"--out {out} already holds a build ({held}); pass --overwrite to replace it")


def _publish(staging: str, out: str) -> None:
    old = None
    if os.path.exists(out):
        old = f"{staging}.old"
        os.rename(out, old)
    os.rename(staging, out)
    if old:
        shutil.rmtree(old)


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


def build(config: BuildConfig, *, source: Source | None = None, tokenizer: Tokenizer | None = None,
          progress: bool | None = None) -> dict[str, Any]:
    """Run the build; returns the manifest plus a ``run`` section (timings, peak memory).

    ``progress=None`` shows a bar only when stderr is a terminal.
    """
    _check_output(config.out, config.overwrite)
    started = time.perf_counter()
    source = source or open_source(config.source, revision=config.revision, seed=config.seed)
    tokenizer = tokenizer or load_tokenizer(config.tokenizer, system=config.system)
    out = os.path.abspath(config.out)
    staging = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.tzc-partial")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(os.path.join(staging, STATS_DIR))
    try:
        manifest = _build_into(staging, config, source, tokenizer, progress)
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    elapsed = time.perf_counter() - started
    manifest["run"] = {
        "seconds": round(elapsed, 2),
        "rows_per_second": round(manifest["counts"]["read"] / elapsed, 1),
        "tokens_per_second": round(manifest["packing"]["tokens"] / elapsed, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    return manifest


def _build_into(staging: str, config: BuildConfig, source: Source, tokenizer: Tokenizer,
                progress: bool | None) -> dict[str, Any]:
    quality = build_filters(config)
    score_names = [name for f in quality for name in f.score_names]
    stats = RecordStats(os.path.join(staging, STATS_DIR), score_names)
    spool = Spool(os.path.join(staging, ".spool.bin"))
    counts: Counter = Counter()
    index = ExactIndex()
    total = config.stop - config.start
    bar = tqdm(total=total, unit="row", file=sys.stderr, disable=None if progress is None else not progress,
               mininterval=0.5, smoothing=0.1, desc="build")
    # Without a terminal (CI logs, nohup) a line every 30 s still shows that a long build is alive.
    log_lines = progress is None and bar.disable and total >= 50_000
    next_log = time.perf_counter() + 30
    examples = stages(read(source, config.start, config.stop), config, tokenizer, quality, index)
    for n, example in enumerate(examples, 1):
        counts[example.status] += 1
        stats.add(example)
        if example.kept:
            spool.add(example.row, example.tokens, example.prompt_tokens)
        if n % 256 == 0:
            bar.update(256)
            bar.set_postfix(kept=counts[KEPT], dropped=n - counts[KEPT], refresh=False)
            if log_lines and time.perf_counter() >= next_log:
                next_log += 30
                print(f"tzc-data: {n:,}/{total:,} rows, kept {counts[KEPT]:,}, dropped {n - counts[KEPT]:,}",
                      file=sys.stderr, flush=True)
    bar.update(sum(counts.values()) - bar.n)
    bar.close()
    read_rows = sum(counts.values())
    _guardrail(counts, read_rows, config)

    lengths = list(spool.lengths)
    bins = best_fit_decreasing(lengths, config.seq_len)
    where, packs = placement(bins, spool, config.seq_len, config.rows_per_shard)
    shards = write_shards(os.path.join(staging, SHARD_DIR), spool.read_rows(bins, config.seq_len), len(bins),
                          config.rows_per_shard, config.array_record_options)
    os.remove(spool.path)
    records_path = stats.finish(where)
    packs_path = write_pack_stats(os.path.join(staging, STATS_DIR), packs)

    token_total = int(sum(lengths))
    bound = rows_lower_bound(lengths, config.seq_len)
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
            "algorithm": "best-fit-decreasing, offline over spooled examples",
            "seq_len": config.seq_len, "rows": len(bins), "examples": len(lengths), "tokens": token_total,
            "loss_tokens": int(packs["loss_tokens"].sum()),
            "fill": round(token_total / (len(bins) * config.seq_len), 6) if bins else 0.0,
            # No packing that keeps examples whole can use fewer rows than this, or fill more than this.
            "rows_lower_bound": bound,
            "fill_upper_bound": round(token_total / (bound * config.seq_len), 6) if bound else 0.0,
        },
        "record_layout": record_layout(config.seq_len),
        "splits": {"train": [s["file"] for s in shards]},
        "shards": shards,
        "stats": {
            os.path.relpath(p, staging): {"sha256": sha256_file(p), "bytes": os.path.getsize(p)}
            for p in (records_path, packs_path)
        },
    }
    write_manifest(staging, manifest)
    return manifest
