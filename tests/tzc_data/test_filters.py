"""Filters: each signal on labelled sets built from the synthetic generator and on real traces."""

import random
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tzc_data.filters import (EnglishFilter, LengthFilter, RepetitionFilter, apply_filters, compression_ratio,
                              dup_ngram_share, english_score, repeated_units, repeating_tail, top_ngram_share)
from tzc_data.format import FormatError, split_response
from tzc_data.record import Example
from tzc_data.synthetic import LOOP_SHAPES, generate

LOOPING = ("loop_reasoning", "loop_answer", "loop_paragraphs", "loop_unterminated")


def _example(reasoning, answer="The answer is 4.", prompt="What is 2+2?"):
    return Example(row=0, prompt=prompt, reasoning=reasoning, answer=answer)


def _looping_example(row):
    """A planted looping row as the filter sees it; an unterminated one as if it had been closed."""
    if row.defect == "loop_unterminated":
        return _example(row.response.removeprefix("<think>\n"))
    return _example(*split_response(row.response))


@pytest.fixture(scope="module")
def labelled():
    """Looping traces of every shape and clean traces, from the synthetic generator (seed 11)."""
    loops, clean = {}, []
    for i in range(12000):
        row = generate(11, i)
        if row.defect in LOOPING:
            loops.setdefault(row.shape, []).append(_looping_example(row))
        elif row.defect == "clean" and len(clean) < 2500:
            clean.append(_example(*split_response(row.response), prompt=row.prompt))
    return loops, clean


def test_repetition_recall_is_at_least_95_percent_on_every_loop_shape(labelled):
    loops, _ = labelled
    check = RepetitionFilter()
    assert set(loops) == {*LOOP_SHAPES, "repeated_paragraphs"}
    for shape, examples in loops.items():
        caught = sum(check(e).reason is not None for e in examples)
        assert len(examples) >= 20 and caught / len(examples) >= 0.95, (shape, caught, len(examples))


def test_repetition_false_drops_at_most_1_percent_on_clean_synthetic_traces(labelled):
    _, clean = labelled
    check = RepetitionFilter()
    dropped = [check(e) for e in clean]
    assert sum(v.reason is not None for v in dropped) / len(clean) <= 0.01


def test_repetition_keeps_every_real_clean_trace(clean_traces):
    check = RepetitionFilter()
    checked = 0
    for trace in clean_traces:
        try:
            reasoning, answer = split_response(trace["response"])
        except FormatError:
            continue  # a few real traces have an empty <think></think>
        verdict = check(_example(reasoning, answer))
        assert verdict.reason is None, (trace["prompt"][:60], verdict.detail)
        checked += 1
    assert checked >= 330


def test_each_signal_has_its_reason_and_its_switch():
    tail = _example("Some thinking. " + "Wait, let me check that again. " * 30)
    assert RepetitionFilter()(tail).reason == "loop"
    assert "Wait, let me check that again." in RepetitionFilter()(tail).detail.replace("wait", "Wait")
    paragraph = "Let me reconsider the whole setup from the start, carefully, with every quantity named. " * 2
    spread = "\n\n".join([f"Step {i}: a distinct remark about item {i * 7} and what follows from it." for i in range(12)]
                         + [paragraph] * 4)
    assert RepetitionFilter(tail_repeats=0)(_example(spread)).reason == "repeated_paragraphs"
    words = ("alpha beta gamma " * 300).strip()
    off = dict(tail_repeats=0, paragraph_repeats=0, sentence_repeats=0)
    assert RepetitionFilter(**off)(_example(words)).reason == "ngram_repetition"
    assert RepetitionFilter(**off, ngram_dup_share=0, ngram_top_share=0)(_example(words)).reason == "compressible"
    assert RepetitionFilter(**off, ngram_dup_share=0, ngram_top_share=0, min_compression=0)(_example(words)).reason is None


def test_scores_are_recorded_for_kept_examples_too():
    out = list(apply_filters([_example("A short, ordinary line of reasoning. " * 3)], [RepetitionFilter()]))[0]
    assert out.kept and {"loop_repeats", "paragraph_repeats", "sentence_repeats"} <= set(out.scores)


def test_reconsidering_is_not_a_loop():
    """A trace that says "Wait," and "Let me double-check" forty times, about different things."""
    subjects = ["the base case", "the units", "the second train", "the remainder", "the sign", "the boundary",
                "the last digit", "the prior", "the denominator", "the exponent"]
    verbs = ["changes the total", "breaks the symmetry", "cancels out", "still holds", "needs a correction"]
    pick = random.Random(0).choice
    text = " ".join(f"Wait, but what if {pick(subjects)} {pick(verbs)} when {pick(subjects)} is counted twice? "
                    f"Let me double-check {pick(subjects)} against case {i}." for i in range(40))
    assert RepetitionFilter()(_example(text)).reason is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.text(min_size=1, max_size=60), st.integers(5, 40), st.integers(0, 59))
