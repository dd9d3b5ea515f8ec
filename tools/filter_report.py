"""Measure the quality filters: recall per loop shape, false drops, language, near-dup, cost.

    .venv/bin/python tools/filter_report.py [--rows 20000] [--cost-rows 5000] [--cost-runs 3]

Labelled sets come from the synthetic generator (``planted`` defects and loop shapes) and from the
real traces and prompts in ../shared/data (short and long). Each repetition signal is measured alone
(the others switched off) and all together, as the build runs them. The cost is measured by
building the real long traces and a synthetic range in this run, with the filters and without,
interleaved, and comparing wall and CPU time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tzc_data.build.config import BuildConfig  # noqa: E402
from tzc_data.build.pipeline import build  # noqa: E402
from tzc_data.filters import EnglishFilter, RepetitionFilter  # noqa: E402
from tzc_data.record import Example  # noqa: E402
from tzc_data.sources.generator import _prompt, generate  # noqa: E402
from tzc_data.text.dedupe import normalise  # noqa: E402
from tzc_data.text.format import FormatError, split_response  # noqa: E402
from tzc_data.text.minhash import NearDupIndex, drop_near_duplicates, exact_jaccard  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def _example(reasoning: str, answer: str = "The answer is 4.", prompt: str = "What is 2+2?") -> Example:
    return Example(row=0, prompt=prompt, reasoning=reasoning, answer=answer)


def _read(name: str) -> list[dict]:
    with open(SHARED / name, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _as_closed(trace: dict) -> Example:
    """A real trace as the repetition filter sees it; one without </think> as if it had been closed."""
    try:
        return _example(*split_response(trace["response"]), prompt=trace["prompt"])
    except FormatError:
        reasoning, _, answer = trace["response"].removeprefix("<think>").partition("</think>")
        return _example(reasoning.strip(), answer.strip() or "x", prompt=trace["prompt"])


def _complete(traces: list[dict]) -> list[dict]:
    """The traces the build would hand to the filters: a closed think and both parts non-empty."""
    out = []
    for trace in traces:
        try:
            split_response(trace["response"])
        except FormatError:
            continue
        out.append(trace)
    return out


# signal -> (drop reason, the RepetitionFilter fields that switch it; 0 is off)
SIGNALS = {"periodic tail": ("loop", ("tail_repeats", "tail_chars")),
           "cycle of a few lines": ("loop", ("cycle_repeats", "cycle_share")),
           "one line re-emitted (run)": ("loop", ("run_copies",)),
           "repeated paragraph or sentence": ("repeated_paragraphs", ("paragraph_repeats", "sentence_repeats",
                                                                      "repeated_share")),
           "n-gram shares": ("ngram_repetition", ("ngram_dup_share", "ngram_top_share")),
           "zlib ratio": ("compressible", ("min_compression",))}
SWITCHES = ("tail_repeats", "cycle_repeats", "run_copies", "paragraph_repeats", "sentence_repeats",
            "ngram_dup_share", "ngram_top_share", "min_compression")


def _alone(fields: tuple[str, ...]) -> RepetitionFilter | None:
    """The default filter with every other signal switched off; None if this code lacks the signal."""
    have = {f.name for f in dataclasses.fields(RepetitionFilter)}
    if not set(fields) & have & set(SWITCHES):
        return None
    return RepetitionFilter(**{name: 0 for name in SWITCHES if name in have and name not in fields})


def _thresholds(fields: tuple[str, ...]) -> str:
    default = RepetitionFilter()
    return ", ".join(f"{name} {getattr(default, name):g}" for name in fields if hasattr(default, name))


def labelled_sets(rows: int) -> tuple[dict[str, list[Example]], dict[str, list[Example]]]:
    """(looping sets, clean sets) by name: planted loops of every synthetic shape and real loops
    (those never closed as if they had been), synthetic clean traces and every real clean set."""
    loops: dict[str, list[Example]] = {}
    clean: list[Example] = []
    for i in range(rows):
        row = generate(21, i)
        if row.defect in ("loop_reasoning", "loop_answer", "loop_paragraphs", "loop_unterminated"):
            example = _example(row.response.removeprefix("<think>\n"), prompt=row.prompt) \
                if row.defect == "loop_unterminated" else _example(*split_response(row.response), prompt=row.prompt)
            loops.setdefault(f"planted: {row.shape}", []).append(example)
        elif row.defect == "clean":
            clean.append(_example(*split_response(row.response), prompt=row.prompt))
    loops = dict(sorted(loops.items()))
    real = _read("r1_traces_loops.jsonl") + _read("r1_long_loops.jsonl")
    loops["real loops that close </think>"] = [_as_closed(t) for t in real if "</think>" in t["response"]]
    loops["every real loop, as if closed"] = [_as_closed(t) for t in real]
    short, long = (_complete(_read(name)) for name in ("r1_traces_clean.jsonl", "r1_long_clean.jsonl"))
    clean_sets = {"synthetic clean": clean, "real short clean": [_as_closed(t) for t in short],
                  "real long clean": [_as_closed(t) for t in long]}
    clean_sets["real complete, short + long"] = clean_sets["real short clean"] + clean_sets["real long clean"]
    return loops, clean_sets


def repetition(rows: int) -> list[str]:
    """Per signal (each alone, the others off) and overall: recall on every looping set, false drops
    on every clean set, precision on the real sets (loops as if closed against the real clean)."""
    loops, clean = labelled_sets(rows)
    checks = [*((name, _alone(fields)) for name, (_, fields) in SIGNALS.items()),
              ("all (the build)", RepetitionFilter())]
    hits = {signal: None if check is None else {name: sum(check(e).reason is not None for e in examples)
                                                for name, examples in (loops | clean).items()}
            for signal, check in checks}
    lines = ["| set | traces | " + " | ".join(signal for signal, _ in checks) + " |",
             "| --- " * (len(checks) + 2) + "|"]
    for kind, sets in (("recall", loops), ("false drops", clean)):
        for name, examples in sets.items():
            cells = ["n/a" if hits[s] is None else f"{hits[s][name] / len(examples):.1%}"
                     + (f" ({hits[s][name]})" if kind == "false drops" and hits[s][name] else "") for s, _ in checks]
            lines.append(f"| {kind}: {name} | {len(examples)} | " + " | ".join(cells) + " |")
    precision = []
    for signal, _ in checks:
        if hits[signal] is None:
            precision.append("n/a")
            continue
        caught, false = hits[signal]["every real loop, as if closed"], hits[signal]["real complete, short + long"]
        precision.append(f"{caught / (caught + false):.0%}" if caught + false else "n/a")
    lines.append("| precision: real loops caught / all real drops | | " + " | ".join(precision) + " |")
    lines += ["", "Thresholds (the defaults): " + "; ".join(
        f"{signal}: {_thresholds(fields)}" for signal, (_, fields) in SIGNALS.items() if _thresholds(fields)) + "."]
    return lines


def real_outcomes() -> list[str]:
    """What the build's stages (split, then the repetition filter) do to every real trace; each
    repetition drop of a real clean trace is listed with its repeated unit."""
    check = RepetitionFilter()
    lines = ["| real set | traces | dropped | by reason |", "| --- | --- | --- | --- |"]
    listed = []
    for name in ("r1_traces_clean.jsonl", "r1_long_clean.jsonl", "r1_traces_loops.jsonl", "r1_long_loops.jsonl",
                 "r1_long_truncated.jsonl"):
        reasons: dict[str, int] = {}
        traces = _read(name)
        for k, trace in enumerate(traces):
            try:
                verdict = check(_example(*split_response(trace["response"]), prompt=trace["prompt"]))
                reason, detail = verdict.reason, verdict.detail
            except FormatError as err:
                reason, detail = err.reason, err.detail
            if reason is not None:
                reasons[reason] = reasons.get(reason, 0) + 1
                if "clean" in name and reason not in ("empty_reasoning", "empty_answer"):
                    listed.append(f"- `{name}` row {k} ({len(trace['response']):,} chars): `{reason}`, {detail}")
        dropped = sum(reasons.values())
        lines.append(f"| `{name}` | {len(traces)} | {dropped} | "
                     + ", ".join(f"{r} {c}" for r, c in sorted(reasons.items())) + " |")
    return lines + ["", "Real clean traces dropped by a repetition signal:", ""] + (listed or ["- none"])


def language(rows: int) -> list[str]:
    english = EnglishFilter()
    prompts = [json.loads(line)["prompt"] for line in open(SHARED / "glaive_prompts_real.jsonl")]
    prompt_drops = sum(english(_example("", prompt=p)).reason is not None for p in prompts)
    traces = [t for t in map(json.loads, open(SHARED / "r1_traces_clean.jsonl"))]
    trace_drops = sum(english(_example(t["response"][7:], prompt=t["prompt"])).reason is not None for t in traces)
    foreign = [generate(21, i) for i in range(rows)]
    foreign = [r for r in foreign if r.defect == "non_english"]
    caught = sum(english(_example(split_response(r.response)[0], prompt=r.prompt)).reason is not None for r in foreign)
    return ["| set | rows | dropped as non_english |", "| --- | --- | --- |",
            f"| real GlaiveAI prompts | {len(prompts)} | {prompt_drops / len(prompts):.1%} |",
            f"| real R1 traces (prompt + reasoning) | {len(traces)} | {trace_drops / len(traces):.2%} |",
            f"| synthetic Spanish / German / French rows | {len(foreign)} | {caught / len(foreign):.1%} |"]


def near_dup(rows: int) -> list[str]:
    """Recall on planted one-edit twins and the cost per prompt, through the build's batched stage."""
    generated = [generate(22, i) for i in range(rows)]
    examples = [Example(row=i, prompt=row.prompt, normalised=normalise(row.prompt))  # the build has it from exact dedup
                for i, row in enumerate(generated)]
    started = time.perf_counter()
    out = list(drop_near_duplicates(examples, NearDupIndex(0.8)))
    per_prompt = (time.perf_counter() - started) / rows * 1e6
    planted = sum(row.defect == "near_duplicate" for row in generated)
    found = sum(row.defect == "near_duplicate" and e.status == "near_duplicate" for row, e in zip(generated, out))
    distinct = [_prompt(23, i) for i in range(rows // 2)]
    merged = drop_near_duplicates([Example(row=i, prompt=p) for i, p in enumerate(distinct)], NearDupIndex(0.8))
    false = sum(e.twin is not None and exact_jaccard(e.prompt, distinct[e.twin]) < 0.8 for e in merged)
    return ["| near-duplicate set | prompts | result |", "| --- | --- | --- |",
            f"| planted near-duplicates (one edit) | {planted} | recall {found / planted:.1%} |",
            f"| distinct prompts (a merge is false when exact Jaccard < 0.8) | {len(distinct)} | "
            f"false merges {false / len(distinct):.3%} |",
            f"| cost per prompt (the build's batched stage: signature + lookup + insert) | | {per_prompt:.0f} µs |"]


def _timed_build(config: BuildConfig) -> tuple[float, float]:
    """(wall, CPU) seconds of one build in this process."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    build(config, progress=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


NO_FILTERS = dict(loop_filter=False, language_filter=False, near_dup=False)


def cost(rows: int) -> list[str]:
    lines = ["| build of synthetic 0:{:,} | wall s | CPU s | rows/s |".format(rows), "| --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in [("no filters (no language, repetition, near-dup)", NO_FILTERS), ("every filter", {}),
                              ("no filters, again", NO_FILTERS), ("every filter, again", {})]:
            config = BuildConfig(out=f"{tmp}/b", start=0, stop=rows, source="synthetic", overwrite=True, **options)
            wall, cpu = _timed_build(config)
            lines.append(f"| {name} | {wall:.2f} | {cpu:.2f} | {rows / wall:,.0f} |")
    return lines


def cost_long(runs: int) -> list[str]:
    """The filters' share of a build of the real long traces (r1_long_*.jsonl: 138 traces, 8k-125k
    characters), with the options those files need (they repeat prompts and run long): the best of
    ``runs`` interleaved builds with the language and repetition filters and without them, and the
    filters timed alone on the same traces."""
    files = sorted(SHARED.glob("r1_long_*.jsonl"))
    traces = [trace for path in files for trace in map(json.loads, open(path, encoding="utf-8"))]
    common = dict(start=0, stop=len(traces), source=str(SHARED / "r1_long_*.jsonl"), overwrite=True, dedup=False,
                  near_dup=False, seq_len=32768, max_tokens=32768)
    best = {"every filter": (1e9, 1e9), "no filters": (1e9, 1e9)}
    with tempfile.TemporaryDirectory() as tmp:
        _timed_build(BuildConfig(out=f"{tmp}/b", **common))  # warm-up: the tokenizer and its word cache
        for _ in range(runs):
            for name, options in [("no filters", dict(loop_filter=False, language_filter=False)),
                                  ("every filter", {})]:
                wall, cpu = _timed_build(BuildConfig(out=f"{tmp}/b", **common, **options))
                best[name] = min(best[name][0], wall), min(best[name][1], cpu)
    examples = [_as_closed(t) for t in _complete(traces)]
    alone = 1e9
    for _ in range(runs):
        started = time.process_time()
        for example in examples:
            EnglishFilter()(example)
            RepetitionFilter()(example)
        alone = min(alone, time.process_time() - started)
    (on_wall, on_cpu), (off_wall, off_cpu) = best["every filter"], best["no filters"]
    return [f"| build of the {len(traces)} real long traces (best of {runs}) | wall s | CPU s |", "| --- | --- | --- |",
            f"| no filters (no language, repetition) | {off_wall:.2f} | {off_cpu:.2f} |",
            f"| every filter | {on_wall:.2f} | {on_cpu:.2f} |",
            f"| difference: the filters' share of the build | {1 - off_wall / on_wall:.0%} | "
            f"{1 - off_cpu / on_cpu:.0%} |",
            f"| language + repetition filters timed alone on the {len(examples)} complete traces | | "
            f"{alone:.2f} ({alone / on_cpu:.0%} of the build) |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--cost-rows", type=int, default=5000)
    parser.add_argument("--cost-runs", type=int, default=3, help="interleaved builds of the real long traces")
    args = parser.parse_args()
    for title, lines in [("Repetition signals: recall on looping sets, false drops on clean sets",
                          repetition(args.rows)),
                         ("Every real trace through the build's split and repetition filter", real_outcomes()),
                         ("English detector", language(args.rows)), ("Near-duplicate prompts", near_dup(args.rows)),
                         ("Cost of the filters on real long traces", cost_long(args.cost_runs)),
                         ("Cost of the filters on synthetic traces", cost(args.cost_rows))]:
        print(f"### {title}\n")
        print("\n".join(lines) + "\n", flush=True)


if __name__ == "__main__":
    main()
