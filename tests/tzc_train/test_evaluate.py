"""The eval report: counts and lengths from given completions (no model)."""

import pytest

from tzc_train.evaluate import Prompt, format_report, read_prompts, report
from tzc_train.sample import Sample, check_format


def _sample(completion, truncated=False):
    ok, problem = check_format(completion)
    return Sample("p", completion, ok, problem, truncated=truncated, new_tokens=8 if truncated else 3)


def test_report_counts_format_stops_truncations_and_exact_matches(tiny_tokenizer):
    prompts = [Prompt("a", "42"), Prompt("b", "The answer  is 7."), Prompt("c", "1"), Prompt("d", None)]
    samples = [_sample("<reasoning>r r</reasoning>\n<answer>42</answer><end_of_turn>"),
               _sample("<reasoning>r</reasoning>\n<answer> The answer is\n7. </answer>"),  # whitespace aside: a match
               _sample("<reasoning>going on and on", truncated=True),
               _sample("no tags at all")]
    got = report(prompts, samples, tiny_tokenizer, source="x", budget=8, batch_size=2, seconds=1.0)
    assert (got["prompts"], got["well_formed"], got["stopped"], got["truncated"], got["malformed_stopped"]) == (
        4, 2, 3, 1, 1)
    assert (got["with_reference"], got["exact_match"]) == (3, 2)
    assert got["samples"][2]["exact_match"] is False and got["samples"][3]["exact_match"] is None
    assert got["answer_tokens"]["count"] == 2 and got["reasoning_tokens"]["max"] >= 1
    table = format_report(got)
    assert "2/4" in table and "2/3" in table and "66.7%" in table


def test_prompt_files(tmp_path):
    lines = tmp_path / "p.txt"
    lines.write_text("first\n\nsecond\n")
    assert [p.prompt for p in read_prompts(str(lines))] == ["first", "second"]
    rows = tmp_path / "p.jsonl"
    rows.write_text('{"prompt": "q", "answer": "a"}\n{"prompt": "r"}\n')
    assert read_prompts(str(rows)) == [Prompt("q", "a"), Prompt("r", None)]
    rows.write_text('{"prompt": "q"}\n{"text": "r"}\n')
    with pytest.raises(ValueError, match="line 2: not a JSON object with a 'prompt' field"):
        read_prompts(str(rows))
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="no prompts"):
        read_prompts(str(tmp_path / "empty.txt"))
