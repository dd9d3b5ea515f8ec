"""The model turn's length against the judges' decode budget.

The competition decodes greedily for ``MAX_GENERATION_STEPS`` new tokens (768 in its template); a
model taught on longer model turns learns to write past the budget and is cut before
``</answer>``. A kept example's model turn is its ``loss_tokens`` in ``stats/records.parquet``:
``<reasoning>`` through ``<end_of_turn>\\n<eos>``, every token a decode must generate to finish.
The build's manifest records the distribution (``model_turn``), the summary, ``tzc-data stats``
and the HTML report show it, and ``tzc-data stats --fits N`` answers how many rows a bound of N
keeps. Read side: imports nothing of the build.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.parquet as pq

BUDGETS = (768, 1024, 2048)  # the template's MAX_GENERATION_STEPS, "about 1k tokens", and twice that
DEFAULT_BUDGET = 768  # the competition template's MAX_GENERATION_STEPS
PERCENTILES = (1, 5, 10, 50, 90, 95, 99)


def model_turn_counts(records_path: str, statuses: tuple[str, ...] = ("kept",)) -> np.ndarray:
    """How many rows of ``statuses`` have each model-turn length (``loss_tokens``): index = length.
    Read a batch at a time: memory is one count per token of the longest turn, whatever the range."""
    counts = np.zeros(1, dtype=np.int64)
    for batch in pq.ParquetFile(records_path).iter_batches(columns=["status", "loss_tokens"], batch_size=65536):
        status = batch.column("status").to_numpy(zero_copy_only=False)
        loss = batch.column("loss_tokens").to_numpy(zero_copy_only=False)
        chosen = loss[np.isin(status, statuses)].astype(np.int64)
        if chosen.size:
            found = np.bincount(chosen)
            if len(found) > len(counts):
                counts = np.concatenate([counts, np.zeros(len(found) - len(counts), dtype=np.int64)])
            counts[:len(found)] += found
    return counts


def distribution(lengths: np.ndarray, *, counts: np.ndarray | None = None) -> dict[str, Any]:
    """Percentiles (nearest rank), max and mean of model-turn lengths, and the share that fits each
    of :data:`BUDGETS` (``fits``: budget -> share of these examples whose model turn is <= it).
    From the lengths, or from ``counts`` (:func:`model_turn_counts`)."""
    if counts is None:
        counts = np.bincount(np.asarray(lengths, dtype=np.int64)) if len(lengths) else np.zeros(1, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return {"examples": 0, "percentiles": {}, "max": None, "mean": None, "fits": {str(b): None for b in BUDGETS}}
    cumulative = np.cumsum(counts)
    ranks = {f"p{q}": int(np.searchsorted(cumulative, max(1, int(np.ceil(q / 100 * total))))) for q in PERCENTILES}
    return {"examples": total, "percentiles": ranks, "max": int(np.flatnonzero(counts)[-1]),
            "mean": round(float((counts * np.arange(len(counts))).sum()) / total, 1),
            "fits": {str(b): round(int(cumulative[min(b, len(cumulative) - 1)]) / total, 6) for b in BUDGETS}}


def over_budget_warning(model_turn: dict[str, Any] | None, bound: int | None = None) -> str | None:
    """A one-line warning when most kept examples' model turns are over the judges' default budget
    (``bound``: the build's --max-model-tokens, when it had one)."""
    if not model_turn or not model_turn.get("examples"):
        return None
    fits = model_turn["fits"].get(str(DEFAULT_BUDGET))
    if fits is None or fits >= 0.5:
        return None
    p99 = model_turn["percentiles"].get("p99")
    return (f"warning: {1 - fits:.0%} of the kept examples have a model turn longer than the judges' default "
            f"MAX_GENERATION_STEPS ({DEFAULT_BUDGET}): a model taught on them is cut before </answer>. Set "
            f"MAX_GENERATION_STEPS to at least the p99 model turn ({p99:,}) in the notebook"
            + (f" (this build's --max-model-tokens is {bound:,})" if bound else
               ", or select short traces with --max-model-tokens N (and --min-kept-ratio at the share you expect "
               "to keep)"))


def fits(records_path: str, budget: int) -> dict[str, Any]:
    """``tzc-data stats --fits N``: of the rows of this range that passed every check but the
    model-turn bound, how many have a model turn of at most ``budget`` tokens. Counts the kept
    rows, and the rows dropped as ``model_turn_too_long`` (a build made with a bound below
    ``budget`` dropped them; they were not deduplicated, so this is an upper bound then)."""
    counts = model_turn_counts(records_path, ("kept", "model_turn_too_long"))
    candidates = int(counts.sum())
    within = int(counts[:budget + 1].sum())
    over = int(model_turn_counts(records_path, ("model_turn_too_long",)).sum())
    rows = pq.ParquetFile(records_path).metadata.num_rows
    return {"budget": budget, "rows": rows, "candidates": candidates, "fit": within,
            "share_of_rows": round(within / rows, 6) if rows else 0.0,
            "share_of_candidates": round(within / candidates, 6) if candidates else 0.0,
            "upper_bound": bool(over)}


def fits_line(answer: dict[str, Any], build: str) -> str:
    return (f"{build}: {answer['fit']:,} of {answer['rows']:,} rows ({answer['share_of_rows']:.1%}) have a model turn "
            f"of at most {answer['budget']:,} tokens ({answer['share_of_candidates']:.1%} of the "
            f"{answer['candidates']:,} that passed the other checks"
            + (", at most: rows dropped as model_turn_too_long were not deduplicated)" if answer["upper_bound"] else ")"))
