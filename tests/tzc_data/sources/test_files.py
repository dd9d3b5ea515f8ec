import gzip
import hashlib
import json
import os
import pickle
import shutil
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tzc_data.errors import SourceError
from tzc_data.sources import FileSetSource, changed_since, local_source, read, reopen, source_identity
from tzc_data.sources.generator import generate

from .helpers import GOOD, as_tuples, corrupt_group, jsonl_line, write_rows


def test_local_sources_share_global_row_indices_across_files_in_name_order(tmp_path):
    rows = [generate(1, i) for i in range(30)]
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as handle:
        for r in rows[10:20]:
            handle.write(jsonl_line(r) + "\n")
    (tmp_path / "a.jsonl").write_text("".join(jsonl_line(r) + "\n" for r in rows[:10]))
    write_rows(tmp_path / "c.parquet", rows[20:], row_group_size=3)
    got = list(read(local_source(str(tmp_path)), 5, 27))
    assert [(e.row, e.prompt) for e in got] == [(i, rows[i].prompt) for i in range(5, 27)]
    assert [e.row for e in read(local_source(str(tmp_path / "*.jsonl*")), 12, 15)] == [12, 13, 14]


def test_unreadable_sources_are_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="not a file, a directory, or a glob"):
        local_source(str(tmp_path / "missing*.jsonl"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SourceError, match="holds no .parquet"):
        local_source(str(tmp_path))
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SourceError, match="Parquet footer"):
        list(read(local_source(str(tmp_path / "bad.parquet")), 0, 1))


def test_symlink_loops_dangling_links_and_directories_named_like_files_are_clear_errors(tmp_path):
    (tmp_path / "ok.jsonl").write_text(json.dumps(GOOD) + "\n")
    loop = tmp_path / "loop"
    loop.mkdir()
    (loop / "ok.jsonl").write_text(json.dumps(GOOD) + "\n")
    os.symlink(loop / "b.jsonl", loop / "a.jsonl")
    os.symlink(loop / "a.jsonl", loop / "b.jsonl")
    with pytest.raises(SourceError, match=r"a\.jsonl is a symlink loop$"):
        local_source(str(loop))
    dangling = tmp_path / "dangling"
    dangling.mkdir()
    os.symlink(tmp_path / "gone.jsonl", dangling / "x.jsonl")
    with pytest.raises(SourceError, match=r"x\.jsonl is a dangling symlink to '.*gone\.jsonl'$"):
        local_source(str(dangling))
    with pytest.raises(SourceError, match="dangling symlink"):
        local_source(str(dangling / "x.jsonl"))  # named on its own: the same
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(SourceError, match=r"d\.jsonl is a directory, not a file"):
        local_source(str(tmp_path / "*.jsonl"))
    os.mkfifo(tmp_path / "fifo.jsonl")
    with pytest.raises(SourceError, match="not a regular file"):
        local_source(str(tmp_path / "fifo.jsonl"))
    linked = tmp_path / "linked"
    linked.mkdir()
    os.symlink(tmp_path / "ok.jsonl", linked / "to-ok.jsonl")  # a link to a file is that file
    assert [e.prompt for e in read(local_source(str(linked)), 0, 1)] == ["p"]


def test_an_unreadable_folder_or_file_is_a_clear_error(tmp_path, monkeypatch):
    """Permission denied, simulated (the tests may run as root, who reads everything)."""
    import builtins

    import tzc_data.sources.files as files_module

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.jsonl").write_text(json.dumps(GOOD) + "\n")
    (tmp_path / "b.jsonl").write_text(json.dumps(GOOD) + "\n")
    real_scandir, real_open = os.scandir, builtins.open

    def scandir(path="."):
        if str(path).endswith("sub"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    def open_(path, *args, **kwargs):
        if str(path).endswith("b.jsonl"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(SourceError, match="cannot list .*sub: Permission denied"):
        local_source(str(tmp_path))  # os.walk would skip the folder and its rows without a word
    monkeypatch.setattr(os, "scandir", real_scandir)
    monkeypatch.setattr(files_module, "open", open_, raising=False)
    with pytest.raises(SourceError, match="cannot open .*b.jsonl: Permission denied"):
        local_source(str(tmp_path / "b.jsonl"))


def test_symlinked_folders_are_followed_once_and_a_folder_loop_ends(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "b.jsonl").write_text(json.dumps(GOOD) + "\n")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jsonl").write_text(json.dumps(GOOD) + "\n")
    os.symlink(elsewhere, src / "part2")  # data kept on another disk: its rows belong to the source
    os.symlink(elsewhere, src / "part3")  # the same folder again: read once
    os.symlink(src, src / "loop")  # a link to a parent: the walk still ends
    files = [f["path"] for f in local_source(str(src)).describe()["files"]]
    assert files == ["a.jsonl", os.path.join("part2", "b.jsonl")]


def test_local_sources_know_their_row_counts_and_skip_whole_files(tmp_path):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(GOOD) + "\n" for _ in range(5)) + "\n\n")
    pq.write_table(pa.table({"prompt": ["q"] * 7, "response": ["r"] * 7}), tmp_path / "b.parquet")
    source = local_source(str(tmp_path))
    assert source.file_rows == (5, 7)
    with pytest.raises(SourceError, match="holds only 12 rows"):
        source.check_range(0, 13)
    with pytest.raises(SourceError, match="holds only 12 rows"):
        source.plan(0, 13)
    (tmp_path / "a.jsonl").write_text("garbage that is not read\n")  # before the range: not opened
    assert [e.prompt for e in read(source, 5, 12)] == ["q"] * 7


