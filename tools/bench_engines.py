"""The engines against each other: the same build with ``--engine local``, ``processes --workers 2``
and ``ray``, on a local Parquet source of 20k-row row groups, and Ray's fixed start-up cost.

    .venv/bin/python tools/bench_engines.py [--rows 40000] [--row-group 20000] [--tokenizer PATH]

Each build runs in its own process (``tzc-data build``); its wall seconds, and its CPU seconds:
user + system of the build's whole process tree (workers, and for Ray the raylet, GCS and actors
of its local instance), sampled every 0.1 s with psutil (a process that lives less long is missed).
The builds' outputs are compared file by file (sha256): the engines must write the same bytes.
Ray's fixed cost is measured twice: ``ray.init()`` + ``ray.shutdown()`` alone, and a one-unit
build on Ray less the same build on ``local``. Prints a Markdown table (for docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tzc_data.sources.generator import generate  # noqa: E402
from tzc_data.text.tokenize import gemma2_tokenizer_path  # noqa: E402

ENGINES = [("local", ["--engine", "local"]), ("processes, 2 workers", ["--engine", "processes", "--workers", "2"]),
           ("ray (local instance)", ["--engine", "ray"])]


def write_source(folder: Path, rows: int, row_group: int) -> Path:
    """The synthetic source's first ``rows`` rows as one Parquet file of ``row_group``-row groups."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train-00000.parquet"
    with pq.ParquetWriter(path, pa.schema([("prompt", pa.string()), ("response", pa.string())])) as writer:
        for lo in range(0, rows, row_group):
            batch = [generate(0, i) for i in range(lo, min(lo + row_group, rows))]
            writer.write_table(pa.table({"prompt": [r.prompt for r in batch], "response": [r.response for r in batch]}),
                               row_group_size=row_group)
    return path


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of ``command`` and every process it starts (sampled)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(process.pid)
    cpu: dict[int, float] = {}
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for proc in tree:
            try:
                times = proc.cpu_times()
                cpu[proc.pid] = times.user + times.system
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.1)
    _, err = process.communicate()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}): {err.strip()[-2000:]}")
    return wall, sum(cpu.values())


def sha256s(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def build(source: Path, rows: int, out: Path, tokenizer: str, engine: list[str]) -> list[str]:
    return [sys.executable, "-m", "tzc_data.cli", "build", "--source", str(source), "--range", f"0:{rows}",
            "--out", str(out), "--tokenizer", tokenizer, "--no-progress", *engine]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--row-group", type=int, default=20_000)
    parser.add_argument("--tokenizer", default=None, help="SentencePiece model (default: Gemma 2's)")
    args = parser.parse_args()
    tokenizer = args.tokenizer or gemma2_tokenizer_path()
    with tempfile.TemporaryDirectory(prefix="tzc-bench-engines-") as tmp:
        source = write_source(Path(tmp) / "src", args.rows, args.row_group)
        results, outputs = [], {}
        for name, engine in ENGINES:
            out = Path(tmp) / name.split()[0].strip(",")
            wall, cpu = timed(build(source, args.rows, out, tokenizer, engine))
            results.append((name, wall, cpu))
            outputs[name] = sha256s(out)
        same = all(o == outputs["local"] for o in outputs.values())
        init_wall, _ = timed([sys.executable, "-c", "import ray; ray.init(); ray.shutdown()"])
        small = Path(tmp) / "small"
        write_source(small, 256, 256)
        tiny_local, _ = timed(build(small, 256, Path(tmp) / "tiny-local", tokenizer, ["--engine", "local"]))
        tiny_ray, _ = timed(build(small, 256, Path(tmp) / "tiny-ray", tokenizer, ["--engine", "ray"]))
    units = -(-args.rows // args.row_group)
    print(f"{args.rows:,} rows in {units} row groups of {args.row_group:,} (one unit each), "
          f"{os.cpu_count()} CPUs; outputs identical across engines: {'yes' if same else 'NO'}\n")
    print("| engine | wall s | CPU s | rows/s (wall) |\n| --- | --- | --- | --- |")
    for name, wall, cpu in results:
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {args.rows / wall:,.0f} |")
    print(f"\nRay's fixed cost: ray.init() + ray.shutdown() {init_wall:.1f} s; a one-unit build (256 rows) "
          f"{tiny_ray:.1f} s on Ray against {tiny_local:.1f} s local: {tiny_ray - tiny_local:.1f} s more.")


if __name__ == "__main__":
    main()
