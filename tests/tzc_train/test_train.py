"""The trainer end to end on a tiny random Gemma 2 over 8 fake CPU devices, on a real small build."""

import contextlib
import dataclasses
import functools
import io
import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from flax import nnx

import tzc_data
from tzc_data.cli import main as tzc_data_main
from tzc_data.look import build_tokenizer
from tzc_train import train as train_module
from tzc_train.session import Deadline
from tzc_train.train import TrainConfig, base_model, lora_state, make_mesh, train

SYSTEM = "Answer with reasoning, then the answer."


@pytest.fixture(scope="module")
def short_build(tmp_path_factory, tiny_model_path):
    """400 short arithmetic examples, tokenized with the throwaway tokenizer, in rows of 256 tokens."""
    rows = [(f"What is {i} mod 17?", f"<think>{i} = 17 x {i // 17} + {i % 17}.</think>The answer is {i % 17}.")
            for i in range(400)]
    return _small_build(tmp_path_factory.mktemp("train"), rows, tiny_model_path, eval_fraction=0.05)


def _small_build(root, rows: list[tuple[str, str]], tokenizer: str, *, eval_fraction: float):
    """A build of (prompt, response) rows in rows of 256 tokens, with the tests' system prompt."""
    src = root / "rows.jsonl"
    src.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in rows))
    out = root / "build"
    assert tzc_data_main(["build", "--source", str(src), "--range", f"0:{len(rows)}", "--out", str(out),
                          "--tokenizer", tokenizer, "--seq-len", "256", "--system", SYSTEM, "--eval-fraction",
                          str(eval_fraction), "--no-near-dup", "--no-progress"]) == 0
    return out


def _config(build, out, **overrides):
    settings = dict(data=str(build), out=str(out), model="tiny", steps=24, batch_size=4, lr=1e-2, lora_rank=8,
                    lora_alpha=8.0, warmup_steps=2, save_every=8, eval_every=8, eval_rows=8)
    return TrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def full_run(short_build, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "full"
    return out, train(_config(short_build, out))


def test_loss_falls_and_only_adapters_change(full_run, short_build):
    _, result = full_run
    vocab = json.loads((short_build / "manifest.json").read_text())["tokenizer"]["vocab_size"]
    losses = result["losses"]
    assert len(losses) == 24 and np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.2
    mesh = make_mesh(None)
    with mesh:
        fresh, _ = base_model(_config("x", "y"), vocab, mesh)  # deterministic random weights
    trained = train_module.base_state(result["model"])
    for name, value in train_module.base_state(fresh).items():
        if name in trained:
            np.testing.assert_array_equal(trained[name], value, err_msg=name)
    assert any(np.abs(v).sum() > 0 for v in lora_state(result["model"]).values())


def test_a_time_limit_stops_saves_and_resumes_to_the_same_adapters(short_build, full_run, tmp_path, monkeypatch):
    """Session 1 stops for --time-limit (its clock jumps past the limit after step 10) and saves;
    session 2 resumes and crashes at step 19 (after the checkpoint at 16); session 3 resumes from
    16 and finishes. The adapters equal those of the uninterrupted run, and summary.json adds up."""
    out = tmp_path / "sessions"
    jump = [0.0]
    original = train_module.ConsoleLine.on_train_step_end

    def clock():
        return time.monotonic() + jump[0]

    def at_step_end(self, ctx, step, loss, crash_at=None):
        original(self, ctx, step, loss)
        if step == 10:
            jump[0] = 1e6
        if step == crash_at:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "Deadline", functools.partial(Deadline, clock=clock))
    monkeypatch.setattr(train_module.ConsoleLine, "on_train_step_end", at_step_end)
    first = train(_config(short_build, out, time_limit=3600.0), started=clock())
    assert first["status"] == "time limit" and 10 <= first["steps"] < 16
    assert str(first["steps"]) in {p.name for p in (out / "actor").iterdir()}  # saved at the step it stopped
    assert first["eval_loss"] is not None and first["eval_step"] == 8

    monkeypatch.setattr(train_module.ConsoleLine, "on_train_step_end", functools.partialmethod(at_step_end, crash_at=19))
    with pytest.raises(KeyboardInterrupt):
        train(_config(short_build, out, resume=True))
    monkeypatch.setattr(train_module.ConsoleLine, "on_train_step_end", original)
    with pytest.raises(ValueError, match="--resume"):
        train(_config(short_build, out))
    resumed = train(_config(short_build, out, resume=True))
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
                       for b, _ in zip(train_module.host_batches(str(short_build), 4, seed=0), range(24)))
    assert summary["tokens"] == padding_free and summary["wall_seconds"] > 0


