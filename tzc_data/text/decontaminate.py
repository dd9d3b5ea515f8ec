"""Benchmark decontamination: no kept prompt shares a word n-gram with a benchmark question.

The rule (open-r1's ``decontaminate.py`` and Tülu 3's, with dedup's normalisation): a text's
*words* are the ``\\w+`` runs of :func:`tzc_data.text.dedupe.normalise` of it (NFKC, casefold,
collapsed whitespace: changing case, spacing or punctuation changes no word), and two texts are
contaminated when they share ``n`` consecutive words (default 8). A benchmark item with fewer
than ``n`` words has no n-gram and can match nothing; the manifest counts such items.

The index (:class:`BenchmarkIndex`) maps every n-gram of every benchmark question to the first
item that holds it: benchmarks are small (a GSM8K-sized one, 1,319 questions of about 50 words,
makes tens of thousands of n-grams, a few MiB), so it travels with the map stage's :class:`tzc_data.build.rowstage.RowStage` to every worker,
and the check is per row, in the map stage, on every engine, with the same result. A row that
matches is dropped as ``contaminated``; its stats name the benchmark file, the item's index and
the n-gram (:func:`drop_contaminated`).

The read side uses the same rule: :func:`contaminated_in_build` re-checks a finished build's kept
examples (``tzc-data verify --decontaminate FILE``), and :func:`overlapping_prompts` finds prompts
(``tzc-train eval --prompts``) that overlap a build's kept prompts. Nothing here imports the build.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tzc_data.errors import ConfigError
from tzc_data.files import sha256_file
from tzc_data.record import Example
from tzc_data.text.dedupe import normalise

# The fields a benchmark file's question may be in, tried in this order.
QUESTION_FIELDS = ("question", "prompt", "problem", "instruction", "input", "query", "text")
SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
SCORE_NAMES = ("contaminated_benchmark", "contaminated_item")  # stats columns: the benchmark's and item's index
RULE = ("word n-grams: \\w+ runs of tzc_data.text.dedupe.normalise (NFKC, casefold, collapsed whitespace); an item "
        "with fewer than n words matches nothing")
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """The words an n-gram is made of: ``\\w+`` runs of the normalised text."""
    return _WORD.findall(normalise(text))


@dataclass(frozen=True)
class Match:
    """A text's first n-gram that a benchmark item holds."""

    benchmark: int  # index into BenchmarkIndex.benchmarks
    item: int  # the item's index in its file (0-based, in file order)
    ngram: str  # the n words, space-joined


@dataclass(frozen=True, kw_only=True)
class Benchmark:
    path: str
    sha256: str
    field: str
    items: int
    items_under_ngram: int  # items with fewer than n words: they cannot match

    def describe(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "field": self.field, "items": self.items,
                "items_under_ngram": self.items_under_ngram}


_LONG = 64  # words from which a text's n-grams are screened with numpy before any is joined
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def _window_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """A polynomial hash (mod 2**64) of each window of ``n`` word ids: equal windows, equal hashes."""
    count = len(ids) - n + 1
    hashes = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            hashes = hashes * _MULTIPLIER + ids[k:k + count]
    return hashes