def test_the_description_fingerprints_each_file_and_survives_a_copy(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jsonl").write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n")
    pq.write_table(pa.table({"prompt": ["q"] * 3, "response": ["r"] * 3}), src / "b.parquet")
    before = local_source(str(src)).describe()
    a, b = before["files"]
    assert a == {"path": "a.jsonl", "bytes": os.path.getsize(src / "a.jsonl"), "rows": 2,
                 "sha256": hashlib.sha256((src / "a.jsonl").read_bytes()).hexdigest()}
    footer = (src / "b.parquet").read_bytes()
    length = int.from_bytes(footer[-8:-4], "little")
    assert b == {"path": "b.parquet", "bytes": len(footer), "rows": 3,
                 "footer_sha256": hashlib.sha256(footer[-8 - length:]).hexdigest()}
    assert set(before) == {"kind", "spec", "files"}  # the units' offsets stay out of the manifest
    time.sleep(0.01)
    shutil.copytree(src, tmp_path / "copy")  # new mtimes, same bytes: the same source
    assert changed_since(before, local_source(str(tmp_path / "copy")).describe()) is None
    # Same size, other bytes: a change that size and mtime would both miss after a copy.
    (tmp_path / "copy" / "a.jsonl").write_text(json.dumps(GOOD).replace("p", "P") + "\n" + json.dumps(GOOD) + "\n")
    after = local_source(str(tmp_path / "copy")).describe()
    assert changed_since(before, after).startswith("a.jsonl has sha256 ")
    assert source_identity(before) == source_identity(after)  # still the same row space for --exclude / verify
    os.remove(tmp_path / "copy" / "b.parquet")
    assert changed_since(before, local_source(str(tmp_path / "copy")).describe()) == "b.parquet is gone (1 file now, 2 when built)"
    old = {**before, "files": [{"path": f["path"], "bytes": f["bytes"]} for f in before["files"]]}
    assert "recorded no fingerprint" in changed_since(old, before)


def test_a_local_source_reopens_at_its_spec_and_keeps_its_identity(tmp_path, monkeypatch):
    (tmp_path / "a.jsonl").write_text(json.dumps(GOOD) + "\n")
    monkeypatch.chdir(tmp_path)
    recorded = local_source("a.jsonl").describe()
    again = reopen(recorded)
    assert isinstance(again, FileSetSource) and again.describe() == recorded
    assert source_identity(recorded) == ("local", (("a.jsonl", os.path.getsize("a.jsonl")),))
    assert changed_since(recorded, {"kind": "synthetic", "seed": 0}) == ("it is a synthetic source now, the build "
                                                                         "read a local one")


# ---------------------------------------------------------------------------------------------
# Plans: units are the data's own pieces, clipped; reading them is reading the range


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """a.parquet: 3 groups of 7 (group 1 corrupt); b.jsonl: 23 rows in blocks of 5 (unit size 5), one
    bad line; c.parquet: 17 rows in groups of 4; d.jsonl.gz: 6 rows. Returns (folder, rows)."""
    folder = tmp_path_factory.mktemp("mixed")
    rows = [generate(8, i) for i in range(21 + 23 + 17 + 6)]
    write_rows(folder / "a.parquet", rows[:21], row_group_size=7, compression="zstd")
    corrupt_group(folder / "a.parquet", 1, step=13)
    lines = [jsonl_line(r) for r in rows[21:44]]
    lines[9] = "{broken"
    (folder / "b.jsonl").write_text("\n\n".join(lines) + "\n")
    write_rows(folder / "c.parquet", rows[44:61], row_group_size=4)
    with gzip.open(folder / "d.jsonl.gz", "wt") as handle:
        handle.write("".join(jsonl_line(r) + "\n" for r in rows[61:]))
    return folder, rows