def test_resuming_a_finished_run_says_so_and_changes_nothing(short_build, full_run, capsys):
    run_dir, _ = full_run
    before = (run_dir / "summary.json").read_text()
    again = train(_config(short_build, run_dir, resume=True))
    assert again["status"] == "finished" and again["steps"] == 24 and again["session"] is None
    assert "finished at step 24; nothing to resume" in capsys.readouterr().err
    assert (run_dir / "summary.json").read_text() == before


def test_resume_with_other_options_is_refused_naming_them(short_build, full_run):
    run_dir, _ = full_run
    with pytest.raises(ValueError, match=r"--batch-size 4 \(given: 8\).*--grad-accum 1 \(given: 2\)"):
        train(_config(short_build, run_dir, resume=True, batch_size=8, grad_accum=2))
    with pytest.raises(ValueError, match=r"--seed 0 \(given: 3\)"):
        train(_config(short_build, run_dir, resume=True, seed=3))


def test_resume_compares_builds_and_init_lora_by_what_they_hold(short_build, other_build, full_run, tmp_path):
    """A build copied elsewhere (a Kaggle dataset under /kaggle/input) is the same build; another build
    at the run's path is not. A run started from --init-lora and stopped before its first checkpoint
    resumes only from the same adapters; once it saved a step, its own adapters are what it resumes."""
    import shutil

    run_dir, _ = full_run
    copy = tmp_path / "input" / "build"
    shutil.copytree(short_build, copy)
    train_module.check_resume(_config(copy, run_dir, resume=True))
    moved = tmp_path / "moved-run"
    shutil.copytree(run_dir, moved)  # the recorded path now holds another build
    recorded = json.loads((moved / "tzc_run.json").read_text())
    recorded["data"] = str(tmp_path / "elsewhere")
    (moved / "tzc_run.json").write_text(json.dumps(recorded))
    with pytest.raises(ValueError, match=r"--data .*elsewhere \(given: .*other"):
        train_module.check_resume(_config(other_build, moved, resume=True))

    started = _config(short_build, tmp_path / "second", init_lora=str(run_dir))
    train_module.write_run_config(started)  # killed before its first checkpoint
    with pytest.raises(ValueError, match=r"--init-lora .*full \(given: None\)"):
        train_module.check_resume(_config(short_build, tmp_path / "second", resume=True))
    train_module.check_resume(dataclasses.replace(started, resume=True))
    saved = tmp_path / "second" / "actor" / "8"
    saved.mkdir(parents=True)
    train_module.check_resume(_config(short_build, tmp_path / "second", resume=True))


def test_a_run_in_the_old_layout_is_not_resumed_into_the_new_one(short_build, tmp_path):
    old = tmp_path / "old"
    train_module.write_run_config(_config(short_build, old))
    (old / "8" / "model_params").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"old layout .*move the step folders into .*old/actor/"):
        train_module.check_out(_config(short_build, old, resume=True))
    from tzc_train.session import checkpoint_root, saved_step

    assert checkpoint_root(str(old)) == str(old) and saved_step(str(old)) == 8  # eval, sample, export still read it


def test_the_learning_rate_never_trains_a_step_at_zero():
    schedule = train_module.lr_schedule(1e-2, 5, 100)
    assert [round(float(schedule(i)), 6) for i in range(5)] == [0.002, 0.004, 0.006, 0.008, 0.01]
    assert 0 < float(schedule(99)) < 1e-5 and float(schedule(50)) < 1e-2
    assert float(train_module.lr_schedule(1e-2, 0, 10)(0)) == pytest.approx(1e-2)
    assert float(train_module.lr_schedule(1e-2, 10, 1)(0)) == pytest.approx(1e-2)  # one step: no warmup


