"""``tzc-data stats``: one build, or several side by side, summarised from ``stats/*.parquet``.

Everything here is Polars over the stats files (never the shards); docs/looking.md shows the same
one-liners for people who want to slice the stats themselves.
"""

from __future__ import annotations

import os
from typing import Any

import polars as pl

from tzc_data.layout import PACKS, RECORDS
from tzc_data.read.manifest import read_manifest, read_stats

PERCENTILES = (0.05, 0.5, 0.95, 0.99)


LENGTH_COLUMNS = ("prompt_chars", "reasoning_chars", "answer_chars", "tokens", "loss_tokens")


def summarise(directory: str) -> dict[str, Any]:
    """One build's numbers: counts by status, length percentiles of kept rows, packing."""
    manifest = read_manifest(directory)
    records = read_stats(directory, RECORDS, ["status", *LENGTH_COLUMNS], manifest=manifest)
    packs = read_stats(directory, PACKS, ["split", "segments", "tokens", "loss_tokens", "fill"], manifest=manifest)
    total = records.height
    by_status = {status: count for status, count in records.group_by("status").len().sort(
        ["len", "status"], descending=[True, False]).iter_rows()}
    kept = records.filter(pl.col("status") == "kept")
    lengths = {column: {f"p{int(q * 100)}": _quantile(kept[column], q) for q in PERCENTILES}
               for column in LENGTH_COLUMNS}
    from tzc_data.text.lengths import distribution

    model_turn = distribution(kept["loss_tokens"].drop_nulls().to_numpy())
    return {
        "build": directory,
        "range": f"{manifest['range']['start']}:{manifest['range']['stop']}",
        "source": manifest["source"]["kind"],
        "rows": total,
        "status": {s: {"rows": n, "share": round(n / total, 6) if total else 0.0} for s, n in by_status.items()},
        "kept_lengths": lengths,
        "model_turn": model_turn,  # loss tokens: what a decode generates, against the judges' budgets
        "decontamination": manifest.get("decontamination"),
        "packing": {
            "seq_len": manifest["config"]["seq_len"],
            "rows": packs.height,
            "fill": round(float(packs["tokens"].sum()) / (packs.height * manifest["config"]["seq_len"]), 6)
            if packs.height else 0.0,
            "fill_p5": _quantile(packs["fill"], 0.05),
            "tokens": int(packs["tokens"].sum()),
            "loss_tokens": int(packs["loss_tokens"].sum()),
            "examples_per_row": round(float(packs["segments"].mean()), 3) if packs.height else 0.0,
            "splits": {split: n for split, n in packs.group_by("split").len().sort("split").iter_rows()},
        },
    }


def _quantile(series: pl.Series, q: float) -> float | None:
    series = series.drop_nulls()
    return None if series.is_empty() else round(float(series.quantile(q, interpolation="nearest")), 4)


def format_table(summaries: list[dict[str, Any]]) -> str:
    """Builds side by side, one column each."""
    names = [os.path.basename(os.path.normpath(s["build"])) or s["build"] for s in summaries]
    rows: list[tuple[str, list[str]]] = [("range", [s["range"] for s in summaries]),
                                         ("source", [s["source"] for s in summaries]),
                                         ("rows read", [f"{s['rows']:,}" for s in summaries])]
    statuses = list(dict.fromkeys(k for s in summaries for k in s["status"]))
    for status in statuses:
        rows.append((f"  {status}", [_cell(s["status"].get(status)) for s in summaries]))
    for column in LENGTH_COLUMNS:
        rows.append((f"kept {column} p5/p50/p95/p99", ["/".join(_num(v) for v in s["kept_lengths"][column].values())
                                                      for s in summaries]))
    rows += [("kept model turn p50/p90/p99/max", ["/".join(_num(s["model_turn"]["percentiles"].get(p)) for p in
                                                           ("p50", "p90", "p99")) + f"/{_num(s['model_turn']['max'])}"
                                                  for s in summaries]),
             ("model turn fits 768/1,024/2,048", ["/".join("-" if v is None else f"{v:.1%}"
                                                          for v in s["model_turn"]["fits"].values())
                                                 for s in summaries])]
    rows += [(f"contaminated: {os.path.basename(b['path'])}", [_benchmark_cell(s, b["path"]) for s in summaries])
             for b in {b["path"]: b for s in summaries for b in (s.get("decontamination") or {}).get("benchmarks", [])
                       }.values()]
    rows += [("packed rows", [f"{s['packing']['rows']:,}" for s in summaries]),
             ("fill (p5 of rows)", [f"{s['packing']['fill']:.2%} ({_num(s['packing']['fill_p5'])})"
                                    for s in summaries]),
             ("tokens / loss tokens", [f"{s['packing']['tokens']:,} / {s['packing']['loss_tokens']:,}"
                                       for s in summaries]),
             ("examples per row", [f"{s['packing']['examples_per_row']:.2f}" for s in summaries]),
             ("packed rows by split", [", ".join(f"{k} {v:,}" for k, v in s["packing"]["splits"].items())
                                       for s in summaries])]
    label_width = max(len(label) for label, _ in rows)
    widths = [max(len(n), *(len(values[i]) for _, values in rows)) for i, n in enumerate(names)]
    lines = [" " * label_width + "  " + "  ".join(n.rjust(w) for n, w in zip(names, widths))]
    for label, values in rows:
        lines.append(label.ljust(label_width) + "  " + "  ".join(v.rjust(w) for v, w in zip(values, widths)))
    return "\n".join(lines)


def _benchmark_cell(summary: dict[str, Any], path: str) -> str:
    for b in (summary.get("decontamination") or {}).get("benchmarks", []):
        if b["path"] == path:
            return f"{b['items_matched']:,}/{b['items']:,} items, {b['rows_dropped']:,} rows"
    return "-"


def _cell(entry: dict[str, Any] | None) -> str:
    return "-" if entry is None else f"{entry['rows']:,} ({entry['share']:.1%})"


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.3g}"
