"""Measure the quality filters: recall per loop shape, false drops, language, near-dup, cost.

    .venv/bin/python tools/filter_report.py [--rows 20000] [--cost-rows 5000]

Labelled sets come from the synthetic generator (``planted`` defects and loop shapes) and from the
real traces and prompts in ../shared/data. The cost is measured by building the same synthetic range
twice in this run, with every filter and with none, and comparing wall and CPU time.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tzc_data.config import BuildConfig  # noqa: E402
from tzc_data.dedupe import normalise  # noqa: E402
from tzc_data.filters import EnglishFilter, RepetitionFilter  # noqa: E402
from tzc_data.format import FormatError, split_response  # noqa: E402
from tzc_data.minhash import NearDupIndex, drop_near_duplicates, exact_jaccard  # noqa: E402
from tzc_data.pipeline import build  # noqa: E402
from tzc_data.record import Example  # noqa: E402
from tzc_data.synthetic import _prompt, generate  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def _example(reasoning: str, answer: str = "The answer is 4.", prompt: str = "What is 2+2?") -> Example:
    return Example(row=0, prompt=prompt, reasoning=reasoning, answer=answer)


def repetition(rows: int) -> list[str]:
    check = RepetitionFilter()
    shapes: dict[str, list[int]] = {}
    clean = dropped = 0
    for i in range(rows):
        row = generate(21, i)
        if row.defect in ("loop_reasoning", "loop_answer", "loop_paragraphs", "loop_unterminated"):
            example = _example(row.response.removeprefix("<think>\n")) if row.defect == "loop_unterminated" \
                else _example(*split_response(row.response))
            hit = shapes.setdefault(row.shape, [0, 0])
            hit[0] += 1
            hit[1] += check(example).reason is not None
        elif row.defect == "clean":
            clean += 1
            dropped += check(_example(*split_response(row.response), prompt=row.prompt)).reason is not None
    real_clean = real_dropped = 0
    for trace in map(json.loads, open(SHARED / "r1_traces_clean.jsonl")):
        try:
            example = _example(*split_response(trace["response"]))
        except FormatError:
            continue
        real_clean += 1
        real_dropped += check(example).reason is not None
    real_loops = caught = 0
    for trace in map(json.loads, open(SHARED / "r1_traces_loops.jsonl")):
        reasoning, _, answer = trace["response"].removeprefix("<think>").partition("</think>")
        real_loops += 1
        caught += check(_example(reasoning, answer or "x")).reason is not None
    lines = ["| looping set | traces | caught |", "| --- | --- | --- |"]
    for shape, (n, hit) in sorted(shapes.items()):
        lines.append(f"| synthetic, {shape} | {n} | {hit / n:.1%} |")
    lines.append(f"| real R1 loops (`r1_traces_loops.jsonl`, 10 never closed) | {real_loops} | {caught / real_loops:.0%} |")
    lines += ["", "| clean set | traces | false drops |", "| --- | --- | --- |",
              f"| synthetic clean | {clean} | {dropped / clean:.2%} |",
              f"| real R1 clean (`r1_traces_clean.jsonl`) | {real_clean} | {real_dropped / real_clean:.2%} |"]
    return lines


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


def cost(rows: int) -> list[str]:
    lines = ["| build of synthetic 0:{:,} | wall s | CPU s | rows/s |".format(rows), "| --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in [("no filters (no language, repetition, near-dup)",
                               dict(loop_filter=False, language_filter=False, near_dup=False)),
                              ("every filter", {}), ("no filters, again", dict(loop_filter=False,
                                                                              language_filter=False, near_dup=False)),
                              ("every filter, again", {})]:
            config = BuildConfig(out=f"{tmp}/b", start=0, stop=rows, source="synthetic", overwrite=True, **options)
            before = resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            build(config, progress=False)
            wall = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_SELF)
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            lines.append(f"| {name} | {wall:.2f} | {cpu:.2f} | {rows / wall:,.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--cost-rows", type=int, default=5000)
    args = parser.parse_args()
    for title, lines in [("Repetition filter (default thresholds)", repetition(args.rows)),
                         ("English detector", language(args.rows)), ("Near-duplicate prompts", near_dup(args.rows)),
                         ("Cost of the filters", cost(args.cost_rows))]:
        print(f"### {title}\n")
        print("\n".join(lines) + "\n", flush=True)


if __name__ == "__main__":
    main()
