import dataclasses
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tzc_data.errors import SourceError
from tzc_data.sources import local_source, read
from tzc_data.sources.generator import generate
from tzc_data.sources.parquet import covering_row_groups

from .conftest import GROUP_ROWS, GROUPS
from .helpers import RecordingOpener, as_tuples, corrupt_group, group_ranges, write_rows


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=8), st.integers(0, 500), st.integers(0, 400), st.integers(1, 200))
def test_property_covering_row_groups_cover_exactly_the_range(groups, first, start, width):
    stop = start + width
    plan = covering_row_groups(groups, first, start, stop)
    covered = []
    begin = [first + sum(groups[:i]) for i in range(len(groups))]
    for g, skip, take in plan:
        assert 0 <= skip and 0 < take and skip + take <= groups[g]
        covered += range(begin[g] + skip, begin[g] + skip + take)
    file_rows = range(first, first + sum(groups))
    assert covered == [r for r in file_rows if start <= r < stop]


def test_each_row_group_is_read_once_by_a_plan_and_its_units(hub_tree):
    """The defect of the chunked workers: every chunk decoded its row group from the start."""
    log = []
    source = local_source(str(hub_tree / "data" / "train-*.parquet"))
    source = dataclasses.replace(source, opener=RecordingOpener(log))
    start, stop = 25, 3 * GROUPS * GROUP_ROWS - 25
    units = source.plan(start, stop)
    assert len(units) == 3 * GROUPS
    got = [e for unit in units for e in source.read_unit(unit)]
    assert [e.row for e in got] == list(range(start, stop))
    for path in sorted({name for name, _, _ in log}):
        tail = os.path.getsize(path) - 64 * 1024  # each open reads the footer speculatively: the last 64 KiB
        for g, (lo, hi) in enumerate(group_ranges(path)):
            hi = min(hi, tail)
            read_bytes = sum(max(0, min(r_hi, hi) - max(r_lo, lo)) for name, r_lo, r_hi in log if name == path)
            assert read_bytes == hi - lo, f"{os.path.basename(path)} row group {g}: {read_bytes} of {hi - lo} bytes"


def test_parquet_with_a_missing_column_or_wrong_type_is_refused_naming_the_column_and_format(tmp_path):
    """Issue 19: a file that cannot be the format is a one-line error before any row is read."""
    pq.write_table(pa.table({"prompt": ["a", "b"], "answer": ["x", "y"]}), tmp_path / "a.parquet")
    with pytest.raises(SourceError, match=r"^a\.parquet has no column 'response' \(--format glaive reads prompt, "
                                          r"response\); it has prompt, answer$"):
        local_source(str(tmp_path))
    os.remove(tmp_path / "a.parquet")
    pq.write_table(pa.table({"prompt": ["c"], "response": [7]}), tmp_path / "b.parquet")
    with pytest.raises(SourceError, match=r"^b\.parquet column 'response' is int64, not text \(--format glaive\)$"):
        local_source(str(tmp_path))
    pq.write_table(pa.table({"prompt": ["c", None], "response": ["r", "s"]}), tmp_path / "b.parquet")
    got = list(read(local_source(str(tmp_path)), 0, 2))  # a null is the row's problem, not the column's
    assert [e.status for e in got] == ["kept", "malformed"]
    assert got[1].detail == "b.parquet row group 0: field 'prompt' is null"


def test_dictionary_encoded_text_columns_read_as_their_text(tmp_path):
    """pandas' categoricals and writers that keep Arrow's dictionary type store text as dictionary<string>."""
    prompts = pa.array(["p1", "p2", "p1"]).dictionary_encode()
    responses = pa.array(["<think>r</think>a", "<think>s</think>b", "<think>r</think>a"]).dictionary_encode()
    pq.write_table(pa.table({"prompt": prompts, "response": responses}), tmp_path / "d.parquet")
    assert str(pq.ParquetFile(tmp_path / "d.parquet").schema_arrow.field("prompt").type).startswith("dictionary")
    got = list(read(local_source(str(tmp_path)), 0, 3))
    assert [(e.status, e.prompt, e.response) for e in got] == [
        ("kept", "p1", "<think>r</think>a"), ("kept", "p2", "<think>s</think>b"), ("kept", "p1", "<think>r</think>a")]
    pq.write_table(pa.table({"prompt": prompts, "response": pa.array([1, 2, 1]).dictionary_encode()}),
                   tmp_path / "d.parquet")
    with pytest.raises(SourceError, match=r"column 'response' is int64, not text"):  # Parquet keeps no int dictionary type
        local_source(str(tmp_path))


