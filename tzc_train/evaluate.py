"""``tzc-train eval`` and ``sample``: a run's model decoding prompts, and a report a user can read.

The model is the one a run trained: its base (``--model``/``--weights``, default the run's) with
its adapters (a run's ``--out`` or an export's ``adapters/``, rank, alpha and targets as recorded).
Prompts come from the build's eval split by default, as the token ids training saw (the prefix of
each example up to ``<start_of_turn>model\\n``), with the example's own answer as the reference;
or from a file (``--prompts``: ``prompt`` and optional ``answer`` fields).

Decoding is the judges' by default: greedy, at most ``MAX_GENERATION_STEPS`` = 768 new tokens (the
competition template's value; ``--max-new-tokens`` changes it), the model's adapters in the base
weights' dtype as the judges' ``lora_policy`` holds them. The report says what share of the build's
reference model turns fit that budget: a model taught on longer answers is cut before ``</answer>``.

The report counts, over the greedy completions:

* format compliance: ``<reasoning>…</reasoning>`` then ``<answer>…</answer>`` (``sample.check_format``);
* stop rate: ``<end_of_turn>`` (or ``<eos>``) before the budget; truncations: the rest;
* reasoning and answer lengths in tokens, beside the references';
* exact match of the answer against the reference, after trimming and collapsing whitespace.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

import tzc_data
from tzc_data.text import format as fmt
from tzc_data.verify.contamination import check_held_out
from tzc_data.text.tokenize import build_tokenizer
from tzc_data.text.tokenize import Tokenizer
from tzc_train.sample import Sample, sample
from tzc_train.submit.kaggle import JUDGES_BUDGET


@dataclass(frozen=True, kw_only=True)
class DecodeRequest:
    """What to decode with; ``None`` fields default to what the run (or export) recorded."""

    data: str
    lora: str | None = None
    model: str | None = None
    weights: str | None = None
    tokenizer: str | None = None
    lora_rank: int | None = None
    lora_alpha: float | None = None
    mesh: str | None = None
    batch_size: int = 8
    max_new_tokens: int | None = None


@dataclass(frozen=True)
class Prompt:
    """A prompt (text, or token ids encoded as in training) and its reference answer, if known."""

    prompt: str | list[int]
    answer: str | None = None
    reasoning_tokens: int | None = None  # the reference's


def read_prompts(path: str) -> list[Prompt]:
    """``.jsonl`` with ``prompt`` (and optional ``answer``) fields, or one prompt per line."""
    prompts = []
    try:
        handle = open(path, encoding="utf-8")
    except OSError as err:
        raise ValueError(f"--prompts {path}: {err.strerror}") from None
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            if not path.endswith(".jsonl"):
                prompts.append(Prompt(line.strip()))
                continue
            try:
                row = json.loads(line)
                prompts.append(Prompt(str(row["prompt"]), None if row.get("answer") is None else str(row["answer"])))
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"--prompts {path}, line {number}: not a JSON object with a 'prompt' field") from None
    if not prompts:
        raise ValueError(f"--prompts {path}: no prompts in it")
    return prompts


def eval_split_prompts(data: str, tokenizer: Tokenizer, limit: int) -> list[Prompt]:
    """The first ``limit`` examples (0: all) of the build's eval split, in shard order: the prompt's
    token ids as trained on, and the example's answer and reasoning length as the reference."""
    manifest = tzc_data.read_manifest(data)
    if not manifest["packing"]["by_split"].get("eval", {}).get("rows"):
        raise ValueError(f"--data {data}: the build has no eval split rows; build with --eval-fraction or "
                         "pass --prompts")
    prompts: list[Prompt] = []
    for row in tzc_data.iter_rows(data, "eval"):
        for segment in range(1, int(row["segment_ids"].max()) + 1):
            where = row["segment_ids"] == segment
            tokens, targets = row["tokens"][where], row["loss_mask"][where]
            start = int(np.argmax(targets))  # the model turn starts at the first target
            reasoning, answer = fmt.parse_completion(tokenizer.decode(int(t) for t in tokens[start:]))
            prompts.append(Prompt([int(t) for t in tokens[:start]], answer, token_count(tokenizer, reasoning)))
            if len(prompts) == limit:
                return prompts
    return prompts


def token_count(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer.sp.encode(text))


