"""The quality filters' share of a build's CPU, this code against a baseline, in one run (issue 28).

    python tools/bench_filters.py [--rows 10000] [--repeat 1] [--rounds 5] [--baseline c004257]

The quality filters are the language and the repetition filters (``--no-language-filter
--no-loop-filter`` turns them off; near-duplicate detection, MinHash, is not one of them and
stays on). Their share of a build is ``1 - CPU(off) / CPU(every filter)``, from the medians of
``--rounds`` interleaved rounds, each round building with the baseline's code and this code,
filters off and on. The baseline's code is read from git (``git archive``): a build process runs
its whole ``tzc_data``; the builds in one process and the filters alone take its filter classes
(``tzc_data/filters``) in place of this checkout's, everything else being this checkout. CPU is
user + system time (the machine may be shared).

Two ways, on two sources:

* **A build a process** (``--engine local``: the map and the serial part on one core), as
  ``make bench`` runs them: start-up, imports, the tokenizer's load, numba's and the word cache's
  warm-up included. A process judges its first ``COMPILE_FROM`` rows in Python and then loads the
  compiled filters.
* **Builds in one process**, after a first build of each kind (what a long-lived process, or
  every build after the first few hundred rows, pays): imports and loads are done, the compiled
  filters are in use.

Sources: the synthetic source's rows 0:``--rows`` (``--source synthetic``), and the 138 real long
traces of ``../shared/data/r1_long_*.jsonl`` (8k-125k characters), ``--repeat`` times in one
JSONL file, built with the options those files need (``--no-dedup --no-near-dup``: they repeat
prompts; ``--seq-len 32768``). Then the filters alone, back to back (warm caches), on the examples
a build hands them: µs a row. Prints Markdown.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


def baseline_package(revision: str, into: Path) -> Path:
    """The ``tzc_data`` package at ``revision``, written under ``into``; returns its folder. A
    build process runs all of it (its filters, compiled code and the stages around them, as they
    were); the in-process builds and the filters alone take its ``filters`` modules only."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", revision, "tzc_data"],
                             check=True, capture_output=True).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "tzc_data"


def config(source: str, stop: int, off: bool, out: str):
    from tzc_data.build.config import BuildConfig
    options = dict(out=out, overwrite=True, start=0, stop=stop, source=source)
    if source != "synthetic":
        options |= dict(dedup=False, near_dup=False, seq_len=32768, max_tokens=32768)
    if off:
        options |= dict(loop_filter=False, language_filter=False)
    return BuildConfig(**options)


def child(args: argparse.Namespace) -> None:
    """One build in this process (run by the parent as a process of its own)."""
    if args.baseline_path:
        sys.path.insert(0, os.path.dirname(args.baseline_path))  # all of tzc_data from the baseline
    from tzc_data.build.pipeline import build
    build(config(args.source, args.stop, args.off, args.out), progress=False)
    import tzc_data.filters
    if bool(args.baseline_path) != tzc_data.filters.__file__.startswith(args.baseline_path or "//"):
        raise SystemExit(f"the build ran {tzc_data.filters.__file__}, not the filters it was meant to")


def process_build(source: str, stop: int, off: bool, baseline: str | None, out: str) -> float:
    """CPU seconds of one build in a process of its own."""
    command = [sys.executable, os.path.abspath(__file__), "--child", "--source", source, "--stop", str(stop),
               "--out", out] + (["--off"] if off else []) + (["--baseline-path", str(baseline)] if baseline else [])
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"build failed: {' '.join(command)}")
    return usage.ru_utime + usage.ru_stime


@lru_cache(maxsize=None)
def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@contextmanager
def filters_of(baseline: Path | None):
    """The build's filters (classes and ``apply_filters``) taken from ``baseline`` while inside."""
    import tzc_data.build.rowstage as rowstage
    names = ("EnglishFilter", "RepetitionFilter", "LengthFilter", "apply_filters")
    saved = {name: getattr(rowstage, name) for name in names}
    if baseline is not None:
        base = _load(baseline / "filters" / "base.py", "baseline_base")
        modules = {"EnglishFilter": _load(baseline / "filters" / "language.py", "baseline_language"),
                   "RepetitionFilter": _load(baseline / "filters" / "repetition.py", "baseline_repetition"),
                   "LengthFilter": _load(baseline / "filters" / "length.py", "baseline_length"),
                   "apply_filters": base}
        for name, module in modules.items():
            setattr(rowstage, name, getattr(module, name))
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(rowstage, name, value)