def test_the_plan_of_a_multi_file_multi_group_parquet_source(tmp_path):
    rows = [generate(2, i) for i in range(40)]
    write_rows(tmp_path / "p0.parquet", rows[:25], row_group_size=10)
    write_rows(tmp_path / "p1.parquet", rows[25:], row_group_size=6)
    source = local_source(str(tmp_path))
    assert [(u.start, u.stop, u.where, u.locator[:3]) for u in source.plan(8, 38)] == [
        (8, 10, "p0.parquet row group 0", (0, 0, 8)), (10, 20, "p0.parquet row group 1", (0, 1, 0)),
        (20, 25, "p0.parquet row group 2", (0, 2, 0)), (25, 31, "p1.parquet row group 0", (1, 0, 0)),
        (31, 37, "p1.parquet row group 1", (1, 1, 0)), (37, 38, "p1.parquet row group 2", (1, 2, 0)),
    ]
    assert [(u.start, u.stop) for u in source.plan(12, 14)] == [(12, 14)]
    assert source.plan(40, 40) == [] and source.plan(3, 3) == []
    with pytest.raises(SourceError, match=r"holds only 40 rows \(2 files\), so row 40 does not exist$"):
        source.plan(39, 41)


def _expected(rows, start, stop):
    """What rows [start, stop) of ``mixed`` are: the written rows, but for the corrupt group and the bad line."""
    out = []
    for i in range(start, stop):
        if 7 <= i < 14:
            out.append((i, "malformed"))
        elif i == 21 + 9:
            out.append((i, "malformed"))
        else:
            out.append((i, rows[i].prompt))
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 67), st.integers(0, 67))
def test_property_rows_are_the_units_of_the_plan_read_in_turn(mixed, a, b):
    folder, rows = mixed
    start, stop = min(a, b), max(a, b)
    source = local_source(str(folder), jsonl_unit_rows=5)
    units = source.plan(start, stop)
    assert [u.index for u in units] == list(range(len(units)))
    assert [r for u in units for r in range(u.start, u.stop)] == list(range(start, stop))  # each row once, in order
    whole = as_tuples(read(source, 0, 67))
    assert all(unit.stop - unit.start <= 7 for unit in units)  # a row group or a block, never more
    by_units = as_tuples(e for u in units for e in source.read_unit(u))
    assert by_units == as_tuples(source.rows(start, stop)) == whole[start:stop]
    assert [(r, s if s == "malformed" else p) for r, s, _, p, _ in by_units] == _expected(rows, start, stop)
    again = pickle.loads(pickle.dumps(source))
    assert as_tuples(e for u in units for e in again.read_unit(pickle.loads(pickle.dumps(u)))) == by_units


def test_the_plan_is_the_datas_own_pieces_whatever_the_range(mixed):
    folder, _ = mixed
    source = local_source(str(folder), jsonl_unit_rows=5)
    full = {u.locator[:2]: u for u in source.plan(0, 67)}  # (file, row group or block offset): its unit
    assert len(full) == 3 + 5 + 5 + 1
    for start in range(0, 67, 5):
        for unit in source.plan(start, min(start + 9, 67)):
            piece = full[unit.locator[:2]]  # within its piece of the full plan, clipped to the range
            assert piece.start <= unit.start < unit.stop <= piece.stop and unit.where.split(" ")[0] == piece.where.split(" ")[0]
            assert unit.start == max(piece.start, start) and unit.stop == min(piece.stop, start + 9)


def test_a_local_source_and_its_units_pickle(mixed):
    folder, _ = mixed
    source = local_source(str(folder), jsonl_unit_rows=5)
    copy = pickle.loads(pickle.dumps(source))
    assert copy.describe() == source.describe() and copy.layout == source.layout
    units = source.plan(0, 67)
    assert pickle.loads(pickle.dumps(units)) == units and len({hash(u) for u in units}) == len(units)


def test_units_read_in_a_spawned_process_give_the_same_examples(mixed):
    import multiprocessing

    from .helpers import read_unit_tuples

    folder, _ = mixed
    source = local_source(str(folder), jsonl_unit_rows=5)
    units = source.plan(3, 66)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        parts = pool.starmap(read_unit_tuples, [(source, unit) for unit in units])
    assert [e for part in parts for e in part] == as_tuples(read(source, 3, 66))


