"""``--engine ray`` writes the bytes ``--engine local`` writes, on a local Ray instance of 2 CPUs
(one for the actor, one for Ray Data's read tasks), started once for the module: a killed build
resumes without redoing its finished units, a worker that dies mid-unit is retried, and the
failures a user can cause are one line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray  # the extra tzc[ray]: `make test` installs it, and its absence is a failure, not a skip
from conftest import parquet_source, sha256s

from tzc_data.build.config import BuildConfig
from tzc_data.build.pipeline import build as build_into
from tzc_data.cli import main
from tzc_data.engines.ray import RayExecutor
from tzc_data.errors import OutputError, TzcError
from tzc_data.sources import Unit
from tzc_data.sources.generator import generate


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray instance for the module's tests; its address, for a second driver."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test stages, for the workers
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _common(tiny_model_path: str) -> list[str]:
    return ["--tokenizer", tiny_model_path, "--seq-len", "8192", "--rows-per-shard", "8", "--min-kept-ratio", "0",
            "--no-progress"]


@pytest.mark.parametrize("case", ["synthetic with an eval split", "parquet files of several row groups",
                                  "excluding an earlier build", "decontaminating, with a model-turn bound"])
def test_a_ray_build_writes_the_bytes_of_a_local_build(tmp_path, tiny_model_path, ray_cluster, case):
    common = _common(tiny_model_path)
    if case == "synthetic with an eval split":
        args = ["--source", "synthetic", "--range", "100:900", "--eval-fraction", "0.2"]
    elif case == "parquet files of several row groups":
        args = ["--source", str(parquet_source(tmp_path / "src")), "--range", "10:290"]
    elif case == "decontaminating, with a model-turn bound":
        bench = tmp_path / "bench.jsonl"  # two synthetic prompts: their templates' n-grams are in many rows
        bench.write_text("".join(json.dumps({"question": generate(0, r).prompt}) + "\n" for r in (120, 450)))
        args = ["--source", "synthetic", "--range", "100:900", "--decontaminate", str(bench), "--max-model-tokens",
                "3000"]
    else:
        assert main(["build", "--source", "synthetic", "--range", "0:300", "--out", str(tmp_path / "first"),
                     *common]) == 0
        args = ["--source", "synthetic", "--range", "300:800", "--exclude", str(tmp_path / "first")]
    assert main(["build", "--out", str(tmp_path / "local"), *args, *common, "--engine", "local"]) == 0
    assert main(["build", "--out", str(tmp_path / "ray"), *args, *common, "--engine", "ray"]) == 0
    local, on_ray = sha256s(tmp_path / "local"), sha256s(tmp_path / "ray")
    assert len(local) >= 6 and local == on_ray
    assert main(["verify", str(tmp_path / "ray")]) == 0
    if case == "decontaminating, with a model-turn bound":
        counts = json.loads((tmp_path / "ray" / "manifest.json").read_text())["counts"]["by_status"]
        assert counts["contaminated"] > 0 and counts["model_turn_too_long"] > 0 and counts["kept"] > 0, counts


def test_a_killed_ray_build_resumes_without_redoing_its_finished_units(tmp_path, tiny_model_path, ray_cluster):
    args = ["--source", "synthetic", "--range", "0:3000", *_common(tiny_model_path)]
    assert main(["build", "--out", str(tmp_path / "ref"), *args]) == 0
    out, markers = tmp_path / "run", tmp_path / ".run.tzc-partial" / ".units"
    # A second driver on the same Ray instance (--ray-address), killed once a unit is done.
    build = subprocess.Popen([sys.executable, "-m", "tzc_data.cli", "build", "--out", str(out), *args,
                              "--engine", "ray", "--ray-address", ray_cluster],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(markers.glob("u*.json")) and time.time() < deadline and build.poll() is None:
        time.sleep(0.02)
    os.kill(build.pid, signal.SIGKILL)
    _, err = build.communicate(timeout=60)
    assert build.returncode == -signal.SIGKILL, err
    assert not out.exists()
    finished = {p.name: p.stat().st_mtime_ns for p in markers.glob("u*.json")}
    assert 1 <= len(finished) < 12, finished  # 12 units of 256 rows (the last of 184)
    resumed = build_into(BuildConfig(out=str(out), start=0, stop=3000, source="synthetic", tokenizer=tiny_model_path,
                                     seq_len=8192, rows_per_shard=8, min_kept_ratio=0.0, engine="ray", workers=0,
                                     resume=True), progress=False)
    assert len(finished) <= resumed["run"]["units_reused"] < 12  # at least those units were not run again
    assert sha256s(out) == sha256s(tmp_path / "ref")


def _staging(folder: Path) -> str:
    """A staging directory as the driver leaves it before the first unit: its plan written."""
    (folder / ".units").mkdir(parents=True)
    (folder / ".units" / "plan.json").write_text("{}")
    return str(folder)


class _DieOn:
    """A stage whose worker dies (as the OOM killer ends it) on unit ``index``: once, or always."""

    def __init__(self, staging: str, index: int, flag: str, always: bool):
        self.staging, self.index, self.flag, self.always = staging, index, flag, always

    def __call__(self, unit):
        if unit.index == self.index and (self.always or not os.path.exists(self.flag)):
            Path(self.flag).touch()
            os._exit(9)
        return unit.index


def test_a_worker_that_dies_mid_unit_is_retried_and_one_that_always_dies_fails_in_one_line(tmp_path, ray_cluster):
    units = [Unit(index=k, start=k, stop=k + 1, where=f"unit {k}", locator=()) for k in range(6)]
    flag, staging = str(tmp_path / "died"), _staging(tmp_path / "staging")
    assert sorted(RayExecutor().run(_DieOn(staging, 2, flag, always=False), units)) == list(range(6))
    assert os.path.exists(flag)  # it did die, and unit 2 ran again on a restarted actor
    with pytest.raises(TzcError, match=r"^the Ray build failed .*--resume") as failure:
        list(RayExecutor(retries=0).run(_DieOn(staging, 2, flag, always=True), units))
    assert "\n" not in str(failure.value), str(failure.value)


class _Staged:
    def __init__(self, staging: str):
        self.staging = staging

    def __call__(self, unit):
        return unit.index


def test_a_worker_that_does_not_see_the_staging_directory_fails_in_one_line(tmp_path, ray_cluster):
    with pytest.raises(OutputError, match=r"^the Ray worker on .* does not see the build's staging directory .*"
                                          r"every node mounts at the same path$"):
        list(RayExecutor().run(_Staged(str(tmp_path / "elsewhere")), [Unit(index=0, start=0, stop=1, where="unit 0", locator=())]))


def test_the_actor_pool_leaves_a_cpu_for_the_read_tasks(tmp_path, tiny_model_path, ray_cluster, capsys):
    args = ["build", "--source", "synthetic", "--range", "0:100", "--out", str(tmp_path / "b"),
            *_common(tiny_model_path), "--engine", "ray"]
    assert main([*args, "--workers", "2"]) == 2
    assert "--workers 2: the Ray cluster has 2 CPUs; leave one" in capsys.readouterr().err
    assert main(["build", "--source", "synthetic", "--range", "0:100", "--out", str(tmp_path / "c"),
                 "--ray-address", "localhost:1", *_common(tiny_model_path)]) == 2
    assert "--ray-address needs --engine ray" in capsys.readouterr().err


def test_a_ray_address_where_no_head_answers_is_one_line(tmp_path, tiny_model_path, capsys):
    # (ray.init itself would retry for minutes)
    assert main(["build", "--source", "synthetic", "--range", "0:100", "--out", str(tmp_path / "b"),
                 *_common(tiny_model_path), "--engine", "ray", "--ray-address", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--ray-address 127.0.0.1:1: no Ray head answers there" in err, err
    assert not (tmp_path / "b").exists() and not (tmp_path / ".b.tzc-partial").exists()


def test_without_an_address_a_build_starts_its_own_instance_and_joins_no_other(tmp_path, tiny_model_path,
                                                                               ray_cluster):
    """Ray's default address would join whatever cluster RAY_ADDRESS (or /tmp/ray/ray_current_cluster)
    names, another user's included: a build without --ray-address starts an instance of its own."""
    from ray._private import state

    jobs = len(state.jobs())
    done = subprocess.run([sys.executable, "-m", "tzc_data.cli", "build", "--source", "synthetic", "--range", "0:60",
                           "--out", str(tmp_path / "b"), *_common(tiny_model_path), "--engine", "ray", "--workers", "1"],
                          env={**os.environ, "RAY_ADDRESS": ray_cluster}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "tzc-data: Ray local instance" in done.stderr
    assert len(state.jobs()) == jobs  # no driver of the build's ever joined the module's instance


def test_without_ray_installed_the_ray_engine_is_one_line(tmp_path, tiny_model_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as without the extra
    assert main(["build", "--source", "synthetic", "--range", "0:100", "--out", str(tmp_path / "b"),
                 *_common(tiny_model_path), "--engine", "ray"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--engine ray needs Ray Data: pip install 'tzc[ray]'" in err, err
    assert not (tmp_path / "b").exists()