def test_a_batch_the_data_axis_cannot_split_is_refused(short_build, tmp_path):
    with pytest.raises(ValueError, match=r"--batch-size 5 does not split .*fsdp = 2.* e\.g\. 4 or 6"):
        train(_config(short_build, tmp_path / "odd", batch_size=5))
    with pytest.raises(ValueError, match=r"fsdp = 8.*e\.g\. 8"):
        train(_config(short_build, tmp_path / "odd", batch_size=4, mesh=(8, 1)))


def test_hosts_read_disjoint_shares_of_the_same_global_batches(short_build, monkeypatch):
    """Two hosts of a multi-host job: each reads half of every global batch, and together they read
    exactly what one host reads."""
    def first_batches(index, count):
        monkeypatch.setattr(train_module.jax, "process_index", lambda: index)
        monkeypatch.setattr(train_module.jax, "process_count", lambda: count)
        batches = train_module.host_batches(str(short_build), 8, seed=0)
        return [next(batches)["tokens"] for _ in range(3)]

    alone = first_batches(0, 1)
    host0, host1 = first_batches(0, 2), first_batches(1, 2)
    for whole, a, b in zip(alone, host0, host1):
        assert a.shape == b.shape == (4, whole.shape[1])
        rows = lambda x: sorted(map(bytes, x))  # noqa: E731
        assert rows(np.concatenate([a, b])) == rows(whole) and not set(rows(a)) & set(rows(b))


def test_eval_uses_a_fixed_bounded_subset_at_a_sensible_cadence(short_build):
    manifest = json.loads((short_build / "manifest.json").read_text())
    config = _config(short_build, "unused", eval_rows=5)
    first, note = train_module.eval_set(config, manifest)
    again, _ = train_module.eval_set(config, manifest)
    assert len(first) == 1 and "4 of the eval split's" in note  # whole batches of 4 within 5 rows
    np.testing.assert_array_equal(first[0]["tokens"], again[0]["tokens"])
    assert train_module.eval_set(_config(short_build, "unused", eval_rows=0), manifest) == ([], "eval: off (--eval-rows 0)")
    assert "fewer than one batch" in train_module.eval_set(_config(short_build, "u", batch_size=64), manifest)[1]
    every = functools.partial(train_module.eval_interval, _config(short_build, "u", eval_every=None))
    assert every(100) == 50 and every(22_500) == 1125 and train_module.eval_interval(config, 100) == 8


def test_a_build_with_no_rows_gets_a_clear_error(tiny_model_path, tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps({"prompt": "a", "response": "no think tags"}) + "\n")
    assert tzc_data_main(["build", "--source", str(source), "--range", "0:1", "--out", str(tmp_path / "empty"),
                          "--tokenizer", tiny_model_path, "--seq-len", "256", "--no-near-dup", "--no-progress",
                          "--min-kept-ratio", "0"]) == 0
    with pytest.raises(ValueError, match="no packed rows in its train split .kept 0 of 1"):
        train(_config(tmp_path / "empty", tmp_path / "run"))


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


def test_time_limits_parse():
    from tzc_train.session import parse_duration

    assert parse_duration("8h40m") == 8 * 3600 + 40 * 60 and parse_duration("90m") == 5400
    assert parse_duration("1.5h") == 5400 and parse_duration("45s") == 45 and parse_duration("3600") == 3600
    for bad in ("", "8x", "h", "0", "-5m", "8h 40m"):
        with pytest.raises(ValueError, match="--time-limit"):
            parse_duration(bad)


def test_a_deadline_leaves_room_for_the_steps_in_flight_and_the_save():
    now = [100.0]
    deadline = Deadline(limit=200.0, started=0.0, reserve=60.0, clock=lambda: now[0])
    assert deadline.leaves_room_for(10.0)  # 100 + 2 x 10 + 60 < 200
    assert not deadline.leaves_room_for(21.0)
    now[0] = 139.0
    assert deadline.leaves_room_for(0.0) and not deadline.leaves_room_for(1.0)
    assert Deadline(limit=None, started=0.0).leaves_room_for(1e9)


