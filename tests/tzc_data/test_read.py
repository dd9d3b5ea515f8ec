import gzip
import io
import json
import os

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tzc_data.errors import SourceError
from tzc_data.read import covering_row_groups, local_source, parquet_tree_source, read, validate
from tzc_data.synthetic import SyntheticSource, generate

FILES, GROUPS, GROUP_ROWS = 3, 4, 60


class RecordingFile(io.FileIO):
    """A file that remembers every byte range read from it."""

    log: list

    def read(self, size=-1):
        at = self.tell()
        data = super().read(size)
        self.log.append((self.name, at, at + len(data)))
        return data

    def readinto(self, buffer):
        at = self.tell()
        n = super().readinto(buffer)
        self.log.append((self.name, at, at + (n or 0)))
        return n


def recording_opener(log: list):
    """An ``opener`` for FileSetSource whose files append each byte range read to ``log``."""
    def opener(path):
        handle = RecordingFile(path, "rb")
        handle.log = log
        return handle

    return opener


@pytest.fixture(scope="module")
def hub_tree(tmp_path_factory):
    """A directory laid out like the hub: data/{split}-0000k-of-0000n.parquet, several row groups each."""
    root = tmp_path_factory.mktemp("hub")
    (root / "data").mkdir()
    row = 0
    for k in range(FILES):
        rows = [generate(3, row + i) for i in range(GROUPS * GROUP_ROWS)]
        table = pa.table({"prompt": [r.prompt for r in rows], "response": [r.response for r in rows]})
        pq.write_table(table, root / "data" / f"train-{k:05d}-of-{FILES:05d}.parquet", row_group_size=GROUP_ROWS,
                       compression="none")
        row += len(rows)
    pq.write_table(pa.table({"prompt": ["x"], "response": ["y"]}), root / "data" / "test-00000-of-00001.parquet")
    (root / "README.md").write_text("card")
    return root


def _group_ranges(path):
    meta = pq.ParquetFile(path).metadata
    ranges = []
    for g in range(meta.num_row_groups):
        cols = [meta.row_group(g).column(c) for c in range(meta.row_group(g).num_columns)]
        lo = min(c.dictionary_page_offset or c.data_page_offset for c in cols)
        hi = max((c.dictionary_page_offset or c.data_page_offset) + c.total_compressed_size for c in cols)
        ranges.append((lo, hi))
    return ranges


def test_hub_layout_reads_only_footers_and_covering_row_groups(hub_tree):
    log = []
    opener = recording_opener(log)
    fs = fsspec.filesystem("file")
    source = parquet_tree_source(fs, str(hub_tree), split="train", description={"kind": "test"}, opener=opener)
    assert [os.path.basename(p) for p in source.paths] == [f"train-{k:05d}-of-00003.parquet" for k in range(3)]
    per_file = GROUPS * GROUP_ROWS
    start, stop = per_file + GROUP_ROWS + 5, per_file + 2 * GROUP_ROWS + 7  # file 1, groups 1..2
    rows = list(read(source, start, stop))
    assert [e.row for e in rows] == list(range(start, stop))
    expected = [generate(3, i) for i in range(start, stop)]
    assert [(e.prompt, e.response) for e in rows] == [(r.prompt, r.response) for r in expected]

    touched = {}
    for name, lo, hi in log:
        if hi > lo:
            touched.setdefault(os.path.basename(name), []).append((lo, hi))
    assert "train-00002-of-00003.parquet" not in touched  # after the range: never opened
    for name, reads in touched.items():
        path = hub_tree / "data" / name
        # pyarrow reads the footer speculatively: the file's last 64 KiB. Anything else is a row group.
        tail = os.path.getsize(path) - 64 * 1024
        groups = _group_ranges(path)
        assert all(hi - lo > 64 * 1024 for lo, hi in groups)  # else the footer read would hide them
        wanted = {1, 2} if name.startswith("train-00001") else set()
        for g, (lo, hi) in enumerate(groups):
            hit = any(r_lo < min(hi, tail) and r_hi > lo for r_lo, r_hi in reads)
            assert hit == (g in wanted), f"{name} row group {g}: read={hit}, expected {g in wanted}"