def in_process_build(source: str, stop: int, off: bool, baseline: Path | None, out: str) -> float:
    from tzc_data.build.pipeline import build
    with filters_of(baseline):
        before = resource.getrusage(resource.RUSAGE_SELF)
        build(config(source, stop, off, out), progress=False)
        after = resource.getrusage(resource.RUSAGE_SELF)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def shares(measure, source: str, stop: int, rounds: int, baseline, label: str, revision: str,
           warm_up: bool = False) -> list[str]:
    runs: dict[tuple[str, bool], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        variants = [(code, off) for code in ("baseline", "this") for off in (True, False)]
        if warm_up:
            for code, off in variants:
                measure(source, stop, off, baseline if code == "baseline" else None, f"{tmp}/b")
        for _ in range(rounds):
            for code, off in variants:
                cpu = measure(source, stop, off, baseline if code == "baseline" else None, f"{tmp}/b")
                runs.setdefault((code, off), []).append(cpu)
    lines = [f"| {label} | code | CPU s, quality filters off | CPU s, every filter | the quality filters' share |",
             "| --- | --- | --- | --- | --- |"]
    spread = lambda xs: f"{min(xs):.2f}-{max(xs):.2f}"  # noqa: E731
    for code, name in (("baseline", f"before ({revision})"), ("this", "after (this code)")):
        off, on = statistics.median(runs[code, True]), statistics.median(runs[code, False])
        lines.append(f"| | {name} | {off:.2f} ({spread(runs[code, True])}) | {on:.2f} ({spread(runs[code, False])}) "
                     f"| **{1 - off / on:.1%}** |")
    return lines


def examples_of(source: str, stop: int) -> list:
    """The examples the quality filters judge in a build of ``source``: split, kept."""
    from tzc_data.sources import open_source
    from tzc_data.text.format import split_examples
    opened = open_source(source)
    rows = []
    for unit in opened.plan(0, stop):
        rows.extend(opened.read_unit(unit))
    return [e for e in split_examples(rows) if e.kept]


def alone(source: str, stop: int, baseline: Path, label: str, rounds: int) -> list[str]:
    from tzc_data.filters import EnglishFilter, RepetitionFilter
    old_repetition = _load(baseline / "filters" / "repetition.py", "baseline_repetition")
    old_language = _load(baseline / "filters" / "language.py", "baseline_language")
    examples = examples_of(source, stop)
    checks = {"before: language": old_language.EnglishFilter(), "before: repetition": old_repetition.RepetitionFilter(),
              "after, Python: language": EnglishFilter(compiled=False),
              "after, Python: repetition": RepetitionFilter(compiled=False),
              "after, compiled: language": EnglishFilter(compiled=True),
              "after, compiled: repetition": RepetitionFilter(compiled=True)}
    for check in checks.values():
        check(examples[0])  # loads the compiled code
    best = {name: float("inf") for name in checks}
    for _ in range(rounds):
        for name, check in checks.items():
            started = time.process_time()
            for example in examples:
                check(example)
            best[name] = min(best[name], time.process_time() - started)
    per = {name: seconds / len(examples) * 1e6 for name, seconds in best.items()}
    lines = [f"| {label}: {len(examples):,} examples, back to back | language µs a row | repetition µs a row "
             "| both | vs before |", "| --- | --- | --- | --- | --- |"]
    before = per["before: language"] + per["before: repetition"]
    for code in ("before", "after, Python", "after, compiled"):
        both = per[f"{code}: language"] + per[f"{code}: repetition"]
        lines.append(f"| {code} | {per[f'{code}: language']:.1f} | {per[f'{code}: repetition']:.1f} | {both:.1f} "
                     f"| {before / both:.2f}x |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10000, help="synthetic rows 0:ROWS")
    parser.add_argument("--repeat", type=int, default=1, help="copies of the 138 real long traces")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", default="c004257", help="the git revision whose tzc_data/filters is 'before'")
    parser.add_argument("--only", default="process,in-process,alone", help="which parts to run, comma-separated")
    parser.add_argument("--sources", default="synthetic,real", help="which sources to build, comma-separated")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--stop", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--off", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--baseline-path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        baseline = baseline_package(args.baseline, Path(tmp) / "baseline")
        traces = [line for path in sorted(SHARED.glob("r1_long_*.jsonl"))
                  for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        real = Path(tmp) / "r1_long_repeated.jsonl"
        real.write_text("\n".join(traces * args.repeat) + "\n", encoding="utf-8")
        sources = {"synthetic": ("synthetic", args.rows, f"synthetic 0:{args.rows:,}"),
                   "real": (str(real), len(traces) * args.repeat,
                            f"real long traces x{args.repeat} ({len(traces) * args.repeat:,} rows)")}
        print(f"Machine: {os.uname().machine}, {os.cpu_count()} CPUs, load average "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the start; Python {sys.version.split()[0]}.\n",
              flush=True)
        for part in args.only.split(","):
            for name in args.sources.split(","):
                source, stop, label = sources[name]
                if part == "process":
                    lines = shares(process_build, source, stop, args.rounds, baseline, f"{label}, a build a process",
                                   args.baseline)
                elif part == "in-process":
                    lines = shares(in_process_build, source, stop, args.rounds, baseline,
                                   f"{label}, builds in one process", args.baseline, warm_up=True)
                else:
                    lines = alone(source, min(stop, 3000), baseline, label, args.rounds)
                print("\n".join(lines) + "\n", flush=True)
        print(f"Load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}.")


if __name__ == "__main__":
    main()
