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


def test_eval_refuses_prompts_that_overlap_the_training_build_or_warns_when_allowed(tmp_path, tiny_model_path,
                                                                                   monkeypatch):
    import json

    import tzc_train.evaluate as evaluate_module
    from conftest import read_jsonl
    from tzc_data.cli import main
    from tzc_data.errors import ConfigError
    from tzc_data.synthetic import generate
    from tzc_train.evaluate import DecodeRequest, evaluate

    build = tmp_path / "build"
    assert main(["build", "--source", "synthetic", "--range", "0:40", "--out", str(build), "--tokenizer",
                 tiny_model_path, "--seq-len", "8192", "--min-kept-ratio", "0", "--no-progress"]) == 0
    held_out = [r["prompt"] for r in read_jsonl("glaive_prompts_real.jsonl")[:3]]
    trained = [generate(0, 3).prompt.upper()]  # a training prompt, in other case
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in held_out + trained))
    decoded = []

    def fake_decode(request, prompts):
        decoded.append(len(prompts))
        return [_sample("<reasoning>r</reasoning>\n<answer>a</answer>") for _ in prompts], {"budget": 8, "seconds": 1.0}

    monkeypatch.setattr(evaluate_module, "_decode", fake_decode)
    request = DecodeRequest(data=str(build), tokenizer=tiny_model_path)
    with pytest.raises(ConfigError, match=r"1 of 4 prompts share a 8-word n-gram with prompts the build .* trains "
                                          r"on \(first: prompt 3, .*--allow-overlap"):
        evaluate(request, prompts=str(path))
    assert decoded == []  # refused before any decoding
    got = evaluate(request, prompts=str(path), allow_overlap=True)
    assert got["overlap"].startswith(f"warning: --prompts {path}: 1 of 4 prompts") and decoded == [4]
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in held_out))
    assert evaluate(request, prompts=str(path))["overlap"] is None