def test_range_past_the_end_is_a_clear_error(hub_tree):
    source = parquet_tree_source(fsspec.filesystem("file"), str(hub_tree), split="train", description={})
    with pytest.raises(SourceError, match="holds only 720 rows"):
        list(read(source, 700, 800))


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


def test_local_sources_share_global_row_indices_across_files_in_name_order(tmp_path):
    rows = [generate(1, i) for i in range(30)]
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as handle:
        for r in rows[10:20]:
            handle.write(json.dumps({"prompt": r.prompt, "response": r.response}) + "\n")
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"prompt": r.prompt, "response": r.response}) + "\n"
                                              for r in rows[:10]))
    pq.write_table(pa.table({"prompt": [r.prompt for r in rows[20:]], "response": [r.response for r in rows[20:]]}),
                   tmp_path / "c.parquet", row_group_size=3)
    got = list(read(local_source(str(tmp_path)), 5, 27))
    assert [(e.row, e.prompt) for e in got] == [(i, rows[i].prompt) for i in range(5, 27)]
    assert [e.row for e in read(local_source(str(tmp_path / "*.jsonl*")), 12, 15)] == [12, 13, 14]


def test_parquet_with_a_missing_column_or_wrong_type_is_malformed_per_row(tmp_path):
    pq.write_table(pa.table({"prompt": ["a", "b"], "answer": ["x", "y"]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"prompt": ["c"], "response": [7]}), tmp_path / "b.parquet")
    got = list(read(local_source(str(tmp_path)), 0, 3))
    assert [e.status for e in got] == ["malformed"] * 3
    assert "no column 'response'" in got[0].detail and "int, not a string" in got[2].detail


def test_unreadable_sources_are_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="not a file, a directory, or a glob"):
        local_source(str(tmp_path / "missing*.jsonl"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SourceError, match="holds no .parquet"):
        local_source(str(tmp_path))
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SourceError, match="Parquet footer"):
        list(read(local_source(str(tmp_path / "bad.parquet")), 0, 1))


def test_synthetic_rows_are_pure_functions_of_seed_and_index():
    a = list(SyntheticSource(seed=5).rows(1_000_000, 1_000_005))
    b = list(SyntheticSource(seed=5).rows(1_000_003, 1_000_005))
    assert [(e.prompt, e.response) for e in a[3:]] == [(e.prompt, e.response) for e in b]
    assert validate(0, {"prompt": "p", "response": "r"}).kept


def test_hub_source_lists_the_split_at_the_resolved_commit(hub_tree, tmp_path, monkeypatch):
    """The hub wiring, with HfApi/HfFileSystem replaced by a local tree under the same paths."""
    import shutil
    from types import SimpleNamespace

    import huggingface_hub
    from fsspec.implementations.dirfs import DirFileSystem

    from tzc_data.read import hub_source

    sha = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(hub_tree, tmp_path / "datasets" / "glaiveai" / f"reasoning-v1-20m@{sha}")
    asked = {}

    def dataset_info(self, repo, revision=None, **_):
        asked["revision"] = revision
        return SimpleNamespace(sha=sha)

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", dataset_info)
    monkeypatch.setattr(huggingface_hub, "HfFileSystem", lambda: DirFileSystem(str(tmp_path), fsspec.filesystem("file")))
    source = hub_source(revision="v1")
    assert asked["revision"] == "v1"
    assert source.describe()["commit"] == sha and source.describe()["revision"] == "v1"
    assert source.describe()["files"] == [f"data/train-{k:05d}-of-00003.parquet" for k in range(3)]
    assert [e.row for e in read(source, 239, 242)] == [239, 240, 241]


def test_unreachable_hub_is_a_clear_error():
    from tzc_data.read import hub_source

    with pytest.raises(SourceError, match="cannot list hub dataset glaiveai/reasoning-v1-20m .*--source PATH"):
        hub_source()  # HF_HUB_OFFLINE=1 in the tests, and no network here anyway


# ---------------------------------------------------------------------------------------------
# Hostile input files: a one-line SourceError or malformed rows naming file and line/row group,
# and one example per row either way (read == kept + dropped)

GOOD = {"prompt": "p", "response": "<think>r</think>a"}


