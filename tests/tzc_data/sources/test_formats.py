import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tzc_data.errors import ConfigError, SourceError
from tzc_data.sources import local_source, open_source, read
from tzc_data.sources.formats import parse_format
from tzc_data.text.format import split_response


def _parts(example):
    """(prompt, reasoning, answer) as the build's split stage sees the example."""
    return (example.prompt, *split_response(example.response))


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_format_specs_parse_and_a_bad_one_names_the_formats():
    assert parse_format("glaive").columns == ("prompt", "response")
    assert parse_format("columns:prompt=q, response=a").columns == ("q", "a")
    assert parse_format("columns:answer=c,prompt=a,reasoning=b").columns == ("a", "b", "c")
    for bad in ("nope", "columns:prompt=a", "columns:prompt=a,response=", "columns:prompt=a,answer=b",
                "columns:prompt=a,response=b,answer=c", "Glaive"):
        with pytest.raises(ConfigError, match=r"^--format .* is not a format; formats are: glaive, openo1, "
                                              r"cot-collection, messages, columns:prompt=COL,response=COL, "):
            parse_format(bad)


def test_openo1_rows_and_the_rows_that_do_not_fit(tmp_path):
    outputs = ["<Thought>\nadd them\n</Thought>\n<Output>\n4\n</Output>", "<Thought>r</Thought> bare answer",
               "no tags at all", "<Thought>cut at the limit", "<Thought>r</Thought><Output>cut",
               "<Thought>r</Thought><Output>a</Output> trailing"]
    pq.write_table(pa.table({"instruction": [f"q{i}" for i in range(6)], "output": outputs}), tmp_path / "o.parquet")
    got = list(read(local_source(str(tmp_path), format="openo1"), 0, 6))
    assert _parts(got[0]) == ("q0", "add them", "4") and _parts(got[1]) == ("q1", "r", "bare answer")
    assert [(e.status, e.detail) for e in got[2:]] == [
        ("format_mismatch", "o.parquet row group 0: output does not begin with <Thought>"),
        ("unterminated_think", "o.parquet row group 0: no </Thought> in 25 characters"),
        ("format_mismatch", "o.parquet row group 0: <Output> is never closed"),
        ("format_mismatch", "o.parquet row group 0: text after </Output>")]
    with pytest.raises(SourceError, match=r"^o\.parquet has no column 'prompt' \(--format glaive reads prompt, "
                                          r"response\); it has instruction, output$"):
        local_source(str(tmp_path))  # the wrong --format: one line, before any row


def test_cot_collection_rows_a_missing_field_and_a_wrong_type(tmp_path):
    _jsonl(tmp_path / "c.jsonl", [{"source": "What is 2+2?", "rationale": "Two and two.", "target": "4"},
                                  {"source": "s", "target": "t"}, {"source": "s", "rationale": 3, "target": "t"},
                                  {"source": "s", "rationale": "", "target": "t"}])
    got = list(read(local_source(str(tmp_path), format="cot-collection"), 0, 4))
    assert _parts(got[0]) == ("What is 2+2?", "Two and two.", "4")
    assert got[1].detail == "c.jsonl line 2: missing field 'rationale' (--format cot-collection)"
    assert got[2].detail == "c.jsonl line 3: field 'rationale' is int, not a string (--format cot-collection)"
    with pytest.raises(Exception, match="empty_reasoning"):
        split_response(got[3].response)  # an empty part is dropped by the split stage, as for GlaiveAI
    pq.write_table(pa.table({"source": ["s"], "rationale": [1.5], "target": ["t"]}), tmp_path / "d.parquet")
    with pytest.raises(SourceError, match=r"^d\.parquet column 'rationale' is double, not text "
                                          r"\(--format cot-collection\)$"):
        local_source(str(tmp_path), format="cot-collection")


def test_messages_in_either_spelling_with_a_system_turn_and_the_chats_that_do_not_fit(tmp_path):
    answer = "<think>\nthink\n</think>\n\nsaid"
    _jsonl(tmp_path / "m.jsonl", [
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                      {"role": "assistant", "content": answer}]},
        {"conversations": [{"from": "human", "value": "hello"}, {"from": "gpt", "value": answer}]},
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                      {"role": "user", "content": "c"}]},
        {"messages": "not a list"},
        {"messages": [{"role": "wizard", "content": "x"}]},
        {"messages": [{"role": "user"}]},
        {"text": "neither"},
    ])
    got = list(read(local_source(str(tmp_path), format="messages"), 0, 7))
    assert _parts(got[0]) == ("hi", "think", "said") and _parts(got[1]) == ("hello", "think", "said")
    assert [(e.status, e.detail) for e in got[2:]] == [
        ("format_mismatch", "m.jsonl line 3: turns are user, assistant, user: only one user turn then one assistant "
                            "turn fit"),
        ("malformed", "m.jsonl line 4: field 'messages' is str, not a list of turns (--format messages)"),
        ("malformed", "m.jsonl line 5: messages[0] has role 'wizard', not one of system, user, human, assistant, "
                      "gpt, model (--format messages)"),
        ("malformed", "m.jsonl line 6: messages[0]: missing field 'content' (--format messages)"),
        ("malformed", "m.jsonl line 7: missing field 'messages' or 'conversations' (--format messages)")]


