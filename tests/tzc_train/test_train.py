"""The run end to end (tzc_train/train.py, and the `tzc-train` command that trains): a tiny random Gemma 2
over 8 fake CPU devices, on a real small build: the loss, sessions cut by --time-limit and resumed,
the summary, refusals before anything loads."""

import dataclasses
import functools
import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import tiny_runs
from tiny_runs import run_config

import tzc_data
from tzc_data.cli import main as tzc_data_main
from tzc_train import train as train_module
from tzc_train.config import check_resume, read_run_config
from tzc_train.feed import eval_set, host_batches
from tzc_train.model.load import base_model, make_mesh
from tzc_train.model.lora import base_state, lora_state
from tzc_train.session import Deadline
from tzc_train.train import train
from tzc_train.trainer import ConsoleLine


@pytest.fixture(scope="module")
def short_build(tmp_path_factory, tiny_model_path):
    return tiny_runs.short_build(tmp_path_factory, tiny_model_path)


@pytest.fixture(scope="module")
def full_run(short_build, tmp_path_factory):
    return tiny_runs.full_run(short_build, tmp_path_factory)


@pytest.fixture(scope="module")
def other_build(tmp_path_factory, tiny_model_path):
    return tiny_runs.other_build(tmp_path_factory, tiny_model_path)


def test_loss_falls_and_only_adapters_change(full_run, short_build):
    _, result = full_run
    vocab = json.loads((short_build / "manifest.json").read_text())["tokenizer"]["vocab_size"]
    losses = result["losses"]
    assert len(losses) == 24 and np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.2
    mesh = make_mesh(None)
    with mesh:
        fresh, _ = base_model(run_config("x", "y"), vocab, mesh)  # deterministic random weights
    trained = base_state(result["model"])
    for name, value in base_state(fresh).items():
        if name in trained:
            np.testing.assert_array_equal(trained[name], value, err_msg=name)
    assert any(np.abs(v).sum() > 0 for v in lora_state(result["model"]).values())


def test_a_time_limit_stops_saves_and_resumes_to_the_same_adapters(short_build, full_run, tmp_path, monkeypatch):
    """Session 1 stops for --time-limit (its clock jumps past the limit after step 10) and saves;
    session 2 resumes and crashes at step 19 (after the checkpoint at 16); session 3 resumes from
    16 and finishes. The adapters equal those of the uninterrupted run, and summary.json adds up."""
    out = tmp_path / "sessions"
    jump = [0.0]
    original = ConsoleLine.on_train_step_end

    def clock():
        return time.monotonic() + jump[0]

    def at_step_end(self, ctx, step, loss, crash_at=None):
        original(self, ctx, step, loss)
        if step == 10:
            jump[0] = 1e6
        if step == crash_at:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "Deadline", functools.partial(Deadline, clock=clock))
    monkeypatch.setattr(ConsoleLine, "on_train_step_end", at_step_end)
    first = train(run_config(short_build, out, time_limit=3600.0), started=clock())
    assert first["status"] == "time limit" and 10 <= first["steps"] < 16
    assert str(first["steps"]) in {p.name for p in (out / "actor").iterdir()}  # saved at the step it stopped
    assert first["eval_loss"] is not None and first["eval_step"] == 8

    monkeypatch.setattr(ConsoleLine, "on_train_step_end", functools.partialmethod(at_step_end, crash_at=19))
    with pytest.raises(KeyboardInterrupt):
        train(run_config(short_build, out, resume=True))
    monkeypatch.setattr(ConsoleLine, "on_train_step_end", original)
    with pytest.raises(ValueError, match="--resume"):
        train(run_config(short_build, out))
    resumed = train(run_config(short_build, out, resume=True))
    assert len(resumed["losses"]) == 8  # steps 17..24
    expected = lora_state(full_run[1]["model"])
    for name, value in lora_state(resumed["model"]).items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)

    summary = json.loads((out / "summary.json").read_text())
    whole = full_run[1]
    assert summary["status"] == "finished" and summary["steps"] == 24 and summary["tokens"] == whole["tokens"]
    # the crash wrote no entry: the session that resumed it adds its checkpointed steps, wall time unknown
    assert [s["stopped"] for s in summary["sessions"]] == ["time limit", "interrupted", "finished"]
    crashed = summary["sessions"][1]
    assert (crashed["first_step"], crashed["last_step"], crashed["wall_seconds"]) == (first["steps"] + 1, 16, None)
    assert summary["sessions"][2]["first_step"] == 17 and summary["eval_step"] == 24
    assert sum(s["tokens"] for s in summary["sessions"]) == summary["tokens"]
    assert sum(s["steps"] for s in summary["sessions"]) == 24
    assert abs(summary["train_loss"] - whole["train_loss"]) < 1e-4
    assert abs(summary["train_perplexity"] - np.exp(summary["train_loss"])) < 1e-6 * summary["train_perplexity"]


