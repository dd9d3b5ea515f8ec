"""Packing fill of a build's example lengths: tzc's best-fit-decreasing vs the alternatives.

    .venv/bin/python tools/pack_fill.py runs/demo [--seq-len 2048 4096 8192]

Reads the kept examples' token counts from ``stats/records.parquet`` and packs the same lengths four
ways: the original entry's layout (one example per row, right-truncated: all examples), greedy next-fit
(an online packer), offline best-fit-decreasing (what ``tzc-data build`` does), and the bound no
whole-example packing can beat. The last three leave out examples longer than a row.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tzc_data.build.pack import best_fit_decreasing, fill, rows_lower_bound  # noqa: E402


def next_fit(lengths: list[int], capacity: int) -> int:
    rows, left = 0, 0
    for length in lengths:
        if length > left:
            rows, left = rows + 1, capacity
        left -= length
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("build")
    parser.add_argument("--seq-len", type=int, nargs="+", default=[2048, 4096, 8192])
    args = parser.parse_args()
    tokens = (pl.read_parquet(Path(args.build) / "stats" / "records.parquet")
              .filter(pl.col("status") == "kept")["tokens"].to_list())
    print(f"{len(tokens):,} kept examples from {args.build}; median {sorted(tokens)[len(tokens) // 2]:,} tokens\n")
    print("| seq_len | examples | one per row, truncated | greedy next-fit | best-fit-decreasing (tzc) "
          "| bound | BFD time |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for seq_len in args.seq_len:
        lengths = [t for t in tokens if t <= seq_len]
        total = sum(lengths)
        one_per_row = sum(min(t, seq_len) for t in tokens) / (len(tokens) * seq_len)  # all, truncated
        truncated = sum(t > seq_len for t in tokens) / len(tokens)
        greedy = total / (next_fit(lengths, seq_len) * seq_len)
        started = time.perf_counter()
        bins = best_fit_decreasing(lengths, seq_len)
        seconds = time.perf_counter() - started
        bound = total / (rows_lower_bound(lengths, seq_len) * seq_len)
        print(f"| {seq_len} | {len(lengths):,} | {one_per_row:.2%} ({truncated:.0%} cut) | {greedy:.2%} | {fill(lengths, bins, seq_len):.2%} "
              f"| {bound:.2%} | {seconds:.2f} s |")


if __name__ == "__main__":
    main()
