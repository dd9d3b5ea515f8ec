"""The serial parts of a build at the whole dataset's scale, measured on synthetic keys and lengths.

Everything after the map runs in one process (``tzc_data/build/pipeline.py``): the dedup pass over the
candidates' keys, packing their lengths, and finalising the stats. The map scales with machines;
these do not, so they bound a cluster build. Each part runs here in its own process (so its peak
RSS is its own, read from VmHWM) at ``--rows`` candidates (default: GlaiveAI's 22.2M rows):

1. dedup: :func:`tzc_data.build.dedup.sharing_a_key` over every candidate's prompt hash and 16 LSH
   band keys, then the serial first-kept-wins check (:func:`tzc_data.build.dedup.decide`, a
   compiled loop) on the rows that share a key. Keys are random except for planted duplicates:
   ``--dup-share`` of the rows repeat an earlier prompt exactly, ``--near-share`` are near copies
   of one (12 of 16 bands equal, a sketch with 10% of its bytes changed: estimated Jaccard about
   0.85);
2. pack: :func:`tzc_data.build.pack.packed_rows` (best-fit-decreasing, as a build runs it) over
   GlaiveAI-like lengths (log-normal, median 2,000 tokens, clipped to 64..4,096) into 4,096-token
   rows;
3. stats: unit tables of ``--stats-rows`` rows in 20,000-row units (the stats columns a build writes,
   random values), through :func:`tzc_data.build.dedup.final_batches` into ``records.parquet``;
4. shards: ``--shard-rows`` packed rows written as a node writes its shards (:func:`shards`);
5. driver: a real build of ``--driver-rows`` synthetic rows with every step after the map timed
   where it runs (:func:`driver`): the serial part with the reads of the units' files.

Each part reports wall seconds and CPU seconds (the machine may be shared: CPU seconds compare).
The first large run on a machine also compiles the loops (numba, cached on disk): run twice.

    python tools/bench_serial.py [--rows 22200000] [--stats-rows 2220000] [--out docs/serial.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _peak_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _keys(rows: int, dup_share: float, near_share: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 256, size=(rows, 16), dtype=np.uint8)
    bands = rng.integers(1, 2**63, size=(rows, 16), dtype=np.uint64)
    planted = rng.random(rows)
    exact = np.flatnonzero(planted < dup_share)
    near = np.flatnonzero((planted >= dup_share) & (planted < dup_share + near_share))
    for chosen, whole in ((exact, True), (near, False)):
        chosen = chosen[chosen > 0]
        source = (rng.random(len(chosen)) * chosen).astype(np.int64)  # an earlier row
        if whole:
            hashes[chosen], bands[chosen] = hashes[source], bands[source]
        else:
            bands[chosen, :12] = bands[source, :12]
    return hashes, bands, near, seed


def dedup(rows: int, dup_share: float, near_share: float) -> dict:
    from tzc_data.build.dedup import decide, sharing_a_key
    from tzc_data.text.minhash import NearDupIndex

    hashes, bands, near_rows, seed = _keys(rows, dup_share, near_share)
    wall, cpu = time.perf_counter(), time.process_time()
    involved = np.flatnonzero(sharing_a_key(hashes, bands, None))
    keys = bands[involved]
    grouped, grouped_cpu = time.perf_counter() - wall, time.process_time() - cpu
    del bands
    rng = np.random.default_rng(seed + 1)
    sketches = rng.integers(0, 256, size=(len(involved), 128), dtype=np.uint8)  # only the involved rows' are read
    by_hash: dict[bytes, int] = {}
    for k in range(len(involved)):  # a near copy's sketch: its source's with 10% changed
        key = keys[k, :12].tobytes()
        first = by_hash.setdefault(key, k)
        if first != k:
            sketches[k] = sketches[first]
            flip = rng.random(128) < 0.10
            sketches[k, flip] = rng.integers(0, 256, size=int(flip.sum()), dtype=np.uint8)
    del by_hash
    wall, cpu = time.perf_counter(), time.process_time()
    outcomes = decide(hashes[involved], keys, sketches, involved.astype(np.int64), NearDupIndex(0.8))
    serial, serial_cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"part": "dedup", "rows": rows, "involved": int(len(involved)), "dropped": int((outcomes.codes > 0).sum()),
            "group_s": round(grouped, 1), "serial_s": round(serial, 1), "seconds": round(grouped + serial, 1),
            "cpu_s": round(grouped_cpu + serial_cpu, 1), "peak_mib": round(_peak_mib())}


def pack(rows: int) -> dict:
    from tzc_data.build.pack import packed_rows, rows_lower_bound

    rng = np.random.default_rng(2)
    lengths = np.clip(rng.lognormal(np.log(2000), 0.6, rows), 64, 4096).astype(np.int32)
    wall, cpu = time.perf_counter(), time.process_time()
    _, offsets = packed_rows(lengths, 4096)
    seconds, cpu = time.perf_counter() - wall, time.process_time() - cpu
    count = len(offsets) - 1
    return {"part": "pack", "rows": rows, "packed_rows": count, "fill": round(int(lengths.sum()) / (count * 4096), 4),
            "lower_bound": rows_lower_bound(lengths, 4096), "seconds": round(seconds, 1), "cpu_s": round(cpu, 1),
            "peak_mib": round(_peak_mib())}


def stats(rows: int) -> dict:
    import pyarrow as pa

    from tzc_data.build import units
    from tzc_data.build.dedup import Outcomes, final_batches
    from tzc_data.build.write import stats_schema, unit_schema, write_records, write_unit_table

    names = ["english_score", "loop_repeats", "repeated_share", "compression_ratio", "near_dup_jaccard"]
    schema = unit_schema(names, text=False)
    rng = np.random.default_rng(3)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as staging:
        os.makedirs(units.folder(staging))
        done, candidates = [], 0
        for index, lo in enumerate(range(0, rows, 20_000)):
            n = min(20_000, rows - lo)
            kept = rng.random(n) < 0.85
            columns = {f.name: pa.nulls(n, f.type) for f in schema}
            columns["row"] = pa.array(np.arange(lo, lo + n))
            columns["status"] = pa.array(np.where(kept, "kept", "loop").astype(object), pa.string())
            columns["detail"] = pa.array([""] * n, pa.string())
            columns["prompt_hash"] = pa.array([f"{v:032x}" for v in rng.integers(0, 2**62, n)], pa.string())
            for name in ("prompt_chars", "reasoning_chars", "answer_chars", "tokens", "loss_tokens", "answer_tokens"):
                columns[name] = pa.array(rng.integers(10, 4000, n).astype(np.int32))
            for name in names[:-1]:
                columns[name] = pa.array(rng.random(n))
            write_unit_table(pa.table(columns, schema=schema), units.table_path(staging, index))
            done.append(units.UnitDone(index=index, start=lo, stop=lo + n, counts={}, candidates=int(kept.sum()),
                                       tokens=0, files={}))
            candidates += int(kept.sum())
        codes = np.zeros(candidates, np.uint8)
        codes[rng.random(candidates) < 0.04] = 1
        outcomes = Outcomes(codes, rng.integers(0, rows, candidates), np.full(candidates, np.nan), {})
        where = np.zeros((int((codes == 0).sum()), 4), np.int32)
        wall, cpu = time.perf_counter(), time.process_time()
        path = os.path.join(staging, "records.parquet")
        write_records(path, final_batches(staging, done, outcomes, where, ["train"], stats_schema(names).names[:-4]),
                      names)
        seconds, cpu = time.perf_counter() - wall, time.process_time() - cpu
        size = os.path.getsize(path)
    return {"part": "stats", "rows": rows, "units": len(done), "records_mib": round(size / 2**20),
            "seconds": round(seconds, 1), "cpu_s": round(cpu, 1), "peak_mib": round(_peak_mib())}


def shards(rows: int) -> dict:
    """Shard writing, what each node does for its share of the packed rows: ``rows`` packed rows
    of GlaiveAI-like lengths (token ids random below 256,000: they compress less than text),
    written by :func:`tzc_data.build.write.write_shard` in shards of 1,024 rows, zstd:1."""
    from tzc_data.build.pack import Kept, packed_rows
    from tzc_data.build.write import shard_tasks, write_shard

    rng = np.random.default_rng(4)
    lengths = np.clip(rng.lognormal(np.log(2000), 0.6, 2 * rows), 64, 4096).astype(np.int32)
    members, offsets = packed_rows(lengths, 4096)
    members, offsets = members[:offsets[rows]], offsets[:rows + 1]
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as folder:
        tokens = os.path.join(folder, "u000000.tokens")
        starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)[:-1]])
        rng.integers(0, 256_000, size=int(lengths.sum()), dtype=np.int32).tofile(tokens)
        count = len(lengths)
        kept = Kept([tokens], rows=np.arange(count), lengths=lengths, prompt_lengths=np.full(count, 50, np.int32),
                    splits=np.zeros(count, np.uint8), hashes=np.zeros(count, "S16"), units=np.zeros(count, np.int32),
                    offsets=starts)
        tasks = shard_tasks(os.path.join(folder, "shards"), kept, members, offsets, 1024, 4096, "group_size:1,zstd:1")
        wall, cpu = time.perf_counter(), time.process_time()
        written = [write_shard(task) for task in tasks]
        seconds, cpu = time.perf_counter() - wall, time.process_time() - cpu
        size = sum(entry["bytes"] for entry in written)
    return {"part": "shards", "packed_rows": rows, "shards": len(written), "mib": round(size / 2**20),
            "kib_per_row": round(size / rows / 1024, 1), "seconds": round(seconds, 1), "cpu_s": round(cpu, 1),
            "rows_per_cpu_s": round(rows / cpu), "peak_mib": round(_peak_mib())}


# What the driver does after the map (tzc_data/build/pipeline.py's _write_build and the steps it calls)
DRIVER_STEPS = ("first_kept_wins", "kept_examples", "_pack", "write_shard", "write_hashes", "write_near_dup",
                "_write_stats", "write_manifest")


def _synthetic_parquet(path: str, rows: int, unit_rows: int) -> str:
    """The synthetic source's rows 0:``rows`` as a Parquet file of ``prompt`` and ``response`` in
    row groups of ``unit_rows``; returns ``path``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tzc_data.sources.generator import generate

    with pq.ParquetWriter(path, pa.schema([("prompt", pa.string()), ("response", pa.string())])) as out:
        for lo in range(0, rows, unit_rows):
            made = [generate(0, i) for i in range(lo, min(rows, lo + unit_rows))]
            out.write_table(pa.table({"prompt": [r.prompt for r in made], "response": [r.response for r in made]}),
                            row_group_size=unit_rows)
    return path


