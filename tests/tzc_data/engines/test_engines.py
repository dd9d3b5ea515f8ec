"""Engines: ``--engine processes --workers 2`` writes the bytes ``--engine local`` writes, and a
worker that dies fails the build in one line and leaves it resumable to the same bytes."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import parquet_source, sha256s

from tzc_data.cli import main
from tzc_data.engines.local import LocalExecutor
from tzc_data.engines.processes import ProcessExecutor
from tzc_data.errors import TzcError
from tzc_data.process import REIMPORTED, REIMPORTED_EXIT
from tzc_data.text.tokenize import gemma2_tokenizer_path


@pytest.mark.parametrize("case", ["synthetic with an eval split", "parquet files of several row groups",
                                  "excluding an earlier build"])
def test_two_worker_processes_write_the_bytes_of_one_process(tmp_path, tiny_model_path, case):
    common = ["--tokenizer", tiny_model_path, "--seq-len", "8192", "--rows-per-shard", "8", "--min-kept-ratio", "0",
              "--no-progress"]
    if case == "synthetic with an eval split":
        args = ["--source", "synthetic", "--range", "100:900", "--eval-fraction", "0.2"]
    elif case == "parquet files of several row groups":
        args = ["--source", str(parquet_source(tmp_path / "src")), "--range", "10:290"]
    else:
        assert main(["build", "--source", "synthetic", "--range", "0:300", "--out", str(tmp_path / "first"),
                     *common]) == 0
        args = ["--source", "synthetic", "--range", "300:800", "--exclude", str(tmp_path / "first")]
    assert main(["build", "--out", str(tmp_path / "local"), *args, *common, "--engine", "local"]) == 0
    assert main(["build", "--out", str(tmp_path / "procs"), *args, *common, "--engine", "processes",
                 "--workers", "2"]) == 0
    local, procs = sha256s(tmp_path / "local"), sha256s(tmp_path / "procs")
    assert len(local) >= 6 and local == procs


def test_a_worker_that_dies_fails_the_build_in_one_line_and_it_resumes_to_the_same_bytes(tmp_path, tiny_model_path):
    args = ["--source", "synthetic", "--range", "0:3000", "--tokenizer", tiny_model_path, "--seq-len", "8192",
            "--min-kept-ratio", "0", "--no-progress"]
    assert main(["build", "--out", str(tmp_path / "ref"), *args]) == 0
    out, staging = tmp_path / "run", tmp_path / ".run.tzc-partial"
    build = subprocess.Popen([sys.executable, "-m", "tzc_data.cli", "build", "--out", str(out), *args,
                              "--workers", "2"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((staging / ".units").glob("u*.json")) and time.time() < deadline:
        time.sleep(0.01)
    workers = [p for p in Path("/proc").glob("[0-9]*") if _parent(p) == build.pid and b"spawn_main" in _cmdline(p)]
    assert workers, "no worker process found"
    os.kill(int(workers[0].name), signal.SIGKILL)
    _, err = build.communicate(timeout=120)
    assert build.returncode == 2, err
    assert err.count("\n") == 1 and "a worker process died" in err and "--resume" in err, err
    assert not out.exists()
    assert main(["build", "--out", str(out), *args, "--workers", "2", "--resume"]) == 0
    assert sha256s(out) == sha256s(tmp_path / "ref")


@pytest.mark.parametrize("phase", ["units", "shards"])
def test_ctrl_c_twice_stops_the_build_in_one_line_and_it_resumes_to_the_same_bytes(tmp_path, tiny_model_path, phase):
    # The second Ctrl-C used to land in the middle of the clean-up: tracebacks from the exit's joins,
    # or a process waiting for ever on a worker's lock.
    args = ["--source", "synthetic", "--range", "0:3000", "--tokenizer", tiny_model_path, "--seq-len", "8192",
            "--min-kept-ratio", "0", "--no-progress", "--rows-per-shard", "16"]
    assert main(["build", "--out", str(tmp_path / "ref"), *args]) == 0
    out, staging = tmp_path / "run", tmp_path / ".run.tzc-partial"
    build = subprocess.Popen([sys.executable, "-m", "tzc_data.cli", "build", "--out", str(out), *args,
                              "--workers", "2"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    started = (lambda: list((staging / ".units").glob("u*.json"))) if phase == "units" else \
        (lambda: (staging / "shards").is_dir() and any((staging / "shards").iterdir()))
    while not started() and time.time() < deadline:
        time.sleep(0.002)
    build.send_signal(signal.SIGINT)
    time.sleep(0.01)
    build.send_signal(signal.SIGINT)
    try:
        _, err = build.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # the old failure: waiting for ever (its workers die with it)
        build.kill()
        raise
    assert build.returncode == 130 and err.count("\n") == 1 and "--resume" in err, err
    assert main(["build", "--out", str(out), *args, "--workers", "2", "--resume"]) == 0
    assert sha256s(out) == sha256s(tmp_path / "ref")


def _parent(proc: Path) -> int | None:
    try:
        for line in (proc / "status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


class _Unit:
    def __init__(self, index: int):
        self.index, self.where = index, f"unit {index}"


def _fail_on_three(unit: _Unit) -> int:
    if unit.index == 3:
        raise ValueError("a bug")
    return unit.index


def test_the_process_engine_runs_every_unit_once_and_a_bug_keeps_its_traceback():
    units = [_Unit(k) for k in range(9)]
    assert list(LocalExecutor().run(lambda u: u.index, units)) == list(range(9))
    assert sorted(ProcessExecutor(2).run(_fail_on_three, units[:3] + units[4:])) == [0, 1, 2, 4, 5, 6, 7, 8]
    with pytest.raises(RuntimeError, match=r"unit 3: a worker failed:\n(.|\n)*ValueError: a bug"):
        list(ProcessExecutor(2).run(_fail_on_three, units))


@pytest.mark.parametrize("tokenizer", ["tiny", "gemma2"])
def test_a_script_that_builds_at_its_top_level_fails_in_one_line_per_process(tmp_path, tiny_model_path, tokenizer):
    # spawn runs the script again in each worker before the worker reads its task: without
    # `if __name__ == "__main__":` that run reaches the build, and multiprocessing would refuse its
    # workers with a traceback in each. With Gemma's 4 MB tokenizer in the stage, the build used to
    # wait for ever: spawn wrote the stage into a pipe whose reader had exited.
    model = tiny_model_path if tokenizer == "tiny" else str(gemma2_tokenizer_path())
    script = tmp_path / "unguarded.py"
    script.write_text("import sys\nfrom tzc_data.cli import main\n"
                      f"sys.exit(main(['build', '--source', 'synthetic', '--range', '0:600', '--out', "
                      f"{str(tmp_path / 'out')!r}, '--tokenizer', {model!r}, '--seq-len', '8192', "
                      "'--min-kept-ratio', '0', '--no-progress', '--engine', 'processes', '--workers', '2']))\n")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    *workers, last = run.stderr.splitlines()
    assert "Traceback" not in run.stderr and 1 <= len(workers) <= 2, run.stderr
    assert all(line == f"tzc: {REIMPORTED}" for line in workers), run.stderr
    assert last == f"tzc-data: error: {REIMPORTED}", run.stderr
    assert not (tmp_path / "out").exists()


def test_a_script_that_resumes_at_its_top_level_fails_in_one_line_when_the_shards_start(tmp_path, tiny_model_path):
    # Every unit done (a build stopped by --min-kept-ratio): the first workers spawned are the shard writers'.
    out = tmp_path / "out"
    args = ["build", "--source", "synthetic", "--range", "0:600", "--out", str(out), "--tokenizer", tiny_model_path,
            "--seq-len", "8192", "--rows-per-shard", "16", "--no-progress", "--engine", "processes", "--workers", "2"]
    assert main([*args, "--min-kept-ratio", "0.999"]) == 2
    script = tmp_path / "unguarded.py"
    script.write_text(f"import sys\nfrom tzc_data.cli import main\nsys.exit(main({[*args, '--resume']!r}))\n")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    *workers, last = run.stderr.splitlines()
    assert run.returncode == 2 and "Traceback" not in run.stderr and workers, run.stderr
    assert last == f"tzc-data: error: {REIMPORTED}", run.stderr


def test_a_script_read_from_standard_input_cannot_start_workers_and_says_so(tmp_path, tiny_model_path):
    script = ("import sys\nfrom tzc_data.cli import main\nif __name__ == '__main__':\n    sys.exit(main(['build', "
              f"'--source', 'synthetic', '--range', '0:600', '--out', {str(tmp_path / 'out')!r}, '--tokenizer', "
              f"{tiny_model_path!r}, '--min-kept-ratio', '0', '--no-progress', '--workers', '2']))\n")
    run = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "cannot start its workers from this script (<stdin>)" in run.stderr and "--engine local" in run.stderr


def test_a_stage_that_cannot_be_written_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))
    with pytest.raises(TzcError, match=rf"a temporary file in {tmp_path / 'gone'}: .*set TMPDIR"):
        list(ProcessExecutor(2).run(_fail_on_three, [_Unit(k) for k in range(3)]))


def _exit_as_a_reimported_worker(unit: _Unit) -> int:
    raise SystemExit(REIMPORTED_EXIT)


def test_a_worker_that_exits_as_reimported_names_the_script_s_guard(tmp_path, monkeypatch):
    # The worker's exit code tells why it died; the stage's temporary file goes with the build.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(TzcError, match=r"if __name__ == \"__main__\""):
        list(ProcessExecutor(2).run(_exit_as_a_reimported_worker, [_Unit(k) for k in range(4)]))
    units = [_Unit(k) for k in range(3)]
    for unit in units:
        unit.folder = str(tmp_path)
    # While the workers run, the stage's file has no name (a build killed with SIGKILL leaves none).
    assert list(ProcessExecutor(2).run(_listed, units)) == [[], [], []]
    assert list(tmp_path.iterdir()) == []


def _listed(unit: _Unit) -> list[str]:
    return os.listdir(unit.folder)