def references_fitting(data: str, manifest: dict[str, Any], budget: int) -> dict[str, Any] | None:
    """How many of the build's kept examples (its eval split's, or its train split's without one)
    have a model turn (``<end_of_turn>`` and ``<eos>`` included: what a decoder must generate to
    stop) of at most ``budget`` tokens; None when the build has no stats."""
    import polars as pl

    path = os.path.join(data, "stats", "records.parquet")
    if not os.path.isfile(path):
        return None
    split = "eval" if manifest["packing"]["by_split"].get("eval", {}).get("rows") else "train"
    turns = (pl.scan_parquet(path).filter((pl.col("status") == "kept") & (pl.col("split") == split))
             .select(pl.col("loss_tokens")).collect()["loss_tokens"])
    return {"split": split, "examples": len(turns), "fit": int((turns <= budget).sum()),
            "longest": int(turns.max()) if len(turns) else 0}


def decode(request: DecodeRequest, prompts: list[Prompt]) -> list[Sample]:
    """Greedy completions of ``prompts`` by the requested model, ``request.batch_size`` at a time."""
    samples, _ = _decode(request, prompts)
    return samples


def _decode(request: DecodeRequest, prompts: list[Prompt]) -> tuple[list[Sample], dict[str, Any]]:
    from tzc_train.config import parse_mesh
    from tzc_train.model.load import base_model, make_mesh
    from tzc_train.model.lora import restore_adapters, with_lora

    manifest = tzc_data.read_manifest(request.data)
    tokenizer = build_tokenizer(manifest, request.tokenizer)
    config = decoding_config(request)
    budget = JUDGES_BUDGET if request.max_new_tokens is None else request.max_new_tokens
    mesh = make_mesh(parse_mesh(request.mesh))
    started = time.perf_counter()
    with mesh:
        model, model_config = base_model(config, manifest["tokenizer"]["vocab_size"], mesh)
        if request.lora:
            model = with_lora(model, config, mesh)
            restore_adapters(model, request.lora, "--lora")
        samples = sample(model, model_config, tokenizer, [p.prompt for p in prompts], max_new_tokens=budget,
                         batch_size=request.batch_size)
    return samples, {"budget": budget, "tokenizer": tokenizer, "seconds": round(time.perf_counter() - started, 1)}


def decoding_config(request: DecodeRequest) -> Any:
    """A ``TrainConfig`` that rebuilds the model: the run's (or export's) recorded choices, then
    the request's explicit ones."""
    from tzc_train.config import LORA_TARGETS, TrainConfig, read_run_config
    from tzc_train.model.adapters import adapter_config, is_exported_adapters

    recorded: dict[str, Any] = {"model": "gemma2-2b", "weights": None, "dtype": None, "lora_rank": 64, "lora_alpha": 64.0,
                                "lora_targets": LORA_TARGETS}
    if request.lora and is_exported_adapters(request.lora):
        exported = adapter_config(request.lora)
        recorded.update(model=exported.get("base_model", "gemma2-2b"), dtype=exported.get("dtype"),
                        lora_rank=int(exported["rank"]),
                        lora_alpha=float(exported["alpha"]), lora_targets=exported.get("targets", LORA_TARGETS))
    elif request.lora:
        run = read_run_config(request.lora)
        recorded.update(model=run.model, weights=run.weights, dtype=run.dtype, lora_rank=run.lora_rank,
                        lora_alpha=run.lora_alpha, lora_targets=run.lora_targets)
    given = {"model": request.model, "weights": request.weights, "lora_rank": request.lora_rank,
             "lora_alpha": request.lora_alpha}
    chosen = {**recorded, **{k: v for k, v in given.items() if v is not None}}
    return TrainConfig(data=request.data, out=request.lora or ".", **chosen)


def normalise(answer: str) -> str:
    return " ".join(answer.split())


def evaluate(request: DecodeRequest, *, prompts: str | None = None, limit: int = 64,
             allow_overlap: bool = False) -> dict[str, Any]:
    """Decode the eval split's prompts (or the ``prompts`` file's) and report; see the module docstring.
    A ``prompts`` file that shares word n-grams with the build's training prompts is refused
    (:func:`tzc_data.verify.contamination.check_held_out`), or with ``allow_overlap`` reported as ``overlap``."""
    if limit < 0:
        raise ValueError(f"--limit {limit}: must be >= 0")
    manifest = tzc_data.read_manifest(request.data)
    tokenizer = build_tokenizer(manifest, request.tokenizer)
    chosen = read_prompts(prompts)[:limit or None] if prompts else eval_split_prompts(request.data, tokenizer, limit)
    overlap = check_held_out([str(p.prompt) for p in chosen], request.data, tokenizer, allow=allow_overlap,
                             option=f"--prompts {prompts}") if prompts else None
    samples, run = _decode(request, chosen)
    result = report(chosen, samples, tokenizer, source=prompts or f"eval split of {request.data}",
                    budget=run["budget"], batch_size=request.batch_size, seconds=run["seconds"])
    return {**result, "references_fitting": references_fitting(request.data, manifest, run["budget"]),
            "overlap": overlap}


