"""Decoding throughput of a build: packed rows/s through each way of reading it.

    .venv/bin/python tools/bench_loader.py runs/demo

Reads every packed row of the train split through: Grain's ArrayRecordDataSource (bytes only),
``tzc_data.load`` (random access, decoded), ``tzc_data.batches`` with the read options tzc uses and
with Grain's defaults, and plain numpy over ``iter_rows``. One process, one core.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tzc_data  # noqa: E402
from tzc_data.read.load import READ_OPTIONS, grain_module  # noqa: E402


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f} rows/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("build")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    grain = grain_module()
    manifest = tzc_data.read_manifest(args.build)
    paths = [os.path.join(args.build, name) for name in manifest["splits"]["train"]]
    source = grain.sources.ArrayRecordDataSource(paths)
    n = len(source)
    print(f"{args.build}: {n:,} packed rows of {manifest['config']['seq_len']:,} tokens, "
          f"compression {manifest['config']['compression']}\n")
    print("| reader | rows/s |\n| --- | --- |")
    started = time.perf_counter()
    for i in range(n):
        source[i]
    print(f"| ArrayRecordDataSource, bytes | {rate(n, time.perf_counter() - started)} |")
    rows = tzc_data.load(args.build)
    started = time.perf_counter()
    for i in range(n):
        rows[i]
    print(f"| tzc_data.load, decoded, random access | {rate(n, time.perf_counter() - started)} |")
    for name, options in [("tzc's read options " + str(READ_OPTIONS), None),
                          ("Grain's default read options", {"num_threads": 16, "prefetch_buffer_size": 500})]:
        batches = tzc_data.batches(args.build, args.batch_size, seed=0, num_epochs=1, read_options=options)
        started = time.perf_counter()
        count = sum(batch["tokens"].shape[0] for batch in batches)
        print(f"| tzc_data.batches({args.batch_size}), shuffled, {name} | {rate(count, time.perf_counter() - started)} |")
    started = time.perf_counter()
    count = sum(1 for _ in tzc_data.iter_rows(args.build))
    print(f"| tzc_data.iter_rows, numpy | {rate(count, time.perf_counter() - started)} |")


if __name__ == "__main__":
    main()
