"""``tzc-data verify``: prove that builds are intact, say what the loaders will read, and share nothing.

Nothing here trusts one layer's claims about another. The loaders read the manifest's ``shards``
entries (:func:`tzc_data.load.shard_entries`); verify checks those same entries, then binds every
layer to every other:

* manifest -> files: each file it names stays inside the build, is a regular file and hashes as
  recorded;
* shards <-> ``stats/packs.parquet``: every packed row is decoded; its segments, tokens and loss
  tokens are those of its packs row, which lists the source row of each segment;
* shards <-> tokenizer: each segment is the template's ids (``<bos>``, the turn markers where the
  template puts them and no other special id, ``<end_of_turn>\\n<eos>`` at the end), its loss mask
  covers exactly the model turn, and it decodes to text that :func:`tzc_data.format.parse` accepts;
* shards <-> ``stats/records.parquet``: every kept row is placed in exactly one segment, and that
  segment's tokens, loss tokens and decoded prompt (its hash) are the row's; every segment is
  claimed by one kept row; the split is the one its prompt hash assigns;
* everything <-> the manifest's counts, range, packing totals and prompt-hash file.

Each problem is one line naming the build and the file, shard, row or segment, so a failing verify
says where to look. Shards are streamed in chunks; what is held per build is a few numbers per
packed row and per kept example (a few dozen bytes each), never the tokens.
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from array_record.python.array_record_module import ArrayRecordReader

from tzc_data import format as fmt
from tzc_data.dedupe import prompt_hash, split_of
from tzc_data.errors import TzcError
from tzc_data.files import stray_entry
from tzc_data.load import PACKS, RECORDS, check_manifest, read_manifest_json, tokenizer_label, utf8_path
from tzc_data.minhash import RECORD as NEAR_RECORD
from tzc_data.minhash import NearDupIndex, fingerprint
from tzc_data.pack import check_row, decode_row
from tzc_data.sources import source_identity
from tzc_data.record import REASONS
from tzc_data.files import sha256_file
from tzc_data.write import MANIFEST, PLACEMENT_COLUMNS, RECORD_COLUMNS, read_hashes, record_layout

if TYPE_CHECKING:
    from tzc_data.tokenize import Tokenizer

_PER_SHARD = 20  # problems listed per shard (and per stats file) before the rest are counted
_READ_CHUNK = 64  # records read from a shard at a time
_STATS_BATCH = 65536  # rows of records.parquet read at a time


def verify(builds: Sequence[str], tokenizers: Sequence[str] = ()) -> list[str]:
    """All problems found in ``builds`` and between them; empty means verified.

    ``tokenizers``: SentencePiece models to try for builds whose recorded tokenizer is not found
    (each build uses the one whose sha256 its manifest records)."""
    problems: list[str] = []
    loaded: list[tuple[str, dict[str, Any], np.ndarray | None, np.ndarray | None]] = []
    cache: dict[str, Tokenizer] = {}
    for build in builds:
        try:
            manifest = read_manifest_json(utf8_path(build))
        except TzcError as err:
            problems.append(f"{build}: {err}")
            continue
        structure = check_manifest(build, manifest)
        if structure:
            problems += [f"{build} {MANIFEST}: {p}" for p in structure]
            continue
        near: list[np.ndarray] = []
        found, hashes = check_build(build, manifest, tokenizers, cache, near_out=near if len(builds) > 1 else None)
        problems += found
        loaded.append((build, manifest, hashes, near[0] if near else None))
    for (a, ma, ha, na), (b, mb, hb, nb) in itertools.combinations(loaded, 2):
        problems += check_mixable(a, ma, b, mb)
        problems += check_disjoint(a, ma, ha, b, mb, hb, near_a=na, near_b=nb)
    return problems


def check_build(build: str, manifest: dict[str, Any], tokenizers: Sequence[str] = (),
                cache: dict[str, Tokenizer] | None = None,
                near_out: list[np.ndarray] | None = None) -> tuple[list[str], np.ndarray | None]:
    """Every check of one build (whose manifest has passed :func:`check_manifest`); returns the
    problems and the build's prompt hashes (None when they cannot be trusted).

    ``near_out``: for a build without near-dup keys (``--no-near-dup``), a list that receives the
    near-dup records (:data:`tzc_data.minhash.RECORD`) of its decoded prompts, so that
    :func:`check_disjoint` checks its near duplicates all the same (256 bytes per kept example)."""
    problems = check_files(build, manifest)
    hashes = None
    try:
        hashes = read_hashes(build, manifest["hashes"])
    except (OSError, ValueError) as err:
        problems.append(f"{build}: prompt hashes: {_line(err)}")
    template = None
    try:
        template = Template(_tokenizer(manifest, tokenizers, cache if cache is not None else {}))
    except TzcError as err:
        problems.append(f"{build}: {err}; token ids and texts were not checked")
    if template is not None and template.vocab != manifest["tokenizer"]["vocab_size"]:
        problems.append(f"{build} {MANIFEST}: tokenizer.vocab_size is {manifest['tokenizer']['vocab_size']}, the "
                        f"build's tokenizer has {template.vocab} ids")
    layout = Layout(manifest)
    packs, found = read_packs(build, layout)
    problems += found
    segments = Segments(packs.segment_count) if packs is not None else None
    decode_near = near_out is not None and not manifest["near_dup"] and template is not None and packs is not None
    if decode_near:
        segments.near = np.zeros(packs.segment_count, dtype=NEAR_RECORD)
        segments.near["row"] = packs.rows[:packs.segment_count]
    problems += check_shards(build, manifest, layout, packs, segments, template)
    if decode_near:
        near_out.append(segments.near[segments.hashed])
    records, found = check_records(build, manifest, layout, packs, segments, hashes)
    problems += found
    problems += check_counts(build, manifest, layout, packs, records)
    return problems, hashes


def _tokenizer(manifest: dict[str, Any], paths: Sequence[str], cache: dict[str, Tokenizer]) -> Tokenizer:
    key = f"{manifest['tokenizer']['sha256']} {manifest['config']['system']}"
    if key not in cache:
        from tzc_data.look import find_tokenizer  # here: checking a mixture of builds loads no SentencePiece

        cache[key] = find_tokenizer(manifest, paths, memo=False)
    return cache[key]


def _line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:300]


# ---------------------------------------------------------------------------------------------
# Files the manifest names


def check_files(build: str, manifest: dict[str, Any]) -> list[str]:
    """Stats, hash and near-dup files: present, regular files, hashed as recorded."""
    problems = []
    for name in (RECORDS, PACKS):
        if name not in manifest["stats"]:
            problems.append(f"{build} {MANIFEST}: 'stats' does not record {name}")
    files = [(name, entry["sha256"], entry.get("bytes")) for name, entry in manifest["stats"].items()]
    if manifest["near_dup"]:
        files.append((manifest["near_dup"]["file"], manifest["near_dup"]["sha256"], None))
    for name, expected, size in files:
        problem = _file_problem(os.path.join(build, name), expected, size)
        if problem:
            problems.append(f"{build} {name}: {problem}")
    stray = stray_entry(build)
    if stray:  # a loader would not read it, but --overwrite could no longer prove the folder a build
        problems.append(f"{build}: {stray}")
    return problems


def _file_problem(path: str, expected: str, size: Any = None) -> str | None:
    """Why the file at ``path`` is not the one the manifest records (its sha256, and its size
    when the manifest records one), or None."""
    if not os.path.lexists(path):
        return "missing"
    if not os.path.isfile(path):
        return "is a directory, not a file" if os.path.isdir(path) else "is not a regular file"
    if size is not None and size != os.path.getsize(path):
        return f"{os.path.getsize(path)} bytes, the manifest says {json.dumps(size)[:40]}"
    try:
        digest = sha256_file(path)
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if digest != expected:
        return f"sha256 {digest[:16]}... is not the manifest's {expected[:16]}..."
    return None


@dataclass
class Layout:
    """Where the loaders find each packed row: the manifest's shards of each split, in order.

    ``packs.parquet`` lists packed rows split after split (in the order the splits first appear
    in ``shards``), shard after shard, row after row; ``start[k]`` is the packs row of shard
    entry ``k``'s first record."""

    manifest: dict[str, Any]
    splits: list[str] = field(init=False)
    entries: list[dict[str, Any]] = field(init=False)
    ordinal: list[int] = field(init=False)  # shard number of entry k within its split
    start: list[int] = field(init=False)
    by_split: dict[str, list[int]] = field(init=False)  # split -> entry indices in order

    def __post_init__(self) -> None:
        shards = self.manifest["shards"]
        self.splits = list(dict.fromkeys([e["split"] for e in shards] + list(self.manifest["splits"])))
        self.by_split = {s: [k for k, e in enumerate(shards) if e["split"] == s] for s in self.splits}
        self.entries, self.ordinal, self.start = shards, [0] * len(shards), [0] * len(shards)
        at = 0
        for split in self.splits:
            for n, k in enumerate(self.by_split[split]):
                self.ordinal[k], self.start[k] = n, at
                at += shards[k]["records"]
        self.rows = at

    def expected_keys(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(split code, shard, index) of each packs row, as the manifest's shards imply."""
        keys = np.zeros((3, self.rows), dtype=np.int64)
        for code, split in enumerate(self.splits):
            for k in self.by_split[split]:
                at, n = self.start[k], self.entries[k]["records"]
                keys[:, at:at + n] = [[code], [self.ordinal[k]], [0]]
                keys[2, at:at + n] = np.arange(n)
        return keys[0], keys[1], keys[2]

    def entry_of(self, p: int) -> int:
        """The shard entry that holds packs row ``p``."""
        held = sorted((self.start[k], k) for k in range(len(self.entries)) if self.entries[k]["records"])
        return held[bisect.bisect_right([s for s, _ in held], p) - 1][1]

    def name(self, split: str, shard: int) -> str:
        entries = self.by_split.get(split, [])
        return self.entries[entries[shard]]["file"] if 0 <= shard < len(entries) else f"{split} shard {shard}"


# ---------------------------------------------------------------------------------------------
# stats/packs.parquet


@dataclass
class Packs:
    """``stats/packs.parquet`` as arrays, its rows in :class:`Layout` order."""

    segments: np.ndarray
    tokens: np.ndarray
    loss_tokens: np.ndarray
    fill: np.ndarray
    rows: np.ndarray  # source row of each segment, packed row after packed row
    offsets: np.ndarray  # rows[offsets[p]:offsets[p + 1]] are the segments of packed row p

    @property
    def segment_count(self) -> int:
        return int(self.offsets[-1])


_PACK_COLUMNS = ("split", "shard", "index", "segments", "tokens", "loss_tokens", "fill", "rows")
_PACK_TYPES = {"split": pa.string(), "shard": pa.int32(), "index": pa.int32(), "segments": pa.int32(),
               "tokens": pa.int32(), "loss_tokens": pa.int32(), "fill": pa.float64(), "rows": pa.list_(pa.int64())}
_RECORD_TYPES = dict(RECORD_COLUMNS + PLACEMENT_COLUMNS)


def _schema_problems(where: str, schema: pa.Schema, expected: dict[str, pa.DataType]) -> list[str]:
    """Columns missing, or of another type than the writer's (``write.py``)."""
    missing = [name for name in expected if name not in schema.names]
    problems = [f"{where}: no column {', '.join(missing)}"] if missing else []
    for name, kind in expected.items():
        if name in schema.names and _family(schema.field(name).type) != _family(kind):
            problems.append(f"{where}: column {name} is {schema.field(name).type}, not {kind}")
    return problems


def _family(kind: pa.DataType) -> str:
    """Types that read the same here (Polars writes large strings and 64-bit integers)."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return f"list of {_family(kind.value_type)}"
    for name, test in (("string", pa.types.is_string), ("string", pa.types.is_large_string),
                       ("integer", pa.types.is_integer), ("float", pa.types.is_floating)):
        if test(kind):
            return name
    return str(kind)


def read_packs(build: str, layout: Layout) -> tuple[Packs | None, list[str]]:
    """The packs table, or None with the problems that make it unusable for the cross-checks."""
    where = f"{build} {PACKS}"
    path = os.path.join(build, PACKS)
    if not os.path.isfile(path):
        return None, []  # check_files said why
    try:
        table = pq.ParquetFile(path).read()
        wrong = _schema_problems(where, table.schema, _PACK_TYPES)
        if wrong:
            return None, wrong
        nulls = [c for c in _PACK_COLUMNS if table.column(c).null_count]
        if nulls:
            return None, [f"{where}: nulls in {', '.join(nulls)}"]
        split_names = table.column("split").to_pylist()
        columns = {c: table.column(c).to_numpy() for c in _PACK_COLUMNS[1:7]}
        listed = table.column("rows").combine_chunks()
        offsets = listed.offsets.to_numpy().astype(np.int64)
        rows = listed.values.to_numpy().astype(np.int64)[offsets[0]:offsets[-1]]
        offsets -= offsets[0]
    except (OSError, pa.ArrowException, ValueError, TypeError) as err:
        return None, [f"{where}: cannot be read as Parquet ({_line(err)})"]
    codes = {s: k for k, s in enumerate(layout.splits)}
    split = np.array([codes.get(s, -1) for s in split_names], dtype=np.int64)
    got = (split, columns["shard"].astype(np.int64), columns["index"].astype(np.int64))
    miscounted = _miscounted(where, layout, got)
    if miscounted:  # before expected_keys: the manifest's counts may be anything
        return None, miscounted
    expected = layout.expected_keys()
    if any(not np.array_equal(a, b) for a, b in zip(got, expected)):
        return None, [_first_misplaced(where, layout, got, expected)]
    packs = Packs(columns["segments"].astype(np.int64), columns["tokens"].astype(np.int64),
                  columns["loss_tokens"].astype(np.int64), columns["fill"].astype(np.float64), rows, offsets)
    bad = np.flatnonzero(packs.segments != np.diff(offsets))
    if len(bad):
        return None, [f"{where} row {int(bad[0])}: {int(packs.segments[bad[0]])} segments, but it lists "
                      f"{int(np.diff(offsets)[bad[0]])} source rows"]
    return packs, []


def _miscounted(where: str, layout: Layout, got: tuple) -> list[str]:
    """Packed rows per shard in packs.parquet against the manifest's record counts."""
    keys, counts = np.unique(np.stack(got[:2]), axis=1, return_counts=True) if len(got[0]) else (
        np.zeros((2, 0), np.int64), np.zeros(0, np.int64))
    listed = {(int(c), int(s)): int(n) for (c, s), n in zip(keys.T.tolist(), counts.tolist())}
    problems = []
    for code, split in enumerate(layout.splits):
        for ordinal, k in enumerate(layout.by_split[split]):
            held, says = listed.pop((code, ordinal), 0), layout.entries[k]["records"]
            name = layout.entries[k]["file"]
            if held < says:
                problems.append(f"{where}: lists {held} packed rows of shard {name}, the manifest counts {says}: "
                                f"{name} row {held}{f'..{says - 1}' if says - held > 1 else ''} is in no row of "
                                f"{PACKS}")
            elif held > says:
                problems.append(f"{where}: lists {held} packed rows of shard {name}, the manifest counts {says}: "
                                f"{name} row {says}{f'..{held - 1}' if held - says > 1 else ''} is missing")
    for (code, shard), held in sorted(listed.items()):
        split = layout.splits[code] if code >= 0 else "(a split the manifest does not have)"
        problems.append(f"{where}: lists {held} packed rows of {split} shard {shard}, which is in no shard of "
                        "the manifest")
    return problems[:_PER_SHARD] + ([f"{where}: and {len(problems) - _PER_SHARD} more"]
                                    if len(problems) > _PER_SHARD else [])


def _first_misplaced(where: str, layout: Layout, got: tuple, expected: tuple) -> str:
    """The first packs row out of the order the loaders read (counts per shard already agree)."""
    p = int(np.flatnonzero(np.any([a != b for a, b in zip(got, expected)], axis=0))[0])

    def key(parts: tuple) -> str:
        return f"{layout.name(layout.splits[int(parts[0][p])], int(parts[1][p]))} row {int(parts[2][p])}"

    return f"{where} row {p}: is {key(got)}, but the loaders read {key(expected)} there"


class Segments:
    """What the shards hold for each segment of packs.parquet (-1: not read)."""

    def __init__(self, count: int):
        self.tokens = np.full(count, -1, dtype=np.int32)
        self.loss = np.full(count, -1, dtype=np.int32)
        self.hashes = np.zeros((count, 16), dtype=np.uint8)
        self.hashed = np.zeros(count, dtype=bool)
        self.near: np.ndarray | None = None  # near-dup records of the decoded prompts, when asked for


# ---------------------------------------------------------------------------------------------
# Shards


def check_shards(build: str, manifest: dict[str, Any], layout: Layout, packs: Packs | None,
                 segments: Segments | None, template: Template | None) -> list[str]:
    """Each shard of ``shards``: a file, hashed as recorded, holding its records, each a well-formed
    packed row that agrees with packs.parquet and the template."""
    problems: list[str] = []
    seq_len = manifest["config"]["seq_len"]
    for k, entry in enumerate(layout.entries):
        where = f"{build} shard {entry['file']}"
        path = os.path.join(build, entry["file"])
        problem = _file_problem(path, entry["sha256"], entry.get("bytes"))
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
        problems += found[:_PER_SHARD]
        if len(found) > _PER_SHARD:
            problems.append(f"{where}: and {len(found) - _PER_SHARD} more problems")
    return problems


def _records_of(path: str, where: str, expected: int, found: list[str]) -> Iterator[tuple[int, bytes]]:
    """(index, record) of every record of a shard, read in chunks; problems go to ``found``."""
    try:
        reader = ArrayRecordReader(path)
        count = reader.num_records()
    except Exception as err:  # array_record raises plain RuntimeError/ValueError on damage
        found.append(f"{where}: cannot be read ({_line(err)})")
        return
    if count != expected:
        found.append(f"{where}: {count} records, the manifest says {expected}")
    try:
        for start in range(0, count, _READ_CHUNK):
            yield from enumerate(reader.read(list(range(start, min(start + _READ_CHUNK, count)))), start)
    except Exception as err:
        found.append(f"{where}: reading records failed ({_line(err)})")
    finally:
        try:
            reader.close()
        except Exception as err:  # a damaged file can fail only when its reader is closed
            found.append(f"{where}: damaged ({_line(err)})")


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


def _check_config(build: str, config: dict[str, Any], start: int, stop: int,
                  records: RecordTotals | None) -> list[str]:
    """The recorded options the data can contradict: the range the build read and --max-tokens
    (no kept example is longer; unreadable stats are a problem of their own)."""
    problems = []
    if (config.get("start", start), config.get("stop", stop)) != (start, stop):
        problems.append(f"{build}: config records the range {config.get('start')}:{config.get('stop')}, the "
                        f"manifest's range is {start}:{stop}")
    limit = config.get("max_tokens")
    if "max_tokens" in config and not (_is_count(limit) and 1 <= limit <= config["seq_len"]):
        problems.append(f"{build}: config.max_tokens {json.dumps(limit)[:40]} is not a token count from 1 to "
                        f"config.seq_len ({config['seq_len']})")
    elif limit is not None and records is not None and records.longest > limit:  # None: a problem said why
        problems.append(f"{build}: a kept example of {RECORDS} holds {records.longest} tokens, more than "
                        f"config.max_tokens {limit}")
    return problems


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------
# stats/records.parquet


_RECORD_COLUMNS = ("row", "status", "prompt_hash", "tokens", "loss_tokens", "split", "shard", "pack", "segment")


@dataclass
class RecordTotals:
    """What records.parquet adds up to, for :func:`check_counts`."""

    height: int = 0
    by_status: Counter = field(default_factory=Counter)
    tokens: int = 0
    loss_tokens: int = 0
    by_split: Counter = field(default_factory=Counter)  # kept examples per split
    tokens_by_split: Counter = field(default_factory=Counter)
    unique_hashes: int | None = None
    longest: int = 0  # tokens of the longest kept example


def check_records(build: str, manifest: dict[str, Any], layout: Layout, packs: Packs | None,
                  segments: Segments | None, hashes: np.ndarray | None) -> tuple[RecordTotals | None, list[str]]:
    """One stats row per source row of the range; each kept row placed in exactly one segment that
    holds its tokens and its prompt; every segment claimed once; the prompt-hash file = kept prompts."""
    where = f"{build} {RECORDS}"
    path = os.path.join(build, RECORDS)
    if not os.path.isfile(path):
        return None, []  # check_files said why
    found: list[str] = []
    totals = RecordTotals()
    claimed = np.zeros(packs.segment_count if packs is not None else 0, dtype=np.int32)
    kept_hashes: list[np.ndarray] = []
    split_names = ("train", "eval") if manifest["config"]["eval_fraction"] > 0 else ("train",)
    try:
        parquet = pq.ParquetFile(path)
        wrong = _schema_problems(where, parquet.schema_arrow, _RECORD_TYPES)
        if wrong:
            return None, wrong
        next_row = manifest["range"]["start"]
        for batch in parquet.iter_batches(batch_size=_STATS_BATCH, columns=list(_RECORD_COLUMNS)):
            next_row = _check_batch(where, batch, next_row, manifest, layout, packs, segments, claimed, totals,
                                    kept_hashes, split_names, found)
    except (OSError, pa.ArrowException, ValueError, TypeError) as err:
        return None, found[:_PER_SHARD] + [f"{where}: cannot be read as Parquet ({_line(err)})"]
    if packs is not None:
        found += _unclaimed(build, layout, packs, claimed)
    stacked = np.concatenate(kept_hashes) if kept_hashes else np.zeros((0, 16), np.uint8)
    unique = np.unique(np.ascontiguousarray(stacked).view("S16").ravel())
    totals.unique_hashes = len(unique)
    if hashes is not None:
        listed = np.frombuffer(hashes.astype("S16").tobytes(), dtype="S16")
        if len(listed) != len(unique) or not np.array_equal(np.sort(listed), unique):
            found.append(f"{build}: the prompt-hash file ({len(listed)}) does not list the kept prompts of "
                         f"{RECORDS} ({len(unique)})")
    problems = found[:_PER_SHARD]
    if len(found) > _PER_SHARD:
        problems.append(f"{where}: and {len(found) - _PER_SHARD} more problems")
    return totals, problems


@dataclass
class _Kept:
    """The kept rows of one batch of records.parquet, column by column."""

    row: np.ndarray
    split: np.ndarray  # of str
    shard: np.ndarray
    pack: np.ndarray
    segment: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    hashes: np.ndarray  # uint8 [n, 16]

    def where(self, k: int, layout: Layout) -> str:
        return (f"placed in {layout.name(self.split[k], int(self.shard[k]))} row {int(self.pack[k])} segment "
                f"{int(self.segment[k])}")


def _check_batch(where: str, batch: pa.RecordBatch, next_row: int, manifest: dict[str, Any], layout: Layout,
                 packs: Packs | None, segments: Segments | None, claimed: np.ndarray, totals: RecordTotals,
                 kept_hashes: list[np.ndarray], split_names: tuple[str, ...], found: list[str]) -> int:
    """One batch of records.parquet: rows in order, known statuses, only kept rows placed; then
    the kept rows (:func:`_kept_rows`, :func:`_check_placement`). Returns the next row expected."""
    n = batch.num_rows
    col = {name: batch.column(name) for name in _RECORD_COLUMNS}
    rows = col["row"].to_numpy(zero_copy_only=False)
    expected = np.arange(next_row, next_row + n)
    if not np.array_equal(rows, expected):
        bad = int(np.flatnonzero(rows != expected)[0])
        found.append(f"{where}: holds row {rows[bad]} where row {expected[bad]} belongs (one stats row per source "
                     "row, in order)")
    status = np.array(col["status"].to_pylist(), dtype=object)
    totals.height += n
    totals.by_status.update(status.tolist())
    kept = status == "kept"
    unknown = sorted(set(totals.by_status) - set(REASONS) - {"kept"})
    if unknown and not any("is no drop reason tzc knows" in p for p in found):
        found.append(f"{where}: status {unknown[0]!r} is no drop reason tzc knows (near row {int(rows[0])})")
    placed = ~kept & ~np.asarray(col["shard"].is_null())
    if placed.any():
        first = int(np.flatnonzero(placed)[0])
        found.append(f"{where} row {int(rows[first])}: dropped ({status[first]}), but placed in a shard")
    found_kept = _kept_rows(where, col, rows, kept, found) if kept.any() else None
    if found_kept is None:
        return next_row + n
    kept_hashes.append(found_kept.hashes)
    totals.tokens += int(found_kept.tokens.sum())
    totals.longest = max(totals.longest, int(found_kept.tokens.max()))
    totals.loss_tokens += int(found_kept.loss.sum())
    for k, row in enumerate(found_kept.row.tolist()):
        split = found_kept.split[k]
        totals.by_split[split] += 1
        totals.tokens_by_split[split] += int(found_kept.tokens[k])
        assigned = split_names[split_of(found_kept.hashes[k].tobytes(), manifest["config"]["eval_fraction"])]
        if split != assigned:
            found.append(f"{where} row {row}: in split {split!r}, but its prompt hash assigns it to {assigned!r}")
    if packs is not None:
        _check_placement(where, layout, packs, segments, claimed, found_kept, found)
    return next_row + n


def _kept_rows(where: str, col: dict[str, pa.Array], rows: np.ndarray, kept: np.ndarray,
               found: list[str]) -> _Kept | None:
    """The kept rows' columns, or None (with the problem) when they lack a placement or a hash."""
    placed = ("split", "shard", "pack", "segment", "tokens", "loss_tokens", "prompt_hash")
    nulls = [name for name in placed if col[name].filter(pa.array(kept)).null_count]
    if nulls:
        found.append(f"{where}: kept rows with no {', '.join(nulls)} (e.g. near row {int(rows[kept][0])})")
        return None
    index = pa.array(np.flatnonzero(kept))
    numbers = [col[c].take(index).to_numpy().astype(np.int64) for c in ("shard", "pack", "segment", "tokens",
                                                                          "loss_tokens")]
    try:
        digests = b"".join(bytes.fromhex(d) for d in col["prompt_hash"].take(index).to_pylist())
        hashes = np.frombuffer(digests, dtype=np.uint8).reshape(-1, 16)
    except ValueError:
        found.append(f"{where}: a kept row's prompt_hash is not 32 hex digits (near row {int(rows[kept][0])})")
        return None
    return _Kept(rows[kept], np.array(col["split"].take(index).to_pylist(), dtype=object), *numbers, hashes)


def _check_placement(where: str, layout: Layout, packs: Packs, segments: Segments, claimed: np.ndarray,
                     kept: _Kept, found: list[str]) -> None:
    """Each kept row's (split, shard, pack, segment) names a segment of packs.parquet listing that
    row, whose shard tokens, loss tokens and decoded prompt are the row's."""
    flat = np.full(len(kept.row), -1, dtype=np.int64)
    for k in range(len(kept.row)):
        entries = layout.by_split.get(kept.split[k], [])
        shard, pack, seg = int(kept.shard[k]), int(kept.pack[k]), int(kept.segment[k])
        if not 0 <= shard < len(entries) or not 0 <= pack < layout.entries[entries[shard]]["records"]:
            found.append(f"{where} row {int(kept.row[k])}: placed in {layout.name(kept.split[k], shard)} row {pack}, "
                         "which no shard of the manifest holds")
            continue
        p = layout.start[entries[shard]] + pack
        if not 1 <= seg <= int(packs.segments[p]):
            found.append(f"{where} row {int(kept.row[k])}: placed in segment {seg} of "
                         f"{layout.name(kept.split[k], shard)} row {pack}, which has {int(packs.segments[p])}")
            continue
        flat[k] = int(packs.offsets[p]) + seg - 1
    ok = flat >= 0
    np.add.at(claimed, flat[ok], 1)
    at, k_ok = flat[ok], np.flatnonzero(ok)
    listed = packs.rows[at]
    tokens, loss, hashed = segments.tokens[at], segments.loss[at], segments.hashed[at]
    checks = [  # (disagrees, what to say), row by row
        (hashed & np.any(segments.hashes[at] != kept.hashes[ok], axis=1),
         lambda i: "the shard's text there has another prompt (its hash differs)"),
        (listed != kept.row[ok], lambda i: f"{PACKS} lists source row {int(listed[i])} there"),
        ((tokens >= 0) & (tokens != kept.tokens[ok]),
         lambda i: f"{int(kept.tokens[k_ok[i]])} tokens, the shard holds {int(tokens[i])}"),
        ((loss >= 0) & (loss != kept.loss[ok]),
         lambda i: f"{int(kept.loss[k_ok[i]])} loss tokens, the shard holds {int(loss[i])}"),
    ]
    for i in np.flatnonzero(np.any([bad for bad, _ in checks], axis=0))[:_PER_SHARD].tolist():
        said = "; ".join(message(i) for bad, message in checks if bad[i])
        found.append(f"{where} row {int(kept.row[k_ok[i]])} ({kept.where(int(k_ok[i]), layout)}): {said}")


def _unclaimed(build: str, layout: Layout, packs: Packs, claimed: np.ndarray) -> list[str]:
    """Segments that no kept row, or more than one, claims."""
    problems = []
    bad = np.flatnonzero(claimed != 1)
    if not len(bad):
        return []
    packed = np.searchsorted(packs.offsets, bad, side="right") - 1
    for s, p in zip(bad[:_PER_SHARD].tolist(), packed[:_PER_SHARD].tolist()):
        k = layout.entry_of(p)
        p_in_shard = p - layout.start[k]
        what = "no kept row of" if claimed[s] == 0 else f"{int(claimed[s])} kept rows of"
        problems.append(f"{build} shard {layout.entries[k]['file']} row {p_in_shard} segment "
                        f"{s - int(packs.offsets[p]) + 1}: {what} {RECORDS} placed there ({PACKS} lists source "
                        f"row {int(packs.rows[s])})")
    if len(bad) > _PER_SHARD:
        problems.append(f"{build}: and {len(bad) - _PER_SHARD} more segments claimed by no kept row or several")
    return problems


# ---------------------------------------------------------------------------------------------
# The manifest's counts


def check_counts(build: str, manifest: dict[str, Any], layout: Layout, packs: Packs | None,
                 records: RecordTotals | None) -> list[str]:
    """The manifest's counts, range and packing totals against the shards, packs and records."""
    problems = []
    counts, packing, config = manifest["counts"], manifest["packing"], manifest["config"]
    start, stop = manifest["range"]["start"], manifest["range"]["stop"]

    def differ(what: str, found: Any, says: Any) -> None:
        if found != says:
            problems.append(f"{build}: {what} {found}, the manifest says {says}")

    differ("the range holds rows:", stop - start, counts["read"])
    differ("rows read = kept + dropped:", counts["kept"] + counts["dropped"], counts["read"])
    differ("by_status adds up to", sum(counts["by_status"].values()), counts["read"])
    differ("by_status counts kept:", counts["by_status"].get("kept", 0), counts["kept"])
    differ("config.seq_len is", config["seq_len"], packing["seq_len"])
    problems += _check_config(build, config, start, stop, records)
    if manifest.get("record_layout") != json.loads(json.dumps(record_layout(config["seq_len"]))):
        problems.append(f"{build} {MANIFEST}: record_layout does not describe rows of seq_len {config['seq_len']} "
                        "as this tzc writes them")
    differ("the shards hold packed rows:", layout.rows, packing["rows"])
    for split in layout.splits:
        rows = sum(layout.entries[k]["records"] for k in layout.by_split[split])
        differ(f"the shards of {split!r} hold packed rows:", rows, packing["by_split"][split]["rows"])
    if packs is not None:
        differ(f"{PACKS} holds segments (examples):", packs.segment_count, packing["examples"])
        differ(f"{PACKS} holds tokens:", int(packs.tokens.sum()), packing["tokens"])
        differ(f"{PACKS} holds loss tokens:", int(packs.loss_tokens.sum()), packing["loss_tokens"])
        fill = round(int(packs.tokens.sum()) / (layout.rows * config["seq_len"]), 6) if layout.rows else 0.0
        differ("the fill is", fill, packing["fill"])
    if records is not None:
        differ(f"{RECORDS} holds rows:", records.height, counts["read"])
        differ(f"{RECORDS} counts by status", dict(sorted(records.by_status.items())),
               dict(sorted(counts["by_status"].items())))
        differ(f"{RECORDS} counts kept rows:", records.by_status.get("kept", 0), packing["examples"])
        differ(f"{RECORDS} kept rows hold tokens:", records.tokens, packing["tokens"])
        differ(f"{RECORDS} kept rows hold loss tokens:", records.loss_tokens, packing["loss_tokens"])
        for split in layout.splits:
            differ(f"{RECORDS} kept rows of {split!r}:", records.by_split.get(split, 0),
                   packing["by_split"][split]["examples"])
            differ(f"{RECORDS} tokens of {split!r}:", records.tokens_by_split.get(split, 0),
                   packing["by_split"][split]["tokens"])
        unknown = set(records.by_split) - set(layout.splits)
        if unknown:
            problems.append(f"{build}: {RECORDS} places kept rows in splits {sorted(unknown)} the manifest does "
                            "not have")
        differ(f"{RECORDS} kept rows have distinct prompts:", records.unique_hashes, manifest["hashes"]["count"])
    return problems


# ---------------------------------------------------------------------------------------------
# Between builds


def check_mixable(a: str, ma: dict[str, Any], b: str, mb: dict[str, Any]) -> list[str]:
    """Builds checked together are a mixture (``tzc_data.batches``): one tokenizer (a Gemma 2 and a
    Gemma 3 build hold ids of different vocabularies) and one record layout (``seq_len``)."""
    problems = []
    if ma["tokenizer"]["sha256"] != mb["tokenizer"]["sha256"]:
        problems.append(f"builds {a} and {b} were tokenized by different tokenizers ({tokenizer_label(ma)} and "
                        f"{tokenizer_label(mb)}): they cannot be mixed")
    if ma["config"]["seq_len"] != mb["config"]["seq_len"]:
        problems.append(f"builds {a} and {b} have seq_len {ma['config']['seq_len']} and {mb['config']['seq_len']}: "
                        "their packed rows differ in layout, they cannot be mixed")
    return problems


def check_disjoint(a: str, ma: dict[str, Any], ha: np.ndarray | None,
                   b: str, mb: dict[str, Any], hb: np.ndarray | None, *, near_a: np.ndarray | None = None,
                   near_b: np.ndarray | None = None, unchecked: list[str] | None = None) -> list[str]:
    """Row ranges of the same source must not overlap, and no kept prompt may be in both builds,
    exactly or nearly. Near duplicates are compared on each build's ``near_dup.bin``, or on
    ``near_a``/``near_b`` (the records of its decoded prompts) for a build without one; when a
    build has neither, that is a problem (or, with ``unchecked``, a note appended there)."""
    problems = []
    if source_identity(ma["source"]) == source_identity(mb["source"]):
        low = max(ma["range"]["start"], mb["range"]["start"])
        high = min(ma["range"]["stop"], mb["range"]["stop"])
        if low < high:
            problems.append(f"builds {a} and {b}: row ranges overlap at rows {low}:{high} of the same source")
    try:
        problems += _near_duplicates_across(a, ma, b, mb, near_a, near_b, unchecked)
    except (OSError, ValueError) as err:
        problems.append(f"builds {a} and {b}: near-duplicate signatures cannot be compared ({_line(err)})")
    if ha is not None and hb is not None:
        shared = np.intersect1d(ha, hb)
        if len(shared):
            examples = ", ".join(_describe_shared(h.ljust(16, b"\0").hex(), a, b) for h in shared[:3].tolist())
            problems.append(f"builds {a} and {b} share {len(shared)} prompt hashes, e.g. {examples}")
    return problems


def _near_duplicates_across(a: str, ma: dict[str, Any], b: str, mb: dict[str, Any], near_a: np.ndarray | None,
                            near_b: np.ndarray | None, unchecked: list[str] | None) -> list[str]:
    """Prompts of ``b`` that are near-duplicates of prompts kept in ``a``: on the stored keys, or on
    those of the decoded prompts; a build with neither is said, never passed in silence."""
    keys = []
    for build, manifest, decoded in ((a, ma, near_a), (b, mb, near_b)):
        if manifest.get("near_dup"):
            keys.append(np.fromfile(os.path.join(build, manifest["near_dup"]["file"]), dtype=NEAR_RECORD))
        elif decoded is not None:
            keys.append(decoded)
        else:
            note = (f"builds {a} and {b}: near-duplicate prompts were not checked: {build} has no near-dup keys "
                    f"(built with --no-near-dup) and its prompts were not decoded (tzc-data verify {a} {b} "
                    "decodes them)")
            if unchecked is None:
                return [note]
            unchecked.append(note)
            return []
    index = NearDupIndex(min(m["near_dup"]["threshold"] if m.get("near_dup")
                             else m["config"].get("near_dup_threshold", 0.8) for m in (ma, mb)))
    index.add_many(keys[0]["bands"], keys[0]["sketch"], keys[0]["row"].tolist())
    found = []
    for record in keys[1]:
        twin = index.find(record["bands"], record["sketch"])
        if twin is not None:
            found.append(f"row {twin[0]} in {a} ~ row {int(record['row'])} in {b} (Jaccard ~{twin[1]:.2f})")
    if not found:
        return []
    return [f"builds {a} and {b} share {len(found)} near-duplicate prompts (exact ones included), "
            f"e.g. {', '.join(found[:3])}"]


def _describe_shared(digest: str, a: str, b: str) -> str:
    rows = []
    for build in (a, b):
        try:
            table = pq.read_table(os.path.join(build, RECORDS), columns=["row", "status", "prompt_hash"],
                                  filters=[("prompt_hash", "=", digest), ("status", "=", "kept")])
            hit = table.column("row").to_pylist()
        except (OSError, pa.ArrowException, ValueError):
            hit = []
        rows.append(str(hit[0]) if hit else "?")
    return f"{digest} (row {rows[0]} in {a}, row {rows[1]} in {b})"


# ---------------------------------------------------------------------------------------------
# Benchmarks (verify --decontaminate)


def check_decontaminated(builds: Sequence[str], benchmarks: Sequence[str], tokenizers: Sequence[str] = ()) -> list[str]:
    """Problems: kept examples of ``builds`` that share a word n-gram with a question of the
    ``benchmarks`` files, by each build's rule (its n-gram length, and its responses when it
    checked them; :mod:`tzc_data.decontaminate`), decoded from the shards."""
    from tzc_data.decontaminate import benchmark_index, contaminated_in_build

    problems: list[str] = []
    cache: dict[str, Tokenizer] = {}
    indexes: dict[int, Any] = {}
    for build in builds:
        try:
            manifest = read_manifest_json(utf8_path(build))
            if check_manifest(build, manifest):
                continue  # verify has named what is wrong with it
            tokenizer = _tokenizer(manifest, tokenizers, cache)
        except TzcError as err:
            problems.append(f"{build}: {err}; not checked against the benchmarks")
            continue
        n = int(manifest["config"].get("decontaminate_ngram") or 8)
        if n not in indexes:
            indexes[n] = benchmark_index(benchmarks, n, option="verify --decontaminate")
        found = list(itertools.islice(contaminated_in_build(
            build, indexes[n], tokenizer, responses=bool(manifest["config"].get("decontaminate_responses"))),
            _PER_SHARD + 1))
        for overlap in found[:_PER_SHARD]:
            problems.append(f"{build}: kept example {overlap.text} ({overlap.split}) is contaminated: its "
                            f"{overlap.where} shares the {n}-gram \"{overlap.ngram}\" with item {overlap.item} of "
                            f"{overlap.benchmark}")
        if len(found) > _PER_SHARD:
            problems.append(f"{build}: more kept examples are contaminated (the first {_PER_SHARD} are listed)")
    return problems
