"""End to end: `tzc-data build` on a synthetic range and on a JSONL file with malformed lines."""

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import grain
import numpy as np
import polars as pl
import pytest
from array_record.python.array_record_module import ArrayRecordReader

from tzc_data.cli import main
from tzc_data.layout import check_row, decode_row
from tzc_data.sources.generator import generate
from tzc_data.text import format as fmt
from tzc_data.text.tokenize import gemma2_tokenizer_path

RANGE = (1000, 1600)


@pytest.fixture(scope="module")
def synthetic_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "session"
    code = main(["build", "--source", "synthetic", "--range", f"{RANGE[0]}:{RANGE[1]}", "--out", str(out),
                 "--tokenizer", str(gemma2_tokenizer_path()), "--rows-per-shard", "100", "--no-progress"])
    assert code == 0
    return out


def split_records(out: Path):
    manifest = json.loads((out / "manifest.json").read_text())
    seq_len = manifest["config"]["seq_len"]
    rows = {}
    for shard, entry in enumerate(manifest["shards"]):
        reader = ArrayRecordReader(str(out / entry["file"]))
        records = reader.read_all()
        reader.close()
        assert len(records) == entry["records"]
        for index, record in enumerate(records):
            rows[(shard, index)] = decode_row(record, seq_len)
    return manifest, rows


