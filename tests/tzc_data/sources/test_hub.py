import os
import pickle

import fsspec
import pytest

from tzc_data.errors import SourceError
from tzc_data.sources import changed_since, read, reopen, source_identity
from tzc_data.sources.generator import generate
from tzc_data.sources.hub import HubSource, hub_source, parquet_tree_source

from .conftest import GROUP_ROWS, GROUPS
from .helpers import RecordingOpener, as_tuples, group_ranges

SHA = "0123456789abcdef0123456789abcdef01234567"


def _touched(log):
    touched = {}
    for name, lo, hi in log:
        if hi > lo:
            touched.setdefault(os.path.basename(name), []).append((lo, hi))
    return touched


def test_hub_layout_reads_only_footers_and_covering_row_groups(hub_tree):
    log = []
    fs = fsspec.filesystem("file")
    source = parquet_tree_source(fs, str(hub_tree), split="train", description={"kind": "test"},
                                 opener=RecordingOpener(log))
    assert [os.path.basename(p) for p in source.paths] == [f"train-{k:05d}-of-00003.parquet" for k in range(3)]
    per_file = GROUPS * GROUP_ROWS
    start, stop = per_file + GROUP_ROWS + 5, per_file + 2 * GROUP_ROWS + 7  # file 1, groups 1..2
    rows = list(read(source, start, stop))
    assert [e.row for e in rows] == list(range(start, stop))
    expected = [generate(3, i) for i in range(start, stop)]
    assert [(e.prompt, e.response) for e in rows] == [(r.prompt, r.response) for r in expected]

    touched = _touched(log)
    assert "train-00002-of-00003.parquet" not in touched  # after the range: never opened
    for name, reads in touched.items():
        path = hub_tree / "data" / name
        # pyarrow reads the footer speculatively: the file's last 64 KiB. Anything else is a row group.
        tail = os.path.getsize(path) - 64 * 1024
        groups = group_ranges(path)
        assert all(hi - lo > 64 * 1024 for lo, hi in groups)  # else the footer read would hide them
        wanted = {1, 2} if name.startswith("train-00001") else set()
        for g, (lo, hi) in enumerate(groups):
            hit = any(r_lo < min(hi, tail) and r_hi > lo for r_lo, r_hi in reads)
            assert hit == (g in wanted), f"{name} row group {g}: read={hit}, expected {g in wanted}"


def test_a_plan_reads_footers_only_and_its_units_are_row_groups_clipped(hub_tree):
    log = []
    source = parquet_tree_source(fsspec.filesystem("file"), str(hub_tree), split="train", description={},
                                 opener=RecordingOpener(log))
    per_file = GROUPS * GROUP_ROWS
    units = source.plan(GROUP_ROWS * 3 + 10, per_file + GROUP_ROWS + 1)
    assert [(u.index, u.start, u.stop, u.where) for u in units] == [
        (0, 190, 240, "data/train-00000-of-00003.parquet row group 3"),  # their paths in the repository
        (1, 240, 300, "data/train-00001-of-00003.parquet row group 0"),
        (2, 300, 301, "data/train-00001-of-00003.parquet row group 1"),
    ]
    for name, lo, hi in log:  # each file's last 64 KiB (the footer, read speculatively), no row group
        assert lo >= os.path.getsize(name) - 64 * 1024 or hi == lo
    assert "train-00002-of-00003.parquet" not in _touched(log)  # after the range: not even its footer


def test_range_past_the_end_is_a_clear_error(hub_tree):
    source = parquet_tree_source(fsspec.filesystem("file"), str(hub_tree), split="train", description={})
    with pytest.raises(SourceError, match="holds only 720 rows"):
        list(read(source, 700, 800))


def test_a_range_past_the_end_is_refused_reading_only_footers(hub_tree):
    log = []
    source = parquet_tree_source(fsspec.filesystem("file"), str(hub_tree), split="train", description={},
                                 opener=RecordingOpener(log))
    message = (r"range 700:800 goes past the end of the source: it holds only 720 rows \(3 files\), so rows "
               r"720\.\.799 do not exist")
    with pytest.raises(SourceError, match=message):
        source.check_range(700, 800)
    with pytest.raises(SourceError, match=message):
        source.plan(700, 800)
    for name, lo, hi in log:
        assert lo >= os.path.getsize(name) - 64 * 1024 or hi == lo
    source.check_range(0, 720)
    assert source.plan(0, 720)[-1].stop == 720


