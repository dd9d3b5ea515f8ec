"""Filters: each signal on labelled sets built from the synthetic generator and on real traces
(the short and the long R1 traces in ../shared/data)."""

import json
import random
import re
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tzc_data.filters import (
    EnglishFilter,
    LengthFilter,
    RepetitionFilter,
    apply_filters,
    compression_ratio,
    copy_run,
    covering_unit,
    cycling_tail,
    dup_ngram_share,
    english_score,
    quoted,
    repeated_units,
    repeating_tail,
    skeleton,
    top_ngram_share,
)
from tzc_data.filters.repetition import cased, folded, lines
from tzc_data.record import Example
from tzc_data.sources.generator import LOOP_SHAPES, generate
from tzc_data.text.format import FormatError, split_response

LOOPING = ("loop_reasoning", "loop_answer", "loop_paragraphs", "loop_unterminated")
SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def _read(name):
    with open(SHARED / name, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="module")
def long_clean():
    return _read("r1_long_clean.jsonl")


@pytest.fixture(scope="module")
def real_loops(loop_traces):
    return loop_traces + _read("r1_long_loops.jsonl")


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


def _verdict(trace, check=None):
    """What the build does to a real trace: the split's drop reason, or the repetition filter's
    verdict (None keeps it), with the trace's own prompt."""
    try:
        reasoning, answer = split_response(trace["response"])
    except FormatError as err:
        return err.reason, err.detail
    verdict = (check or RepetitionFilter())(_example(reasoning, answer, prompt=trace["prompt"]))
    return verdict.reason, verdict.detail


def test_repetition_keeps_every_real_clean_trace_short_and_long(clean_traces, long_clean):
    """Real R1 re-reads and restates at length (a step 12 times in 50k characters): not a loop."""
    check = RepetitionFilter()
    checked = 0
    for trace in clean_traces + long_clean:
        reason, detail = _verdict(trace, check)
        if reason in ("empty_reasoning", "empty_answer"):
            continue  # a few short real traces have an empty <think></think>
        assert reason is None, (trace["prompt"][:60], detail)
        checked += 1
    assert checked >= 330 + 118


def test_every_real_loop_is_dropped_and_those_that_close_think_by_repetition(real_loops):
    closed = 0
    for trace in real_loops:
        reason, detail = _verdict(trace)
        assert reason is not None, trace["note"][:100]
        if "</think>" in trace["response"]:
            assert reason in ("loop", "repeated_paragraphs", "ngram_repetition", "compressible"), (reason, detail)
            closed += 1
    assert len(real_loops) == 17 and closed == 4  # 2 short loops in the answer, 2 long QwQ loops


def test_long_truncated_real_traces_are_dropped():
    assert {_verdict(trace)[0] for trace in _read("r1_long_truncated.jsonl")} == {"unterminated_think"}