def test_every_input_row_is_accounted_for(synthetic_build):
    manifest = json.loads((synthetic_build / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["read"] == RANGE[1] - RANGE[0] == counts["kept"] + counts["dropped"]
    assert sum(counts["by_status"].values()) == counts["read"]
    stats = pl.read_parquet(synthetic_build / "stats" / "records.parquet")
    assert stats["row"].to_list() == list(range(*RANGE))
    assert dict(stats.group_by("status").len().iter_rows()) == counts["by_status"]
    kept = stats.filter(pl.col("status") == "kept")
    assert kept["shard"].null_count() == 0 and stats.filter(pl.col("status") != "kept")["pack"].null_count() == (
        counts["dropped"])
    assert {"unterminated_think", "duplicate", "too_long"} <= set(counts["by_status"])


def test_drop_reasons_match_the_planted_defects(synthetic_build):
    stats = pl.read_parquet(synthetic_build / "stats" / "records.parquet")
    status = dict(zip(stats["row"].to_list(), stats["status"].to_list()))
    expect = {"loop_unterminated": "unterminated_think", "unterminated": "unterminated_think",
              "empty_answer": "empty_answer", "empty_reasoning": "empty_reasoning",
              "control_in_content": "control_in_content", "tag_in_content": {"tag_in_content", "unterminated_think"},
              "over_length": "too_long", "loop_reasoning": "loop", "loop_answer": "loop"}
    checked = 0
    for row in range(*RANGE):
        defect = generate(0, row).defect
        if defect in expect:
            allowed = expect[defect] if isinstance(expect[defect], set) else {expect[defect]}
            assert status[row] in allowed, (row, defect, status[row])
            checked += 1
    assert checked > 20


def test_shards_decode_with_numpy_and_keep_the_packing_invariants(synthetic_build, gemma_tokenizer):
    manifest, rows = split_records(synthetic_build)
    assert manifest["record_layout"]["shape"] == [4, 4096]
    for row in rows.values():
        assert check_row(row) == []
    stats = pl.read_parquet(synthetic_build / "stats" / "records.parquet").filter(pl.col("status") == "kept")
    for rec in stats.head(40).iter_rows(named=True):
        packed = rows[(rec["shard"], rec["pack"])]
        where = packed["segment_ids"] == rec["segment"]
        tokens = packed["tokens"][where].tolist()
        assert len(tokens) == rec["tokens"] and int(packed["loss_mask"][where].sum()) == rec["loss_tokens"]
        source = generate(0, rec["row"])
        reasoning, answer = fmt.split_response(source.response)
        assert gemma_tokenizer.decode(tokens) == fmt.render(source.prompt, reasoning, answer)
        mask = packed["loss_mask"][where]
        first_loss = int(np.argmax(mask))
        assert tokens[:first_loss] == gemma_tokenizer.encode_prompt(source.prompt)  # loss only on the model turn
        assert tokens[-3:] == [107, 108, 1] and mask[-1] == 1  # <end_of_turn>\n<eos>, trained
    packs = pl.read_parquet(synthetic_build / "stats" / "packs.parquet")
    assert packs.height == len(rows) == manifest["packing"]["rows"]
    assert packs["tokens"].sum() == manifest["packing"]["tokens"] == stats["tokens"].sum()
    assert manifest["packing"]["fill"] > 0.9


def test_shards_read_through_grain_and_match_their_manifest_hashes(synthetic_build):
    manifest = json.loads((synthetic_build / "manifest.json").read_text())
    paths = [str(synthetic_build / s["file"]) for s in manifest["shards"]]
    source = grain.sources.ArrayRecordDataSource(paths)
    assert len(source) == manifest["packing"]["rows"]
    row = decode_row(source[len(source) - 1], 4096)
    assert check_row(row) == [] and row["segment_ids"].max() >= 1
    for entry in manifest["shards"]:
        assert hashlib.sha256((synthetic_build / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    for name, entry in manifest["stats"].items():
        assert hashlib.sha256((synthetic_build / name).read_bytes()).hexdigest() == entry["sha256"]


@pytest.mark.parametrize("workers", [1, 2])
def test_same_inputs_give_byte_identical_outputs(synthetic_build, tmp_path, workers):
    """Again in one process, and with the per-row stages in two worker processes (``--workers 2``,
    chunks of 256 rows in flight out of order): every file is the same, byte for byte."""
    again = tmp_path / "again"
    assert main(["build", "--source", "synthetic", "--range", f"{RANGE[0]}:{RANGE[1]}", "--out", str(again),
                 "--tokenizer", str(gemma2_tokenizer_path()), "--rows-per-shard", "100", "--no-progress",
                 "--workers", str(workers)]) == 0
    files = sorted(p.relative_to(synthetic_build) for p in synthetic_build.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in files:
        assert (synthetic_build / name).read_bytes() == (again / name).read_bytes(), name


def test_existing_output_is_never_overwritten_silently(synthetic_build, capsys):
    args = ["build", "--source", "synthetic", "--range", "0:20", "--out", str(synthetic_build),
            "--tokenizer", str(gemma2_tokenizer_path()), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already holds a build (range 1000:1600 of synthetic); pass --overwrite" in err
    assert err.count("\n") == 1


def test_guardrail_fails_a_build_that_keeps_too_little_and_names_the_cause(tmp_path, capsys):
    out = tmp_path / "tiny"
    code = main(["build", "--source", "synthetic", "--range", "0:200", "--out", str(out), "--max-tokens", "1500",
                 "--tokenizer", str(gemma2_tokenizer_path()), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--min-kept-ratio" in err and "'too_long'" in err and "--max-tokens" in err
    assert not out.exists() and (tmp_path / ".tiny.tzc-partial").is_dir()  # its units, for a resume


def test_jsonl_with_malformed_lines_builds_and_accounts_for_them(tmp_path, tiny_model_path):
    src = tmp_path / "rows.jsonl"
    lines = []
    for i in range(40):
        row = generate(2, i)
        lines.append(json.dumps({"prompt": row.prompt, "response": row.response[:1500] + "\n</think>\nDone."}))
    lines[3] = "{broken json"
    lines[7] = json.dumps({"prompt": "only a prompt"})
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main(["build", "--source", str(src), "--range", "0:40", "--out", str(out), "--tokenizer", tiny_model_path,
                 "--seq-len", "2048", "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["by_status"]["malformed"] == 2 and manifest["counts"]["read"] == 40
    assert manifest["source"]["files"] == [{"path": "rows.jsonl", "bytes": os.path.getsize(src), "rows": 40,
                                            "sha256": hashlib.sha256(src.read_bytes()).hexdigest()}]
    stats = pl.read_parquet(out / "stats" / "records.parquet")
    bad = stats.filter(pl.col("status") == "malformed")
    assert bad["row"].to_list() == [3, 7] and "line 4" in bad["detail"][0]


@pytest.mark.parametrize("args, message", [
    (["--range", "5:3"], "need 0 <= START < STOP"),
    (["--range", "abc"], "expected START:STOP"),
    (["--range", "0:10", "--max-tokens", "9000"], "--max-tokens 9000"),
    (["--range", "0:10", "--source", "/nonexistent/*.jsonl"], "not a file, a directory, or a glob"),
    (["--range", "0:10", "--tokenizer", "/nonexistent.model", "--source", "synthetic"], "does not exist"),
    (["--range", "0:10", "--system", "a <end_of_turn> b"], "--system"),
    (["--range", "-5:10"], "--range -5:10: need 0 <= START < STOP"),
    (["--range", "0:99999999999999999999", "--source", "synthetic"], "goes past the end of the synthetic source: it holds 33,554,432 rows"),
    (["--range", "0:10", "--seq-len", "100000000"], "--seq-len 100000000: must be between 64 and 131,072"),
    (["--range", "0:10", "--loop-min-repeats", "inf"], "--loop-min-repeats inf: must be a finite number"),
    (["--range", "0:10", "--near-dup-threshold", "nan"], "--near-dup-threshold nan"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, args, message):
    assert main(["build", "--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("tzc-data: error:") and err.count("\n") == 1


def _build(out, range_, *extra):
    return main(["build", "--source", "synthetic", "--range", range_, "--out", str(out),
                 "--tokenizer", str(gemma2_tokenizer_path()), "--no-progress", *extra])


def test_exclude_drops_prompts_of_an_earlier_build_and_refuses_overlapping_rows(tmp_path, capsys):
    first, second = tmp_path / "s1", tmp_path / "s2"
    assert _build(first, "0:500") == 0 and _build(second, "500:1000", "--exclude", str(first)) == 0
    stats = pl.read_parquet(second / "stats" / "records.parquet")
    excluded = stats.filter(pl.col("status") == "in_excluded_split")
    assert excluded.height > 0 and str(first) in excluded["detail"][0]
    kept_first = set(pl.read_parquet(first / "stats" / "records.parquet").filter(pl.col("status") == "kept")["prompt_hash"])
    kept_second = set(stats.filter(pl.col("status") == "kept")["prompt_hash"])
    assert not kept_first & kept_second
    assert _build(tmp_path / "s3", "400:600", "--exclude", str(first)) == 2
    assert "overlap this build's 400:600 at rows 400:500" in capsys.readouterr().err


def test_eval_split_is_chosen_by_hash_and_stable_across_ranges(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _build(a, "0:400", "--eval-fraction", "0.2") == 0 and _build(b, "200:600", "--eval-fraction", "0.2") == 0
    manifest = json.loads((a / "manifest.json").read_text())
    assert set(manifest["splits"]) == {"train", "eval"} and manifest["splits"]["eval"][0].startswith("shards/eval-")
    sa = pl.read_parquet(a / "stats" / "records.parquet").filter(pl.col("status") == "kept")
    sb = pl.read_parquet(b / "stats" / "records.parquet").filter(pl.col("status") == "kept")
    assert 0.1 < (sa["split"] == "eval").mean() < 0.3
    both = sa.join(sb, on="row").select("row", "split", "split_right")
    assert both.height > 100 and (both["split"] == both["split_right"]).all()
    assert not set(sa.filter(pl.col("split") == "eval")["prompt_hash"]) & set(sa.filter(pl.col("split") == "train")["prompt_hash"])
    assert len(tzc_load(a, "eval")) == manifest["packing"]["by_split"]["eval"]["rows"]


def tzc_load(path, split):
    from tzc_data import load

    return load(path, split)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_resume_after_sigkill_at_several_points_is_byte_identical(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    args = ["--source", "synthetic", "--range", "0:1200", "--tokenizer", str(gemma2_tokenizer_path()),
            "--rows-per-shard", "64", "--no-progress"]
    reference = tmp_path / "ref"
    assert main(["build", "--out", str(reference), *args]) == 0
    out = tmp_path / "run"
    staging = tmp_path / ".run.tzc-partial"

    def reached(point) -> bool:
        if point == "packing":
            return (staging / "shards").exists()
        return len(_markers(staging)) >= point

    killed = 0
    for attempt, point in enumerate([0, 1, 2, 4, "packing"]):
        command = [sys.executable, "-m", "tzc_data.cli", "build", "--out", str(out), *args]
        process = subprocess.Popen(command + (["--resume"] if attempt else []))
        deadline = time.time() + 60
        while process.poll() is None and not reached(point) and time.time() < deadline:
            time.sleep(0.005)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            killed += 1
            assert not out.exists()  # a dead build leaves nothing that looks finished
            from tzc_data.verify import verify
            assert verify([str(staging)])  # and nothing that verify accepts
    assert killed >= 4
    if not out.exists():
        assert main(["build", "--out", str(out), *args, "--resume"]) == 0
    assert _files(out) == _files(reference)


def _markers(staging: Path) -> list[Path]:
    """The done-markers of an interrupted build's units."""
    return sorted(p for p in (staging / ".units").glob("u*.json"))


def test_resume_refuses_units_made_with_other_options_naming_the_first(tmp_path, capsys):
    staging = _killed_staging(tmp_path, ["--range", "0:600"], MARKER, 1)
    assert _build(tmp_path / "run", "0:600", "--seed", "3", "--resume") == 2
    err = capsys.readouterr().err
    assert "made from other inputs or options (--seed was 0, now 3); run without --resume to start over" in err
    assert (staging / ".units" / "u000000.json").exists()  # refused, not cleared


def test_resume_refuses_a_source_file_edited_in_place_since(tmp_path, capsys):
    """One response byte changed in place: the Parquet footer (what the manifest fingerprints) is
    the same, its size too; the file's modification time is not, and the resume is refused."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [generate(0, r) for r in range(400)]
    src = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"prompt": [r.prompt for r in rows], "response": [r.response for r in rows]}), src,
                   row_group_size=100, compression="none", use_dictionary=False, write_statistics=False)
    staging = _killed_staging(tmp_path, ["--source", str(src), "--range", "0:400", "--min-kept-ratio", "0"], MARKER, 1)
    data = bytearray(src.read_bytes())
    at = data.index(b"</think>")
    data[at - 1] = ord("x") if data[at - 1] != ord("x") else ord("y")
    with open(src, "r+b") as handle:
        handle.write(bytes(data))
    assert _build(tmp_path / "run", "0:400", "--source", str(src), "--min-kept-ratio", "0", "--resume") == 2
    err = capsys.readouterr().err
    assert "(the source file rows.parquet changed since: its size or modification time)" in err, err
    assert err.count("\n") == 1 and staging.exists()


def test_exclude_also_drops_near_duplicates_of_the_excluded_build(tmp_path):
    import random

    from tzc_data.sources.generator import _near_variant

    first, second = tmp_path / "s1", tmp_path / "s2"
    assert _build(first, "0:300") == 0
    kept = pl.read_parquet(first / "stats" / "records.parquet").filter(pl.col("status") == "kept")["row"].to_list()
    rng = random.Random(0)
    rows = [generate(0, r) for r in kept[:20]]
    src = tmp_path / "later.jsonl"
    src.write_text("".join(json.dumps({"prompt": _near_variant(r.prompt, rng), "response": r.response}) + "\n"
                           for r in rows))
    assert main(["build", "--source", str(src), "--range", "0:20", "--out", str(second), "--exclude", str(first),
                 "--tokenizer", str(gemma2_tokenizer_path()), "--no-progress", "--min-kept-ratio", "0"]) == 0
    stats = pl.read_parquet(second / "stats" / "records.parquet")
    near = stats.filter(pl.col("detail").str.contains("Jaccard"))
    assert near.height >= 18 and set(near["status"]) == {"in_excluded_split"}


def test_workers_die_with_a_killed_build_and_the_resumed_build_is_identical(tmp_path):
    """SIGKILL gives a build no chance to stop its worker processes: they must go with it (they
    used to wait on their queue for ever), and ``--resume --workers 2`` must end with the bytes of
    an uninterrupted one-process build."""
    import signal
    import subprocess
    import sys
    import time

    args = ["--source", "synthetic", "--range", "0:3000", "--tokenizer", str(gemma2_tokenizer_path()),
            "--no-progress"]
    reference = tmp_path / "ref"
    assert main(["build", "--out", str(reference), *args]) == 0
    out, staging = tmp_path / "run", tmp_path / ".run.tzc-partial"
    process = subprocess.Popen([sys.executable, "-m", "tzc_data.cli", "build", "--out", str(out), *args,
                                "--workers", "2"])
    deadline = time.time() + 60
    while process.poll() is None and not _markers(staging) and time.time() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the build ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()

    def workers_alive() -> list[str]:
        alive = []
        for status in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                command = status.read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "multiprocessing.spawn import spawn_main" in command:
                alive.append(command)
        return alive

    deadline = time.time() + 10
    while workers_alive() and time.time() < deadline:
        time.sleep(0.1)
    assert not workers_alive()
    assert main(["build", "--out", str(out), *args, "--resume", "--workers", "2"]) == 0
    assert _files(out) == _files(reference)

    # Ctrl-C reaches the whole process group: one line from the build, none from its workers.
    out, staging = tmp_path / "ctrl-c", tmp_path / ".ctrl-c.tzc-partial"
    process = subprocess.Popen([sys.executable, "-m", "tzc_data.cli", "build", "--out", str(out), *args,
                                "--workers", "2"], stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 60
    while process.poll() is None and not _markers(staging) and time.time() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the build ended before it could be interrupted"
    os.killpg(process.pid, signal.SIGINT)
    err = process.communicate(timeout=30)[1]
    assert process.returncode == 130 and err == ("tzc-data: interrupted; the same command with --resume keeps the "
                                                 "units it finished\n"), err
    deadline = time.time() + 10
    while workers_alive() and time.time() < deadline:
        time.sleep(0.1)
    assert not workers_alive()
    assert main(["build", "--out", str(out), *args, "--resume"]) == 0
    assert _files(out) == _files(reference)


# -- never destroy, one writer, resumable at every moment (issue 13) ---------------------------------------

# A build killed at an exact moment: a child forked, for each run, from a server process that
# imported tzc and ran nothing (forking pytest itself, whose earlier tests left Arrow, Grain and
# tokenizer threads behind, crashed children). The child's audit hook SIGKILLs it just before its
# K-th file-system change under the server's folder, or records every change.
_KILL_SERVER = r"""
import json, os, re, signal, sys
import tzc_data.cli, tzc_data.build.pipeline

CHANGES = {"os.rename", "os.remove", "os.truncate", "os.mkdir", "os.rmdir", "shutil.rmtree", "shutil.copyfile"}
ROOT = os.getcwd()

def change(event, args):
    if event == "open":
        path, mode, flags = args
        if not (mode and any(c in mode for c in "wax+")) and not (mode is None and flags & (os.O_WRONLY | os.O_RDWR)):
            return None
    elif event in CHANGES:
        path = args[1] if event in ("os.rename", "shutil.copyfile") else args[0]
    else:
        return None
    path = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else ""
    return f"{event} {os.path.relpath(path, ROOT)}" if path.startswith(ROOT) else None

for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # this pipe carries the server's answers only
        seen, matched = [], []
        pattern = request["kill_before"] and re.compile(request["kill_before"])
        def hook(event, args):
            found = change(event, args)
            if found is not None:
                seen.append(found)
                if pattern and pattern.fullmatch(found):
                    matched.append(found)
                if len(seen) == request["kill_at"] or (pattern and len(matched) == request["nth"] + 1):
                    os.kill(os.getpid(), signal.SIGKILL)
        sys.addaudithook(hook)
        code = tzc_data.cli.main(request["argv"])
        with open(request["record"], "w") as handle:
            json.dump(seen, handle)
        os._exit(code)
    print(os.waitpid(pid, 0)[1], flush=True)
"""


class _Killer:
    """Runs ``tzc-data ARGV`` in a child of the server above: :meth:`events` lists the changes an
    uninterrupted run makes, :meth:`kill` SIGKILLs a run just before its K-th change and
    :meth:`kill_before` just before the n-th change a pattern matches.

    Where the order of changes depends on time (done-markers are written in batches at least every
    half second), only :meth:`kill_before` names the same change in every run: a K-th change counted
    on an earlier run may be another file in a slower one."""

    def __init__(self, root: Path):
        import subprocess
        import sys

        self.root = root
        self.server = subprocess.Popen([sys.executable, "-c", _KILL_SERVER], cwd=root, text=True,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def _run(self, argv: list[str], kill_at: int, kill_before: str | None = None, nth: int = 0) -> int:
        record = self.root / "events.json"
        request = {"argv": argv, "kill_at": kill_at, "kill_before": kill_before, "nth": nth, "record": str(record)}
        self.server.stdin.write(json.dumps(request) + "\n")
        self.server.stdin.flush()
        return int(self.server.stdout.readline())

    def events(self, argv: list[str]) -> list[str]:
        assert self._run(argv, 0) == 0
        record = self.root / "events.json"
        events = json.loads(record.read_text())
        record.unlink()
        return events

    def kill(self, argv: list[str], k: int) -> None:
        status = self._run(argv, k)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9, f"the build was not killed at change {k}"

    def kill_before(self, argv: list[str], pattern: re.Pattern, nth: int = 0) -> None:
        status = self._run(argv, 0, pattern.pattern, nth)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9, f"the build made no change {nth} matching {pattern}"

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=30)


def test_a_kill_at_every_file_the_build_writes_resumes_to_the_same_bytes(tmp_path, monkeypatch, tiny_model_path):
    """Kill the build (SIGKILL) just before each file-system change it makes, in order, from the
    first staging file to the removal of the build it replaces; each time, the same command with
    --resume gives the uninterrupted build's bytes, and the replaced build survives until then."""
    monkeypatch.chdir(tmp_path)
    args = ["--source", "synthetic", "--range", "200:320", "--tokenizer", tiny_model_path, "--seq-len", "8192",
            "--rows-per-shard", "16", "--eval-fraction", "0.2", "--keep-rejected",
            "--min-kept-ratio", "0", "--no-progress", "--overwrite"]
    assert main(["build", "--out", "ref", *args]) == 0
    reference = _files(tmp_path / "ref")
    previous = ["build", "--out", "run", *args, "--seed", "1"]
    assert main(previous) == 0
    old = _files(tmp_path / "run")
    killer = _Killer(tmp_path)
    try:
        command = ["build", "--out", "run", *args]
        events = killer.events(command)
        assert sum(e.endswith(".json") and "/.units/u" in e for e in events) >= 2 and "os.rename run" in events
        kills = _first_and_last_of_each_kind(events)
        assert len(kills) >= 20
        print(f"{len(kills)} kill points of {len(events)} file-system changes")
        for k in kills:
            if _files(tmp_path / "run") != old:
                assert main(previous) == 0
            killer.kill(command, k)
            now = _files(tmp_path / "run") if (tmp_path / "run").exists() else None
            assert now is None or now in (old, reference), f"killed at {events[k - 1]}: the old build was damaged"
            assert main([*command, "--resume"]) == 0, f"no resume after a kill at {events[k - 1]}"
            assert _files(tmp_path / "run") == reference, f"killed at {events[k - 1]}: resume gave other bytes"
            assert sorted(p.name for p in tmp_path.iterdir()) == ["ref", "run"]
    finally:
        killer.close()


def _first_and_last_of_each_kind(events: list[str]) -> list[int]:
    """1-based positions of the first and the last change of each kind (the same event on a
    file of the same name but for its numbers: every part file, shard and removal kind)."""
    import re

    where: dict[str, list[int]] = {}
    for k, event in enumerate(events, 1):
        where.setdefault(re.sub(r"\d+", "#", event), []).append(k)
    return sorted({k for ks in where.values() for k in (ks[0], ks[-1])})


def test_an_empty_out_is_refused_and_touches_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    assert _build("", "0:20") == 2
    assert "--out is empty" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_out_inside_a_build_or_inside_the_source_folder_is_refused(synthetic_build, tmp_path, capsys):
    """A build's folders hold only its files (a stray one makes it no longer provably a build), and a
    build inside a folder source would be read as input by the next build of that folder."""
    for inside in (synthetic_build / "stats" / "sub", synthetic_build / "new"):
        assert _build(inside, "0:20") == 2
        assert f"is inside the tzc build {synthetic_build}" in capsys.readouterr().err
        assert not inside.exists()
    src = tmp_path / "src"
    src.mkdir()
    (src / "rows.jsonl").write_text(json.dumps({"prompt": "p", "response": "<think>r</think>a"}) + "\n")
    for spec in (str(src), str(src / "**" / "*.jsonl")):
        assert main(["build", "--source", spec, "--range", "0:1", "--out", str(src / "out"), "--tokenizer",
                     str(gemma2_tokenizer_path()), "--no-progress", "--min-kept-ratio", "0"]) == 2
        assert f"is inside the source folder {src}" in capsys.readouterr().err
    assert os.listdir(src) == ["rows.jsonl"]


def test_overwrite_never_empties_a_folder_that_is_not_a_build(tmp_path, capsys):
    home = tmp_path / "home"
    for name in ("thesis.txt", "photos/cat.jpg", ".ssh/id_ed25519"):
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).write_text("mine")
    (home / "manifest.json").write_text('{"tzc_version": "0.1.0", "format_version": 1}')
    before = _files(home)
    assert _build(home, "0:20", "--overwrite") == 2
    err = capsys.readouterr().err
    assert "is not a tzc build (it holds '.ssh'" in err and "--overwrite" not in err.split("error:")[1]
    assert _files(home) == before and sorted(os.listdir(tmp_path)) == ["home"]


def test_a_symlink_out_and_a_leftover_that_is_not_a_build_are_refused(tmp_path, capsys):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert _build(tmp_path / "link", "0:20") == 2
    assert "is a symlink" in capsys.readouterr().err
    (tmp_path / ".run.tzc-partial.old").mkdir()
    (tmp_path / ".run.tzc-partial.old" / "mine.txt").write_text("mine")
    assert _build(tmp_path / "run", "0:20") == 2
    assert "is left from an earlier replacement and is not a tzc build" in capsys.readouterr().err
    assert (tmp_path / ".run.tzc-partial.old" / "mine.txt").read_text() == "mine"


def test_report_and_export_never_write_over_a_build(synthetic_build, capsys):
    before = _files(synthetic_build)
    shard = json.loads((synthetic_build / "manifest.json").read_text())["shards"][0]["file"]
    assert main(["report", str(synthetic_build), "-o", str(synthetic_build / "manifest.json")]) == 2
    assert main(["export", str(synthetic_build), "-o", str(synthetic_build / shard)]) == 2
    assert capsys.readouterr().err.count("is inside the tzc build") == 2
    assert _files(synthetic_build) == before


def test_report_and_export_replace_an_existing_file_only_with_overwrite(synthetic_build, tmp_path, capsys):
    thesis = tmp_path / "thesis.txt"
    thesis.write_text("mine")
    for command in (["report", str(synthetic_build)], ["export", str(synthetic_build), "--format", "parquet"]):
        assert main([*command, "-o", str(thesis)]) == 2
        assert capsys.readouterr().err == f"tzc-data: error: -o {thesis} exists; pass --overwrite to replace it\n"
        assert thesis.read_text() == "mine"
    assert main(["report", str(synthetic_build), "-o", str(thesis), "--overwrite"]) == 0
    assert thesis.read_text().startswith("<!doctype html>")


def test_a_second_build_into_the_same_out_is_refused_naming_the_first(tmp_path, capsys):
    import subprocess
    import sys
    import time

    out, staging = tmp_path / "run", tmp_path / ".run.tzc-partial"
    first = subprocess.Popen([sys.executable, "-m", "tzc_data.cli", "build", "--source", "synthetic", "--range",
                              "0:2000", "--out", str(out), "--tokenizer", str(gemma2_tokenizer_path()),
                              "--no-progress"], stdout=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (staging / ".units").exists() and not (staging / "stats").exists() and time.time() < deadline:
        time.sleep(0.01)
    assert _build(out, "0:2000", "--seed", "1") == 2
    assert f"another build (pid {first.pid}) is writing --out {out}" in capsys.readouterr().err
    assert first.wait(timeout=120) == 0
    assert json.loads((out / "manifest.json").read_text())["config"]["seed"] == 0


def test_resume_refuses_a_unit_whose_tokens_lost_their_tail(tmp_path, capsys):
    args = ["--no-near-dup"]
    out, staging = tmp_path / "run", tmp_path / ".run.tzc-partial"
    command = ["build", "--source", "synthetic", "--range", "0:400", "--out", str(out), "--tokenizer",
               str(gemma2_tokenizer_path()), "--no-progress", *args]
    killer = _Killer(tmp_path)
    try:  # killed just before the second unit's marker: the first unit stands
        killer.kill_before(command, MARKER, 1)
    finally:
        killer.close()
    tokens = staging / ".units" / "u000000.tokens"
    os.truncate(tokens, tokens.stat().st_size // 2)
    assert _build(out, "0:400", *args, "--resume") == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "u000000.tokens" in err and "run without --resume" in err
    assert staging.exists() and not out.exists()
    assert _build(out, "0:400", *args) == 0  # starting over works


def _tmpfs(path: Path, size: str) -> None:
    import subprocess

    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)


def test_disk_full_is_one_line_and_the_build_resumes_once_there_is_room(tmp_path, capsys):
    import subprocess

    args = ["--rows-per-shard", "64"]
    assert _build(tmp_path / "ref", "0:600", *args) == 0
    disk = tmp_path / "disk"
    _tmpfs(disk, "2m")
    try:
        assert _build(disk / "run", "0:600", *args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no space left on the device" in err and "--resume" in err
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        assert _build(disk / "run", "0:600", *args, "--resume") == 0
        assert _files(disk / "run") == _files(tmp_path / "ref")
        assert sorted(os.listdir(disk)) == ["run"]
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_read_only_out_is_one_line_naming_the_path(tmp_path, capsys):
    import subprocess

    disk = tmp_path / "ro"
    _tmpfs(disk, "1m")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        assert _build(disk / "run", "0:20") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{disk}/.run.tzc-partial: Read-only file system" in err
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_out_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("mine")
    assert _build(tmp_path / "f" / "run", "0:20") == 2
    assert f"{tmp_path}/f is not a directory" in capsys.readouterr().err


def test_build_help_shows_no_default_for_flags(capsys):
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    text = capsys.readouterr().out
    assert "(default: True)" not in text and "(default: False)" not in text and "(default: 4096)" in text


def test_first_kept_wins_across_exact_and_near_dedup_and_survives_a_resume(tmp_path, clean_traces):
    """Rows A, A' (one word changed), A': row 2's twin is row 0, the kept one, in an uninterrupted
    build and in one killed between the unit of rows 0 and 1 and the unit of row 2, and resumed."""
    import random

    from tzc_data.sources.generator import _near_variant, _prompt

    a = _prompt(5, 0)
    a_prime = _near_variant(a, random.Random(1))
    prompts = [a, a_prime, a_prime] + [_prompt(5, k) for k in range(1, 6)]
    source = tmp_path / "rows"
    source.mkdir()
    lines = [json.dumps({"prompt": p, "response": clean_traces[i]["response"]}) + "\n" for i, p in enumerate(prompts)]
    (source / "a.jsonl").write_text("".join(lines[:2]))  # a file is at least one unit
    (source / "b.jsonl").write_text("".join(lines[2:]))
    args = ["--source", str(source), "--min-kept-ratio", "0"]
    assert _build(tmp_path / "ref", f"0:{len(prompts)}", *args) == 0
    stats = pl.read_parquet(tmp_path / "ref" / "stats" / "records.parquet").head(3)
    assert stats.select("status", "twin").rows() == [("kept", None), ("near_duplicate", 0), ("near_duplicate", 0)]
    command = ["build", "--range", f"0:{len(prompts)}", "--out", str(tmp_path / "run"), "--tokenizer",
               str(gemma2_tokenizer_path()), "--no-progress", *args]
    killer = _Killer(tmp_path)
    try:  # killed just before the second unit's marker: the first one, rows 0 and 1, stands
        killer.kill_before(command, MARKER, 1)
    finally:
        killer.close()
    assert _build(tmp_path / "run", f"0:{len(prompts)}", *args, "--resume") == 0
    assert _files(tmp_path / "run") == _files(tmp_path / "ref")


MARKER = re.compile(r"os\.rename \.run\.tzc-partial/\.units/u\d{6}\.json")


def _killed_staging(tmp_path: Path, args: list[str], before: re.Pattern | str, nth: int = 0) -> Path:
    """A build into ``tmp_path/run`` killed just before the ``nth`` change that ``before`` matches
    (a pattern, or the change itself)."""
    before = re.compile(re.escape(before)) if isinstance(before, str) else before
    command = ["build", "--source", "synthetic", "--out", str(tmp_path / "run"), "--tokenizer",
               str(gemma2_tokenizer_path()), "--no-progress", *args]
    killer = _Killer(tmp_path)
    try:
        killer.kill_before(command, before, nth)
    finally:
        killer.close()
    return tmp_path / ".run.tzc-partial"


@pytest.mark.parametrize("damage", ["tokens byte", "table byte", "tables swapped", "table truncated", "table missing",
                                    "marker edited", "marker field", "plan edited"])
def test_resume_refuses_a_staging_folder_whose_contents_changed(tmp_path, capsys, damage):
    """Not only missing or short files: any byte changed in a finished unit is refused, with one
    line, and the folder is left as it was."""
    args = ["--range", "0:1000"]
    staging = _killed_staging(tmp_path, args, MARKER, 3)
    units = staging / ".units"

    def flip(path: Path, at: int) -> None:
        data = bytearray(path.read_bytes())
        data[at] ^= 0x01
        path.write_bytes(bytes(data))

    marker = json.loads((units / "u000001.json").read_text())
    if damage == "tokens byte":
        flip(units / "u000001.tokens", 4000)
    elif damage == "table byte":
        flip(units / "u000001.arrow", 300)
    elif damage == "tables swapped":
        first, second = (units / "u000000.arrow").read_bytes(), (units / "u000001.arrow").read_bytes()
        (units / "u000000.arrow").write_bytes(second)
        (units / "u000001.arrow").write_bytes(first)
    elif damage == "table truncated":
        os.truncate(units / "u000001.arrow", 100)
    elif damage == "table missing":
        os.remove(units / "u000000.arrow")
    elif damage == "marker edited":
        marker["counts"]["kept"] += 1
        (units / "u000001.json").write_text(json.dumps(marker))
    elif damage == "marker field":
        del marker["files"]
        (units / "u000001.json").write_text(json.dumps(marker))
    else:
        (units / "plan.json").write_text("{")
    before = set(_files(staging))
    assert _build(tmp_path / "run", "0:1000", "--resume") == 2
    err = capsys.readouterr().err
    assert err.startswith("tzc-data: error:") and err.count("\n") == 1 and "run without --resume" in err, err
    assert set(_files(staging)) == before and not (tmp_path / "run").exists()
    assert _build(tmp_path / "run", "0:1000", "--resume") == 2  # and it keeps refusing
    assert capsys.readouterr().err == err


def test_resume_of_a_published_build_is_a_no_op(tmp_path, capsys):
    assert _build(tmp_path / "run", "0:40") == 0
    before = _files(tmp_path / "run")
    assert _build(tmp_path / "run", "0:40", "--resume") == 0
    assert _files(tmp_path / "run") == before
    assert _build(tmp_path / "run", "0:40", "--seed", "1", "--resume") == 2  # another build: --overwrite
    assert "pass --overwrite" in capsys.readouterr().err


def test_a_file_put_into_a_finished_staging_folder_is_not_published(tmp_path, capsys):
    staging = _killed_staging(tmp_path, ["--range", "0:100"], "os.remove .run.tzc-partial/.tzc-staging.json")
    (staging / "notes.txt").write_text("mine")
    assert _build(tmp_path / "run", "0:100", "--resume") == 2
    assert ".run.tzc-partial holds 'notes.txt', which a build does not write; move it away" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and (staging / "notes.txt").read_text() == "mine"
    (staging / "notes.txt").unlink()
    assert _build(tmp_path / "run", "0:100", "--resume") == 0


def test_a_build_replaced_while_a_new_one_runs_is_not_renamed_aside(tmp_path, synthetic_build):
    """--overwrite checked --out when it started; if --out stopped being a build meanwhile (a user
    wrote into it), publishing refuses before renaming anything."""
    from tzc_data import files
    from tzc_data.build.publish import publish
    from tzc_data.errors import OutputError

    staging, out = tmp_path / ".run.tzc-partial", tmp_path / "run"
    shutil.copytree(synthetic_build, staging)
    (staging / files.STAGING_MARKER).write_text("{}")
    shutil.copytree(synthetic_build, out)
    (out / "thesis.txt").write_text("mine")
    with pytest.raises(OutputError, match="is no longer a tzc build"):
        publish(str(staging), str(out), overwrite=True)
    assert (out / "thesis.txt").read_text() == "mine" and (staging / "manifest.json").exists()
    assert sorted(os.listdir(tmp_path)) == [".run.tzc-partial", "run"]


def test_a_symlink_where_the_replaced_build_goes_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    os.symlink(tmp_path / "empty", tmp_path / ".run.tzc-partial.old")
    assert _build(tmp_path / "run", "0:20") == 2
    assert "is a symlink where tzc keeps a build it replaces" in capsys.readouterr().err


def test_outputs_through_a_symlinked_folder_or_to_an_unwritable_place_are_one_line(synthetic_build, tmp_path, capsys):
    os.symlink(synthetic_build / "stats", tmp_path / "statslink")
    before = _files(synthetic_build)
    assert main(["report", str(synthetic_build), "-o", str(tmp_path / "statslink" / "records.parquet")]) == 2
    assert "is inside the tzc build" in capsys.readouterr().err
    assert main(["report", str(synthetic_build), "-o", "/proc/report.html"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tzc-data: error:") and err.count("\n") == 1
    assert main(["explain", str(synthetic_build), "--reason", "loop", "-n", "-5"]) == 2
    assert "-n -5: must be at least 1" in capsys.readouterr().err
    assert main(["build", "--source", "synthetic", "--range", "0:10", "--out", str(tmp_path / "x"),
                 "--tokenizer", str(tmp_path)]) == 2
    assert "is a directory, not a SentencePiece model file" in capsys.readouterr().err
    assert _files(synthetic_build) == before


def _interrupted(monkeypatch, argv: list[str]) -> None:
    """Run ``tzc-data build ARGV`` until every unit is done, then stop it as a kill would (the
    step after the map raises KeyboardInterrupt): its staging folder holds the units and the plan."""
    from tzc_data.build import pipeline

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "_write_build", stop)
        assert main(argv) == 130


def _tiny_build(source, out, range_, tokenizer, *extra):
    return ["build", "--source", str(source), "--range", range_, "--out", str(out), "--tokenizer", tokenizer,
            "--min-kept-ratio", "0", "--no-progress", *extra]


def test_resume_refuses_an_excluded_build_rebuilt_in_place_since(tmp_path, capsys, monkeypatch, tiny_model_path):
    """The units drop the excluded build's prompts: an --exclude rebuilt in place (same path, other
    prompts) since the interruption refuses the resume, naming it."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(_tiny_build("synthetic", a, "0:60", tiny_model_path)) == 0
    _interrupted(monkeypatch, _tiny_build("synthetic", b, "60:120", tiny_model_path, "--exclude", str(a)))
    assert main(_tiny_build("synthetic", a, "0:60", tiny_model_path, "--seed", "5", "--overwrite")) == 0
    capsys.readouterr()
    assert main(_tiny_build("synthetic", b, "60:120", tiny_model_path, "--exclude", str(a), "--resume")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--exclude {a} changed since (it was rebuilt" in err and "without --resume" in err
    # unchanged, the same resume is accepted
    _interrupted(monkeypatch, _tiny_build("synthetic", b, "60:120", tiny_model_path, "--exclude", str(a)))
    assert main(_tiny_build("synthetic", b, "60:120", tiny_model_path, "--exclude", str(a), "--resume")) == 0


def test_a_refused_resume_names_the_added_file_and_the_range_option(tmp_path, capsys, monkeypatch, tiny_model_path):
    src = tmp_path / "src"
    src.mkdir()
    line = json.dumps({"prompt": "What is 2 + 2?", "response": "<think>Two and two.</think>Four."}) + "\n"
    (src / "a.jsonl").write_text(line * 4)
    out = tmp_path / "out"
    _interrupted(monkeypatch, _tiny_build(src, out, "0:4", tiny_model_path))
    (src / "b.jsonl").write_text(line)
    capsys.readouterr()
    assert main(_tiny_build(src, out, "0:4", tiny_model_path, "--resume")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(the source changed since: b.jsonl was added (2 files now, 1 when built))" in err
    (src / "b.jsonl").unlink()
    assert main(_tiny_build(src, out, "0:3", tiny_model_path, "--resume")) == 2
    err = capsys.readouterr().err
    assert "(--range was 0:4, now 0:3)" in err and "--stop" not in err


def test_resume_may_change_what_only_the_shards_and_the_guardrail_read(tmp_path, capsys, monkeypatch,
                                                                        tiny_model_path):
    """--rows-per-shard, --compression and --min-kept-ratio do not enter the units: a resume may
    change them, to the bytes of an uninterrupted build with the new values. A guardrail failure
    keeps the finished units, so a lower --min-kept-ratio resumes from them."""
    reference, out = tmp_path / "ref", tmp_path / "run"
    new = ["--rows-per-shard", "2", "--compression", "uncompressed"]
    assert main(_tiny_build("synthetic", reference, "0:80", tiny_model_path, *new)) == 0
    _interrupted(monkeypatch, _tiny_build("synthetic", out, "0:80", tiny_model_path))
    assert main(_tiny_build("synthetic", out, "0:80", tiny_model_path, *new, "--resume")) == 0
    assert _files(out) == _files(reference)
    guarded = tmp_path / "guarded"
    argv = _tiny_build("synthetic", guarded, "0:80", tiny_model_path, *new)
    argv[argv.index("--min-kept-ratio") + 1] = "0.999"
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume and a lower --min-kept-ratio" in err
    assert main(_tiny_build("synthetic", guarded, "0:80", tiny_model_path, *new, "--resume")) == 0
    assert _files(guarded) == _files(reference)


def test_a_source_file_rewritten_during_the_build_is_refused(tmp_path, capsys, monkeypatch, tiny_model_path):
    """b.jsonl rewritten (same row count) right after plan.json is written: the build fails in one
    line naming it, never publishing rows of other bytes under the surveyed sha256."""
    from tzc_data.build import pipeline, units

    src = tmp_path / "src"
    src.mkdir()
    rows = [generate(4, i) for i in range(6)]
    for name, part in (("a.jsonl", rows[:3]), ("b.jsonl", rows[3:])):
        (src / name).write_text("".join(json.dumps({"prompt": r.prompt, "response": r.response}) + "\n" for r in part))
    real = units.start_plan

    def plan_then_rewrite(*args, **kwargs):
        real(*args, **kwargs)
        later = os.stat(src / "b.jsonl").st_mtime_ns + 10**9
        (src / "b.jsonl").write_text((src / "a.jsonl").read_text())
        os.utime(src / "b.jsonl", ns=(later, later))

    monkeypatch.setattr(pipeline.units, "start_plan", plan_then_rewrite)
    assert main(_tiny_build(src, tmp_path / "out", "0:6", tiny_model_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "source file b.jsonl changed while the build read it" in err
    assert not (tmp_path / "out").exists()
