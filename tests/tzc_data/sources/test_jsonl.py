import dataclasses
import gzip
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tzc_data.errors import SourceError
from tzc_data.sources import local_source, read
from tzc_data.sources.files import JSONL_UNIT_ROWS
from tzc_data.sources.generator import generate

from .helpers import GOOD, RecordingOpener, as_tuples, jsonl_line, write_jsonl


def test_jsonl_malformed_lines_are_dropped_with_details_never_a_crash(tmp_path):
    path = tmp_path / "rows.jsonl"
    good = json.dumps({"prompt": "p", "response": "<think>r</think>a"})
    lines = [good.encode(), b"{not json", json.dumps({"prompt": "p"}).encode(),
             json.dumps({"prompt": None, "response": "x"}).encode(), json.dumps({"prompt": 3, "response": "x"}).encode(),
             b'{"prompt": "\xff\xfe", "response": "x"}', json.dumps(["a", "b"]).encode(),
             b'{"prompt": "\\ud800", "response": "x"}', b"", good.encode()]
    path.write_bytes(b"\n".join(lines) + b"\n")
    rows = list(read(local_source(str(path)), 0, 9))
    assert [e.row for e in rows] == list(range(9))  # the blank line is not a row
    assert [e.status for e in rows] == ["kept"] + ["malformed"] * 7 + ["kept"]
    details = [e.detail for e in rows[1:8]]
    for needle in ["not JSON", "missing field 'response'", "'prompt' is null", "int, not a string",
                   "invalid UTF-8", "list, not an object", "lone surrogate"]:
        assert any(needle in d for d in details), needle
    assert all("rows.jsonl line" in d for d in details)


def test_hostile_json_lines_are_malformed_rows_naming_the_line(tmp_path):
    deep = b'{"prompt": "p", "response": "r", "meta": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    huge = b'{"prompt": "p", "response": "r", "id": ' + b"7" * 5000 + b"}"
    write_jsonl(tmp_path / "h.jsonl", [json.dumps(GOOD).encode(), deep, huge, json.dumps(GOOD).encode()])
    got = list(read(local_source(str(tmp_path / "h.jsonl")), 0, 4))
    assert [e.row for e in got] == [0, 1, 2, 3]
    assert [e.status for e in got] == ["kept", "malformed", "malformed", "kept"]
    assert got[1].detail.startswith("h.jsonl line 2: JSON nested too deep")
    assert got[2].detail.startswith("h.jsonl line 3: ") and "4300 digits" in got[2].detail
    assert all("\n" not in e.detail for e in got)


def test_a_byte_order_mark_before_the_first_line_is_not_part_of_the_row(tmp_path):
    write_jsonl(tmp_path / "bom.jsonl", [b"\xef\xbb\xbf" + json.dumps(GOOD).encode(), json.dumps(GOOD).encode()])
    with gzip.open(tmp_path / "bom2.jsonl.gz", "wb") as handle:
        handle.write(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
    source = local_source(str(tmp_path))
    got = list(read(source, 0, 3))
    assert [(e.status, e.prompt) for e in got] == [("kept", "p")] * 3
    assert [f["rows"] for f in source.describe()["files"]] == [2, 1]
    # Only the first line's: a BOM further down is content, and that line is no JSON.
    write_jsonl(tmp_path / "bom.jsonl", [json.dumps(GOOD).encode(), b"\xef\xbb\xbf" + json.dumps(GOOD).encode()])
    assert [e.status for e in read(local_source(str(tmp_path / "bom.jsonl")), 0, 2)] == ["kept", "malformed"]
    # ... even when that line begins a unit of its own.
    got = list(read(local_source(str(tmp_path / "bom.jsonl"), jsonl_unit_rows=1), 1, 2))
    assert [e.status for e in got] == ["malformed"] and got[0].detail.startswith("bom.jsonl line 2: ")


LINE_PIECES = [b"\xef\xbb\xbf", b"{", b"}", b"[", b"]", b'"prompt"', b'"response"', b":", b",", b'"x"', b"null",
               b"\\ud800", b"\xff", b"9" * 4400, b"[" * 3000, b" ", b"\t", b"\r", json.dumps(GOOD).encode()]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(st.lists(st.one_of(st.sampled_from(LINE_PIECES), st.binary(max_size=8)), max_size=6).map(b"".join),
                max_size=8),
       st.booleans(), st.integers(1, 4))
def test_property_every_jsonl_line_is_one_example_whatever_its_bytes(tmp_path_factory, lines, gz, unit_rows):
    lines = [line.replace(b"\n", b" ") for line in lines]
    path = tmp_path_factory.mktemp("j") / ("rows.jsonl.gz" if gz else "rows.jsonl")
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data) if gz else data)
    source = local_source(str(path), jsonl_unit_rows=unit_rows)
    rows = [(n, line) for n, line in enumerate(lines, 1)
            if (line[3:] if n == 1 and line.startswith(b"\xef\xbb\xbf") else line).strip()]
    assert source.describe()["files"][0]["rows"] == len(rows)
    got = list(read(source, 0, len(rows)))
    assert [e.row for e in got] == list(range(len(rows)))
    for example, (number, _) in zip(got, rows):
        assert example.kept or example.detail.startswith(f"{path.name} line {number}: "), example.detail
        assert "\n" not in example.detail
    with pytest.raises(SourceError, match=f"holds only {len(rows)} rows? .*, so row {len(rows)} does not exist$"):
        source.check_range(0, len(rows) + 1)