def test_a_restated_step_is_judged_by_its_share_of_the_trace(long_clean):
    """The same 12 copies that real R1 spreads over 45k characters make a loop in 2k characters."""
    trace = next(t for t in long_clean if "light rope a at both ends" in skeleton(t["response"]))
    reasoning, answer = split_response(trace["response"])
    both = folded(reasoning) + b"\n\n" + folded(answer)
    step = covering_unit(both, b". ", least=50, min_copies=8)
    assert step.copies >= 8 and step.share < RepetitionFilter().repeated_share  # measured: x12, 1.8%
    assert RepetitionFilter()(_example(reasoning, answer, prompt=trace["prompt"])).reason is None
    filler = [f"Then remark {word} follows from the previous step, which is fine." for word in
              "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()]
    short = " ".join(f"{line} {step.unit.decode().capitalize().rstrip('.')}." for line in filler)
    assert len(short) < 2500
    assert only(sentence_repeats=8)(_example(short)).reason == "repeated_paragraphs"


DNA = "ATGCGTACGTTAGCCGATCGATCGGCTAAGCTTGCAATGCCGTA"
QUESTION = (f"Given the DNA strand {DNA}, which option describes the 1H NMR of ethyl acetate? "
            "(A) two singlets (B) triplet and doublet (C) three singlets "
            "(D) singlet and quartet, with the quartet upfield of the singlet")


def _restating():
    """A trace that restates the strand and option (D) from the question five times each."""
    rng = random.Random(1)
    vocabulary = ("methyl ester coupling integral shift carbonyl proton oxygen ring peak split neighbour "
                  "electron field signal height ratio solvent spectrum chain carbon bond angle charge").split()
    parts = []
    for i in range(5):
        parts.append(" ".join(" ".join(rng.sample(vocabulary, 12)).capitalize() + "." for _ in range(4)))
        parts.append(f"So the strand is {DNA}, as given. "
                     "Option (D) is singlet and quartet, with the quartet upfield of the singlet.")
    return "\n\n".join(parts)


def test_text_the_prompt_holds_is_not_repetition():
    text = _restating()
    check = RepetitionFilter()
    assert check(_example(text, prompt=QUESTION)).reason is None
    assert check(_example(text, prompt="What is 2+2?")).reason is not None  # the same copies, not from the prompt
    assert quoted(folded(f"So the strand is {DNA} here"), folded(QUESTION))
    assert quoted(folded("option (d) is singlet and quartet, with the quartet upfield"), folded(QUESTION))
    assert not quoted(folded("the quartet is downfield because the ester oxygen pulls"), folded(QUESTION))


OFF = dict(tail_repeats=0, cycle_repeats=0, run_copies=0, paragraph_repeats=0, sentence_repeats=0,
           ngram_dup_share=0, ngram_top_share=0, min_compression=0)


def only(**on):
    """The repetition filter with every signal off but those named (with their thresholds)."""
    return RepetitionFilter(**{**OFF, **on})


def test_each_signal_has_its_reason_and_its_switch():
    tail = _example("Some thinking. " + "Wait, let me check that again. " * 30)
    assert RepetitionFilter()(tail).reason == "loop"
    assert "Wait, let me check that again." in RepetitionFilter()(tail).detail.replace("wait", "Wait")
    paragraph = "Let me reconsider the whole setup from the start, carefully, with every quantity named. " * 2
    spread = "\n\n".join([f"Step {i}: a distinct remark about item {i * 7} and what follows from it." for i in range(12)]
                         + [paragraph] * 4)
    assert only(paragraph_repeats=3)(_example(spread)).reason == "repeated_paragraphs"
    assert only(paragraph_repeats=3, repeated_share=0.9)(_example(spread)).reason is None
    assert only()(_example(spread)).reason is None
    words = ("alpha beta gamma " * 300).strip()
    off = dict(tail_repeats=0, cycle_repeats=0, run_copies=0, paragraph_repeats=0, sentence_repeats=0)
    assert RepetitionFilter(**off)(_example(words)).reason == "ngram_repetition"
    assert RepetitionFilter(**off, ngram_dup_share=0, ngram_top_share=0)(_example(words)).reason == "compressible"
    assert RepetitionFilter(**off, ngram_dup_share=0, ngram_top_share=0, min_compression=0)(_example(words)).reason is None


def _cycling(seed=0, rounds=12):
    """Real ruminating ends: three lines in a shuffled order, with a short filler now and then."""
    rng = random.Random(seed)
    said = ["Alternatively, the answer is a savings and loan association.",
            "Thus, the final answer is that they are of opposite types.",
            "But the problem might expect the answer that one is a knight."]
    out = [f"Point {i}: a new consideration about case {i * 13}." for i in range(8)]
    for _ in range(rounds):
        rng.shuffle(said)
        out += said[: rng.randint(2, 3)] + (["Hmm."] if rng.random() < 0.5 else [])
    return "\n\n".join(out)


def test_the_cycle_catches_a_shuffled_few_lines_at_the_end():
    text = _cycling()
    assert only(cycle_repeats=3)(_example(text)).reason == "loop"
    assert "cycling" in RepetitionFilter()(_example(text)).detail
    assert only(tail_repeats=3)(_example(text)).reason is None  # not periodic
    found = cycling_tail(cased(text))
    assert found is not None and found.repeats >= 3 and found.unit in {cased(s) for s in text.split("\n\n")}


def _fraction_chain():
    """Real answer loop (r1_traces_loops.jsonl, row 9): one line restated after a new remark each time."""
    chain = r"\frac{144}{132,600} = \frac{12}{11,025} = \frac{4}{3,675}"
    remarks = ["However, to keep the fraction in its simplest form:", "But typically it is presented as:",
               "To maintain precision, we write:", "For the final answer, we can present it as:"]
    head = " ".join(f"Step {i} computes a different quantity, {i * 17} in all." for i in range(10))
    return head + "\n\n" + "\n\n".join(f"{remark}\n\n{chain}" for remark in remarks) + "\n\nSo that is it."


def test_the_run_catches_one_line_restated_after_short_remarks():
    text = _fraction_chain()
    assert RepetitionFilter()(_example("Fine reasoning here.", text)).reason == "loop"
    assert "re-emits" in RepetitionFilter()(_example("Fine reasoning here.", text)).detail
    assert RepetitionFilter(run_copies=0)(_example("Fine reasoning here.", text)).reason is None
    found = copy_run(cased(text))
    assert found.copies == 4 and cased(text)[found.start:found.end].count(found.unit) == 4
    listing = "\n".join(f"- {a} on the first die and {7 - a} on the second die, which is one way" for a in range(1, 7))
    assert copy_run(cased(listing)) is None  # copies that differ in their numbers are not a run


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


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["a", "bb", "ccc"]), max_size=60), st.integers(1, 5))
def test_property_dup_ngram_share_equals_its_definition(words, n):
    """Characters of the words inside an n-gram that occurs more than once, over all characters
    (replaces a check that words + words repeat, which held by construction)."""
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    covered = [False] * len(words)
    for i, gram in enumerate(grams):
        if grams.count(gram) > 1:
            covered[i:i + n] = [True] * n
    total = sum(map(len, words))
    expected = 0.0 if len(words) <= n else sum(len(w) for w, c in zip(words, covered) if c) / total
    assert dup_ngram_share(words, n) == pytest.approx(expected)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b"xx", b"yyy", b"z" * 5, b"w" * 6, b"v" * 8]), min_size=1, max_size=40),
       st.integers(0, 7), st.integers(2, 5))
