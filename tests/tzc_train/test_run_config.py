"""The run's options, its record and the resume rules (tzc_train/config.py), on run folders as a run
leaves them; no model is loaded.

(Not test_config.py: tests/tzc_data has one, and pytest needs unique names in folders that are not
packages.)"""

import dataclasses
import json
import shutil

import pytest
import tiny_runs
from tiny_runs import run_config

from tzc_train.config import TrainConfig, check_out, check_resume, write_run_config
from tzc_train.session import checkpoint_root, saved_step


@pytest.fixture(scope="module")
def short_build(tmp_path_factory, tiny_model_path):
    return tiny_runs.short_build(tmp_path_factory, tiny_model_path)


@pytest.fixture(scope="module")
def other_build(tmp_path_factory, tiny_model_path):
    return tiny_runs.other_build(tmp_path_factory, tiny_model_path)


@pytest.fixture(scope="module")
def full_run(short_build, tmp_path_factory):
    """A finished run's folder as check_resume reads it: its tzc_run.json, written as train() writes it,
    and its last checkpoint's step folder (actor/24)."""
    out = tmp_path_factory.mktemp("runs") / "full"
    write_run_config(run_config(short_build, out))
    (out / "actor" / "24" / "model_params").mkdir(parents=True)
    return out


def test_model_names_and_weights():
    with pytest.raises(ValueError, match="--model gemma3-1b needs --weights"):
        TrainConfig(data="d", out="o", model="gemma3-1b")
    with pytest.raises(ValueError, match="choose one of tiny, gemma2-2b, tiny-gemma3, gemma3-1b"):
        TrainConfig(data="d", out="o", model="gemma3-4b")
    assert TrainConfig(data="d", out="o", model="tiny-gemma3").model == "tiny-gemma3"


def test_resume_compares_builds_and_init_lora_by_what_they_hold(short_build, other_build, full_run, tmp_path):
    """A build copied elsewhere (a Kaggle dataset under /kaggle/input) is the same build; another build
    at the run's path is not. A run started from --init-lora and stopped before its first checkpoint
    resumes only from the same adapters; once it saved a step, its own adapters are what it resumes."""
    run_dir = full_run
    copy = tmp_path / "input" / "build"
    shutil.copytree(short_build, copy)
    check_resume(run_config(copy, run_dir, resume=True))
    moved = tmp_path / "moved-run"
    shutil.copytree(run_dir, moved)  # the recorded path now holds another build
    recorded = json.loads((moved / "tzc_run.json").read_text())
    recorded["data"] = str(tmp_path / "elsewhere")
    (moved / "tzc_run.json").write_text(json.dumps(recorded))
    with pytest.raises(ValueError, match=r"--data .*elsewhere \(given: .*other"):
        check_resume(run_config(other_build, moved, resume=True))

    started = run_config(short_build, tmp_path / "second", init_lora=str(run_dir))
    write_run_config(started)  # killed before its first checkpoint
    with pytest.raises(ValueError, match=r"--init-lora .*full \(given: None\)"):
        check_resume(run_config(short_build, tmp_path / "second", resume=True))
    check_resume(dataclasses.replace(started, resume=True))
    saved = tmp_path / "second" / "actor" / "8"
    saved.mkdir(parents=True)
    check_resume(run_config(short_build, tmp_path / "second", resume=True))


def test_a_run_in_the_old_layout_is_not_resumed_into_the_new_one(short_build, tmp_path):
    old = tmp_path / "old"
    write_run_config(run_config(short_build, old))
    (old / "8" / "model_params").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"old layout .*move the step folders into .*old/actor/"):
        check_out(run_config(short_build, old, resume=True))
    assert checkpoint_root(str(old)) == str(old) and saved_step(str(old)) == 8  # eval, sample, export still read it