def test_the_summary_of_a_run(full_run, short_build):
    run_dir, result = full_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == summary["max_steps"] == 24
    assert summary["train_loss"] == result["losses"][-1] and summary["eval_step"] == 24
    assert 0 < summary["eval_loss"] < 7  # a token mean near ln(600) = 6.4, not a sum over batches
    assert abs(summary["eval_perplexity"] - np.exp(summary["eval_loss"])) < 1e-3
    padding_free = sum(int(np.count_nonzero(b["segment_ids"]))
                       for b, _ in zip(host_batches(str(short_build), 4, seed=0), range(24)))
    assert summary["tokens"] == padding_free and summary["wall_seconds"] > 0


def test_resuming_a_finished_run_says_so_and_changes_nothing(short_build, full_run, capsys):
    run_dir, _ = full_run
    before = (run_dir / "summary.json").read_text()
    again = train(run_config(short_build, run_dir, resume=True))
    assert again["status"] == "finished" and again["steps"] == 24 and again["session"] is None
    assert "finished at step 24; nothing to resume" in capsys.readouterr().err
    assert (run_dir / "summary.json").read_text() == before


def test_resume_with_other_options_is_refused_naming_them(short_build, full_run):
    run_dir, _ = full_run
    with pytest.raises(ValueError, match=r"--batch-size 4 \(given: 8\).*--grad-accum 1 \(given: 2\)"):
        train(run_config(short_build, run_dir, resume=True, batch_size=8, grad_accum=2))
    with pytest.raises(ValueError, match=r"--seed 0 \(given: 3\)"):
        train(run_config(short_build, run_dir, resume=True, seed=3))


def test_init_lora_starts_from_saved_adapters(short_build, full_run, tmp_path):
    run_dir, result = full_run
    follow = train(run_config(short_build, tmp_path / "next", init_lora=str(run_dir), steps=1, lr=1e-12))
    expected = lora_state(result["model"])
    for name, value in lora_state(follow["model"]).items():
        np.testing.assert_allclose(value, expected[name], atol=1e-6, err_msg=name)


def test_a_batch_the_data_axis_cannot_split_is_refused(short_build, tmp_path):
    with pytest.raises(ValueError, match=r"--batch-size 5 does not split .*fsdp = 2.* e\.g\. 4 or 6"):
        train(run_config(short_build, tmp_path / "odd", batch_size=5))
    with pytest.raises(ValueError, match=r"fsdp = 8.*e\.g\. 8"):
        train(run_config(short_build, tmp_path / "odd", batch_size=4, mesh=(8, 1)))


def test_a_build_with_no_rows_gets_a_clear_error(tiny_model_path, tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps({"prompt": "a", "response": "no think tags"}) + "\n")
    assert tzc_data_main(["build", "--source", str(source), "--range", "0:1", "--out", str(tmp_path / "empty"),
                          "--tokenizer", tiny_model_path, "--seq-len", "256", "--no-near-dup", "--no-progress",
                          "--min-kept-ratio", "0"]) == 0
    with pytest.raises(ValueError, match="no packed rows in its train split .kept 0 of 1"):
        train(run_config(tmp_path / "empty", tmp_path / "run"))


