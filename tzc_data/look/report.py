"""``tzc-data report DIR -o report.html``: one self-contained HTML page of plots about a build.

No plotting library and nothing fetched at view time: each plot is an inline SVG drawn here from
the Parquet stats (length histograms per part, drop reasons, fill per packed row, examples per
row), so the page opens anywhere, offline, and can be mailed around.
"""

from __future__ import annotations

import html

import numpy as np
import polars as pl

from tzc_data.files import atomic_open, check_output_file
from tzc_data.layout import PACKS, RECORDS
from tzc_data.look.stats import LENGTH_COLUMNS, format_table, summarise
from tzc_data.read.manifest import read_manifest, read_stats

WIDTH, HEIGHT, PAD = 560, 220, 40
PALETTE = {"kept": "#2e7d32"}
DROP_COLOUR = "#c62828"
BAR_COLOUR = "#1565c0"


def _svg(body: list[str], title: str, height: int = HEIGHT) -> str:
    return (f'<svg class="plot" role="img" aria-label="{html.escape(title)}" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}" xmlns="http://www.w3.org/2000/svg">'
            f'<title>{html.escape(title)}</title>{"".join(body)}</svg>')


def histogram(values: np.ndarray, title: str, unit: str, bins: int = 40) -> str:
    """Bars of counts over equal-width bins, with the axis range and the median marked."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return _svg([f'<text x="{PAD}" y="{HEIGHT / 2}">no data</text>'], title)
    counts, edges = np.histogram(values, bins=bins)
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    top = counts.max() or 1
    body = []
    for k, count in enumerate(counts):
        h = inner_h * count / top
        x = PAD + inner_w * k / bins
        body.append(f'<rect x="{x:.1f}" y="{PAD + inner_h - h:.1f}" width="{inner_w / bins - 1:.1f}" '
                    f'height="{h:.1f}" fill="{BAR_COLOUR}"><title>{edges[k]:,.0f}-{edges[k + 1]:,.0f}: '
                    f'{count:,}</title></rect>')
    median = float(np.median(values))
    mx = PAD + inner_w * (median - edges[0]) / ((edges[-1] - edges[0]) or 1)
    body += [f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{PAD}" y2="{PAD + inner_h}" stroke="#000" '
             f'stroke-dasharray="4 3"/>',
             (f'<text x="{mx - 4:.1f}" y="{PAD + 12}" font-size="11" text-anchor="end">median {median:,.0f}</text>'
              if mx > WIDTH - 120 else f'<text x="{mx + 4:.1f}" y="{PAD + 12}" font-size="11">median {median:,.0f}</text>'),
             f'<text x="{PAD}" y="{HEIGHT - 12}" font-size="11">{edges[0]:,.0f}</text>',
             f'<text x="{WIDTH - PAD}" y="{HEIGHT - 12}" font-size="11" text-anchor="end">{edges[-1]:,.0f} {unit}</text>',
             f'<text x="{PAD}" y="{PAD - 10}" font-size="11">{top:,} max per bin</text>']
    return _svg(body, title)


def bar_chart(labels: list[str], values: list[float], title: str, colours: list[str] | None = None,
              fmt: str = "{:,.0f}") -> str:
    """Horizontal bars, one per label, the value written at the end of each."""
    row = 22
    height = PAD + row * len(labels) + 10
    top = max(values) if values else 1
    label_w = 170
    body = []
    for k, (label, value) in enumerate(zip(labels, values)):
        y = PAD / 2 + k * row
        w = (WIDTH - label_w - 80) * value / (top or 1)
        colour = colours[k] if colours else BAR_COLOUR
        body += [f'<text x="{label_w - 6}" y="{y + 14}" font-size="12" text-anchor="end">{html.escape(label)}</text>',
                 f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{colour}"/>',
                 f'<text x="{label_w + w + 4:.1f}" y="{y + 15}" font-size="11">{fmt.format(value)}</text>']
    return _svg(body, title, height)


def render_report(directory: str) -> str:
    manifest = read_manifest(directory)
    records = read_stats(directory, RECORDS, ["status", *LENGTH_COLUMNS], manifest=manifest)
    packs = read_stats(directory, PACKS, ["segments", "fill"], manifest=manifest)
    kept = records.filter(pl.col("status") == "kept")
    status = records.group_by("status").len().sort(["len", "status"], descending=[True, False])
    segments = packs.group_by("segments").len().sort("segments")
    figures: list[tuple[str, str, str]] = [
        ("drop-reasons", "Rows by status", bar_chart(
            status["status"].to_list(), status["len"].to_list(), "Rows by status",
            [PALETTE.get(s, DROP_COLOUR) for s in status["status"].to_list()])),
    ]
    for column, label in [("prompt_chars", "prompt characters"), ("reasoning_chars", "reasoning characters"),
                          ("answer_chars", "answer characters"), ("tokens", "tokens per example"),
                          ("loss_tokens", "model-turn tokens per example (loss tokens: what a decode generates)")]:
        figures.append((f"hist-{column}", f"Kept examples: {label}",
                        histogram(kept[column].drop_nulls().to_numpy().astype(float), f"Kept examples: {label}",
                                  label.split()[0])))
    from tzc_data.text.lengths import BUDGETS, distribution

    turn = distribution(kept["loss_tokens"].drop_nulls().to_numpy())
    if turn["examples"]:
        figures.append(("model-turn-fits", "Kept examples whose model turn fits the decode budget", bar_chart(
            [f"<= {b:,} tokens" for b in BUDGETS], [100 * turn["fits"][str(b)] for b in BUDGETS],
            "Share of kept examples whose model turn fits MAX_GENERATION_STEPS", fmt="{:.1f}%")))
    figures += [
        ("fill", "Fill of each packed row", histogram(packs["fill"].to_numpy() * 100, "Fill of each packed row",
                                                      "% of seq_len", bins=25)),
        ("examples-per-row", "Examples per packed row", bar_chart(
            [str(v) for v in segments["segments"].to_list()], segments["len"].to_list(), "Examples per packed row")),
    ]
    table = html.escape(format_table([summarise(directory)]))
    parts = [f'<figure id="{fid}"><figcaption>{html.escape(caption)}</figcaption>{svg}</figure>'
             for fid, caption, svg in figures]
    title = f"tzc build {manifest['range']['start']}:{manifest['range']['stop']} of {manifest['source']['kind']}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 20px; }} pre {{ background: #f5f5f5; padding: 12px; overflow-x: auto; }}
main {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(580px, 1fr)); gap: 16px; }}
figure {{ margin: 0; border: 1px solid #ddd; padding: 8px; }} figcaption {{ font-weight: 600; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{manifest['counts']['read']:,} rows read, {manifest['counts']['kept']:,} kept; {manifest['packing']['rows']:,} packed rows
of {manifest['packing']['seq_len']:,} tokens, fill {manifest['packing']['fill']:.2%}.</p>
<pre>{table}</pre>
<p>Model turn (tokens a greedy decode generates, through &lt;eos&gt;): {_turn_sentence(turn)}</p>
<main>{''.join(parts)}</main>
</body></html>
"""


def _turn_sentence(turn: dict) -> str:
    if not turn["examples"]:
        return "no kept examples."
    p = turn["percentiles"]
    fits = ", ".join(f"{int(b):,}: {share:.1%}" for b, share in turn["fits"].items())
    return (f"p1 {p['p1']:,}, p50 {p['p50']:,}, p90 {p['p90']:,}, p99 {p['p99']:,}, max {turn['max']:,}; "
            f"share that fits {html.escape(fits)}. The competition template decodes 768 new tokens: set "
            f"MAX_GENERATION_STEPS to at least the p99, or build with --max-model-tokens.")


def write_report(directory: str, out: str, *, overwrite: bool = False) -> str:
    """Render, then write ``out`` through a temporary name: the build is read in full before
    anything is written, ``out`` may not be inside a build, and replaces a file only when
    ``overwrite``."""
    out = check_output_file(out, overwrite=overwrite)
    page = render_report(directory)
    with atomic_open(out, encoding="utf-8") as handle:
        handle.write(page)
    return out


__all__ = ["bar_chart", "histogram", "render_report", "write_report"]
