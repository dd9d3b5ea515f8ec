"""What ``--decontaminate`` costs a build: the same build with and without it, in the same run.

The source is the real long traces (``../shared/data/r1_long_clean.jsonl``: 118 complete R1
traces of 8k-64k characters, ``--repeat`` times over; dedup off, as they repeat prompts), the
tokenizer Gemma 2's, the
engine local (one process, so its CPU time is the build's). The benchmark is GSM8K-sized: 1,319
questions (synthetic prompts of about 50 words, seed 1) plus the 30 real GlaiveAI prompts. Builds
alternate (plain, prompts, prompts and responses) for ``--rounds`` rounds; the figure is the
median CPU seconds of each. The check alone (``BenchmarkIndex.match`` over every row) is timed too.

    python tools/bench_decontaminate.py [--rounds 5] [--repeat 10] [--source ../shared/data/r1_long_clean.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tzc_data.build.config import BuildConfig  # noqa: E402
from tzc_data.build.pipeline import build  # noqa: E402
from tzc_data.sources.generator import generate  # noqa: E402
from tzc_data.text.decontaminate import benchmark_index  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


def _benchmark(path: str) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for i in range(1319):
            out.write(json.dumps({"question": generate(1, i).prompt}) + "\n")
        with open(os.path.join(SHARED, "glaive_prompts_real.jsonl"), encoding="utf-8") as real:
            for line in real:
                out.write(json.dumps({"question": json.loads(line)["prompt"]}) + "\n")


def _build_cpu(source: str, rows: int, out: str, benchmark: str | None, responses: bool) -> tuple[float, float]:
    config = BuildConfig(out=out, start=0, stop=rows, source=source, dedup=False, near_dup=False, min_kept_ratio=0.0,
                         seq_len=32768, overwrite=True, decontaminate=(benchmark,) if benchmark else (),
                         decontaminate_responses=responses)
    cpu, wall = time.process_time(), time.perf_counter()
    build(config, progress=False)
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--source", default=os.path.join(SHARED, "r1_long_clean.jsonl"))
    parser.add_argument("--repeat", type=int, default=10,
                        help="the source's rows this many times over (a longer build: fixed costs weigh less)")
    args = parser.parse_args()
    with open(args.source, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        if args.repeat > 1:
            args.source = os.path.join(tmp, "source.jsonl")
            with open(args.source, "w", encoding="utf-8") as out:
                for _ in range(args.repeat):
                    out.writelines(json.dumps(r) + "\n" for r in rows)
            rows = rows * args.repeat
        bench = os.path.join(tmp, "bench.jsonl")
        _benchmark(bench)
        started = time.process_time()
        index = benchmark_index([bench])
        index_seconds = time.process_time() - started
        started = time.process_time()
        for row in rows:
            index.match(row["prompt"])
        prompt_check = time.process_time() - started
        started = time.process_time()
        for row in rows:
            index.match(row["response"])
        response_check = time.process_time() - started
        cases = {"plain": (None, False), "prompts": (bench, False), "prompts+responses": (bench, True)}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        wall: dict[str, list[float]] = {name: [] for name in cases}
        _build_cpu(args.source, len(rows), os.path.join(tmp, "warm"), None, False)  # tokenizer and imports loaded
        for _ in range(args.rounds):
            for name, (benchmark, responses) in cases.items():
                c, w = _build_cpu(args.source, len(rows), os.path.join(tmp, name), benchmark, responses)
                cpu[name].append(c)
                wall[name].append(w)
    chars = sum(len(r["prompt"]) + len(r["response"]) for r in rows)
    print(f"source {args.source}: {len(rows)} rows, {chars / 1e6:.2f} M characters; benchmark {index.benchmarks[0].items} "
          f"items, {len(index.grams):,} 8-grams, index built in {index_seconds:.2f} s CPU")
    print(f"check alone: prompts {prompt_check * 1e6 / len(rows):,.0f} us a row, responses "
          f"{response_check * 1e6 / len(rows):,.0f} us a row")
    base = statistics.median(cpu["plain"])
    for name in cases:
        median = statistics.median(cpu[name])
        print(f"{name:<18} build CPU median {median:.2f} s (min {min(cpu[name]):.2f}, wall median "
              f"{statistics.median(wall[name]):.2f} s), {100 * (median - base) / base:+.1f}% vs plain")


if __name__ == "__main__":
    main()