def _jsonl(path, lines: list[bytes]) -> None:
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_hostile_json_lines_are_malformed_rows_naming_the_line(tmp_path):
    deep = b'{"prompt": "p", "response": "r", "meta": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    huge = b'{"prompt": "p", "response": "r", "id": ' + b"7" * 5000 + b"}"
    _jsonl(tmp_path / "h.jsonl", [json.dumps(GOOD).encode(), deep, huge, json.dumps(GOOD).encode()])
    got = list(read(local_source(str(tmp_path / "h.jsonl")), 0, 4))
    assert [e.row for e in got] == [0, 1, 2, 3]
    assert [e.status for e in got] == ["kept", "malformed", "malformed", "kept"]
    assert got[1].detail.startswith("h.jsonl line 2: JSON nested too deep")
    assert got[2].detail.startswith("h.jsonl line 3: ") and "4300 digits" in got[2].detail
    assert all("\n" not in e.detail for e in got)


def test_a_byte_order_mark_before_the_first_line_is_not_part_of_the_row(tmp_path):
    _jsonl(tmp_path / "bom.jsonl", [b"\xef\xbb\xbf" + json.dumps(GOOD).encode(), json.dumps(GOOD).encode()])
    with gzip.open(tmp_path / "bom2.jsonl.gz", "wb") as handle:
        handle.write(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
    source = local_source(str(tmp_path))
    got = list(read(source, 0, 3))
    assert [(e.status, e.prompt) for e in got] == [("kept", "p")] * 3
    assert [f["rows"] for f in source.describe()["files"]] == [2, 1]
    # Only the first line's: a BOM further down is content, and that line is no JSON.
    _jsonl(tmp_path / "bom.jsonl", [json.dumps(GOOD).encode(), b"\xef\xbb\xbf" + json.dumps(GOOD).encode()])
    assert [e.status for e in read(local_source(str(tmp_path / "bom.jsonl")), 0, 2)] == ["kept", "malformed"]


LINE_PIECES = [b"\xef\xbb\xbf", b"{", b"}", b"[", b"]", b'"prompt"', b'"response"', b":", b",", b'"x"', b"null",
               b"\\ud800", b"\xff", b"9" * 4400, b"[" * 3000, b" ", b"\t", b"\r", json.dumps(GOOD).encode()]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(st.lists(st.one_of(st.sampled_from(LINE_PIECES), st.binary(max_size=8)), max_size=6).map(b"".join),
                max_size=8),
       st.booleans())
def test_property_every_jsonl_line_is_one_example_whatever_its_bytes(tmp_path_factory, lines, gz):
    lines = [line.replace(b"\n", b" ") for line in lines]
    path = tmp_path_factory.mktemp("j") / ("rows.jsonl.gz" if gz else "rows.jsonl")
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data) if gz else data)
    source = local_source(str(path))
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


def test_parquet_with_two_columns_of_one_name_is_malformed_per_row_naming_the_file(tmp_path):
    table = pa.Table.from_arrays([pa.array(["a", "b"]), pa.array(["c", "d"]), pa.array(["r", "s"])],
                                 names=["prompt", "prompt", "response"])
    pq.write_table(table, tmp_path / "dup.parquet")
    got = list(read(local_source(str(tmp_path)), 0, 2))
    assert [e.status for e in got] == ["malformed", "malformed"]
    assert got[0].detail == "dup.parquet has 2 columns named 'prompt': which one is meant is unknown"


def _corrupt_group(path, group: int, step: int = 97) -> None:
    meta = pq.ParquetFile(path).metadata
    data = bytearray(path.read_bytes())
    for c in range(meta.row_group(group).num_columns):
        col = meta.row_group(group).column(c)
        lo = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
        for k in range(lo + 30, lo + col.total_compressed_size - 30, step):
            data[k] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("compression, checksum", [("zstd", False), ("snappy", False), ("none", True)])
def test_parquet_with_corrupt_pages_and_an_intact_footer_quarantines_that_row_group(tmp_path, compression,
                                                                                     checksum):
    rows = [generate(4, i) for i in range(300)]
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"prompt": [r.prompt for r in rows], "response": [r.response for r in rows]}), path,
                   row_group_size=100, compression=compression, write_page_checksum=checksum)
    _corrupt_group(path, 1)
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
    # Worker chunks see the same rows and the same details as one pass (the build's bytes depend on it).
    whole = [(e.row, e.status, e.detail) for e in read(source, 0, 300)]
    chunked = [(e.row, e.status, e.detail) for lo in range(0, 300, 7) for e in read(source, lo, min(lo + 7, 300))]
    assert chunked == whole