def test_property_the_covering_unit_is_the_widest_repeated_one(parts, least, min_copies):
    text = b". ".join(parts)
    pieces = text.split(b". ")
    widest = [(pieces.count(p) * len(p) / len(text), p) for p in dict.fromkeys(pieces)
              if len(p) >= least and pieces.count(p) >= min_copies]
    found = covering_unit(text, b". ", least=least, min_copies=min_copies)
    if not widest:
        assert found.copies == 0 and found.share == 0.0
        return
    share = max(w for w, _ in widest)
    assert found.share == pytest.approx(share) and found.copies == pieces.count(found.unit)
    assert found.unit == next(p for w, p in widest if w == share)  # the first of the widest


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["alpha", "beta", "gamma", "delta", "ATGCGTACGTTAGCC", "x=1;"]), min_size=3,
                max_size=30), st.data())
def test_property_any_stretch_of_the_prompt_is_quoted_and_foreign_words_are_not(words, data):
    prompt = " ".join(words)
    start = data.draw(st.integers(0, len(words) - 1))
    stop = data.draw(st.integers(start + 1, len(words)))
    assert quoted(" ".join(words[start:stop]), prompt)
    assert not quoted("omega psi chi phi upsilon tau sigma", prompt)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 8), st.integers(2, 4), st.integers(4, 12), st.randoms(use_true_random=False))
def test_property_a_few_lines_cycling_to_the_end_are_found(head, kinds, rounds, rng):
    said = [f"line number {chr(97 + k) * 3} is said again here" for k in range(kinds)]
    text = [f"opening remark {i} about a different topic {'q' * i}" for i in range(head)]
    for _ in range(rounds):
        rng.shuffle(said)
        text += said
    found = cycling_tail(cased("\n".join(text)))
    assert found is not None and found.repeats >= 3 and found.unit in {cased(s) for s in said}
    assert 6 <= found.lines <= rounds * kinds + head and found.share >= 0.5
    assert cycling_tail(cased("\n".join(f"a line that is said once, number {'n' * i}" for i in range(60)))) is None


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 9), st.lists(st.integers(0, 120), min_size=8, max_size=8))
def test_property_a_run_reports_copies_that_are_close_and_in_its_span(copies, gaps):
    unit = "the fraction is 144 over 132,600 which we simplify"
    parts = ["a first remark that starts the text off"]
    for k in range(copies):
        parts += [unit, "y" * gaps[k % len(gaps)]]
    text = cased("\n".join(parts))
    found = copy_run(text)
    assert found is not None and found.unit == cased(unit) and found.copies == copies  # every gap fits
    assert text[found.start:found.end].count(found.unit) == found.copies


def test_signal_functions_on_known_texts():
    assert lines(b" a. b? c! d\ne.f") == [b"a.", b"b?", b"c!", b"d", b"e.f"]
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


def test_the_build_options_reach_the_filter_and_bad_ones_name_themselves():
    from tzc_data.build.config import BuildConfig
    from tzc_data.build.rowstage import build_filters
    from tzc_data.errors import ConfigError

    config = BuildConfig(out="x", start=0, stop=1, loop_min_cycle_repeats=4, loop_min_run=0, min_repeated_share=0.2)
    check = next(f for f in build_filters(config) if isinstance(f, RepetitionFilter))
    assert (check.cycle_repeats, check.run_copies, check.repeated_share) == (4, 0, 0.2)
    for bad, option in ((dict(loop_min_run=1), "--loop-min-run"),
                        (dict(loop_min_cycle_repeats=1.5), "--loop-min-cycle"),
                        (dict(min_repeated_share=1.5), "--min-repeated-share")):
        with pytest.raises(ConfigError, match=option):
            BuildConfig(out="x", start=0, stop=1, **bad)