def test_a_truncated_gzip_is_a_clear_error_when_the_source_is_opened(tmp_path):
    data = gzip.compress(("\n".join(json.dumps(GOOD) for _ in range(2000)) + "\n").encode())
    (tmp_path / "t.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=r"t\.jsonl\.gz is truncated or corrupt after [\d,]+ rows"):
        local_source(str(tmp_path))


@pytest.fixture
def blocks(tmp_path):
    """a.jsonl: 23 rows with blank lines among them (so rows and lines differ); b.jsonl.gz: 9 rows."""
    rows = [generate(5, i) for i in range(32)]
    lines = []
    for i, row in enumerate(rows[:23]):
        lines += [jsonl_line(row)] + ([""] if i % 4 == 1 else [])
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as handle:
        handle.write("".join(jsonl_line(row) + "\n" for row in rows[23:]))
    return tmp_path, rows


@pytest.mark.parametrize("start, stop, expected", [
    (0, 32, [(0, 5, "a.jsonl rows 0..4"), (5, 10, "a.jsonl rows 5..9"), (10, 15, "a.jsonl rows 10..14"),
             (15, 20, "a.jsonl rows 15..19"), (20, 23, "a.jsonl rows 20..22"), (23, 32, "b.jsonl.gz rows 0..8")]),
    (7, 8, [(7, 8, "a.jsonl row 7")]),
    (4, 11, [(4, 5, "a.jsonl row 4"), (5, 10, "a.jsonl rows 5..9"), (10, 11, "a.jsonl row 10")]),
    (21, 26, [(21, 23, "a.jsonl rows 21..22"), (23, 26, "b.jsonl.gz rows 0..2")]),
    (25, 30, [(25, 30, "b.jsonl.gz rows 2..6")]),
    (12, 12, []),
])
def test_jsonl_units_are_blocks_counted_from_the_file_start_clipped_to_the_range(blocks, start, stop, expected):
    folder, rows = blocks
    source = local_source(str(folder), jsonl_unit_rows=5)
    units = source.plan(start, stop)
    assert [(u.start, u.stop, u.where) for u in units] == expected
    assert [u.index for u in units] == list(range(len(units)))
    got = [e for u in units for e in source.read_unit(u)]
    assert [(e.row, e.prompt) for e in got] == [(i, rows[i].prompt) for i in range(start, stop)]


def test_a_jsonl_unit_seeks_to_its_block_and_reads_no_line_before_it(blocks):
    folder, _ = blocks
    log = []
    source = dataclasses.replace(local_source(str(folder / "a.jsonl"), jsonl_unit_rows=5), opener=RecordingOpener(log))
    unit = source.plan(16, 18)[0]
    offset = unit.locator[1]
    text = (folder / "a.jsonl").read_bytes()
    assert offset == len(b"".join(line + b"\n" for line in text.split(b"\n")[:19]))  # 15 rows, 4 blank lines
    assert [e.row for e in source.read_unit(unit)] == [16, 17]
    assert log and min(lo for _, lo, hi in log if hi > lo) == offset
    # Lines of a unit are numbered as in the file.
    (folder / "c.jsonl").write_text(text.decode() + "{oops\n")
    source = local_source(str(folder / "c.jsonl"), jsonl_unit_rows=5)
    assert [e.detail for e in read(source, 23, 24)] == ["c.jsonl line 30: not JSON (Expecting property name enclosed "
                                                        "in double quotes at column 2)"]


def test_the_default_jsonl_unit_is_ten_thousand_rows(tmp_path):
    (tmp_path / "a.jsonl").write_text((json.dumps(GOOD) + "\n") * 25_001)
    units = local_source(str(tmp_path)).plan(5, 25_001)
    assert JSONL_UNIT_ROWS == 10_000
    assert [(u.start, u.stop) for u in units] == [(5, 10_000), (10_000, 20_000), (20_000, 25_001)]


def test_a_jsonl_file_cut_short_after_the_plan_is_refused_when_read(blocks):
    folder, _ = blocks
    source = local_source(str(folder / "a.jsonl"), jsonl_unit_rows=5)
    units = source.plan(0, 23)
    text = (folder / "a.jsonl").read_text().splitlines(keepends=True)
    (folder / "a.jsonl").write_text("".join(text[:25]))  # rows 0..19 (and the blank lines among them)
    with pytest.raises(SourceError, match=r"a\.jsonl changed while the build read it \(its size or modification"):
        list(source.read_unit(units[3]))  # its rows are still there, but the file is not the one surveyed
    with pytest.raises(SourceError, match=r"a\.jsonl changed while the build read it: it now ends after 20 rows; it "
                                          r"held at least 23 when the source was opened$"):
        list(source.read_unit(units[4]))


def test_gzip_units_read_the_same_rows_as_one_pass(blocks):
    folder, rows = blocks
    source = local_source(str(folder / "b.jsonl.gz"), jsonl_unit_rows=2)
    assert len(source.plan(0, 9)) == 1
    assert as_tuples(read(source, 3, 7)) == as_tuples(read(source, 0, 9))[3:7]


def test_details_name_a_file_by_its_path_in_the_source(tmp_path):
    """Two folders' rows.jsonl are told apart; a glob's files are named from its fixed part."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "rows.jsonl").write_text('{"prompt": "p", "response": "<think>r</think>x"}\nnot json\n')
    for spec in (str(tmp_path), str(tmp_path / "**" / "*.jsonl")):
        source = local_source(spec)
        assert [f["path"] for f in source.describe()["files"]] == ["a/rows.jsonl", "b/rows.jsonl"]
        details = [e.detail for e in read(source, 0, 4) if e.status == "malformed"]
        assert [d.split(":")[0] for d in details] == ["a/rows.jsonl line 2", "b/rows.jsonl line 2"]