def test_cli_errors_are_one_line(short_build, tmp_path, capsys):
    from tzc_train.cli import main

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("precious")

    cases = [(["--model", "tiny", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
              "tzc-train: error: .*nope is not a finished tzc build"),
             (["--model", "tiny", "--data", str(short_build), "--out", str(tmp_path / "o"), "--time-limit", "8x"],
              "tzc-train: error: --time-limit '8x'"),
             (["--model", "tiny", "--data", str(short_build), "--out", str(tmp_path / "o"), "--mesh", "2by4"],
              "tzc-train: error: --mesh '2by4'"),
             (["sample", "--data", str(short_build), "--prompts", str(tmp_path / "p.txt")],
              "tzc-train sample: error: --prompts .*p.txt: No such file"),
             (["sample", "--data", str(tmp_path / "nope"), "--prompts", str(short_build / "manifest.json")],
              "tzc-train sample: error: .*not a finished tzc build"),
             (["eval", "--data", str(short_build), "--run", str(tmp_path)], "tzc-train eval: error: .*not a tzc-train run"),
             (["--model", "tiny", "--data", str(short_build), "--out", str(tmp_path / "o"), "--lr", "nan"],
              "tzc-train: error: --lr nan: must be a finite number"),
             (["plan", "--data", str(short_build), "--hours", "nan"], "tzc-train plan: error: --hours nan"),
             (["--model", "tiny", "--data", str(short_build), "--out", str(mine), "--resume"],
              f"tzc-train: error: --out {mine} is not empty and holds no tzc-train run"),
             (["--model", "tiny", "--data", str(short_build), "--out", str(mine / "keep.txt")],
              "tzc-train: error: --out .*keep.txt exists and is not a directory")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert re.search(message, err) and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in mine.iterdir()) == ["keep.txt"]  # refused before anything is written


def test_cli_end_to_end_with_the_tiny_model(short_build, tmp_path, capsys):
    """The CLI as its own process: a --time-limit within the final save's reserve is refused in one
    line before anything is written; a run trains into OUT/actor/<step> with a progress line a step
    (step of the total, learning rate, time to the end, time to the limit); --resume of a finished
    run loads nothing."""
    out = tmp_path / "cli"
    command = [sys.executable, "-m", "tzc_train.cli", "--model", "tiny", "--data", str(short_build), "--out", str(out),
               "--steps", "6", "--batch-size", "4", "--lr", "1e-2", "--lora-rank", "4", "--save-every", "3",
               "--eval-rows", "4", "--mesh", "2X4", "--warmup-steps", "5"]
    refused = subprocess.run(command + ["--time-limit", "45s"], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and not out.exists()
    assert refused.stderr.strip() == ("tzc-train: error: --time-limit 45s leaves no time to train: the last 60 s of a "
                                      "session are kept for the final checkpoint")

    done = subprocess.run(command + ["--time-limit", "2h"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["status"] == "finished" and summary["steps"] == 6 and summary["session"]["steps"] == 6
    assert summary["mesh"] == {"fsdp": 2, "tp": 4}
    recorded = json.loads((out / "summary.json").read_text())
    assert {k: v for k, v in summary.items() if k not in ("session", "mesh")} == {
        k: v for k, v in recorded.items() if k != "sessions"}
    # warmup over 5 steps: step 1 trains at 1/5 of the peak (never at 0), step 5 at the peak, then cosine
    assert re.search(r"step      1/6  loss [\d.]+ +[\d,]+ tokens/s  lr 2\.00e-03  limit in 1h5\dm", done.stderr)
    assert re.search(r"step      2/6  loss .*lr 4\.00e-03  eta \d+s  limit in 1h5\dm", done.stderr)
    assert re.search(r"step      5/6  loss .*lr 1\.00e-02  eta", done.stderr)
    assert re.search(r"step      6/6  loss .*lr [1-9]\.\d+e-0[3-4]  eta 0s", done.stderr)
    evals = [float(x) for x in re.findall(r"eval loss ([\d.]+)", done.stderr)]
    assert len(evals) == 2 and all(0 < x < 7 for x in evals)  # at step 0 and at the end; means, not sums
    assert (out / "tensorboard").is_dir() and (out / "actor" / "6" / "model_params").is_dir()
    assert not any(p.name.isdigit() for p in out.iterdir())  # the judges list CKPT_DIR/actor only
    from tzc_train.cli import main

    assert main(command[3:]) == 2 and "pass --resume" in capsys.readouterr().err  # in-process: no second start-up
    assert main(command[3:] + ["--resume"]) == 0 and "finished at step 6; nothing to resume" in capsys.readouterr().err


def test_cli_trains_on_a_mixture_of_builds(short_build, other_build, tmp_path, capsys):
    """--data A --data B --data-weights 0.7,0.3 trains (in-process, 6 steps of the tiny model, no
    eval: its compilation is the slow part, and these are the step options of
    test_cli_end_to_end_with_the_tiny_model, whose compiled step the session's compilation cache
    holds) on batches of both builds; the eval set of a mixture mixes the eval splits; misuse is
    one line."""
    from tzc_train.cli import main

    out = tmp_path / "mixed"
    base = ["--model", "tiny", "--data", str(short_build), "--data", str(other_build), "--steps", "6", "--batch-size",
            "4", "--lr", "1e-2", "--lora-rank", "4", "--eval-rows", "0", "--mesh", "2x4"]
    assert main(base + ["--out", str(out), "--data-weights", "0.7,0.3"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "finished" and summary["steps"] == 6 and summary["train_loss"] is not None
    recorded = json.loads((out / "tzc_run.json").read_text())
    assert recorded["data"] == [str(short_build.resolve()), str(other_build.resolve())]
    assert recorded["data_weights"] == [0.7, 0.3]
    assert read_run_config(str(out)).builds == (str(short_build.resolve()), str(other_build.resolve()))
    # the steps' rows come from both builds, 0.7/0.3
    origin = {row["tokens"].tobytes(): build for build in (short_build, other_build)
              for row in tzc_data.iter_rows(build)}
    drawn = [origin[row.tobytes()] for b, _ in zip(host_batches(
        (str(short_build), str(other_build)), 10, seed=0, weights=(0.7, 0.3)), range(20)) for row in b["tokens"]]
    assert 120 <= drawn.count(short_build) <= 160  # 4 binomial sigmas (26 rows) around 140 of 200
    config = read_run_config(str(out))
    evals, note = eval_set(dataclasses.replace(config, eval_rows=8), tzc_data.read_manifest(short_build))
    assert note == "eval: 8 rows of the mixed eval splits of 2 of 2 builds (23 packed rows)"
    held_out = {row["tokens"].tobytes(): build for build in (short_build, other_build)
                for row in tzc_data.iter_rows(build, "eval")}
    assert {held_out[row.tobytes()] for b in evals for row in b["tokens"]} == {short_build, other_build}
    with pytest.raises(ValueError, match="--resume: the run in .* was started with --data-weights \\[0.7, 0.3\\] "
                                         "\\(given: \\[0.5, 0.5\\]\\)"):
        check_resume(run_config(short_build, out, data=(str(short_build), str(other_build)),
                                     data_weights=(0.5, 0.5), resume=True))

    cases = [(["--data-weights", "0.7"], "--data-weights gives 1 weight.s. for 2 --data build.s."),
             (["--data-weights", "0.7,x"], "--data-weights '0.7,x': write one number per --data"),
             (["--data-weights", "0.7,-1"], "--data-weights 0.7,-1.0: weights must be positive"),
             (["--weights", "0.7,0.3"], "--weights 0.7,0.3: --weights is the model's weights .a path.; a mixture's "
                                        "weights are --data-weights 0.7,0.3"),
             (["--data", str(short_build)], f"refusing to mix: {short_build} and {short_build} are the same build")]
    for extra, message in cases:
        assert main(base + ["--out", str(tmp_path / "refused")] + extra) == 2, extra
        err = capsys.readouterr().err
        assert re.search("tzc-train: error: " + message, err) and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "refused").exists()  # refused before anything is written
