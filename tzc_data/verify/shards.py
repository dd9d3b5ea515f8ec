"""Every packed row of every shard, decoded: well formed, as its ``packs.parquet`` row says, and
each segment the template's ids for text that parses (:class:`Template`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader

from tzc_data.layout import PACKS, check_row, decode_row
from tzc_data.text import format as fmt
from tzc_data.text.dedupe import prompt_hash
from tzc_data.text.minhash import fingerprint
from tzc_data.verify.layers import PER_SHARD, READ_CHUNK, Layout, Packs, Segments, file_problem, one_line

if TYPE_CHECKING:
    from tzc_data.text.tokenize import Tokenizer


def check_shards(build: str, manifest: dict[str, Any], layout: Layout, packs: Packs | None,
                 segments: Segments | None, template: Template | None) -> list[str]:
    """Each shard of ``shards``: a file, hashed as recorded, holding its records, each a well-formed
    packed row that agrees with packs.parquet and the template."""
    problems: list[str] = []
    seq_len = manifest["config"]["seq_len"]
    for k, entry in enumerate(layout.entries):
        where = f"{build} shard {entry['file']}"
        path = os.path.join(build, entry["file"])
        problem = file_problem(path, entry["sha256"], entry.get("bytes"))
        if problem:
            problems.append(f"{where}: {problem}")
            if not os.path.isfile(path):
                continue
        found: list[str] = []
        for row, record in _records_of(path, where, entry["records"], found):
            if row >= entry["records"]:
                found.append(f"{where} row {row}: not counted in the manifest, and not in {PACKS}")
                continue
            found += _check_record(f"{where} row {row}", record, seq_len, packs, segments, template,
                                   layout.start[k] + row)
        problems += found[:PER_SHARD]
        if len(found) > PER_SHARD:
            problems.append(f"{where}: and {len(found) - PER_SHARD} more problems")
    return problems


def _records_of(path: str, where: str, expected: int, found: list[str]) -> Iterator[tuple[int, bytes]]:
    """(index, record) of every record of a shard, read in chunks; problems go to ``found``."""
    try:
        reader = ArrayRecordReader(path)
        count = reader.num_records()
    except Exception as err:  # array_record raises plain RuntimeError/ValueError on damage
        found.append(f"{where}: cannot be read ({one_line(err)})")
        return
    if count != expected:
        found.append(f"{where}: {count} records, the manifest says {expected}")
    try:
        for start in range(0, count, READ_CHUNK):
            yield from enumerate(reader.read(list(range(start, min(start + READ_CHUNK, count)))), start)
    except Exception as err:
        found.append(f"{where}: reading records failed ({one_line(err)})")
    finally:
        try:
            reader.close()
        except Exception as err:  # a damaged file can fail only when its reader is closed
            found.append(f"{where}: damaged ({one_line(err)})")


def _check_record(where: str, record: bytes, seq_len: int, packs: Packs | None, segments: Segments | None,
                  template: Template | None, p: int) -> list[str]:
    try:
        row = decode_row(record, seq_len)
    except ValueError as err:
        return [f"{where}: {err}"]
    seg, mask = row["segment_ids"], row["loss_mask"]
    problems = [f"{where}: {problem}" for problem in check_row(row)]
    if seg.min(initial=0) < 0:  # check_row takes any id <= 0 for padding
        problems.append(f"{where}: segment id {int(seg.min())} is negative (padding is 0)")
    if problems:
        return problems
    count = int(seg.max(initial=0))
    lengths = np.bincount(seg, minlength=count + 1)[1:]
    loss = np.bincount(seg, weights=mask, minlength=count + 1)[1:].astype(np.int64)
    ends = np.cumsum(lengths)
    first = 0
    if packs is not None:
        held = (count, int(ends[-1]) if count else 0, int(loss.sum()))
        says = (int(packs.segments[p]), int(packs.tokens[p]), int(packs.loss_tokens[p]))
        if held != says:
            problems.append(f"{where}: holds {held[0]} segments, {held[1]} tokens, {held[2]} loss tokens; {PACKS} "
                            f"row {p} says {says[0]}, {says[1]}, {says[2]}")
        elif abs(held[1] / seq_len - float(packs.fill[p])) > 1e-9:
            problems.append(f"{where}: fill {held[1] / seq_len:.6f}, {PACKS} row {p} says {float(packs.fill[p]):.6f}")
        listed = says[0]
        first = int(packs.offsets[p])
        known = min(count, listed)  # segments the packs row lists but the shard lacks hold 0 tokens
        segments.tokens[first:first + listed] = np.concatenate([lengths[:known], np.zeros(listed - known, int)])
        segments.loss[first:first + listed] = np.concatenate([loss[:known], np.zeros(listed - known, int)])
    for j in range(count):
        start = int(ends[j] - lengths[j])
        ids, seg_mask = row["tokens"][start:ends[j]], mask[start:ends[j]]
        if template is None:
            continue
        found, prompt = template.check(ids, seg_mask)
        problems += [f"{where} segment {j + 1}: {problem}" for problem in found]
        if prompt is not None and packs is not None and j < int(packs.segments[p]):
            segments.hashes[first + j] = np.frombuffer(prompt_hash(prompt), dtype=np.uint8)
            segments.hashed[first + j] = True
            if segments.near is not None:
                segments.near["bands"][first + j], segments.near["sketch"][first + j] = fingerprint(prompt)
    return problems


class Template:
    """The token ids the Gemma template puts around each example (:class:`Tokenizer`'s markup)."""

    def __init__(self, tokenizer: Tokenizer):
        t = self.tokenizer = tokenizer
        self.head = np.array([*t.user_head, *t.system_ids], dtype=np.int64)
        self.model_head = np.array(t.model_head, dtype=np.int64)
        self.reasoning_open = np.array(t.reasoning_open, dtype=np.int64)
        self.tail = np.array(t.tail, dtype=np.int64)
        self.vocab = t.sp.get_piece_size()
        self.is_special = np.zeros(self.vocab, dtype=bool)
        self.is_special[sorted(t.special_ids)] = True
        self.order = [t.bos, t.start_of_turn, t.end_of_turn, t.start_of_turn, t.end_of_turn, t.eos]
        self.close_eot = len(self.tail) - list(reversed(t.tail)).index(t.end_of_turn) - 1  # eot's place in tail

    def pieces(self, ids: Sequence[int]) -> str:
        return " ".join(self.tokenizer.sp.id_to_piece(int(i)) for i in ids)

    def check(self, ids: np.ndarray, mask: np.ndarray) -> tuple[list[str], str | None]:
        """Problems of one segment, and its decoded prompt (None when it is not an example)."""
        n = len(ids)
        outside = (ids < 0) | (ids >= self.vocab)
        if outside.any():
            k = int(np.argmax(outside))
            return [f"token {k} is id {int(ids[k])}, outside the tokenizer's {self.vocab} ids"], None
        at = np.flatnonzero(self.is_special[ids])
        found = ids[at].tolist()
        if not n or ids[0] != self.order[0]:
            return [f"does not start with <bos> (starts with {self.pieces(ids[:1])})"], None
        if found != self.order:
            shown = ", ".join(f"{self.pieces([i])} at {int(k)}" for i, k in zip(found[:8], at[:8]))
            return [f"holds the special ids [{shown}{', ...' if len(found) > 8 else ''}], where the template has "
                    f"{self.pieces(self.order)} and nothing else"], None
        turn = int(at[2])  # the user turn's <end_of_turn>
        model = turn + len(self.model_head)
        checks = [
            (np.array_equal(ids[:len(self.head)], self.head), "does not open with the template's user turn and "
                                                             "the build's system prompt"),
            (np.array_equal(ids[turn:model], self.model_head), "the user turn does not end with the template's "
                                                              "<end_of_turn>\\n<start_of_turn>model\\n"),
            (np.array_equal(ids[model:model + len(self.reasoning_open)], self.reasoning_open),
             "the model turn does not open with <reasoning>"),
            (n >= len(self.tail) and np.array_equal(ids[n - len(self.tail):], self.tail)
             and int(at[4]) == n - len(self.tail) + self.close_eot,
             "does not end with the template's </answer><end_of_turn>\\n<eos>"),
            (not mask[:model].any() and mask[model:].all(), "the loss mask is not exactly the model turn"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            return problems, None
        try:
            prompt, _, _ = fmt.parse(self.decode(ids, at))
        except fmt.FormatError as err:
            return [f"decodes to text that format.parse refuses ({err})"], None
        return [], prompt

    def decode(self, ids: np.ndarray, specials: np.ndarray) -> str:
        """:meth:`Tokenizer.decode`, one SentencePiece call per run between special ids."""
        sp, out, last = self.tokenizer.sp, [], 0
        values = ids.tolist()
        for k in specials.tolist():
            out += [sp.decode(values[last:k]), sp.id_to_piece(values[k])]
            last = k + 1
        out.append(sp.decode(values[last:]))
        return "".join(out)