def report(prompts: list[Prompt], samples: list[Sample], tokenizer: Tokenizer, *, source: str, budget: int,
           batch_size: int, seconds: float) -> dict[str, Any]:
    rows = []
    for prompt, item in zip(prompts, samples):
        reasoning = answer = None
        if item.well_formed:
            reasoning, answer = fmt.parse_completion(item.completion.split(fmt.END)[0].strip())
        rows.append({
            "prompt": item.prompt, "completion": item.completion, "well_formed": item.well_formed,
            "problem": item.problem, "stopped": not item.truncated, "new_tokens": item.new_tokens,
            "reasoning_tokens": None if reasoning is None else token_count(tokenizer, reasoning),
            "answer_tokens": None if answer is None else token_count(tokenizer, answer),
            "answer": answer, "reference": prompt.answer, "reference_reasoning_tokens": prompt.reasoning_tokens,
            "exact_match": None if prompt.answer is None else (answer is not None and
                                                               normalise(answer) == normalise(prompt.answer)),
        })
    n = len(rows)
    referenced = [r for r in rows if r["reference"] is not None]
    return {
        "source": source, "prompts": n, "budget": budget, "batch_size": batch_size, "seconds": seconds,
        "well_formed": sum(r["well_formed"] for r in rows), "stopped": sum(r["stopped"] for r in rows),
        "truncated": sum(not r["stopped"] for r in rows),
        "malformed_stopped": sum(r["stopped"] and not r["well_formed"] for r in rows),
        "with_reference": len(referenced), "exact_match": sum(bool(r["exact_match"]) for r in referenced),
        "reasoning_tokens": _lengths([r["reasoning_tokens"] for r in rows]),
        "answer_tokens": _lengths([r["answer_tokens"] for r in rows]),
        "reference_reasoning_tokens": _lengths([r["reference_reasoning_tokens"] for r in rows]),
        "reference_answer_tokens": _lengths([token_count(tokenizer, r["reference"]) for r in referenced]),
        "samples": rows,
    }


def _lengths(values: list[int | None]) -> dict[str, float] | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return {"mean": round(statistics.fmean(present), 1), "median": float(statistics.median(present)),
            "max": max(present), "count": len(present)}


def format_report(report: dict[str, Any]) -> str:
    """The report as a table for a terminal."""
    n = report["prompts"]

    def share(count: int, total: int) -> str:
        return f"{count:>6,}/{total:<6,} {100 * count / total:5.1f}%" if total else f"{count:>6,}/{total:<6,}   n/a"

    def lengths(name: str, ours: dict | None, theirs: dict | None) -> str:
        got = f"mean {ours['mean']:>8,.1f}  median {ours['median']:>8,.0f}  max {ours['max']:>7,}" if ours else "none"
        return f"  {name:<19} {got}" + (f"   (reference mean {theirs['mean']:,.1f})" if theirs else "")

    lines = [
        f"tzc-train eval: {n} prompts from the {report['source']}; greedy, budget {report['budget']:,} new tokens, "
        f"batches of {report['batch_size']}, {report['seconds']:,.1f} s",
        f"  {'format compliance':<19} {share(report['well_formed'], n)}   <reasoning>…</reasoning> then <answer>…</answer>",
        f"  {'stop rate':<19} {share(report['stopped'], n)}   <end_of_turn> before the budget",
        f"  {'truncations':<19} {share(report['truncated'], n)}   cut by the budget (counted apart from malformed)",
        f"  {'malformed, stopped':<19} {share(report['malformed_stopped'], n)}",
        f"  {'exact match':<19} {share(report['exact_match'], report['with_reference'])}   "
        f"answer vs reference (of {report['with_reference']} with one)",
        lengths("reasoning tokens", report["reasoning_tokens"], report["reference_reasoning_tokens"]),
        lengths("answer tokens", report["answer_tokens"], report["reference_answer_tokens"]),
    ]
    fitting = report.get("references_fitting")
    if fitting:
        lines.append(f"  {'references fit':<19} {share(fitting['fit'], fitting['examples'])}   model turns of the "
                     f"build's {fitting['split']} split within {report['budget']:,} tokens (longest "
                     f"{fitting['longest']:,}); a model taught on longer ones is cut before </answer>")
    return "\n".join(lines)


__all__ = ["JUDGES_BUDGET", "DecodeRequest", "Prompt", "decode", "eval_split_prompts", "evaluate", "format_report",
           "read_prompts", "references_fitting", "report"]
