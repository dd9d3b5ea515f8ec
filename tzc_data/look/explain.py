"""``tzc-data explain``: show examples of one drop reason, with what triggered it highlighted.

Texts come from ``rejected/rejected.parquet`` when the build kept them (``--keep-rejected``);
otherwise the rows are read again from the build's source (synthetic and local sources always can;
the hub needs the network). For a duplicate, the kept twin's prompt is read from the source too.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

import polars as pl

from tzc_data.errors import SourceError, TzcError
from tzc_data.filters.repetition import lowered, repeating_tail
from tzc_data.layout import RECORDS, REJECTED_DIR
from tzc_data.look.inspect import printable
from tzc_data.read.manifest import read_manifest, read_stats
from tzc_data.record import REASONS, controlled_by
from tzc_data.sources import Source, changed_since, read, reopen


def _markers(colour: bool) -> tuple[str, str]:
    return ("\x1b[1;31m", "\x1b[0m") if colour else ("[[", "]]")


def highlight(text: str, needle: str, colour: bool, *, limit: int = 12) -> str:
    """``text`` with up to ``limit`` occurrences of ``needle`` marked, its control characters
    escaped (:func:`tzc_data.look.inspect.printable`: the data must not drive the terminal)."""
    text, needle = printable(text), printable(needle)
    if not needle:
        return text
    start, end = _markers(colour)
    count = 0

    def mark(match: re.Match) -> str:
        nonlocal count
        count += 1
        return f"{start}{match.group()}{end}" if count <= limit else match.group()

    return re.sub(re.escape(needle), mark, text)


def _source(manifest: dict[str, Any]) -> Source:
    """The build's source opened again, or SourceError when it is not the one the build read
    (a file edited, replaced, added or gone since): its rows would be other rows."""
    described = manifest["source"]
    source = reopen(described, format=manifest["config"].get("format", "glaive"))
    changed = changed_since(described, source.describe())
    if changed:
        raise SourceError(f"the source is not the one this build read: {changed}")
    return source


def _row_text(source: Source | None, row: int) -> dict[str, str]:
    if source is None:
        return {}
    example = next(iter(read(source, row, row + 1)), None)
    return {"prompt": example.prompt, "response": example.response} if example else {}


def explain(directory: str, reason: str, n: int = 5, *, colour: bool | None = None) -> str:
    manifest = read_manifest(directory)
    colour = sys.stdout.isatty() if colour is None else colour
    stats = read_stats(directory, RECORDS, manifest=manifest)
    total = stats.filter(pl.col("status") == reason).height
    picked = stats.filter(pl.col("status") == reason).head(min(n, total))  # a huge -n overflows polars
    if reason not in REASONS and reason != "kept":
        raise TzcError(f"unknown reason {reason!r}; reasons are: {', '.join(REASONS)}")
    lines = [f"{reason}: {total:,} of {stats.height:,} rows ({total / max(stats.height, 1):.1%}) in {directory}"
             + (f" - {REASONS[reason][0]}; {controlled_by(reason)}" if reason in REASONS else "")]
    rejected_name = f"{REJECTED_DIR}/rejected.parquet"
    texts = {}
    if rejected_name in manifest["stats"] and os.path.lexists(os.path.join(directory, rejected_name)):
        rejected = read_stats(directory, rejected_name, manifest=manifest).filter(
            pl.col("row").is_in(picked["row"].implode()))
        texts = {r["row"]: r for r in rejected.iter_rows(named=True)}
    source = None
    try:
        source = _source(manifest)
    except TzcError as err:
        lines.append(f"(texts unavailable: {err})")
    for record in picked.iter_rows(named=True):
        row = record["row"]
        text = texts.get(row) or _row_text(source, row)
        lines += ["", f"row {row}: {printable(record['detail'] or '')}"]
        scores = {k: v for k, v in record.items() if k not in ("row", "status", "detail", "prompt_hash")
                  and v is not None and k not in ("shard", "pack", "segment", "split")}
        lines.append("  " + ", ".join(f"{k}={v}" for k, v in scores.items()))
        lines += _show(reason, record, text, source, colour, manifest)
    return "\n".join(lines)


def _show(reason: str, record: dict[str, Any], text: dict[str, Any], source: Source | None,
          colour: bool, manifest: dict[str, Any] | None = None) -> list[str]:
    prompt = text.get("prompt") or ""
    body = text.get("reasoning") or ""
    if text.get("answer"):
        body = f"{body}\n</think>\n{text['answer']}"
    body = body or text.get("response") or ""
    if reason in ("duplicate", "near_duplicate") and record.get("twin") is not None:
        twin = _row_text(source, record["twin"]).get("prompt", "(unavailable)")
        return [f"  prompt:      {printable(prompt[:400])}",
                f"  kept twin (row {record['twin']}): {printable(twin[:400])}"]
    if reason in ("loop", "repeated_paragraphs", "ngram_repetition", "compressible"):
        tail = lowered(body)[-1500:]
        found = repeating_tail(tail)
        unit = found.unit.strip() if found and found.repeats >= 2 else ""
        if reason == "repeated_paragraphs":
            match = re.search(r"repeats '(.+?)(?:\.\.\.)?' x", record["detail"])
            unit = match.group(1) if match else unit
        return ["  end of the text (lower case, digits removed), repeated unit marked:",
                "  " + highlight(tail[-900:], unit, colour).replace("\n", "\n  ")]
    if reason == "contaminated":
        return _contaminated(record, prompt, text.get("response") or body, colour, manifest or {})
    if reason in ("tag_in_content", "control_in_content"):
        match = re.search(r"contains '(.+?)'", record["detail"])
        needle = match.group(1) if match else ""
        where = prompt if needle and needle in prompt else body
        at = where.find(needle) if needle else 0
        return ["  " + highlight(where[max(0, at - 200): at + 200], needle, colour)]
    return [f"  prompt:   {printable(prompt[:300])}",
            f"  response: {printable(body[:300])}{'...' if len(body) > 300 else ''}"]


def _contaminated(record: dict[str, Any], prompt: str, response: str, colour: bool,
                  manifest: dict[str, Any]) -> list[str]:
    """The training text with the shared n-gram marked, and the benchmark item it shares it with
    (read from the benchmark file when it is still the one the build checked)."""
    match = re.search(r'(prompt|response) shares the \d+-gram "(.+?)" with item', record["detail"] or "")
    where, gram = (match.group(1), match.group(2)) if match else ("prompt", "")
    text = prompt if where == "prompt" else response
    lines = [f"  {where}: " + _mark_words(text, gram, colour).replace("\n", "\n  ")]
    benchmarks = (manifest.get("decontamination") or {}).get("benchmarks") or []
    b, item = record.get("contaminated_benchmark"), record.get("contaminated_item")
    if b is not None and item is not None and int(b) < len(benchmarks):
        entry = benchmarks[int(b)]
        lines.append(f"  benchmark item {int(item)} of {entry['path']}: " + _benchmark_item(entry, int(item)))
    return lines


def _mark_words(text: str, gram: str, colour: bool) -> str:
    """``text`` (at most 600 characters around the n-gram) with the words of ``gram`` marked,
    whatever case, spacing and punctuation lie between them."""
    pattern = r"\W+".join(re.escape(w) for w in gram.split()) if gram else ""
    found = re.search(pattern, text, re.IGNORECASE) if pattern else None
    if found is None:
        return printable(text[:600])
    start, end = _markers(colour)
    low = max(0, found.start() - 200)
    return (printable(text[low:found.start()]) + start + printable(found.group()) + end
            + printable(text[found.end():found.end() + 200]))


def _benchmark_item(entry: dict[str, Any], item: int) -> str:
    from tzc_data.files import sha256_file
    from tzc_data.text.decontaminate import read_questions

    try:
        if sha256_file(entry["path"]) != entry["sha256"]:
            return "(the file changed since the build)"
        questions = read_questions(entry["path"])[1]
    except (OSError, TzcError):
        return "(the file is not readable here)"
    return printable(questions[item][:400]) if item < len(questions) else "(no such item in the file)"
