"""The package's front door: specs to sources, manifests' descriptions to kinds, and the CLI on top."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tzc_data.errors import SourceError
from tzc_data.record import Example
from tzc_data.sources import KINDS, FileSetSource, Source, SyntheticSource, Unit, open_source, reopen, source_identity
from tzc_data.sources.base import validate
from tzc_data.sources.generator import generate

from .helpers import GOOD, corrupt_group, write_jsonl


def test_open_source_turns_each_spec_into_its_kind(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps(GOOD) + "\n")
    assert open_source("synthetic", seed=4) == SyntheticSource(seed=4)
    assert isinstance(open_source(str(tmp_path)), FileSetSource)
    with pytest.raises(SourceError, match="^--revision applies only to --source hf$"):
        open_source(str(tmp_path), revision="v1")
    assert set(KINDS) == {"hf", "local", "synthetic"} and all(cls.kind == kind for kind, cls in KINDS.items())


def test_descriptions_of_unknown_kinds():
    assert source_identity({"kind": "test", "files": ["a", "b"]}) == ("test", ("a", "b"))  # as files are
    with pytest.raises(SourceError, match="unknown source kind 'ftp' \\(known: hf, local, synthetic\\)"):
        reopen({"kind": "ftp"})


def test_a_unit_holds_rows_and_a_source_must_say_what_it_is():
    with pytest.raises(ValueError, match="at least one row"):
        Unit(index=0, start=3, stop=3, where="x", locator=())
    assert Unit(index=0, start=3, stop=5, where="x", locator=(1,)).rows == 2

    class Partial(Source):  # no describe, identity, reopen...
        kind = "partial"

        def plan(self, start, stop):
            return []

    with pytest.raises(TypeError):
        Partial()
    with pytest.raises(SourceError, match="is not a range of rows"):
        SyntheticSource().plan(5, 3)
    assert validate(0, {"prompt": "p", "response": "r"}) == Example(row=0, prompt="p", response="r")


def test_a_build_past_the_end_fails_before_reading_and_says_how_many_rows(tmp_path, capsys, tiny_model_path):
    from tzc_data.cli import main

    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(GOOD) + "\n" for _ in range(30)))
    code = main(["build", "--source", str(tmp_path / "rows.jsonl"), "--range", "10:50", "--out",
                 str(tmp_path / "out"), "--tokenizer", tiny_model_path, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err == ("tzc-data: error: range 10:50 goes past the end of the source: it holds only 30 rows (1 file), "
                   "so rows 30..49 do not exist\n")
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.tzc-partial").exists()


def test_explain_refuses_a_source_changed_since_the_build(tmp_path, capsys, tiny_model_path):
    from tzc_data.cli import main

    src = tmp_path / "rows.jsonl"
    lines = [json.dumps({"prompt": generate(2, i).prompt, "response": generate(2, i).response[:800] + "\n</think>\nOk."})
             for i in range(12)]
    lines[4] = json.dumps({"prompt": "Count the sheep please", "response": "<think>no end"})
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main(["build", "--source", str(src), "--range", "0:12", "--out", str(out), "--tokenizer", tiny_model_path,
                 "--seq-len", "2048", "--no-progress", "--min-kept-ratio", "0"]) == 0
    capsys.readouterr()
    assert main(["explain", str(out), "--reason", "unterminated_think", "--no-colour"]) == 0
    assert "Count the sheep please" in capsys.readouterr().out
    src.write_text(src.read_text().replace("Count the sheep please", "Count the goats please"))
    assert main(["explain", str(out), "--reason", "unterminated_think", "--no-colour"]) == 0
    shown = capsys.readouterr().out
    assert "goats" not in shown and "sheep" not in shown
    assert "(texts unavailable: the source is not the one this build read: rows.jsonl has sha256 " in shown


def test_a_build_of_a_hostile_folder_accounts_for_every_row(tmp_path, tiny_model_path):
    from tzc_data.cli import main

    src = tmp_path / "src"
    src.mkdir()
    good = [json.dumps({"prompt": generate(6, i).prompt, "response": generate(6, i).response[:700] + "</think>ok"})
            for i in range(20)]
    write_jsonl(src / "a.jsonl", [b"\xef\xbb\xbf" + good[0].encode(), *(g.encode() for g in good[1:8]),
                                  b'{"prompt": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
                                  b'{"prompt": "p", "response": "r", "n": ' + b"1" * 5000 + b"}"])
    pq.write_table(pa.Table.from_arrays([pa.array(["a"] * 3), pa.array(["b"] * 3), pa.array(["c"] * 3)],
                                        names=["prompt", "prompt", "response"]), src / "b.parquet")
    rows = [json.loads(g) for g in good[8:]]
    pq.write_table(pa.table({"prompt": [r["prompt"] for r in rows], "response": [r["response"] for r in rows]}),
                   src / "c.parquet", row_group_size=4, compression="zstd")
    corrupt_group(src / "c.parquet", 1, step=13)
    out = tmp_path / "out"
    assert main(["build", "--source", str(src), "--range", "0:25", "--out", str(out), "--tokenizer", tiny_model_path,
                 "--seq-len", "2048", "--no-progress", "--min-kept-ratio", "0"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["read"] == 25 == counts["kept"] + counts["dropped"] == sum(counts["by_status"].values())
    assert counts["by_status"]["malformed"] == 2 + 3 + 4  # a.jsonl lines 9-10, b.parquet, c.parquet group 1
    assert [f["rows"] for f in manifest["source"]["files"]] == [10, 3, 12]
    import polars as pl

    details = pl.read_parquet(out / "stats" / "records.parquet").filter(pl.col("status") == "malformed")["detail"]
    assert [d.split(":")[0] for d in details] == ["a.jsonl line 9", "a.jsonl line 10"] + ["b.parquet has 2 columns "
                                                 "named 'prompt'"] * 3 + ["c.parquet row group 1"] * 4
