"""The benchmark: every figure beside its baseline, measured in the same run.

    make bench                     # installs the `bench` extra (TRL, datasets) and runs this
    .venv/bin/python tools/bench.py [--rows 10000] [--big 100000] [--out docs/benchmarks.md]

1. end to end vs the limit: build throughput against SentencePiece encoding the very same rendered
   texts and nothing else;
2. peer: HF ``datasets.map`` tokenization (the same SentencePiece model) + TRL ``pack_dataset(bfd)``
   on the same kept examples, against tzc's build of those same rows from a local Parquet file
   (with every filter, and with the quality filters off: the peer filters nothing): time, fill,
   truncation;
3. packing fill at 2048 / 4096 / 8192 beside the original one-example-per-row layout;
4. memory: peak RSS of builds of ``--rows`` and ``--big`` rows, each in its own process;
5. seek: time to the first record at row 0 and at row 1,000,000 of a multi-file local Parquet source;
6. workers: ``--workers 1`` and ``2`` (processes for the per-row stages);
7. loader: packed rows/s through ``tzc_data.load`` / ``batches``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

import tzc_data  # noqa: E402
from tzc_data.build.pack import best_fit_decreasing, fill, rows_lower_bound  # noqa: E402
from tzc_data.sources import local_source, read  # noqa: E402
from tzc_data.sources.generator import SyntheticRow, generate  # noqa: E402
from tzc_data.text import format as fmt  # noqa: E402
from tzc_data.text.tokenize import Tokenizer, gemma2_tokenizer_path  # noqa: E402
from tzc_data.text.wordcache import WordCache  # noqa: E402

PYTHON = sys.executable


def run_build(rows: int, out: str, *extra: str, source: str = "synthetic") -> dict:
    """A build in its own process (so its peak RSS is its own); returns its summary line's figures and
    its CPU time (user + system, this process's children: the build and its workers)."""
    command = [PYTHON, "-m", "tzc_data.cli", "build", "--source", source, "--range", f"0:{rows}",
               "--out", out, "--overwrite", "--no-progress", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise RuntimeError(done.stderr)
    match = re.search(r"([\d.]+) s, ([\d,]+) rows/s, ([\d,]+) tokens/s, peak RSS ([\d,]+) MiB "
                      r"\(dedup indexes ([\d.,]+) MiB\)(?:, \d+ workers at most ([\d,]+) MiB each)?", done.stdout)
    seconds, rows_s, tokens_s, rss, index, worker_rss = match.groups()
    number = lambda text: float(text.replace(",", "")) if text else None  # noqa: E731
    return {"seconds": float(seconds), "rows_per_s": number(rows_s), "tokens_per_s": number(tokens_s),
            "rss_mib": number(rss), "index_mib": number(index), "worker_rss_mib": number(worker_rss),
            "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime}


def kept_rows(build: str) -> list[SyntheticRow]:
    """The source rows of every kept example of a synthetic build, in row order."""
    import polars as pl

    kept = pl.read_parquet(Path(build) / "stats" / "records.parquet").filter(pl.col("status") == "kept")["row"]
    seed = tzc_data.read_manifest(build)["source"]["seed"]
    return [generate(seed, row) for row in kept.to_list()]


def rendered(rows: list[SyntheticRow], system: str) -> list[str]:
    """Each row in the Gemma template, as the build renders it (the tokenize-only input)."""
    return [fmt.render(row.prompt, *fmt.split_response(row.response), system=system) for row in rows]


def tokenize_only(texts: list[str], tokenizer: Tokenizer, threads: int = -1) -> tuple[float, float, list[int]]:
    """(wall s, CPU s, token counts): SentencePiece on ``texts`` in batches of 64, nothing else.
    ``threads=-1`` is SentencePiece's default for a batch: every core."""
    started, cpu = time.perf_counter(), time.process_time()
    lengths = []
    for start in range(0, len(texts), 64):
        lengths += map(len, tokenizer.sp.encode(texts[start:start + 64], num_threads=threads))
    return time.perf_counter() - started, time.process_time() - cpu, lengths


def tokenize_cached(texts: list[str], tokenizer: Tokenizer, expected: list[int]) -> tuple[float, float, float]:
    """(wall s, CPU s, word hit rate): the build's word cache (tzc_data.text.wordcache) on ``texts``, cold,
    one thread; its token counts must equal SentencePiece's (``expected``). The rendered texts hold the
    template's markup, so no id is refused here (the build encodes content alone and refuses them)."""
    cache = WordCache(tokenizer.sp.encode, ())
    started, cpu = time.perf_counter(), time.process_time()
    lengths = [len(cache.encode(text)) // 4 for text in texts]
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if lengths != expected:
        raise RuntimeError("the word cache's token counts differ from SentencePiece's")
    return seconds, cpu, 1 - cache.misses / cache.lookups


def rows_parquet(rows: list[SyntheticRow], path: str) -> str:
    """Rows as a local Parquet source (prompt, response)."""
    pq.write_table(pa.table({"prompt": [r.prompt for r in rows], "response": [r.response for r in rows]}), path)
    return path


def peer(texts: list[str], model: str, seq_len: int) -> dict:
    """HF datasets.map with the same SentencePiece model, then TRL's pack_dataset (bfd)."""
    import datasets
    import sentencepiece as spm
    from trl import pack_dataset

    datasets.disable_progress_bars()
    started = time.perf_counter()
    sp = spm.SentencePieceProcessor(model_file=model)
    data = datasets.Dataset.from_dict({"text": texts})
    data = data.map(lambda batch: {"input_ids": sp.encode(batch["text"])}, batched=True, batch_size=64,
                    remove_columns=["text"])
    data = data.filter(lambda batch: [len(ids) <= seq_len for ids in batch["input_ids"]], batched=True)
    packed = pack_dataset(data, seq_len, strategy="bfd")
    seconds = time.perf_counter() - started
    lengths = [len(ids) for ids in packed["input_ids"]]
    tokens_in = sum(len(ids) for ids in data["input_ids"])
    return {"seconds": seconds, "rows": len(lengths), "fill": sum(lengths) / (len(lengths) * seq_len),
            "truncated_tokens": tokens_in - sum(lengths), "examples": data.num_rows}


def seek(tmp: str) -> list[tuple[int, float]]:
    """A local tree of 12 Parquet files x 100,000 short rows (10 row groups each)."""
    folder = Path(tmp) / "seek"
    folder.mkdir()
    for k in range(12):
        n = 100_000
        table = pa.table({"prompt": [f"question {k * n + i}" for i in range(n)],
                          "response": [f"<think>r{i}</think>a" for i in range(n)]})
        pq.write_table(table, folder / f"train-{k:05d}-of-00012.parquet", row_group_size=10_000)
    timings = []
    for start in (0, 1_000_000, 0, 1_000_000):
        started = time.perf_counter()
        first = next(iter(read(local_source(str(folder)), start, start + 1)))
        timings.append((start, time.perf_counter() - started))
        assert first.row == start and first.prompt == f"question {start}"
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs of each section-1 line; the best counts")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    seq_len = 4096
    model = str(gemma2_tokenizer_path())
    tokenizer = Tokenizer(model)
    lines = [f"# Benchmarks (sections 1-7: {date.today().isoformat()})", "",
             "Every figure tzc quotes, measured beside its baseline in the same run, with the machine and the "
             "command: what to check a claim against, and what to rerun after a change.", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} vCPU, {_cpu()}, Python {platform.python_version()}; "
             + ", ".join(f"{p} {_version(p)}" for p in ("sentencepiece", "grain", "array-record", "numpy", "pyarrow",
                                                          "datasets", "trl")) + ".",
             "Sections 1-7 are measured in the run of `tools/bench.py` (`make bench`) that wrote them, each "
             "beside its baseline; the sections after them come from the other tools in `tools/`, recorded with "
             "their own dates and machines, and a rerun of `tools/bench.py` keeps them.", ""]

    def emit(*new: str) -> None:
        lines.extend(new)
        print("\n".join(new), flush=True)

    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        build = f"{tmp}/build"
        bare_options = ("--no-loop-filter", "--no-language-filter", "--no-near-dup")
        # Section 1 runs --repeat times, interleaved (build, build without quality filters, build of
        # the same rows from Parquet, tokenize-only), and each line reports its best run: these shared
        # machines drift by 10-20% from minute to minute, and interleaving exposes every line to the
        # same drift. The Parquet build reads the rows as a hub build would, without the synthetic
        # generator's Python.
        every_row = rows_parquet([generate(0, i) for i in range(args.rows)], f"{tmp}/rows.parquet")
        fulls, bares, parquets, tokenize_runs = [], [], [], []
        for attempt in range(args.repeat):
            fulls.append(run_build(args.rows, build))
            bares.append(run_build(args.rows, f"{tmp}/bare", *bare_options))
            parquets.append(run_build(args.rows, f"{tmp}/from-parquet", source=every_row))
            if attempt == 0:
                kept = kept_rows(build)
                texts = rendered(kept, tzc_data.read_manifest(build)["config"]["system"])
            tokenize_runs.append(tokenize_only(texts, tokenizer))
        full, bare, from_parquet = (min(runs, key=lambda run: run["seconds"]) for runs in (fulls, bares, parquets))
        if tzc_data.read_manifest(f"{tmp}/from-parquet")["counts"] != tzc_data.read_manifest(build)["counts"]:
            raise RuntimeError("the build from Parquet kept other rows than the synthetic build")
        seconds, cpu, lengths = min(tokenize_runs)
        one_thread, one_cpu, _ = tokenize_only(texts, tokenizer, threads=1)
        cached, cached_cpu, hit_rate = tokenize_cached(texts, tokenizer, lengths)

        def share(run: dict) -> str:
            return f"{seconds / run['seconds']:.0%}"

        def spread(values: list[float]) -> str:
            return f"{min(values):.2f}-{max(values):.2f}"

        emit(f"## 1. End to end vs the tokenizer ({args.rows:,} synthetic rows, {len(texts):,} kept)", "",
             "| run | seconds | CPU s | rows/s | share of tokenize-only speed |", "| --- | --- | --- | --- | --- |",
             f"| tokenize only: SentencePiece on the {len(texts):,} rendered kept texts, batches of 64 (its default: "
             f"every core) | {seconds:.2f} ({spread([r[0] for r in tokenize_runs])}) | {cpu:.2f} | "
             f"{args.rows / seconds:,.0f} | 100% |",
             f"| `tzc-data build`, every filter | {full['seconds']:.2f} ({spread([r['seconds'] for r in fulls])}) | "
             f"{full['cpu']:.2f} | {full['rows_per_s']:,.0f} | {share(full)} |",
             f"| `tzc-data build`, no quality filters | {bare['seconds']:.2f} ({spread([r['seconds'] for r in bares])}) | "
             f"{bare['cpu']:.2f} | {bare['rows_per_s']:,.0f} | {share(bare)} |",
             f"| `tzc-data build`, every filter, the same {args.rows:,} rows from a local Parquet file (no generator) | "
             f"{from_parquet['seconds']:.2f} ({spread([r['seconds'] for r in parquets])}) | {from_parquet['cpu']:.2f} | "
             f"{from_parquet['rows_per_s']:,.0f} | {share(from_parquet)} |",
             f"| for scale: SentencePiece on one thread (`num_threads=1`), same texts | {one_thread:.2f} | "
             f"{one_cpu:.2f} | {args.rows / one_thread:,.0f} | {seconds / one_thread:.0%} |",
             f"| for scale: tzc's word cache alone (the build's encoder: same ids, checked), same texts, one "
             f"thread, cold; {hit_rate:.1%} of words hit | {cached:.2f} | {cached_cpu:.2f} | {args.rows / cached:,.0f} | "
             f"{seconds / cached:.0%} |", "",
             f"Best of {args.repeat} interleaved runs (the range of all {args.repeat} in brackets); the share compares "
             "best with best. Build times include start-up (tokenizer load), the synthetic generator, stats, shards and manifest. "
             "CPU s is user + system time of the process (and its threads). SentencePiece's batch encode spreads "
             "over every core, so the tokenize-only line uses the whole machine. The build encodes content through "
             "a word cache (`tzc_data/text/wordcache.py`: each space-delimited word encoded once, exact for Gemma 2's "
             "BPE, proven per model and tested against SentencePiece), on its one Python thread. The synthetic "
             "source has a small vocabulary, so its hit rate is higher than real traces' ([building.md](building.md#speed-and-memory) gives both).",
             "")
        try:
            source = rows_parquet(kept, f"{tmp}/kept.parquet")
            same_full = run_build(len(texts), f"{tmp}/same", source=source)
            same_bare = run_build(len(texts), f"{tmp}/same-bare", *bare_options, source=source)
            theirs = peer(texts, model, seq_len)
            same_manifest = tzc_data.read_manifest(f"{tmp}/same-bare")
            emit("## 2. Peer: HF datasets.map + TRL pack_dataset(bfd), same rows and tokenizer", "",
                 f"All three read the {len(texts):,} kept rows of section 1 (tzc from a local Parquet file of them).", "",
                 "| tool | seconds | CPU s | packed rows | fill | tokens truncated |",
                 "| --- | --- | --- | --- | --- | --- |",
                 f"| datasets.map + trl.pack_dataset(bfd) (tokenize + pack, in memory) | {theirs['seconds']:.2f} | "
                 f"- | {theirs['rows']:,} | {theirs['fill']:.2%} | {theirs['truncated_tokens']:,} |",
                 f"| tzc-data build, quality filters off (read, exact dedup, tokenize, pack, write, stats) | "
                 f"{same_bare['seconds']:.2f} | {same_bare['cpu']:.2f} | {same_manifest['packing']['rows']:,} | "
                 f"{same_manifest['packing']['fill']:.2%} | 0 |",
                 f"| tzc-data build, every filter | {same_full['seconds']:.2f} | {same_full['cpu']:.2f} | "
                 f"{tzc_data.read_manifest(f'{tmp}/same')['packing']['rows']:,} | "
                 f"{tzc_data.read_manifest(f'{tmp}/same')['packing']['fill']:.2%} | 0 |", "")
        except ImportError as err:
            emit("## 2. Peer", "", f"not measured: {err} (`make bench` installs the bench extra)", "")
        emit("## 3. Packing fill on the kept lengths", "",
             "| seq_len | examples that fit | one per row, right-truncated at 2048 (original) | tzc best-fit-decreasing "
             "| bound for whole examples |", "| --- | --- | --- | --- | --- |")
        for length in (2048, 4096, 8192):
            fits = [n for n in lengths if n <= length]
            bins = best_fit_decreasing(fits, length)
            original = sum(min(n, 2048) for n in lengths) / (len(lengths) * 2048)
            emit(f"| {length} | {len(fits):,} | {original:.2%} ({sum(n > 2048 for n in lengths) / len(lengths):.0%} "
                 f"of examples cut) | {fill(fits, bins, length):.2%} | "
                 f"{sum(fits) / (rows_lower_bound(fits, length) * length):.2%} |")
        big = run_build(args.big, f"{tmp}/big")
        rest = [run["rss_mib"] - run["index_mib"] for run in (full, big)]
        emit("", "## 4. Memory (each build in its own process)", "",
             "| rows | peak RSS | of which dedup indexes (exact + near-dup) | the rest | rows/s |",
             "| --- | --- | --- | --- | --- |",
             *[f"| {rows:,} | {run['rss_mib']:,.0f} MiB | {run['index_mib']:,.1f} MiB | {other:,.0f} MiB | "
               f"{run['rows_per_s']:,.0f} |" for rows, run, other in ((args.rows, full, rest[0]), (args.big, big, rest[1]))],
             "",
             f"Ratio {big['rss_mib'] / full['rss_mib']:.2f}x in all; {rest[1] / rest[0]:.2f}x without the dedup indexes "
             f"(target: 1.2x plus the indexes). Growth per extra row: "
             f"{(big['rss_mib'] - full['rss_mib']) * 2**20 / (args.big - args.rows):,.0f} bytes, of which the indexes "
             f"{(big['index_mib'] - full['index_mib']) * 2**20 / (args.big - args.rows):,.0f} bytes "
             "(near-dup: 16 LSH band keys in an open-addressing table at most 70% full and a 128-byte sketch; exact: the "
             "16-byte hash, the row and a table slot). Both indexes are freed before packing. Peak RSS includes the "
             "pages of shared libraries that are resident, and that share moves with the page cache (the same build "
             "measured 205 and 245 MiB at different times of one day), so only builds of one run compare.",
             "")
        timings = seek(tmp)
        emit("## 5. Seek: time to the first record, 12 local Parquet files of 100,000 rows", "",
             "| start row | seconds |", "| --- | --- |", *[f"| {s:,} | {t:.3f} |" for s, t in timings], "")
        workers = [(n, full if n == 1 else run_build(args.rows, f"{tmp}/workers{n}", "--workers", str(n)))
                   for n in (1, 2)]
        emit("## 6. Workers (`--workers N`: processes for the per-row stages)", "",
             "| workers | seconds | CPU s | rows/s | peak RSS, main process | peak RSS, each worker |",
             "| --- | --- | --- | --- | --- | --- |",
             *[f"| {n} | {run['seconds']:.2f} | {run['cpu']:.2f} | {run['rows_per_s']:,.0f} | {run['rss_mib']:,.0f} MiB | "
               + (f"{run['worker_rss_mib']:,.0f} MiB |" if run["worker_rss_mib"] else "- |") for n, run in workers], "",
             f"This machine has {os.cpu_count()} vCPUs. With the word cache one process runs on one core (the "
             "encoder no longer spreads over both), so a second process has a core to use. The output is "
             "byte-identical for any N (tested).", "")
        loader = subprocess.run([PYTHON, str(ROOT / "tools" / "bench_loader.py"), build], capture_output=True,
                                text=True, check=True).stdout
        emit("## 7. Loader", "", loader.split("\n\n", 1)[1].strip(), "")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n" + kept_sections(Path(args.out)))
    print(f"wrote {args.out}")


def kept_sections(path: Path) -> str:
    """The sections of ``path`` after the ones this script writes (from "## 8." on): other tools'
    figures, recorded by hand with their dates, which a rerun of this script must not erase."""
    if not path.exists():
        return ""
    text = path.read_text()
    start = re.search(r"^## 8\. ", text, re.M)
    return "\n" + text[start.start():] if start else ""


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