def test_the_feed_counts_tokens_and_stops_when_the_next_steps_would_not_fit():
    from tzc_train.session import Feed

    now = [0.0]
    batches = iter([{"segment_ids": np.array([[1, 1, 0], [1, 2, 2]])}] * 30)
    feed = Feed(batches, Deadline(limit=200.0, started=0.0, reserve=10.0, clock=lambda: now[0]))
    times = []
    for step_seconds in [50.0, 5.0, 20.0] + [5.0] * 30:  # compilation, then steps
        try:
            next(feed)
        except StopIteration:
            break
        times.append(now[0])
        now[0] += step_seconds
    # the longest step after the first is 20 s: the feed stops at t = 150 (150 + 2 x 20 + 10 = 200)
    assert feed.stopped == "time limit" and times[-1] == 145.0 and len(times) == 18
    assert feed.tokens(3) == 15 and feed.tokens(99) == 18 * 5


def test_a_resumed_feed_budgets_like_a_fresh_one():
    """tunix draws and discards a resumed run's trained batches before the first step: those draws
    are not steps, and the interval after them holds the compilation, so a resumed session stops
    where a fresh one with the same step times would (a 120 s compile, 5 s steps)."""
    from tzc_train.session import Feed

    def stop_time(skip: int) -> tuple[float, int]:
        now = [0.0]
        batch = {"segment_ids": np.array([[1, 1, 0]])}
        feed = Feed(iter([batch] * 2000), Deadline(limit=900.0, started=0.0, reserve=60.0, clock=lambda: now[0]),
                    skip=skip)
        for _ in range(skip):
            next(feed)
            now[0] += 0.01
        steps = 0
        for seconds in [120.0] + [5.0] * 1000:
            try:
                next(feed)
            except StopIteration:
                return round(now[0] - skip * 0.01, 6), steps
            steps += 1
            now[0] += seconds
        raise AssertionError("the feed never stopped")

    fresh, resumed = stop_time(0), stop_time(300)
    assert resumed == fresh and fresh[1] == 143  # 120 + 142 x 5 = 830 s: the 143rd step would end past 900 - 60


def test_init_lora_starts_from_saved_adapters(short_build, full_run, tmp_path):
    run_dir, result = full_run
    follow = train(_config(short_build, tmp_path / "next", init_lora=str(run_dir), steps=1, lr=1e-12))
    expected = lora_state(result["model"])
    for name, value in lora_state(follow["model"]).items():
        np.testing.assert_allclose(value, expected[name], atol=1e-6, err_msg=name)


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