@pytest.fixture
def fake_hub(hub_tree, tmp_path, monkeypatch):
    """HfApi/HfFileSystem replaced by a local tree under the same paths; records the revision asked."""
    import shutil
    from types import SimpleNamespace

    import huggingface_hub
    from fsspec.implementations.dirfs import DirFileSystem

    shutil.copytree(hub_tree, tmp_path / "datasets" / "glaiveai" / f"reasoning-v1-20m@{SHA}")
    asked = []

    def dataset_info(self, repo, revision=None, **_):
        asked.append((repo, revision))
        if repo != "glaiveai/reasoning-v1-20m":
            raise FileNotFoundError(f"no dataset {repo}")
        return SimpleNamespace(sha=SHA)

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", dataset_info)
    monkeypatch.setattr(huggingface_hub, "HfFileSystem", lambda: DirFileSystem(str(tmp_path), fsspec.filesystem("file")))
    return asked


def test_hub_source_lists_the_split_at_the_resolved_commit(fake_hub):
    source = hub_source(revision="v1")
    assert fake_hub == [("glaiveai/reasoning-v1-20m", "v1")]
    assert source.describe()["commit"] == SHA and source.describe()["revision"] == "v1"
    assert source.describe()["files"] == [f"data/train-{k:05d}-of-00003.parquet" for k in range(3)]
    assert [e.row for e in read(source, 239, 242)] == [239, 240, 241]


def test_a_hub_source_reopens_at_its_recorded_commit_and_keeps_its_identity(fake_hub):
    recorded = hub_source().describe()
    again = reopen(recorded)
    assert isinstance(again, HubSource) and fake_hub[-1] == ("glaiveai/reasoning-v1-20m", SHA)
    assert changed_since(recorded, again.describe()) is None  # the revision asked differs, the commit not
    assert source_identity(recorded) == ("hf", "glaiveai/reasoning-v1-20m", "train")
    assert source_identity({**recorded, "commit": "f" * 40}) == source_identity(recorded)  # row 5 is row 5
    assert "commit" in changed_since(recorded, {**recorded, "commit": "f" * 40})
    assert source_identity({**recorded, "split": "test"}) != source_identity(recorded)
    with pytest.raises(SourceError, match="cannot list hub dataset someone/else"):
        reopen({**recorded, "repo": "someone/else"})


def test_a_hub_source_and_its_units_pickle(fake_hub):
    source = hub_source()
    units = source.plan(230, 250)
    copy = pickle.loads(pickle.dumps(source))
    assert [pickle.loads(pickle.dumps(u)) for u in units] == units
    assert as_tuples(e for u in units for e in copy.read_unit(u)) == as_tuples(read(source, 230, 250))


def test_unreachable_hub_is_a_clear_error():
    with pytest.raises(SourceError, match="cannot list hub dataset glaiveai/reasoning-v1-20m .*--source PATH"):
        hub_source()  # HF_HUB_OFFLINE=1 in the tests, and no network here anyway


def test_the_hub_dataset_and_split_are_options(fake_hub):
    from tzc_data.sources import open_source

    source = open_source("hf", dataset="glaiveai/reasoning-v1-20m", split="test")
    assert source.describe()["split"] == "test" and source.describe()["files"] == ["data/test-00000-of-00001.parquet"]
    assert [(e.prompt, e.response) for e in read(source, 0, 1)] == [("x", "y")]
    with pytest.raises(SourceError, match="cannot list hub dataset someone/else .*FileNotFoundError"):
        open_source("hf", dataset="someone/else")
    with pytest.raises(SourceError, match=r"^--dataset 'no-owner' is not a hub dataset name \(OWNER/NAME\)$"):
        open_source("hf", dataset="no-owner")
    with pytest.raises(SourceError, match=r"has no column 'instruction' \(--format openo1"):
        open_source("hf", format="openo1").plan(0, 1)  # the footer is read: refused before a row
