"""`tzc-train eval` and `sample` (tzc_train/evaluate.py): the report's counts and lengths from given
completions (no model); the eval split's prompts; the commands on a tiny trained run."""

import json
import re

import numpy as np
import pytest
import tiny_runs

import tzc_data
from tzc_data.text.tokenize import build_tokenizer
from tzc_train.evaluate import Prompt, eval_split_prompts, format_report, read_prompts, references_fitting, report
from tzc_train.sample import Sample, check_format


@pytest.fixture(scope="module")
def short_build(tmp_path_factory, tiny_model_path):
    return tiny_runs.short_build(tmp_path_factory, tiny_model_path)


@pytest.fixture(scope="module")
def full_run(short_build, tmp_path_factory):
    return tiny_runs.full_run(short_build, tmp_path_factory)


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

    from conftest import read_jsonl

    import tzc_train.evaluate as evaluate_module
    from tzc_data.cli import main
    from tzc_data.errors import ConfigError
    from tzc_data.sources.generator import generate
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


def test_eval_split_prompts_are_the_trained_prefixes_with_their_answers(short_build):
    manifest = json.loads((short_build / "manifest.json").read_text())
    tokenizer = build_tokenizer(manifest, None)
    prompts = eval_split_prompts(str(short_build), tokenizer, 0)
    assert len(prompts) == manifest["packing"]["by_split"]["eval"]["examples"]
    for item in prompts:
        number = int(re.search(r"What is (\d+) mod 17", tokenizer.decode(item.prompt)).group(1))
        assert item.prompt == tokenizer.encode_prompt(f"What is {number} mod 17?")
        assert item.answer == f"The answer is {number % 17}." and item.reasoning_tokens > 0
    assert len(eval_split_prompts(str(short_build), tokenizer, 3)) == 3
    turns = [int(np.sum(row["loss_mask"][row["segment_ids"] == k]))
             for row in tzc_data.iter_rows(str(short_build), "eval")
             for k in range(1, int(row["segment_ids"].max()) + 1)]
    for budget in (min(turns), max(turns) - 1, 768):
        fitting = references_fitting(str(short_build), manifest, budget)
        assert fitting == {"split": "eval", "examples": len(turns), "fit": sum(t <= budget for t in turns),
                           "longest": max(turns)}


def test_sample_command_reports_format_validation(short_build, full_run, tmp_path, capsys):
    from tzc_train.cli import main

    run_dir, _ = full_run
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"What is {i} mod 17?"}) + "\n" for i in (3, 50, 99)))
    argv = ["sample", "--model", "tiny", "--data", str(short_build), "--lora", str(run_dir), "--prompts", str(prompts),
            "--max-new-tokens", "12", "--batch-size", "2", "--mesh", "2X4"]  # rank, alpha and model: the run's
    # in-process (test_cli_end_to_end_with_the_tiny_model runs the CLI as its own process)
    code, done = main(argv), capsys.readouterr()
    assert code == 0, done.err[-2000:]
    assert done.out.count("\nprompt: What is ") == 3
    verdicts = re.findall(r"--- \d: (ok|truncated|malformed)", done.out)
    passed = re.search(r"Format Validation: (\d)/3(?: \((\d) cut by the token budget\))?", done.out)
    assert len(verdicts) == 3 and passed and int(passed.group(1)) == verdicts.count("ok")
    assert int(passed.group(2) or 0) == verdicts.count("truncated")


def test_eval_command_reports_on_the_eval_split(short_build, full_run, capsys, monkeypatch):
    from tzc_train.cli import main

    run_dir, _ = full_run
    monkeypatch.chdir(run_dir.parent)  # a relative --run (orbax itself wants absolute paths)
    argv = ["eval", "--run", run_dir.name, "--data", str(short_build), "--limit", "3", "--batch-size", "2",
            "--max-new-tokens", "8"]
    assert main(argv + ["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["prompts"] == 3 and report["budget"] == 8 and report["with_reference"] == 3
    assert report["stopped"] + report["truncated"] == 3
    assert report["well_formed"] + report["malformed_stopped"] + sum(
        not r["well_formed"] and not r["stopped"] for r in report["samples"]) == 3
    for row in report["samples"]:
        assert row["stopped"] == (row["new_tokens"] < 8) and row["reference"].startswith("The answer is ")
    assert report["references_fitting"]["split"] == "eval" and report["references_fitting"]["fit"] == 0  # 8 tokens
    assert main(argv) == 0
    table = capsys.readouterr().out
    for label in ("format compliance", "stop rate", "truncations", "exact match", "reasoning tokens", "answer tokens",
                  "references fit"):
        assert label in table
    assert main(["eval", "--run", run_dir.name, "--data", str(short_build), "--limit", "1", "--batch-size", "1",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["budget"] == 768  # the judges' MAX_GENERATION_STEPS by default
