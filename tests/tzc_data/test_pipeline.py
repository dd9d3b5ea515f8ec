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


def test_same_inputs_give_byte_identical_outputs(synthetic_build, tmp_path):
    again = tmp_path / "again"
    assert main(["build", "--source", "synthetic", "--range", f"{RANGE[0]}:{RANGE[1]}", "--out", str(again),
                 "--tokenizer", str(gemma2_tokenizer_path()), "--rows-per-shard", "100", "--no-progress"]) == 0
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
    assert manifest["source"]["files"] == [{"path": "rows.jsonl", "bytes": os.path.getsize(src)}]
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
