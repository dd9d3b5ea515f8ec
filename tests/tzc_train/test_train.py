"""The trainer end to end on a tiny random Gemma 2 over 8 fake CPU devices, on a real small build."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from tzc_data.cli import main as tzc_data_main
from tzc_train import train as train_module
from tzc_train.train import TrainConfig, base_model, lora_state, make_mesh, train

SYSTEM = "Answer with reasoning, then the answer."


@pytest.fixture(scope="module")
def short_build(tmp_path_factory, tiny_model_path):
    """400 short arithmetic examples, tokenized with the throwaway tokenizer, in rows of 256 tokens."""
    root = tmp_path_factory.mktemp("train")
    src = root / "rows.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"What is {i} mod 17?", "response":
                                       f"<think>{i} = 17 x {i // 17} + {i % 17}.</think>The answer is {i % 17}."}) + "\n"
                           for i in range(400)))
    out = root / "build"
    assert tzc_data_main(["build", "--source", str(src), "--range", "0:400", "--out", str(out), "--tokenizer",
                          tiny_model_path, "--seq-len", "256", "--system", SYSTEM, "--eval-fraction", "0.05",
                          "--no-near-dup", "--no-progress"]) == 0
    return out


def _config(build, out, **overrides):
    settings = dict(data=str(build), out=str(out), model="tiny", steps=16, batch_size=4, lr=1e-2, lora_rank=8,
                    lora_alpha=8.0, warmup_steps=2, save_every=8, eval_every=8)
    return TrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def full_run(short_build, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "full"
    return out, train(_config(short_build, out))


def test_loss_falls_and_only_adapters_change(full_run, short_build):
    _, result = full_run
    vocab = json.loads((short_build / "manifest.json").read_text())["tokenizer"]["vocab_size"]
    losses = result["losses"]
    assert len(losses) == 16 and np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.2
    mesh = make_mesh(None)
    with mesh:
        fresh, _ = base_model(_config("x", "y"), vocab, mesh)  # deterministic random weights
    trained = train_module.base_state(result["model"])
    for name, value in train_module.base_state(fresh).items():
        if name in trained:
            np.testing.assert_array_equal(trained[name], value, err_msg=name)
    assert any(np.abs(v).sum() > 0 for v in lora_state(result["model"]).values())


def test_resume_after_a_crash_gives_the_same_adapters(short_build, full_run, tmp_path, monkeypatch):
    out = tmp_path / "crashed"
    original = train_module.ConsoleLine.on_train_step_end

    def crash(self, ctx, step, loss):
        original(self, ctx, step, loss)
        if step == 11:  # after the checkpoint at step 8
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module.ConsoleLine, "on_train_step_end", crash)
    with pytest.raises(KeyboardInterrupt):
        train(_config(short_build, out))
    monkeypatch.setattr(train_module.ConsoleLine, "on_train_step_end", original)
    with pytest.raises(ValueError, match="--resume"):
        train(_config(short_build, out))
    resumed = train(_config(short_build, out, resume=True))
    assert len(resumed["losses"]) == 8  # steps 9..16
    expected = lora_state(full_run[1]["model"])
    for name, value in lora_state(resumed["model"]).items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_init_lora_starts_from_saved_adapters(short_build, full_run, tmp_path):
    run_dir, result = full_run
    follow = train(_config(short_build, tmp_path / "next", init_lora=str(run_dir), steps=1, lr=1e-12))
    expected = lora_state(result["model"])
    for name, value in lora_state(follow["model"]).items():
        np.testing.assert_allclose(value, expected[name], atol=1e-6, err_msg=name)


def test_cli_end_to_end_with_the_tiny_model(short_build, tmp_path):
    out = tmp_path / "cli"
    command = [sys.executable, "-m", "tzc_train.cli", "--model", "tiny", "--data", str(short_build), "--out", str(out),
               "--steps", "6", "--batch-size", "4", "--lr", "1e-2", "--lora-rank", "4", "--save-every", "3"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["trained_steps_this_run"] == 6 and summary["mesh"] == {"fsdp": 2, "tp": 4}
    assert "step      1  loss" in done.stderr and "tokens/s  lr" in done.stderr and "eval loss" in done.stderr
    assert (out / "tensorboard").is_dir() and (out / "6").is_dir()
    again = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["trained_steps_this_run"] == 0
    refused = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "pass --resume" in refused.stderr


def test_format_check_accepts_only_reasoning_then_answer():
    from tzc_train.sample import check_format

    assert check_format("<reasoning>r</reasoning>\n<answer>a</answer><end_of_turn>\n<eos>") == (True, "")
    assert check_format("<reasoning>r</reasoning>\n<answer>a</answer>")[0]
    assert not check_format("<answer>a</answer>")[0]
    assert not check_format("<reasoning>r</reasoning>\n<answer> </answer>")[0]
    assert not check_format("<reasoning>r</reasoning>\n<answer>a")[0]  # cut before </answer>


def test_sample_command_reports_format_validation(short_build, full_run, tmp_path):
    run_dir, _ = full_run
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"What is {i} mod 17?"}) + "\n" for i in (3, 50, 99)))
    command = [sys.executable, "-m", "tzc_train.cli", "sample", "--model", "tiny", "--data", str(short_build),
               "--lora", str(run_dir), "--lora-rank", "8", "--lora-alpha", "8", "--prompts", str(prompts),
               "--max-new-tokens", "12"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("\nprompt: What is ") == 3
    assert re.search(r"Format Validation: \d/3", done.stdout)