def test_zero_row_pieces_inside_the_range_are_planned_around(tmp_path):
    """An empty or blank-only ``.jsonl.gz``, a Parquet row group of 0 rows, an empty-table Parquet
    file, between files with rows: no unit for them, every range reads its rows."""
    rows = [generate(2, i) for i in range(9)]
    (tmp_path / "a.jsonl").write_text("".join(jsonl_line(r) + "\n" for r in rows[:2]))
    with gzip.open(tmp_path / "b.jsonl.gz", "wt"):
        pass
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as handle:
        handle.write("\n  \n")
    table = pa.table({"prompt": [r.prompt for r in rows[2:6]], "response": [r.response for r in rows[2:6]]})
    with pq.ParquetWriter(tmp_path / "d.parquet", table.schema) as writer:
        writer.write_table(table.slice(0, 2))
        writer.write_table(table.slice(0, 0))
        writer.write_table(table.slice(2))
    pq.write_table(table.slice(0, 0), tmp_path / "e.parquet")
    (tmp_path / "f.jsonl").write_text("".join(jsonl_line(r) + "\n" for r in rows[6:]))
    source = local_source(str(tmp_path))
    for start in range(9):
        for stop in range(start, 10):
            units = source.plan(start, stop)
            assert [(u.start, u.stop) for u in units] == sorted((u.start, u.stop) for u in units)
            assert all(u.stop > u.start for u in units) and sum(u.rows for u in units) == stop - start
            assert [(e.row, e.prompt) for e in read(source, start, stop)] == [(i, rows[i].prompt)
                                                                             for i in range(start, stop)]


def test_a_file_name_that_is_not_utf8_is_a_clear_error(tmp_path, capsys, tiny_model_path):
    """The manifest and the stats record each file's name as text: a name that is not UTF-8 is
    refused when the source is opened, naming the file, never a UnicodeEncodeError later."""
    from tzc_data.cli import main

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.jsonl").write_text(json.dumps(GOOD) + "\n")
    with open(os.path.join(os.fsencode(tmp_path / "src"), b"b\xff.jsonl"), "wb") as handle:
        handle.write(b"not json\n")
    with pytest.raises(SourceError, match=r"b\\xff\.jsonl is not valid UTF-8"):
        local_source(str(tmp_path / "src"))
    assert main(["build", "--source", str(tmp_path / "src"), "--range", "0:2", "--out", str(tmp_path / "out"),
                 "--tokenizer", tiny_model_path, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "b\\xff.jsonl is not valid UTF-8" in err


def test_a_file_rewritten_after_the_source_opened_fails_its_unit(tmp_path):
    """Same row count, other bytes: the rows would come from bytes other than the recorded sha256's."""
    rows = [generate(3, i) for i in range(6)]
    (tmp_path / "a.jsonl").write_text("".join(jsonl_line(r) + "\n" for r in rows[:3]))
    (tmp_path / "b.jsonl").write_text("".join(jsonl_line(r) + "\n" for r in rows[3:]))
    source = local_source(str(tmp_path))
    assert len(list(read(source, 0, 6))) == 6
    later = os.stat(tmp_path / "b.jsonl").st_mtime_ns + 10**9
    (tmp_path / "b.jsonl").write_text("".join(jsonl_line(r) + "\n" for r in rows[:3]))
    os.utime(tmp_path / "b.jsonl", ns=(later, later))
    assert [e.row for e in read(source, 0, 3)] == [0, 1, 2]  # a.jsonl is as it was
    with pytest.raises(SourceError, match=r"^source file b\.jsonl changed while the build read it"):
        list(read(pickle.loads(pickle.dumps(source)), 0, 6))  # as a worker reads it


def test_a_line_break_in_a_file_name_is_escaped_in_details_and_explain(tmp_path, capsys, tiny_model_path):
    """A detail is one line in the stats and in ``explain``: a file name's line break is written ``\\n``."""
    import polars as pl

    from tzc_data.cli import main

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.jsonl").write_text(json.dumps(GOOD) + "\n")
    (tmp_path / "src" / "evil\nname.jsonl").write_text("not json\n" + json.dumps(GOOD) + "\n")
    out = tmp_path / "out"
    assert main(["build", "--source", str(tmp_path / "src"), "--range", "0:3", "--out", str(out),
                 "--tokenizer", tiny_model_path, "--no-progress", "--min-kept-ratio", "0"]) == 0
    details = pl.read_parquet(out / "stats" / "records.parquet").filter(pl.col("status") == "malformed")["detail"]
    assert len(details) == 1 and details[0].startswith("evil\\nname.jsonl line 1") and "\n" not in details[0]
    capsys.readouterr()
    assert main(["explain", str(out), "--reason", "malformed"]) == 0
    assert "row 1: evil\\nname.jsonl line 1" in capsys.readouterr().out
