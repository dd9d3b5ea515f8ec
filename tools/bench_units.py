"""Per-unit row-stage throughput on one core: the map's cost, which scales with machines.

Runs :class:`tzc_data.build.rowstage.RowStage` (read, filters, format, tokenize with the Gemma 2
tokenizer, length bound, MinHash keys, the unit's files) over every unit of a source in this one
process, and reports rows and tokens per CPU second. Sources: the synthetic source, and the real
long R1 traces of ``../shared/data/r1_long_clean.jsonl`` (118 traces of 8k-64k characters, one
unit; ``--repeat`` copies them, which flatters the word cache: the default is one copy). From these and ``tools/bench_serial.py``'s figures,
:func:`projection` gives the wall time of a 22.2M-row build on a cluster.

    python tools/bench_units.py [--rows 4096] [--repeat 1]
    python tools/bench_units.py --fixed [--files 2000]
    python tools/bench_units.py --versus-sentencepiece 3 [--rounds 3]

``--fixed`` measures the fixed costs instead, each build a ``tzc-data build`` process of its own
(start-up, imports, the tokenizer's load, the serial part and the publish included): a one-row
build, and a folder of ``--files`` one-row JSONL files (one unit each). The cost of a unit is
their difference over ``files - 1``. Reports wall and CPU seconds (the machine may be shared).
``--versus-sentencepiece`` compares one build process on the real traces with SentencePiece alone
on the same texts (:func:`versus_sentencepiece`). Both build the compiled code's extension
modules first where this machine has not (:func:`native_modules`, as any earlier large build
would), and say whether they could.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import types

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tzc_data.build.config import BuildConfig  # noqa: E402
from tzc_data.build.rowstage import RowStage  # noqa: E402
from tzc_data.sources import local_source, open_source  # noqa: E402
from tzc_data.text.tokenize import gemma2_tokenizer_path, load_tokenizer  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


def measure(name: str, source, start: int, stop: int, config: BuildConfig) -> dict:
    tokenizer = load_tokenizer(str(gemma2_tokenizer_path()))
    with tempfile.TemporaryDirectory() as staging:
        stage = RowStage.of(config, source, staging, tokenizer, {})
        units = source.plan(start, stop)
        stage._tools  # built once per worker: not part of a unit's cost. The word cache starts cold.
        wall, cpu = time.perf_counter(), time.process_time()
        done = [stage(u) for u in units]
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rows = sum(d.stop - d.start for d in done)
    tokens = sum(d.tokens for d in done)
    return {"source": name, "units": len(done), "rows": rows, "passed": sum(d.candidates for d in done),
            "cpu_s": round(cpu, 2), "wall_s": round(wall, 2), "rows_per_cpu_s": round(rows / cpu, 1),
            "tokens_per_cpu_s": round(tokens / cpu)}


def _build_process(source: str, rows: int, out: str, *extra: str) -> dict:
    """One ``tzc-data build`` in a process of its own: wall and CPU seconds."""
    import resource
    import subprocess

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")}
    # From the temporary folder: run from inside a checkout, ``-m`` puts the working directory
    # first on the path, and that checkout's tzc_data would run instead of this one's.
    # The paths given are the temporary folder's, absolute.
    subprocess.run([sys.executable, "-m", "tzc_data.cli", "build", "--source", source, "--range", f"0:{rows}",
                    "--out", out, "--overwrite", "--no-progress", "--min-kept-ratio", "0", *extra], check=True,
                   stdout=subprocess.DEVNULL, env=env, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}


def fixed_costs(files: int) -> list[dict]:
    """A one-row build, and ``files`` one-row files (a unit each): the fixed costs of a build and of a unit."""
    import json as json_module

    from tzc_data.sources.generator import generate

    results = []
    with tempfile.TemporaryDirectory() as folder:
        many = os.path.join(folder, "many")
        os.makedirs(many)
        for k in range(files):
            row = generate(1, k)
            with open(os.path.join(many, f"part-{k:05d}.jsonl"), "w", encoding="utf-8") as out:
                out.write(json_module.dumps({"prompt": row.prompt, "response": row.response}) + "\n")
        one = os.path.join(many, "part-00000.jsonl")
        _build_process(one, 1, os.path.join(folder, "warm"))  # the tokenizer's cache, the page cache
        single = _build_process(one, 1, os.path.join(folder, "one"))
        results.append({"build": "one row", **single})
        spread = _build_process(many, files, os.path.join(folder, "many-out"))
        results.append({"build": f"{files:,} one-row files", **spread})
        per_unit = {k: round(1000 * (spread[f"{k}_s"] - single[f"{k}_s"]) / (files - 1), 1) for k in ("wall", "cpu")}
        results.append({"build": "per unit", "wall_ms": per_unit["wall"], "cpu_ms": per_unit["cpu"]})
    return results


_SENTENCEPIECE = """
import json, sys
import sentencepiece
sp = sentencepiece.SentencePieceProcessor(model_file=sys.argv[1], num_threads=1)
with open(sys.argv[2], encoding="utf-8") as handle:
    texts = [row["prompt"] + "\\n" + row["response"] for row in map(json.loads, handle)]