@pytest.fixture(scope="module")
def other_build(tmp_path_factory, tiny_model_path):
    """A second small build that mixes with short_build: same tokenizer and seq_len, other prompts."""
    rows = [(f"Add {i} and {2 * i + 1}.", f"<think>{i} + {2 * i + 1} = {3 * i + 1}.</think>It is {3 * i + 1}.")
            for i in range(200)]
    return _small_build(tmp_path_factory.mktemp("other"), rows, tiny_model_path, eval_fraction=0.1)


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
    assert train_module.read_run_config(str(out)).builds == (str(short_build.resolve()), str(other_build.resolve()))
    # the steps' rows come from both builds, 0.7/0.3
    origin = {row["tokens"].tobytes(): build for build in (short_build, other_build)
              for row in tzc_data.iter_rows(build)}
    drawn = [origin[row.tobytes()] for b, _ in zip(train_module.host_batches(
        (str(short_build), str(other_build)), 10, seed=0, weights=(0.7, 0.3)), range(20)) for row in b["tokens"]]
    assert 120 <= drawn.count(short_build) <= 160  # 4 binomial sigmas (26 rows) around 140 of 200
    config = train_module.read_run_config(str(out))
    evals, note = train_module.eval_set(dataclasses.replace(config, eval_rows=8), tzc_data.read_manifest(short_build))
    assert note == "eval: 8 rows of the mixed eval splits of 2 of 2 builds (23 packed rows)"
    held_out = {row["tokens"].tobytes(): build for build in (short_build, other_build)
                for row in tzc_data.iter_rows(build, "eval")}
    assert {held_out[row.tobytes()] for b in evals for row in b["tokens"]} == {short_build, other_build}
    with pytest.raises(ValueError, match="--resume: the run in .* was started with --data-weights \\[0.7, 0.3\\] "
                                         "\\(given: \\[0.5, 0.5\\]\\)"):
        train_module.check_resume(_config(short_build, out, data=(str(short_build), str(other_build)),
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


def test_format_check_accepts_only_reasoning_then_answer():
    from tzc_train.sample import check_format

    assert check_format("<reasoning>r</reasoning>\n<answer>a</answer><end_of_turn>\n<eos>") == (True, "")
    assert check_format("<reasoning>r</reasoning>\n<answer>a</answer>")[0]
    assert not check_format("<answer>a</answer>")[0]
    assert not check_format("<reasoning>r</reasoning>\n<answer> </answer>")[0]
    assert not check_format("<reasoning>r</reasoning>\n<answer>a")[0]  # cut before </answer>


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


@pytest.fixture(scope="module")
def exported(full_run, tmp_path_factory):
    """`tzc-train export` of the trained run, through the CLI (in-process: its own process adds only
    the start-up, which test_cli_end_to_end_with_the_tiny_model covers)."""
    from tzc_train.cli import main

    run_dir, _ = full_run
    out = tmp_path_factory.mktemp("export") / "session1"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["export", "--run", str(run_dir), "--out", str(out)]) == 0
    assert set(json.loads(stdout.getvalue().strip().splitlines()[-1])) == {"adapters", "kaggle", "merged", "flax"}
    return out


def _logits(model, vocab):
    import jax.numpy as jnp

    rng = np.random.default_rng(7)
    tokens = jnp.asarray(rng.integers(3, vocab, (2, 40)), dtype=jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(40), (2, 40))
    mask = jnp.broadcast_to(jnp.tril(jnp.ones((40, 40), dtype=bool)), (2, 40, 40))
    return np.asarray(_forward(model, tokens, positions, mask))


@nnx.jit
def _forward(model, tokens, positions, mask):
    """One compiled forward pass (eager op-by-op calls over 8 fake devices are slow)."""
    return model(tokens, positions, None, mask)[0]


def test_merged_export_loads_in_tunix_and_gives_the_trained_models_logits(full_run, exported, short_build):
    """The merged weights, read back by tunix's own safetensors loader into a plain Gemma 2 (no LoRA),
    give the logits of the trained LoRA model; the base weights alone would not."""
    import jax.numpy as jnp
    from tunix.models.gemma import params_safetensors

    from tzc_train.model import tiny_config

    _, result = full_run
    vocab = json.loads((short_build / "manifest.json").read_text())["tokenizer"]["vocab_size"]
    mesh = make_mesh(None)
    with mesh:
        trained = _logits(result["model"], vocab)
        plain = params_safetensors.create_model_from_safe_tensors(str(exported / "merged"), tiny_config(vocab), mesh,
                                                                  dtype=jnp.float32)
        assert not any("lora" in "/".join(map(str, p)) for p, _ in __import__("flax").nnx.state(plain).flat_state())
        np.testing.assert_allclose(_logits(plain, vocab), trained, atol=2e-5)
        base, _ = base_model(_config("x", "y"), vocab, mesh)
        assert np.abs(_logits(base, vocab) - trained).max() > 1e-3  # the adapters matter: the test can fail
    config = json.loads((exported / "merged" / "config.json").read_text())
    assert config["architectures"] == ["Gemma2ForCausalLM"] and config["vocab_size"] == vocab
    tokenizer = build_tokenizer(json.loads((short_build / "manifest.json").read_text()), None)
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (
        tokenizer.bos, tokenizer.eos, tokenizer.pad)
    generation = json.loads((exported / "merged" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [tokenizer.eos, tokenizer.end_of_turn]


def test_flax_export_loads_with_tunixs_kaggle_gemma_loader(full_run, exported, short_build, run_samples, monkeypatch):
    """OUT/flax through tunix's own Kaggle path, exactly as a competition notebook calls it:
    ``params.load_and_format_params`` then ``Gemma.from_params(params, version="2-2b-it")`` (its
    config replaced by the tiny one: no real weights are reachable). A plain Gemma 2 with the
    trained model's logits and greedy samples."""
    from flax import nnx
    from tunix.models.gemma import model as gemma_lib
    from tunix.models.gemma import params as gemma_params

    from tzc_train.model import tiny_config
    from tzc_train.sample import sample

    _, result = full_run
    manifest = json.loads((short_build / "manifest.json").read_text())
    vocab = manifest["tokenizer"]["vocab_size"]
    tiny = tiny_config(vocab)
    monkeypatch.setattr(gemma_lib.ModelConfig, "gemma2_2b_it", classmethod(lambda cls: tiny))
    plain = gemma_lib.Gemma.from_params(gemma_params.load_and_format_params(str(exported / "flax")), version="2-2b-it")
    assert not any("lora" in "/".join(map(str, p)) for p, _ in nnx.state(plain).flat_state())
    with make_mesh(None):
        trained = _logits(result["model"], vocab)
    np.testing.assert_allclose(_logits(plain, vocab), trained, atol=2e-5)
    prompts, expected = run_samples
    got = sample(plain, tiny, build_tokenizer(manifest, None), prompts, max_new_tokens=10)
    assert [s.completion for s in got] == expected


def test_exported_adapters_load_again_with_init_lora(short_build, full_run, exported, tmp_path):
    _, result = full_run
    adapter_config = json.loads((exported / "adapters" / "adapter_config.json").read_text())
    assert adapter_config["rank"] == 8 and adapter_config["alpha"] == 8.0
    follow = train(_config(short_build, tmp_path / "from-export", init_lora=str(exported / "adapters"), steps=1,
                           lr=1e-12))
    expected = lora_state(result["model"])
    for name, value in lora_state(follow["model"]).items():
        np.testing.assert_allclose(value, expected[name], atol=1e-6, err_msg=name)
    with pytest.raises(ValueError, match="lora-rank|rank/targets"):
        train(_config(short_build, tmp_path / "wrong-rank", init_lora=str(exported / "adapters"), lora_rank=4, steps=1))


@pytest.fixture(scope="module")
def run_samples(short_build, full_run):
    """Greedy completions of two prompts by the trained run (its LoRA model)."""
    from tzc_train.model import tiny_config
    from tzc_train.sample import sample

    manifest = json.loads((short_build / "manifest.json").read_text())
    prompts = [f"What is {i} mod 17?" for i in (3, 50)]
    with make_mesh(None):
        samples = sample(full_run[1]["model"], tiny_config(manifest["tokenizer"]["vocab_size"]),
                         build_tokenizer(manifest, None), prompts, max_new_tokens=10)
    return prompts, [s.completion for s in samples]


def test_sampling_the_merged_weights_equals_sampling_the_run(short_build, exported, run_samples):
    """Greedy completions from `--weights EXPORT/merged` (plain Gemma) and from the run's adapters."""
    from tzc_train.sample import sample

    manifest = json.loads((short_build / "manifest.json").read_text())
    prompts, expected = run_samples
    mesh = make_mesh(None)
    with mesh:
        merged, model_config = base_model(_config("x", "y", weights=str(exported / "merged")),
                                          manifest["tokenizer"]["vocab_size"], mesh)
        from_export = sample(merged, model_config, build_tokenizer(manifest, None), prompts, max_new_tokens=10)
    assert [s.completion for s in from_export] == expected


def test_export_refuses_a_directory_that_is_not_a_run(tmp_path):
    from tzc_train.cli import main

    assert main(["export", "--run", str(tmp_path), "--out", str(tmp_path / "x")]) == 2


def test_a_kaggle_flax_checkpoint_loads_as_the_base_model(tmp_path):
    """--weights with a Kaggle-layout orbax checkpoint (written here at tiny size: no real weights are
    reachable) gives the model whose parameters were written, on the mesh."""
    import orbax.checkpoint as ocp

    from tzc_train.export import kaggle_params
    from tzc_train.model import tiny_config

    mesh = make_mesh(None)
    with mesh:
        tiny, _ = base_model(_config("x", "y"), 600, mesh)
    params = train_module.base_state(tiny)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "kaggle", kaggle_params(params, tiny_config(600)))
    checkpointer.wait_until_finished()
    with mesh:
        loaded, _ = base_model(_config("x", "y", weights=str(tmp_path / "kaggle")), 600, mesh)
    got = train_module.base_state(loaded)
    assert set(got) == set(params)
    for name, value in params.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    with pytest.raises(ValueError, match="not a Kaggle Flax checkpoint"), mesh:
        base_model(_config("x", "y", weights=str(tmp_path / "missing")), 600, mesh)


def test_eval_split_prompts_are_the_trained_prefixes_with_their_answers(short_build):
    from tzc_train.evaluate import eval_split_prompts, references_fitting

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
