"""End to end: `tzc-data build` on a synthetic range and on a JSONL file with malformed lines."""

import hashlib
import json
import os
from pathlib import Path

import grain
import numpy as np
import polars as pl
import pytest
from array_record.python.array_record_module import ArrayRecordReader

from tzc_data import format as fmt
from tzc_data.cli import main
from tzc_data.pack import check_row, decode_row
from tzc_data.synthetic import generate
from tzc_data.tokenize import gemma2_tokenizer_path

RANGE = (1000, 1600)


@pytest.fixture(scope="module")
def synthetic_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "session"
    code = main(["build", "--source", "synthetic", "--range", f"{RANGE[0]}:{RANGE[1]}", "--out", str(out),
                 "--tokenizer", str(gemma2_tokenizer_path()), "--rows-per-shard", "100", "--no-progress"])
    assert code == 0
    return out


def _records(out: Path):
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
    manifest, rows = _records(synthetic_build)
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
    assert not out.exists() and not any(p.name.startswith(".tiny") for p in tmp_path.iterdir())


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
            "--checkpoint-every", "100", "--rows-per-shard", "64", "--no-progress"]
    reference = tmp_path / "ref"
    assert main(["build", "--out", str(reference), *args]) == 0
    out = tmp_path / "run"
    staging = tmp_path / ".run.tzc-partial"

    def reached(point) -> bool:
        if point == "packing":
            return (staging / "shards").exists()
        try:
            return json.loads((staging / ".checkpoint.json").read_text())["next_row"] >= point
        except (OSError, ValueError):
            return False

    killed = 0
    for attempt, point in enumerate([0, 300, 700, 1100, "packing"]):
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


def test_resume_refuses_a_checkpoint_made_with_other_options(tmp_path, capsys):
    staging = tmp_path / ".run.tzc-partial"
    staging.mkdir()
    (staging / ".checkpoint.json").write_text(json.dumps({"identity": {"config": "other"}, "next_row": 5}))
    assert _build(tmp_path / "run", "0:50", "--resume") == 2
    assert "run without --resume to start over" in capsys.readouterr().err


def test_exclude_also_drops_near_duplicates_of_the_excluded_build(tmp_path):
    import random

    from tzc_data.synthetic import _near_variant

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
            "--checkpoint-every", "250", "--no-progress"]
    reference = tmp_path / "ref"
    assert main(["build", "--out", str(reference), *args]) == 0
    out, staging = tmp_path / "run", tmp_path / ".run.tzc-partial"
    process = subprocess.Popen([sys.executable, "-m", "tzc_data.cli", "build", "--out", str(out), *args,
                                "--workers", "2"])
    deadline = time.time() + 60
    while process.poll() is None and not (staging / ".checkpoint.json").exists() and time.time() < deadline:
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