print(sum(len(ids) for ids in sp.encode(texts, num_threads=1)))
"""


def _sentencepiece_process(path: str) -> dict:
    """SentencePiece alone in a process of its own, one thread, on every row's prompt and response
    (the characters the build tokenizes, less the template's few tags): wall and CPU seconds."""
    import resource
    import subprocess
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    tokens = subprocess.run([sys.executable, "-c", _SENTENCEPIECE, str(gemma2_tokenizer_path()), path], check=True,
                            capture_output=True, text=True).stdout
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "tokens": int(tokens)}


def versus_sentencepiece(copies: int, rounds: int) -> list[dict]:
    """One ``tzc-data build`` process on the real short and long traces of ``../shared/data``
    against SentencePiece on the same texts, each in a process of its own with its start-up: once,
    and with every row ``copies`` times (as a source that repeats rows gives them; the word cache
    sees each text again). Best of ``rounds``, alternating."""
    rows = []
    for name in ("r1_traces_clean.jsonl", "r1_long_clean.jsonl"):
        with open(os.path.join(SHARED, name), encoding="utf-8") as handle:
            rows += [json.loads(line) for line in handle if line.strip()]
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for times in (1, copies):
            path = os.path.join(folder, f"real-x{times}.jsonl")
            with open(path, "w", encoding="utf-8") as out:
                for _ in range(times):
                    out.writelines(json.dumps({"prompt": r["prompt"], "response": r["response"]}) + "\n" for r in rows)
            _sentencepiece_process(path)  # the page cache, the tokenizer's file
            builds, pieces = [], []
            for _ in range(rounds):
                builds.append(_build_process(path, len(rows) * times, os.path.join(folder, "out"),
                                             "--seq-len", "32768", "--max-tokens", "32768"))
                pieces.append(_sentencepiece_process(path))
            build, piece = min(builds, key=lambda r: r["cpu_s"]), min(pieces, key=lambda r: r["cpu_s"])
            results.append({"rows": len(rows) * times, "copies": times, "build_cpu_s": build["cpu_s"],
                            "build_wall_s": build["wall_s"], "sentencepiece_cpu_s": piece["cpu_s"],
                            "sentencepiece_wall_s": piece["wall_s"], "tokens": piece["tokens"],
                            "build_speed_vs_sentencepiece": round(piece["cpu_s"] / build["cpu_s"], 2)})
    return results


def projection(rows_per_core_s: float, serial_s: float, *, rows: int = 22_200_000, machines: int = 16,
               cores: int = 2) -> float:
    """Hours for ``rows`` on ``machines`` x ``cores``: the map spread over every core, then the serial part."""
    return (rows / (rows_per_core_s * machines * cores) + serial_s) / 3600


def native_modules() -> dict:
    """The quality filters' and the serial loops' extension modules, built now if need be (seconds,
    once a machine): the builds measured here then load them, as they do on a machine where an
    earlier build or ``make test`` built them. Where the tree has none (before they existed), says so."""
    try:
        from tzc_data.build import loops
        from tzc_data.filters.compiled import kernels
    except ImportError:  # kernels came with the modules
        return {"native_modules": "none in this tree"}
    filters = "built" if isinstance(kernels(), types.ModuleType) else "just-in-time"
    return {"native_modules": {"filters": filters, "loops": "built" if loops.module(build=True) else "just-in-time"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4096, help="synthetic rows")
    parser.add_argument("--repeat", type=int, default=1, help="copies of the 118 long traces")
    parser.add_argument("--fixed", action="store_true", help="the fixed costs: a one-row build, a unit")
    parser.add_argument("--files", type=int, default=2000, help="one-row files for --fixed")
    parser.add_argument("--versus-sentencepiece", type=int, metavar="COPIES", default=0,
                        help="a build process on the real short and long traces against SentencePiece's one thread "
                             "on the same texts, once and with every row COPIES times")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --versus-sentencepiece (best of)")
    args = parser.parse_args()
    if args.versus_sentencepiece or args.fixed:
        print(json.dumps(native_modules()), flush=True)
    if args.versus_sentencepiece:
        for result in versus_sentencepiece(args.versus_sentencepiece, args.rounds):
            print(json.dumps(result), flush=True)
        return
    if args.fixed:
        for result in fixed_costs(args.files):
            print(json.dumps(result), flush=True)
        return
    results = [measure("synthetic", open_source("synthetic"), 0, args.rows,
                       BuildConfig(out="x", start=0, stop=args.rows, source="synthetic"))]
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(SHARED, "r1_long_clean.jsonl"), encoding="utf-8") as handle:
            lines = [line for line in handle if line.strip()]
        path = os.path.join(folder, "long.jsonl")
        with open(path, "w", encoding="utf-8") as out:
            for _ in range(args.repeat):
                out.writelines(lines)
        rows = len(lines) * args.repeat
        results.append(measure("r1_long_clean (real, 8k-64k chars)", local_source(path), 0, rows,
                               BuildConfig(out="x", start=0, stop=rows, source=path, seq_len=16384)))
    for result in results:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
