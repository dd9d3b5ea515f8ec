import re

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tzc_data.filters import LengthFilter, LoopFilter, apply_filters, repeating_tail
from tzc_data.format import FormatError, split_response
from tzc_data.record import Example
from tzc_data.synthetic import generate


def _example(reasoning, answer="The answer is 4."):
    return Example(row=0, prompt="p", reasoning=reasoning, answer=answer)


def test_loop_filter_keeps_every_real_clean_trace(clean_traces):
    loop = LoopFilter()
    checked = 0
    for trace in clean_traces:
        try:
            reasoning, answer = split_response(trace["response"])
        except FormatError:
            continue  # a few real traces have an empty <think></think>
        verdict = loop(_example(reasoning, answer))
        assert verdict.reason is None, (trace["prompt"][:60], verdict.detail)
        checked += 1
    assert checked >= 330


def test_loop_filter_on_planted_synthetic_loops_and_clean_rows():
    loop = LoopFilter()
    caught = missed = false_drops = clean = 0
    for i in range(6000):
        row = generate(11, i)
        if row.defect not in ("clean", "loop_reasoning", "loop_answer"):
            continue
        verdict = loop(_example(*split_response(row.response)))
        if row.defect == "clean":
            clean += 1
            false_drops += verdict.reason is not None
        else:
            caught += verdict.reason == "loop"
            missed += verdict.reason is None
    assert clean > 4000 and caught + missed > 40
    assert caught / (caught + missed) >= 0.95
    assert false_drops == 0


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.text(min_size=1, max_size=60), st.integers(5, 40), st.integers(0, 59))
def test_property_a_repeated_tail_is_found_with_its_period(head, unit, repeats, cut):
    unit = re.sub(r"\s+", " ", unit).strip()  # whitespace is collapsed before detection
    assume(unit)
    unit += " "
    repeats = max(repeats, 100 // len(unit) + 2)  # a tail several probes long, as real loops are
    tail = unit * repeats
    text = head + " " + tail[: len(tail) - min(cut, len(unit) - 1)]  # the last copy may be cut short
    found = repeating_tail(text)
    assert found is not None
    assert len(unit) % found.period == 0 or found.span >= len(tail) - len(unit)
    assert found.span >= (repeats - 1) * len(unit) - 1


def test_loop_detail_names_the_unit_and_scores_are_recorded():
    example = _example("Some thinking. " + "Wait, let me check that again. " * 30)
    out = list(apply_filters([example], [LoopFilter()]))[0]
    assert out.status == "loop" and "Wait, let me check that again." in out.detail
    assert out.scores["loop_repeats"] >= 29


def test_reconsidering_is_not_a_loop():
    text = " ".join(f"Wait, but what if x is {i}? Let me double-check: {i} squared is {i * i}." for i in range(80))
    assert LoopFilter()(_example(text)).reason is None


def test_length_filter_drops_too_long_and_short_answers_never_truncates():
    long = Example(row=0, tokens=list(range(100)), answer_tokens=10)
    short = Example(row=1, tokens=list(range(50)), answer_tokens=1)
    out = list(apply_filters([long, short], [LengthFilter(max_tokens=80, min_answer_tokens=2)]))
    assert [e.status for e in out] == ["too_long", "answer_too_short"]
    assert len(out[0].tokens) == 100
