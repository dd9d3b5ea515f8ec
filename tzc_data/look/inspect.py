"""``tzc-data inspect``: one packed row decoded back to text, and the tokenizer a build was made with.

:func:`find_tokenizer` finds that tokenizer (a path given, the cached known model, or the file the
manifest names) and checks its sha256 against the manifest's: ``verify``, ``explain`` and the
trainer use it too.
"""

from __future__ import annotations

import re
import sys

import polars as pl

from tzc_data.errors import TzcError
from tzc_data.layout import PACKS
from tzc_data.read.load import load
from tzc_data.read.manifest import read_manifest, read_stats
from tzc_data.text.tokenize import build_tokenizer

# ---------------------------------------------------------------------------------------------


# C0 and C1 controls (but the line break and the tab, which lay text out), DEL, and the bidi
# controls that reorder what a terminal shows ("Trojan source"): data may carry any of them.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with control characters written as escapes (``\\x1b``, ``\\u202e``), so that
    text from the data cannot drive the terminal it is shown on (``explain``, ``inspect``).
    Line breaks and tabs stay; a backslash stays as it is."""
    return _CONTROLS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


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
