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


def model_turns(records_path: str, statuses: tuple[str, ...] = ("kept",)) -> np.ndarray:
    """The model-turn lengths (``loss_tokens``) of the rows of ``statuses``, in row order."""
    parts = []
    for batch in pq.ParquetFile(records_path).iter_batches(columns=["status", "loss_tokens"], batch_size=65536):
        status = batch.column("status").to_numpy(zero_copy_only=False)
        loss = batch.column("loss_tokens").to_numpy(zero_copy_only=False)
        chosen = np.isin(status, statuses)
        parts.append(loss[chosen].astype(np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def distribution(lengths: np.ndarray) -> dict[str, Any]:
    """Percentiles (nearest rank), max and mean of model-turn lengths, and the share that fits each
    of :data:`BUDGETS` (``fits``: budget -> share of these examples whose model turn is <= it)."""
    if lengths.size == 0:
        return {"examples": 0, "percentiles": {}, "max": None, "mean": None, "fits": {str(b): None for b in BUDGETS}}
    ordered = np.sort(lengths)
    ranks = {f"p{q}": int(ordered[min(len(ordered) - 1, max(0, int(np.ceil(q / 100 * len(ordered))) - 1))])
             for q in PERCENTILES}
    return {"examples": int(lengths.size), "percentiles": ranks, "max": int(ordered[-1]),
            "mean": round(float(ordered.mean()), 1),
            "fits": {str(b): round(float(np.count_nonzero(ordered <= b)) / len(ordered), 6) for b in BUDGETS}}


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
    kept = model_turns(records_path)
    over = model_turns(records_path, ("model_turn_too_long",))
    candidates = np.concatenate([kept, over])
    within = int(np.count_nonzero(candidates <= budget))
    rows = pq.ParquetFile(records_path).metadata.num_rows
    return {"budget": budget, "rows": rows, "candidates": int(candidates.size), "fit": within,
            "share_of_rows": round(within / rows, 6) if rows else 0.0,
            "share_of_candidates": round(within / candidates.size, 6) if candidates.size else 0.0,
            "upper_bound": bool(over.size)}


def fits_line(answer: dict[str, Any], build: str) -> str:
    return (f"{build}: {answer['fit']:,} of {answer['rows']:,} rows ({answer['share_of_rows']:.1%}) have a model turn "
            f"of at most {answer['budget']:,} tokens ({answer['share_of_candidates']:.1%} of the "
            f"{answer['candidates']:,} that passed the other checks"
            + (", at most: rows dropped as model_turn_too_long were not deduplicated)" if answer["upper_bound"] else ")"))