def test_property_a_repeated_tail_is_found_with_its_period(head, unit, repeats, cut):
    unit = re.sub(r"\s+", " ", unit).strip()
    assume(unit)
    unit += " "
    repeats = max(repeats, 100 // len(unit) + 2)  # a tail several probes long, as real loops are
    tail = unit * repeats
    text = head + " " + tail[: len(tail) - min(cut, len(unit) - 1)]  # the last copy may be cut short
    found = repeating_tail(text)
    assert found is not None
    assert len(unit) % found.period == 0 or found.span >= len(tail) - len(unit)
    assert found.span >= (repeats - 1) * len(unit) - 1


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(["ab", "a", "b", "abc", " ", "ba", "c"]), max_size=80).map("".join))
def test_property_a_tail_span_is_periodic_and_maximal(text):
    """The span has the period it reports, and one more character would break it."""
    found = repeating_tail(text)
    text = text.rstrip()
    if found is None:
        return
    n, p, span = len(text), found.period, found.span
    assert text[n - span:n - p] == text[n - span + p:n]
    assert span == n or text[n - span - 1] != text[n - span - 1 + p]
    assert found.unit == text[n - p:] and found.repeats == span / p


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from([b"", b"x", b"yy", b"zzz", b"x" * 5, b"w" * 6]), min_size=1, max_size=40),
       st.integers(0, 7))
def test_property_the_most_repeated_unit_is_the_first_most_frequent_long_one(parts, least):
    text = b"\n\n".join(parts)
    long = [part for part in text.split(b"\n\n") if len(part) >= least]
    top = max((long.count(part) for part in long), default=0)
    expected = next((part for part in long if long.count(part) == top), b"")
    units = repeated_units(text, min_paragraph=least, min_sentence=10**6)
    assert units.paragraph_repeats == top
    assert top < 2 or units.unit == expected


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(["a", "bb", "ccc", "dd", "e", "ff"]), max_size=60), st.integers(1, 4))
def test_property_top_ngram_share_equals_its_definition(words, n):
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if len(words) <= n:
        assert top_ngram_share(words, n) == 0.0
        return
    top = max(grams.count(g) for g in grams)
    chars = max(sum(map(len, g)) for g in grams if grams.count(g) == top)
    assert top_ngram_share(words, n) == min(1.0, top * chars / sum(map(len, words)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "bb", "ccc", "dd", "e", "ff"]), min_size=0, max_size=200))
def test_property_ngram_shares_are_shares(words):
    for value in (dup_ngram_share(words), top_ngram_share(words)):
        assert 0.0 <= value <= 1.0
    assert dup_ngram_share(words + words) >= dup_ngram_share(words) or len(words) <= 10


def test_signal_functions_on_known_texts():
    assert repeated_units("x" * 120 + "\n\n" + "y" * 120 + "\n\n" + "x" * 120).paragraph_repeats == 2
    assert dup_ngram_share(("one two three four five six seven eight nine ten eleven " * 2).split()) == 1.0
    assert dup_ngram_share("each word here is different from all the others in this short line".split()) == 0.0
    assert compression_ratio("abc" * 1000) < 0.05 < compression_ratio("The quick brown fox jumps over the lazy dog.")


def test_english_detector_on_real_prompts_and_planted_foreign_rows(real_prompts, clean_traces):
    english = EnglishFilter()
    false_drops = [p for p in real_prompts if english(_example("", prompt=p)).reason]
    assert len(false_drops) <= 1, false_drops  # measured: 0 of 30
    traces = [t for t in clean_traces if "</think>" in t["response"]]
    dropped = [t for t in traces if english(_example(t["response"][7:400], prompt=t["prompt"])).reason]
    assert len(dropped) / len(traces) <= 0.01
    foreign = [generate(3, i) for i in range(4000)]
    foreign = [r for r in foreign if r.defect == "non_english"]
    caught = sum(english(_example(split_response(r.response)[0], prompt=r.prompt)).reason == "non_english"
                 for r in foreign)
    assert len(foreign) > 40 and caught == len(foreign)
    assert english_score("这是一个测试，我们需要计算结果。") == 0.0


def test_length_filter_drops_too_long_and_short_parts_never_truncates():
    long = Example(row=0, tokens=list(range(100)), answer_tokens=10, reasoning_tokens=50)
    short = Example(row=1, tokens=list(range(50)), answer_tokens=1, reasoning_tokens=30)
    thin = Example(row=2, tokens=list(range(50)), answer_tokens=5, reasoning_tokens=2)
    out = list(apply_filters([long, short, thin], [LengthFilter(max_tokens=80, min_answer_tokens=2,
                                                                min_reasoning_tokens=3)]))
    assert [e.status for e in out] == ["too_long", "answer_too_short", "reasoning_too_short"]
    assert len(out[0].tokens) == 100