def test_a_row_group_shorter_than_its_footer_says_is_accounted_for(tmp_path, monkeypatch):
    import tzc_data.read as read_module

    pq.write_table(pa.table({"prompt": ["a"] * 10, "response": ["b"] * 10}), tmp_path / "s.parquet")
    real = read_module._group_batches

    def short(*args):  # the one batch, cut to 6 rows
        for first, _, prompts, responses in real(*args):
            yield first, 6, prompts[:4], responses[:4]

    monkeypatch.setattr(read_module, "_group_batches", short)
    got = list(read(local_source(str(tmp_path)), 2, 10))
    assert [e.row for e in got] == list(range(2, 10))
    assert [e.status for e in got] == ["kept"] * 4 + ["malformed"] * 4
    assert "s.parquet row group 0: holds fewer rows than its footer says (10)" == got[-1].detail


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

    import tzc_data.read as read_module

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
    monkeypatch.setattr(read_module, "open", open_, raising=False)
    with pytest.raises(SourceError, match="cannot open .*b.jsonl: Permission denied"):
        local_source(str(tmp_path / "b.jsonl"))


def test_a_truncated_gzip_is_a_clear_error_when_the_source_is_opened(tmp_path):
    data = gzip.compress(("\n".join(json.dumps(GOOD) for _ in range(2000)) + "\n").encode())
    (tmp_path / "t.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=r"t\.jsonl\.gz is truncated or corrupt after [\d,]+ rows"):
        local_source(str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Ranges are checked against the source's row count before a row is read


def test_a_range_past_the_end_is_refused_reading_only_footers(hub_tree):
    log = []
    opener = recording_opener(log)
    source = parquet_tree_source(fsspec.filesystem("file"), str(hub_tree), split="train", description={},
                                 opener=opener)
    with pytest.raises(SourceError, match=r"range 700:800 goes past the end of the source: it holds only 720 rows "
                                          r"\(3 files\), so rows 720\.\.799 do not exist"):
        source.check_range(700, 800)
    for name, lo, hi in log:  # each file's last 64 KiB (the footer, read speculatively), no row group
        assert lo >= os.path.getsize(name) - 64 * 1024 or hi == lo
    source.check_range(0, 720)


def test_local_sources_know_their_row_counts_and_skip_whole_files(tmp_path):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(GOOD) + "\n" for _ in range(5)) + "\n\n")
    pq.write_table(pa.table({"prompt": ["q"] * 7, "response": ["r"] * 7}), tmp_path / "b.parquet")
    source = local_source(str(tmp_path))
    assert source.file_rows == (5, 7)
    with pytest.raises(SourceError, match="holds only 12 rows"):
        source.check_range(0, 13)
    (tmp_path / "a.jsonl").write_text("garbage that is not read\n")  # before the range: not opened
    assert [e.prompt for e in read(source, 5, 12)] == ["q"] * 7


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


# ---------------------------------------------------------------------------------------------
# Fingerprints: the manifest records each file; explain refuses a source that changed


def test_the_description_fingerprints_each_file_and_survives_a_copy(tmp_path):
    import hashlib
    import shutil
    import time

    from tzc_data.read import changed_since, source_identity

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
    assert changed_since(SyntheticSource(3).describe(), SyntheticSource(3).describe()) is None
    assert "seed" in changed_since(SyntheticSource(3).describe(), SyntheticSource(4).describe())


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
    _jsonl(src / "a.jsonl", [b"\xef\xbb\xbf" + good[0].encode(), *(g.encode() for g in good[1:8]),
                             b'{"prompt": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
                             b'{"prompt": "p", "response": "r", "n": ' + b"1" * 5000 + b"}"])
    pq.write_table(pa.Table.from_arrays([pa.array(["a"] * 3), pa.array(["b"] * 3), pa.array(["c"] * 3)],
                                        names=["prompt", "prompt", "response"]), src / "b.parquet")
    rows = [json.loads(g) for g in good[8:]]
    pq.write_table(pa.table({"prompt": [r["prompt"] for r in rows], "response": [r["response"] for r in rows]}),
                   src / "c.parquet", row_group_size=4, compression="zstd")
    _corrupt_group(src / "c.parquet", 1, step=13)
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
