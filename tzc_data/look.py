"""Look at builds without writing code: ``tzc-data stats`` and ``tzc-data inspect``.

Everything here is Polars over ``stats/*.parquet`` plus the shards; the README shows the same
one-liners for people who want to slice the stats themselves.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import polars as pl

from tzc_data.errors import TzcError
from tzc_data.load import PACKS, RECORDS, load, read_manifest, read_stats
from tzc_data.tokenize import Tokenizer, known_name, known_tokenizer_path, sha256_file

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
    from tzc_data.lengths import distribution

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


# ---------------------------------------------------------------------------------------------


# C0 and C1 controls (but the line break and the tab, which lay text out), DEL, and the bidi
# controls that reorder what a terminal shows ("Trojan source"): data may carry any of them.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with control characters written as escapes (``\\x1b``, ``\\u202e``), so that
    text from the data cannot drive the terminal it is shown on (``explain``, ``inspect``).
    Line breaks and tabs stay; a backslash stays as it is."""
    return _CONTROLS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def find_tokenizer(manifest: dict[str, Any], paths: Sequence[str] = (), *, memo: bool = False) -> Tokenizer:
    """The tokenizer a build was made with: the first of ``paths``, the path the build recorded, or
    the cached Gemma 2 or Gemma 3 one, whose sha256 is the one the manifest records; TzcError otherwise."""
    expected = manifest["tokenizer"]["sha256"]
    recorded = manifest["config"].get("tokenizer")
    tried = []
    for candidate in [*paths, recorded]:
        if not candidate or candidate in tried:
            continue
        tried.append(candidate)
        try:
            if os.path.isfile(candidate) and sha256_file(candidate) == expected:
                return _tokenizer(candidate, manifest, memo)
        except OSError:
            continue
    if known_name(expected):  # Gemma 2's or Gemma 3's: from the cache, fetched if need be
        return _tokenizer(str(known_tokenizer_path(known_name(expected))), manifest, memo)
    looked = f" (not at {', '.join(tried)})" if tried else ""
    raise TzcError(f"cannot find the build's tokenizer {manifest['tokenizer']['file']} (sha256 {expected[:12]}...)"
                   f"{looked}; pass --tokenizer PATH")


def _tokenizer(path: str, manifest: dict[str, Any], memo: bool) -> Tokenizer:
    try:
        return Tokenizer(path, system=manifest["config"]["system"], memo=memo)
    except ValueError as err:  # format.FormatError: a system prompt the template refuses
        raise TzcError(f"the build's system prompt cannot be used with its tokenizer: {err}") from None


def build_tokenizer(manifest: dict[str, Any], path: str | None) -> Tokenizer:
    """The tokenizer a build was made with: ``path``, the recorded path, or the cached Gemma 2 or 3 one."""
    expected = manifest["tokenizer"]["sha256"]
    if path and not os.path.isfile(path):
        raise TzcError(f"--tokenizer {path} is not a file")
    if path and sha256_file(path) != expected:
        raise TzcError(f"--tokenizer {path} is not the tokenizer of this build (sha256 {expected[:12]}...)")
    return find_tokenizer(manifest, [path] if path else [], memo=True)


def inspect_row(directory: str, row: int, *, split: str = "train", tokenizer: str | None = None,
                colour: bool | None = None) -> str:
    """A packed row, example by example, with the loss-masked span marked; control characters of
    the data are shown escaped (:func:`printable`)."""
    manifest = read_manifest(directory)
    rows = load(directory, split)
    if not len(rows):
        raise TzcError(f"split {split!r} of {directory} has no packed rows")
    if not 0 <= row < len(rows):
        raise TzcError(f"--row {row}: split {split!r} of {directory} has packed rows 0..{len(rows) - 1}")
    packed = rows[row]
    packs = read_stats(directory, PACKS, ["split", "rows"], manifest=manifest).filter(pl.col("split") == split)
    if packs.height != len(rows):
        raise TzcError(f"{directory}: {PACKS} lists {packs.height} packed rows of {split!r}, its shards hold "
                       f"{len(rows)} (tzc-data verify {directory})")
    sources = packs["rows"][row].to_list()
    tok = build_tokenizer(manifest, tokenizer)
    colour = sys.stdout.isatty() if colour is None else colour
    start, end = ("\x1b[32m", "\x1b[0m") if colour else ("«", "»")
    seq_len = len(packed["tokens"])
    used = int((packed["segment_ids"] > 0).sum())
    lines = [f"{directory} {split} row {row}: {int(packed['segment_ids'].max())} examples, {used:,} of {seq_len:,} "
             f"tokens ({used / seq_len:.1%}), {int(packed['loss_mask'].sum()):,} with loss; "
             f"loss span marked {start}like this{end}"]
    for segment in range(1, int(packed["segment_ids"].max()) + 1):
        where = packed["segment_ids"] == segment
        ids, mask = packed["tokens"][where].tolist(), packed["loss_mask"][where]
        first = int(mask.argmax()) if mask.any() else len(ids)
        source = sources[segment - 1] if segment <= len(sources) else "?"
        lines += ["", f"-- segment {segment}: source row {source}, {len(ids):,} tokens, "
                      f"{int(mask.sum()):,} with loss, positions 0..{len(ids) - 1}",
                  printable(tok.decode(ids[:first])) + start + printable(tok.decode(ids[first:])) + end]
    return "\n".join(lines)
