"""The map stage: one unit of the source through the per-row stages, into the unit's files.

    read ─ hash prompt ─ excluded builds ─ benchmarks (n-grams) ─ split <think> ─ quality filters (language, repetition)
         ─ format checks ─ tokenize ─ length bound ─ dedup keys (MinHash) ─ the unit's files

Each of these looks at one row at a time, so a unit can run anywhere: in this process, in a
worker process, on another machine. :class:`RowStage` is everything a unit needs, built from the
config and the tokenizer's bytes (no file is read where it runs, no global is set): the engines
pickle it once per worker and call it once per unit. What it writes is a pure function of the
unit (see :mod:`tzc_data.build.units`); the stages that depend on every earlier row (dedup, packing)
run after every unit is done, in one process, in row order.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from tzc_data import files
from tzc_data.build import units
from tzc_data.build.config import BuildConfig
from tzc_data.build.write import UnitRows
from tzc_data.errors import SourceError
from tzc_data.filters import EnglishFilter, Filter, LengthFilter, RepetitionFilter, apply_filters
from tzc_data.filters.compiled import ready
from tzc_data.record import Example
from tzc_data.sources import Source, Unit
from tzc_data.text.decontaminate import SCORE_NAMES as CONTAMINATION_SCORES
from tzc_data.text.decontaminate import BenchmarkIndex, drop_contaminated
from tzc_data.text.dedupe import drop_excluded, hash_prompts, split_of
from tzc_data.text.format import check_system, format_examples, split_examples
from tzc_data.text.minhash import band_keys, signature
from tzc_data.text.tokenize import Tokenizer, chunks, tokenize

_BATCH = 256  # rows whose MinHash signatures are computed together
# Rows a process must expect to judge before its quality filters may compile their code, where this
# machine has not built it yet: building the extension module takes about half a minute once
# (numba's just-in-time compiler, where it cannot be built, as long once, then 0.45 s a process to
# load), and compiled code saves about 0.25 ms a row (docs/benchmarks.md, sections 13 to 15).
COMPILED_FROM_ROWS = 2500


def build_filters(config: BuildConfig) -> list[Filter]:
    """The quality filters that run on the split text, in order. They use their compiled code from
    the first row where this machine has built it (:func:`tzc_data.filters.compiled.ready`: it
    then loads in a few milliseconds); else, where a process can expect :data:`COMPILED_FROM_ROWS` rows,
    they compile it after their first few hundred rows, and otherwise stay in Python. Either way
    they decide the same."""
    compiled = None if (config.stop - config.start) / max(1, config.workers) >= COMPILED_FROM_ROWS else ready()
    filters: list[Filter] = []
    if config.language_filter:  # first: cheap, and a foreign trace is "non_english" whatever else it is
        filters.append(EnglishFilter(min_score=config.min_english_score, compiled=compiled))
    if config.loop_filter:
        filters.append(RepetitionFilter(
            tail_repeats=config.loop_min_repeats, tail_chars=config.loop_min_chars,
            cycle_repeats=config.loop_min_cycle_repeats, run_copies=config.loop_min_run,
            paragraph_repeats=config.max_paragraph_repeats, sentence_repeats=config.max_sentence_repeats,
            repeated_share=config.min_repeated_share,
            ngram_dup_share=config.max_ngram_dup_share, ngram_top_share=config.max_ngram_top_share,
            min_compression=config.min_compression_ratio, compiled=compiled))
    return filters


def score_names(config: BuildConfig) -> list[str]:
    """The score columns of the stats, in order: the benchmark and item a contaminated row matched,
    each quality filter's, then near dedup's."""
    return (list(CONTAMINATION_SCORES) if config.decontaminate else []) + \
        [name for f in build_filters(config) for name in f.score_names] + \
        (["near_dup_jaccard"] if config.near_dup else [])


def row_stages(examples: Iterable[Example], config: BuildConfig, tokenizer: Tokenizer, quality: list[Filter],
               excluded: dict[bytes, str], benchmarks: BenchmarkIndex | None = None) -> Iterator[Example]:
    """The per-row stages, in order, as generators (each yields every example, dropped or not)."""
    examples = hash_prompts(examples)
    examples = drop_excluded(examples, excluded)
    examples = drop_contaminated(examples, benchmarks, responses=config.decontaminate_responses)
    examples = split_examples(examples, keep_response=config.keep_rejected)
    examples = apply_filters(examples, quality)
    examples = format_examples(examples)
    examples = tokenize(examples, tokenizer)
    return apply_filters(examples, [LengthFilter(config.token_limit, config.min_answer_tokens,
                                                 config.min_reasoning_tokens, config.max_model_tokens)])


@dataclass(frozen=True, kw_only=True)
class RowStage:
    """Run one unit: ``stage(unit)`` writes its files and returns its done-marker.

    Picklable: the tokenizer travels as its model's bytes, and the tokenizer and filters built
    from them are cached per process (never pickled). A stage made with its process's tools reads
    the model's bytes out of its tokenizer only when it is pickled (``tokenizer_model`` None till then).
    """

    config: BuildConfig
    source: Source
    staging: str
    tokenizer_model: bytes | None = field(repr=False)
    tokenizer_name: str
    excluded: dict[bytes, str] = field(repr=False)
    benchmarks: BenchmarkIndex | None = field(default=None, repr=False)  # --decontaminate's n-grams

    @classmethod
    def of(cls, config: BuildConfig, source: Source, staging: str, tokenizer: Tokenizer,
           excluded: dict[bytes, str], benchmarks: BenchmarkIndex | None = None) -> RowStage:
        usable = tokenizer.system == check_system(config.system) and tokenizer.memo_refused != "turned off"
        stage = cls(config=config, source=source, staging=staging,
                    tokenizer_model=None if usable else tokenizer.sp.serialized_model_proto(),
                    tokenizer_name=tokenizer.path, excluded=excluded, benchmarks=benchmarks)
        if usable:  # this process's tools are the given tokenizer (not pickled: a worker builds its own)
            stage.__dict__["_tools"] = (tokenizer, build_filters(config), score_names(config))
        return stage

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k != "_tools"}
        if state["tokenizer_model"] is None:
            state["tokenizer_model"] = self._tools[0].sp.serialized_model_proto()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @cached_property
    def _tools(self) -> tuple[Tokenizer, list[Filter], list[str]]:
        tokenizer = Tokenizer(self.tokenizer_name, system=self.config.system, model=self.tokenizer_model)
        return tokenizer, build_filters(self.config), score_names(self.config)

    def __call__(self, unit: Unit) -> units.UnitDone:
        tokenizer, quality, names = self._tools
        config = self.config
        table = UnitRows(names, text=config.keep_rejected)
        counts: Counter = Counter()
        candidates = tokens = 0
        expected = unit.start
        examples = row_stages(self.source.read_unit(unit), config, tokenizer, quality, self.excluded, self.benchmarks)
        os.makedirs(units.folder(self.staging), exist_ok=True)
        with files.atomic_path(units.tokens_path(self.staging, unit.index), durable=False) as temporary, \
                open(temporary, "wb") as out:
            for batch in chunks(examples, _BATCH):
                keys = _dedup_keys([e for e in batch if e.kept]) if config.near_dup else {}
                for example in batch:
                    if example.row != expected:
                        raise SourceError(f"{unit.where}: the source gave row {example.row} where row {expected} "
                                          "was due; it does not keep its row order")
                    expected += 1
                    counts[example.status] += 1
                    if not example.kept:
                        table.add(example)
                        continue
                    out.write(example.tokens)
                    candidates += 1
                    tokens += len(example.tokens)
                    bands, sketch = keys.get(example.row, (None, None))
                    table.add(example, split_of(example.prompt_hash, config.eval_fraction), bands, sketch)
        if expected != unit.stop:
            raise SourceError(f"{unit.where}: the source gave {expected - unit.start:,} rows of the "
                              f"{unit.stop - unit.start:,} it planned")
        table.write(units.table_path(self.staging, unit.index), durable=False)
        return units.finished(self.staging, index=unit.index, start=unit.start, stop=unit.stop, counts=counts,
                              candidates=candidates, tokens=tokens)


def _dedup_keys(examples: list[Example]) -> dict[int, tuple[bytes, bytes]]:
    """row -> (LSH band keys, sketch) of each example, as near dedup compares them."""
    if not examples:
        return {}
    signatures = np.stack([signature(e.prompt, e.normalised or None) for e in examples])
    bands, sketches = band_keys(signatures), (signatures & 0xFF).astype(np.uint8)
    return {e.row: (bands[k].astype("<u8").tobytes(), sketches[k].tobytes()) for k, e in enumerate(examples)}