@dataclass(frozen=True, kw_only=True)
class BenchmarkIndex:
    """Every n-gram of the benchmarks' questions -> the first (benchmark, item) that holds it.

    Picklable (a dict of strings: Python rehashes them where it is unpickled, so no hash seed
    matters), and small: about 100 bytes an n-gram. A long text (a response) is screened first:
    its words become ids of the benchmarks' vocabulary, and only the windows whose hash
    (:func:`_window_hashes`) is an n-gram's, with no word outside that vocabulary, are joined and
    looked up, so the result is the one the plain scan gives, about twice as fast."""

    n: int
    benchmarks: tuple[Benchmark, ...]
    grams: dict[str, int] = field(repr=False)  # n-gram -> benchmark << 32 | item
    vocabulary: dict[str, int] = field(repr=False, default_factory=dict)  # word of an n-gram -> id (>= 1)
    hashes: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, dtype=np.uint64))  # sorted

    def match_words(self, found: Sequence[str]) -> Match | None:
        """The first n-gram of ``found`` (words, in order) that a benchmark item holds, or None."""
        n, grams = self.n, self.grams
        if len(found) < n or not grams:
            return None
        if len(found) >= _LONG and len(self.hashes):
            ids = np.fromiter((self.vocabulary.get(w, 0) for w in found), dtype=np.uint64, count=len(found))
            outside = np.concatenate([[0], np.cumsum(ids == 0)])
            hashes = _window_hashes(ids, n)
            slots = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
            positions = np.flatnonzero((self.hashes[slots] == hashes) & (outside[n:] == outside[:-n]))
        else:
            positions = range(len(found) - n + 1)
        for at in positions:
            gram = " ".join(found[at:at + n])
            code = grams.get(gram)
            if code is not None:
                return Match(code >> 32, code & 0xFFFFFFFF, gram)
        return None

    def match(self, text: str) -> Match | None:
        return self.match_words(words(text))

    def describe(self, match: Match) -> str:
        """The words of a stats ``detail``: which n-gram, which item of which file."""
        return f"shares the {self.n}-gram \"{match.ngram}\" with item {match.item} of {self.benchmarks[match.benchmark].path}"

    def sha256s(self) -> list[dict[str, str]]:
        """What a resume must find unchanged: each benchmark file's path and sha256."""
        return [{"path": b.path, "sha256": b.sha256} for b in self.benchmarks]


def benchmark_files(paths: Iterable[str], option: str = "--decontaminate") -> list[str]:
    """The files ``paths`` name: each file as given, each folder's ``.jsonl``, ``.jsonl.gz`` and
    ``.parquet`` files in name order (a local copy of a benchmark), each once."""
    found: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            inside = sorted(os.path.join(path, name) for name in os.listdir(path) if name.endswith(SUFFIXES)
                            and os.path.isfile(os.path.join(path, name)))
            if not inside:
                raise ConfigError(f"{option} {path}: a folder without .jsonl, .jsonl.gz or .parquet files")
            found += inside
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise ConfigError(f"{option} {path}: no such file or folder")
    return list(dict.fromkeys(found))


