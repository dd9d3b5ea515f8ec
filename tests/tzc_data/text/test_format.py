import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tzc_data import FormatError
from tzc_data.record import Example
from tzc_data.text import format as fmt
from tzc_data.text import fuzz

FAST = settings(max_examples=400, deadline=None, derandomize=True)


def test_render_is_the_gemma_template_with_the_model_turn_closed():
    text = fmt.render(" What is 2+2? ", "\nAdd them.\n", " 4 ", system="Be brief.")
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n"
        "<reasoning>Add them.</reasoning>\n<answer>4</answer><end_of_turn>\n<eos>"
    )


def test_inference_prompt_is_the_training_prefix_ending_in_model_newline():
    prompt = fmt.render_prompt("Q?", system="S")
    assert prompt.endswith("<start_of_turn>model\n")  # defect 5: not "...model"
    assert fmt.render("Q?", "r", "a", system="S").startswith(prompt)


def test_default_system_is_the_original_entrys_and_sits_in_the_user_turn():
    text = fmt.render("Q", "r", "a")
    assert text.startswith("<bos><start_of_turn>user\nYou are a deep thinking AI.")
    assert "<start_of_turn>system" not in text


def test_parse_inverts_render_with_blank_lines_in_the_prompt():
    assert fmt.parse(fmt.render("line one\n\nline two", "r\n\nr2", "a")) == ("line one\n\nline two", "r\n\nr2", "a")


@pytest.mark.parametrize("response, expected", [
    ("<think>\nreason\n</think>\n\nanswer", ("reason", "answer")),
    ("reason</think>answer", ("reason", "answer")),  # opening tag optional
    ("<think>a</think>b</think>c", ("a", "b</think>c")),  # split at the first close; render refuses the rest
])
def test_split_response(response, expected):
    assert fmt.split_response(response) == expected


@pytest.mark.parametrize("response, reason", [
    ("<think>never closed, looping looping looping", "unterminated_think"),
    ("<think>reason</think>   \n", "empty_answer"),
    ("<think>\n</think>answer", "empty_reasoning"),
])
def test_split_response_refuses_with_a_reason(response, reason):
    with pytest.raises(FormatError) as err:
        fmt.split_response(response)
    assert err.value.reason == reason


def test_split_never_invents_an_answer_from_the_reasoning():
    with pytest.raises(FormatError):
        fmt.split_response("<think>The answer is 4.")  # defect 3 copied this into both fields


@pytest.mark.parametrize("field, value, reason", [
    ("prompt", "hi <end_of_turn> there", "control_in_content"),
    ("prompt", "<start_of_turn>model\nfake", "control_in_content"),
    ("reasoning", "x </reasoning> y", "tag_in_content"),
    ("answer", "the <answer> is", "tag_in_content"),
    ("answer", "eos <eos>", "control_in_content"),
    ("reasoning", "<unused42>", "control_in_content"),
    ("answer", "  ", "empty_answer"),
])
def test_render_refuses_markup_inside_content(field, value, reason):
    parts = {"prompt": "p", "reasoning": "r", "answer": "a", field: value}
    with pytest.raises(FormatError) as err:
        fmt.render(**parts)
    assert err.value.reason == reason


def test_system_may_name_the_tags_but_not_hold_a_blank_line_or_a_control_string():
    fmt.render("p", "r", "a", system="Answer in <answer></answer> tags.")
    for system in ("two\n\nparagraphs", "<end_of_turn>", "   "):
        with pytest.raises(FormatError):
            fmt.render("p", "r", "a", system=system)


def test_parse_completion_accepts_a_generation_that_stops_at_the_closing_tag():
    assert fmt.parse_completion("<reasoning>r</reasoning>\n<answer>a</answer>") == ("r", "a")
    with pytest.raises(FormatError):
        fmt.parse_completion("<reasoning>r</reasoning><answer>a</answer> trailing")


def test_stages_drop_with_reasons_and_keep_order():
    rows = [Example(row=0, prompt="p", response="<think>r</think>a"),
            Example(row=1, prompt="p", response="<think>r"),
            Example(row=2, prompt="p <eos>", response="<think>r</think>a")]
    out = list(fmt.format_examples(fmt.split_examples(rows)))
    assert [(e.row, e.status) for e in out] == [(0, "kept"), (1, "unterminated_think"), (2, "control_in_content")]


# Property tests: the same functions `tzc-data fuzz-format` runs.

@FAST
@given(fuzz.content(), fuzz.content(), fuzz.content(), fuzz.systems(None))
def test_property_round_trip(p, r, a, s):
    fuzz.check_round_trip(p, r, a, s)


@FAST
@given(fuzz.content(), fuzz.content())
def test_property_split(r, a):
    fuzz.check_split(r, a)


@FAST
@given(st.text(), st.text(), st.text())
def test_property_round_trip_on_arbitrary_unicode(p, r, a):
    fuzz.check_round_trip(p, r, a, fmt.DEFAULT_SYSTEM)


def test_round_trip_property_catches_a_broken_parser(monkeypatch):
    """The property can fail: a parser that forgets to trim is caught and shrunk."""
    monkeypatch.setattr(fmt, "parse", lambda text: ("x", "y", "z"))
    failures = fuzz.run(50, derandomize=True)
    assert [f.prop for f in failures] == ["round_trip"]
    assert "AssertionError" in failures[0].report


def test_split_stage_keeps_the_raw_response_only_when_asked():
    from tzc_data.record import Example

    raw = "<think>\n  some reasoning \n</think>\n\n the answer "
    cleared, kept = (next(fmt.split_examples([Example(row=0, prompt="p", response=raw)], keep_response=keep))
                     for keep in (False, True))
    assert (cleared.reasoning, cleared.answer, cleared.response) == ("some reasoning", "the answer", "")
    assert (kept.reasoning, kept.answer, kept.response) == ("some reasoning", "the answer", raw)


def test_keep_rejected_holds_the_raw_response_of_rows_dropped_after_the_split(tmp_path, tiny_model_path):
    import json

    import polars as pl

    from tzc_data.cli import main
    from tzc_data.sources.generator import generate

    rows = [{"prompt": generate(5, i).prompt, "response": generate(5, i).response[:900] + "\n</think>\nDone."}
            for i in range(10)]
    rows[2]["response"] = "<think> a literal \u2581 here </think>  answer  "  # dropped by tokenize (lossy_tokens)
    rows[5]["response"] = "<think>" + "word " * 3000 + "</think> long"  # dropped by a quality filter (loop)
    rows[7]["response"] = "<think>cut off"  # dropped by the split itself
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert main(["build", "--source", str(src), "--range", "0:10", "--out", str(out), "--tokenizer", tiny_model_path,
                 "--seq-len", "2048", "--keep-rejected", "--no-progress", "--min-kept-ratio", "0"]) == 0
    rejected = pl.read_parquet(out / "rejected" / "rejected.parquet").sort("row")
    assert rejected["row"].to_list() == [2, 5, 7]
    assert rejected["status"].to_list() == ["lossy_tokens", "loop", "unterminated_think"]
    assert rejected["response"].to_list() == [rows[2]["response"], rows[5]["response"], rows[7]["response"]]
    assert rejected["reasoning"][0] == "a literal \u2581 here" and rejected["answer"][0] == "answer"
