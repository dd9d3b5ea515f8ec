"""Benchmarks against finished builds: ``verify --decontaminate`` re-checks every kept example
(decoded from the shards) with the rule the build used, and ``tzc-train eval`` refuses prompts a
training build holds (:func:`check_held_out`). The n-gram index itself is
:mod:`tzc_data.text.decontaminate`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tzc_data.errors import TzcError
from tzc_data.read.manifest import check_manifest, read_manifest_json, utf8_path

if TYPE_CHECKING:
    from tzc_data.text.tokenize import Tokenizer
from tzc_data.errors import ConfigError
from tzc_data.text.decontaminate import BenchmarkIndex, words
from tzc_data.verify.layers import PER_SHARD, tokenizer_for


def check_decontaminated(builds: Sequence[str], benchmarks: Sequence[str], tokenizers: Sequence[str] = ()) -> list[str]:
    """Problems: kept examples of ``builds`` that share a word n-gram with a question of the
    ``benchmarks`` files, by each build's rule (its n-gram length, and its responses when it
    checked them; :mod:`tzc_data.text.decontaminate`), decoded from the shards."""
    from tzc_data.text.decontaminate import benchmark_index

    problems: list[str] = []
    cache: dict[str, Tokenizer] = {}
    indexes: dict[int, Any] = {}
    for build in builds:
        try:
            manifest = read_manifest_json(utf8_path(build))
            if check_manifest(build, manifest):
                continue  # verify has named what is wrong with it
            tokenizer = tokenizer_for(manifest, tokenizers, cache)
        except TzcError as err:
            problems.append(f"{build}: {err}; not checked against the benchmarks")
            continue
        n = int(manifest["config"].get("decontaminate_ngram") or 8)
        if n not in indexes:
            indexes[n] = benchmark_index(benchmarks, n, option="verify --decontaminate")
        found = list(itertools.islice(contaminated_in_build(
            build, indexes[n], tokenizer, responses=bool(manifest["config"].get("decontaminate_responses"))),
            PER_SHARD + 1))
        for overlap in found[:PER_SHARD]:
            problems.append(f"{build}: kept example {overlap.text} ({overlap.split}) is contaminated: its "
                            f"{overlap.where} shares the {n}-gram \"{overlap.ngram}\" with item {overlap.item} of "
                            f"{overlap.benchmark}")
        if len(found) > PER_SHARD:
            problems.append(f"{build}: more kept examples are contaminated (the first {PER_SHARD} are listed)")
    return problems


@dataclass(frozen=True)
class Overlap:
    """A text of one side that shares an n-gram with an item of the other."""

    text: int  # its index among the texts checked (a prompt's; or the kept example's, in shard order)
    split: str
    item: int  # the other side's item (a benchmark item, or a prompt's index)
    ngram: str
    where: str  # "prompt" or "response"
    benchmark: str = ""  # the benchmark file (contaminated_in_build)


def kept_examples(build: str, tokenizer: Any) -> Iterator[tuple[str, str, str]]:
    """(split, prompt, completion) of every kept example of ``build``, decoded from its shards in
    shard order (``tokenizer``: a :class:`tzc_data.text.tokenize.Tokenizer` of the build)."""
    from tzc_data.read.load import iter_rows
    from tzc_data.read.manifest import read_manifest
    from tzc_data.text import format as fmt

    manifest = read_manifest(build)
    for split in manifest["splits"]:
        for row in iter_rows(build, split):
            ids = row["segment_ids"]
            for segment in range(1, int(ids.max(initial=0)) + 1):
                tokens = row["tokens"][ids == segment]
                try:
                    prompt, reasoning, answer = fmt.parse(tokenizer.decode(int(t) for t in tokens))
                except fmt.FormatError:
                    continue  # verify's own checks report a segment that does not parse
                yield split, prompt, f"{reasoning}\n{answer}"


def contaminated_in_build(build: str, index: BenchmarkIndex, tokenizer: Any, *,
                          responses: bool = False) -> Iterator[Overlap]:
    """The kept examples of ``build`` whose prompt (and, with ``responses``, completion) shares an
    n-gram with ``index``'s benchmarks (for ``verify --decontaminate``)."""
    for k, (split, prompt, completion) in enumerate(kept_examples(build, tokenizer)):
        where, match = "prompt", index.match(prompt)
        if match is None and responses:
            where, match = "response", index.match(completion)
        if match is not None:
            yield Overlap(k, split, match.item, match.ngram, where, index.benchmarks[match.benchmark].path)


def overlapping_prompts(prompts: Sequence[str], build: str, tokenizer: Any, n: int | None = None, *,
                        splits: Sequence[str] = ("train",)) -> list[Overlap]:
    """The prompts that share a word n-gram with a prompt the build trains on (its ``splits``), by
    the build's rule (its ``decontaminate_ngram``, 8 when it recorded none, unless ``n`` is
    given): one :class:`Overlap` per overlapping prompt, ``text`` its index in ``prompts``,
    ``item`` the first such kept example's index in the build's shard order. Reads the build's
    shards once; the index is of ``prompts`` (small), not of the build."""
    from tzc_data.read.manifest import read_manifest

    if n is None:
        n = int(read_manifest(build)["config"].get("decontaminate_ngram") or 8)
    grams: dict[str, list[int]] = {}
    for k, prompt in enumerate(prompts):
        found = words(prompt)
        for at in range(len(found) - n + 1):
            holders = grams.setdefault(" ".join(found[at:at + n]), [])
            if not holders or holders[-1] != k:
                holders.append(k)
    first: dict[int, Overlap] = {}
    if grams:
        for k, (split, prompt, _) in enumerate(kept_examples(build, tokenizer)):
            if split not in splits:
                continue
            found = words(prompt)
            for at in range(len(found) - n + 1):
                gram = " ".join(found[at:at + n])
                for which in grams.get(gram, ()):
                    if which not in first:
                        first[which] = Overlap(which, split, k, gram, "prompt")
    return [first[k] for k in sorted(first)]


def check_held_out(prompts: Sequence[str], build: str, tokenizer: Any, *, allow: bool = False,
                   option: str = "--prompts") -> str | None:
    """Refuse (``ConfigError``) prompts that overlap what ``build`` trains on, by the build's rule
    (:func:`overlapping_prompts`), naming the count and the first; with ``allow``, return that as a
    warning line instead. None when they are held out."""
    found = overlapping_prompts(prompts, build, tokenizer)
    if not found:
        return None
    first = found[0]
    line = (f"{option}: {len(found):,} of {len(prompts):,} prompts share a {len(first.ngram.split())}-word n-gram "
            f"with prompts the build {build} trains on (first: prompt {first.text}, \"{first.ngram}\"), so they are "
            "not held out")
    if not allow:
        raise ConfigError(f"{line}; pass --allow-overlap to evaluate them anyway")
    return f"warning: {line}"