def read_questions(path: str, option: str = "--decontaminate") -> tuple[str, list[str]]:
    """(field, questions) of a benchmark file: JSONL (``.jsonl``, ``.jsonl.gz``, one object a
    line) or Parquet, the first of :data:`QUESTION_FIELDS` it has; a null question is an empty one
    (it keeps its index). Bad input is a one-line :class:`ConfigError` naming the file and line."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a file it cannot read
            raise ConfigError(f"{option} {path}: not a readable Parquet file ({str(err).splitlines()[0][:200]})") from None
        name = _field_of(names, path, option)
        values = pq.read_table(path, columns=[name]).column(name).to_pylist()
        if not values:
            raise ConfigError(f"{option} {path}: no items in it")
        return name, [_question(v, path, k, option) for k, v in enumerate(values)]
    rows = list(_json_lines(path, option))
    if not rows:
        raise ConfigError(f"{option} {path}: no items in it")
    name = _field_of(list(rows[0][1]), path, option)
    questions = []
    for number, row in rows:
        if name not in row:
            raise ConfigError(f"{option} {path}, line {number}: no {name!r} field (the file's first item has one)")
        questions.append(_question(row[name], path, number, option))
    return name, questions


def _json_lines(path: str, option: str) -> Iterator[tuple[int, dict[str, Any]]]:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                if not isinstance(row, dict):
                    raise ConfigError(f"{option} {path}, line {number}: not a JSON object (JSONL or Parquet "
                                      f"with one of the fields {', '.join(QUESTION_FIELDS)})")
                yield number, row
    except (OSError, UnicodeDecodeError, EOFError, zlib.error) as err:
        raise ConfigError(f"{option} {path}: cannot read it ({str(err).splitlines()[0][:200]})") from None


def _field_of(names: Sequence[str], path: str, option: str) -> str:
    for name in QUESTION_FIELDS:
        if name in names:
            return name
    raise ConfigError(f"{option} {path}: none of the fields {', '.join(QUESTION_FIELDS)} (it has "
                      f"{', '.join(map(str, names[:8])) or 'none'})")


def _question(value: Any, path: str, where: int, option: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{option} {path}, item at {where}: the question is a {type(value).__name__}, not text")
    return value


def benchmark_index(paths: Sequence[str], n: int = 8, option: str = "--decontaminate") -> BenchmarkIndex:
    """The n-gram index of the benchmark files (or folders) ``paths``, in the order given."""
    grams: dict[str, int] = {}
    benchmarks = []
    for number, path in enumerate(benchmark_files(paths, option)):
        name, questions = read_questions(path, option)
        short = 0
        for item, question in enumerate(questions):
            found = words(question)
            short += len(found) < n
            for at in range(len(found) - n + 1):
                grams.setdefault(" ".join(found[at:at + n]), number << 32 | item)
        benchmarks.append(Benchmark(path=path, sha256=sha256_file(path), field=name, items=len(questions),
                                    items_under_ngram=short))
    vocabulary: dict[str, int] = {}
    for gram in grams:
        for word in gram.split(" "):
            vocabulary.setdefault(word, len(vocabulary) + 1)
    ids = np.array([vocabulary[w] for gram in grams for w in gram.split(" ")], dtype=np.uint64).reshape(-1, n)
    hashes = np.zeros(len(ids), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):  # _window_hashes of each n-gram, all at once
            hashes = hashes * _MULTIPLIER + ids[:, k]
    hashes = np.unique(hashes)
    return BenchmarkIndex(n=n, benchmarks=tuple(benchmarks), grams=grams, vocabulary=vocabulary, hashes=hashes)


def drop_contaminated(examples: Iterable[Example], index: BenchmarkIndex | None, *,
                      responses: bool = False) -> Iterator[Example]:
    """Stage: drop an example whose prompt (and, with ``responses``, its response) shares an n-gram
    with a benchmark question, as ``contaminated``; the detail names the n-gram, the item and the
    file, the scores the benchmark's and the item's index. Runs before the response is split, so
    the response is the source's text."""
    for example in examples:
        if example.kept and index is not None:
            where, match = "prompt", index.match(example.normalised or example.prompt)
            if match is None and responses:
                where, match = "response", index.match(example.response)
            if match is not None:
                example.scores.update({SCORE_NAMES[0]: float(match.benchmark), SCORE_NAMES[1]: float(match.item)})
                example.drop("contaminated", f"{where} {index.describe(match)}")
        yield example


def report(index: BenchmarkIndex, benchmark: Sequence[float | None], item: Sequence[float | None],
           rows: Sequence[int]) -> dict[str, Any]:
    """The manifest's ``decontamination`` entry: the rule, and per benchmark its file, sha256,
    items, items matched, training rows dropped and the first of them. ``benchmark``, ``item`` and
    ``rows`` are the contaminated rows' stats (in row order)."""
    matched: list[set[int]] = [set() for _ in index.benchmarks]
    dropped = [0] * len(index.benchmarks)
    first: list[list[int]] = [[] for _ in index.benchmarks]
    for b, i, row in zip(benchmark, item, rows):
        if b is None or i is None:
            continue
        matched[int(b)].add(int(i))
        dropped[int(b)] += 1
        if len(first[int(b)]) < 5:
            first[int(b)].append(int(row))
    return {"ngram": index.n, "rule": RULE,
            "benchmarks": [{**b.describe(), "items_matched": len(matched[k]), "rows_dropped": dropped[k],
                            "first_rows": first[k]} for k, b in enumerate(index.benchmarks)]}


# ---------------------------------------------------------------------------------------------
# The read side: a finished build's kept examples against benchmarks, and prompts against a build