def driver(rows: int, unit_rows: int) -> dict:
    """A real build of the synthetic source's rows 0:``rows`` (``--engine local``, Gemma 2's
    tokenizer, every stage on), with each step after the map timed in place: the serial part as a
    build runs it, its reads of the units' files included, which the parts above leave out.
    ``unit_rows`` 0 builds ``--source synthetic`` (units of 256 rows); else the same rows written
    first to a Parquet file in row groups of ``unit_rows`` (a unit a row group, as the hub's
    files give them). ``write_shard`` runs inside ``_pack`` here; on Ray the nodes run it, so the
    driver's serial part is the rest. A step's seconds count every call of it."""
    from tzc_data.build import pipeline
    from tzc_data.build.config import BuildConfig
    from tzc_data.sources.synthetic import UNIT_ROWS

    spent: dict[str, list[float]] = {}

    def timed(name, function):
        def run(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                entry = spent.setdefault(name, [0.0, 0.0])
                entry[0] += time.perf_counter() - wall
                entry[1] += time.process_time() - cpu
        return run

    for name in ("_map_units", "_write_build", *DRIVER_STEPS):
        setattr(pipeline, name, timed(name, getattr(pipeline, name)))
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as folder:
        source = _synthetic_parquet(os.path.join(folder, "rows.parquet"), rows, unit_rows) if unit_rows else "synthetic"
        manifest = pipeline.build(BuildConfig(out=os.path.join(folder, "out"), start=0, stop=rows, source=source),
                                  progress=False)
    steps = {name: {"seconds": round(wall, 2), "cpu_s": round(cpu, 2)} for name, (wall, cpu) in spent.items()}
    shard_wall, shard_cpu = spent.get("write_shard", (0.0, 0.0))
    serial_wall, serial_cpu = spent["_write_build"][0] - shard_wall, spent["_write_build"][1] - shard_cpu
    unit_rows = unit_rows or UNIT_ROWS
    return {"part": "driver", "rows": rows, "units": -(-rows // unit_rows), "unit_rows": unit_rows,
            "kept": manifest["counts"]["kept"], "packed_rows": manifest["packing"]["rows"], "steps": steps,
            "serial_without_shards": {"seconds": round(serial_wall, 2), "cpu_s": round(serial_cpu, 2),
                                      "cpu_us_per_row": round(1e6 * serial_cpu / rows, 2)},
            "peak_mib": round(_peak_mib())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=22_200_000)
    parser.add_argument("--stats-rows", type=int, default=22_200_000)
    parser.add_argument("--dup-share", type=float, default=0.03)
    parser.add_argument("--near-share", type=float, default=0.02)
    parser.add_argument("--shard-rows", type=int, default=10_240, help="packed rows the shards part writes")
    parser.add_argument("--part", choices=["dedup", "pack", "stats", "shards", "driver"])
    parser.add_argument("--driver-rows", type=int, default=200_000,
                        help="synthetic rows of the real build the driver part times")
    parser.add_argument("--driver-unit-rows", type=int, default=20_000,
                        help="the driver part's rows a unit (a Parquet row group); 0: --source synthetic's own")
    args = parser.parse_args()
    if args.part:  # one part, in this process: its peak RSS is its own
        result = {"dedup": lambda: dedup(args.rows, args.dup_share, args.near_share), "pack": lambda: pack(args.rows),
                  "stats": lambda: stats(args.stats_rows), "shards": lambda: shards(args.shard_rows),
                  "driver": lambda: driver(args.driver_rows, args.driver_unit_rows)}[args.part]()
        print(json.dumps(result))
        return
    for part in ("dedup", "pack", "stats", "shards", "driver"):
        done = subprocess.run([sys.executable, __file__, "--part", part, "--rows", str(args.rows), "--stats-rows",
                               str(args.stats_rows), "--dup-share", str(args.dup_share), "--near-share",
                               str(args.near_share), "--shard-rows", str(args.shard_rows), "--driver-rows",
                               str(args.driver_rows), "--driver-unit-rows", str(args.driver_unit_rows)],
                              capture_output=True, text=True, check=True)
        print(done.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