def test_messages_in_parquet_and_a_file_without_them(tmp_path):
    turns = [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>r</think>a"}]]
    pq.write_table(pa.table({"messages": turns}), tmp_path / "m.parquet")
    assert [_parts(e) for e in read(local_source(str(tmp_path), format="messages"), 0, 1)] == [("q", "r", "a")]
    pq.write_table(pa.table({"messages": ["flat text"]}), tmp_path / "m.parquet")
    with pytest.raises(SourceError, match=r"^m\.parquet column 'messages' is string, not a list of turns "
                                          r"\(--format messages\)$"):
        local_source(str(tmp_path), format="messages")
    pq.write_table(pa.table({"chat": ["x"]}), tmp_path / "m.parquet")
    with pytest.raises(SourceError, match=r"^m\.parquet has no column 'messages' or 'conversations' "
                                          r"\(--format messages\); it has chat$"):
        local_source(str(tmp_path), format="messages")


def test_named_columns_in_both_layouts(tmp_path):
    pq.write_table(pa.table({"q": ["p1"], "r": ["<think>t</think>a"], "why": ["t2"], "ans": ["a2"]}),
                   tmp_path / "x.parquet")
    two = list(read(local_source(str(tmp_path), format="columns:prompt=q,response=r"), 0, 1))
    three = list(read(local_source(str(tmp_path), format="columns:prompt=q,reasoning=why,answer=ans"), 0, 1))
    assert _parts(two[0]) == ("p1", "t", "a") and _parts(three[0]) == ("p1", "t2", "a2")
    with pytest.raises(SourceError, match=r"x\.parquet has no column 'because' \(--format columns:prompt=q,"
                                          r"reasoning=because,answer=ans reads q, because, ans\)"):
        local_source(str(tmp_path), format="columns:prompt=q,reasoning=because,answer=ans")


def test_the_format_options_that_do_not_apply_are_refused():
    with pytest.raises(SourceError, match="^--format openo1 does not apply to the synthetic source"):
        open_source("synthetic", format="openo1")
    with pytest.raises(SourceError, match="^--dataset applies only to --source hf$"):
        open_source("synthetic", dataset="a/b")


def test_a_build_records_its_format_and_explain_reads_the_rows_again_in_it(tmp_path, capsys, tiny_model_path):
    from tzc_data.cli import main
    from tzc_data.sources.generator import generate

    rows = []
    for i in range(12):
        reasoning, _, answer = generate(9, i).response.removeprefix("<think>\n").partition("\n</think>\n\n")
        rows.append({"instruction": generate(9, i).prompt,
                     "output": f"<Thought>{reasoning[:700]}</Thought>\n<Output>{answer[:200]}</Output>"})
    rows[3]["output"] = "I just answer without thinking"
    _jsonl(tmp_path / "o1.jsonl", rows)
    out = tmp_path / "out"
    assert main(["build", "--source", str(tmp_path / "o1.jsonl"), "--format", "openo1", "--range", "0:12", "--out",
                 str(out), "--tokenizer", tiny_model_path, "--seq-len", "2048", "--no-progress",
                 "--min-kept-ratio", "0"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["format"] == "openo1" and manifest["counts"]["by_status"]["format_mismatch"] == 1
    capsys.readouterr()
    assert main(["explain", str(out), "--reason", "format_mismatch", "--no-colour"]) == 0
    shown = capsys.readouterr().out
    assert "output does not begin with <Thought>" in shown and "texts unavailable" not in shown
    assert main(["build", "--source", str(tmp_path / "o1.jsonl"), "--format", "bogus", "--range", "0:12", "--out",
                 str(tmp_path / "out2"), "--tokenizer", tiny_model_path]) == 2
    assert capsys.readouterr().err.startswith("tzc-data: error: --format 'bogus' is not a format; formats are: ")


def test_markup_left_inside_a_part_is_named_as_that_part(tmp_path):
    """OpenO1 markup that the layout leaves inside the thought or the answer (a doubled
    ``</Thought>`` or ``</Output>``) is a format_mismatch, never kept inside <answer>; a ``</think>``
    inside a reasoning column (cot-collection) or thought is the reasoning's tag_in_content, not the
    answer's."""
    outputs = ["<Thought>r</Thought></Thought><Output>a</Output>", "<Thought>r</Thought><Output>a</Output></Output>",
               "<Thought>r</Thought>bare</Thought>", "<Thought>r <Thought> s</Thought>a",
               "<Thought>x</think>y</Thought>a",
               "<Thought>r</Thought><Output>fine</Output>"]
    _jsonl(tmp_path / "o.jsonl", [{"instruction": f"q{i}", "output": o} for i, o in enumerate(outputs)])
    got = list(read(local_source(str(tmp_path / "o.jsonl"), format="openo1"), 0, len(outputs)))
    assert [(e.status, e.detail) for e in got[:5]] == [
        ("format_mismatch", "o.jsonl line 1: the answer contains </Thought> at character 0"),
        ("format_mismatch", "o.jsonl line 2: the answer contains </Output> at character 1"),
        ("format_mismatch", "o.jsonl line 3: the answer contains </Thought> at character 4"),
        ("format_mismatch", "o.jsonl line 4: the thought contains <Thought> at character 2"),
        ("tag_in_content", "o.jsonl line 5: the thought contains '</think>' at character 1 (--format openo1)")]
    assert _parts(got[5]) == ("q5", "r", "fine")
    _jsonl(tmp_path / "c.jsonl", [{"source": "s", "rationale": "Two </think> and two.", "target": "4"},
                                  {"source": "s", "rationale": "r", "target": "4 </think>"}])
    got = list(read(local_source(str(tmp_path / "c.jsonl"), format="cot-collection"), 0, 2))
    assert (got[0].status, got[0].detail) == ("tag_in_content", "c.jsonl line 1: field 'rationale' contains '</think>' "
                                                                "at character 4 (--format cot-collection)")
    assert got[1].kept  # the answer's own markup: the format stage names it as the answer's
