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

    def opener(path):
        handle = RecordingFile(path, "rb")
        handle.log = log
        return handle

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