def test_parquet_with_two_columns_of_one_name_is_malformed_per_row_naming_the_file(tmp_path):
    table = pa.Table.from_arrays([pa.array(["a", "b"]), pa.array(["c", "d"]), pa.array(["r", "s"])],
                                 names=["prompt", "prompt", "response"])
    pq.write_table(table, tmp_path / "dup.parquet")
    got = list(read(local_source(str(tmp_path)), 0, 2))
    assert [e.status for e in got] == ["malformed", "malformed"]
    assert got[0].detail == "dup.parquet has 2 columns named 'prompt': which one is meant is unknown"


@pytest.mark.parametrize("compression, checksum", [("zstd", False), ("snappy", False), ("none", True)])
def test_parquet_with_corrupt_pages_and_an_intact_footer_quarantines_that_row_group(tmp_path, compression,
                                                                                     checksum):
    rows = [generate(4, i) for i in range(300)]
    path = tmp_path / "c.parquet"
    write_rows(path, rows, row_group_size=100, compression=compression, write_page_checksum=checksum)
    corrupt_group(path, 1)
    source = local_source(str(path))  # the footer is intact: the survey reads it fine
    for start, stop in [(0, 300), (150, 160), (90, 210)]:
        got = list(read(source, start, stop))
        assert [e.row for e in got] == list(range(start, stop))
        for e in got:
            if 100 <= e.row < 200:
                assert e.status == "malformed" and e.detail.startswith("c.parquet row group 1: rows 0.. cannot be "
                                                                       "decoded: ") and "\n" not in e.detail
            else:
                assert e.kept and e.prompt == rows[e.row].prompt
    # Any range sees the same rows and the same details as one pass (the build's bytes depend on it).
    whole = as_tuples(read(source, 0, 300))
    pieces = [e for lo in range(0, 300, 7) for e in read(source, lo, min(lo + 7, 300))]
    assert as_tuples(pieces) == whole


def test_a_row_group_shorter_than_its_footer_says_is_accounted_for(tmp_path, monkeypatch):
    import tzc_data.sources.parquet as parquet_module

    pq.write_table(pa.table({"prompt": ["a"] * 10, "response": ["b"] * 10}), tmp_path / "s.parquet")
    real = parquet_module._group_batches

    def short(*args):  # the one batch, cut to 6 rows
        for first, _, values in real(*args):
            yield first, 6, [column[:4] for column in values]

    monkeypatch.setattr(parquet_module, "_group_batches", short)
    got = list(read(local_source(str(tmp_path)), 2, 10))
    assert [e.row for e in got] == list(range(2, 10))
    assert [e.status for e in got] == ["kept"] * 4 + ["malformed"] * 4
    assert "s.parquet row group 0: holds fewer rows than its footer says (10)" == got[-1].detail


def test_a_parquet_file_rewritten_after_the_plan_is_refused_when_read(tmp_path):
    write_rows(tmp_path / "a.parquet", [generate(1, i) for i in range(20)], row_group_size=10)
    source = local_source(str(tmp_path))
    units = source.plan(0, 20)
    write_rows(tmp_path / "a.parquet", [generate(1, i) for i in range(18)], row_group_size=9)
    with pytest.raises(SourceError, match=r"a\.parquet changed while the build read it: it held 20 rows \(10 in row "
                                          r"group 1\) when the source was opened and now holds 18 in 2 row groups$"):
        list(source.read_unit(units[1]))
