"""files.py: what a build may replace, write and lock; each refusal names the path."""

import json
import os
import subprocess
import sys

import pytest

from tzc_data import files
from tzc_data.errors import OutputError


def _fake_build(path, *, extra=None):
    (path / "shards").mkdir(parents=True)
    (path / "stats").mkdir()
    (path / "shards" / "train-00000-of-00001.array_record").write_bytes(b"x")
    (path / "stats" / "records.parquet").write_bytes(b"x")
    (path / "prompt_hashes.bin").write_bytes(b"")
    (path / "manifest.json").write_text(json.dumps({
        "tzc_version": "0.1.0", "format_version": 1, "hashes": {"file": "prompt_hashes.bin"},
        "shards": [{"file": "shards/train-00000-of-00001.array_record", "bytes": 1}],
        "stats": {"stats/records.parquet": {"bytes": 1}}}))
    if extra:
        (path / extra).parent.mkdir(parents=True, exist_ok=True)
        (path / extra).write_text("mine")
    return path


def test_a_build_is_recognised_and_removed_file_by_file(tmp_path):
    build = _fake_build(tmp_path / "b")
    assert files.not_a_build(str(build)) is None
    files.remove_build(str(build))
    assert not build.exists()


@pytest.mark.parametrize("extra, why", [
    ("thesis.txt", "'thesis.txt'"), ("photos/cat.jpg", "'photos'"), (".ssh/id_ed25519", "'.ssh'"),
    ("shards/notes.txt", "shards/'notes.txt'"), ("stats/mine.parquet", "stats/'mine.parquet'"),
])
def test_a_folder_with_anything_a_build_does_not_write_is_not_a_build_and_is_not_removed(tmp_path, extra, why):
    build = _fake_build(tmp_path / "b", extra=extra)
    assert why in files.not_a_build(str(build))
    with pytest.raises(OutputError, match="refusing to delete"):
        files.remove_build(str(build))
    assert (build / extra).read_text() == "mine" and (build / "manifest.json").exists()


@pytest.mark.parametrize("manifest, why", [
    (None, "no manifest.json"), ("{not json", "not readable JSON"), ("{}", "not a tzc manifest"),
    ("[]", "not a tzc manifest"),
])
def test_a_stray_or_foreign_manifest_does_not_make_a_build(tmp_path, manifest, why):
    folder = tmp_path / "f"
    folder.mkdir()
    if manifest is not None:
        (folder / "manifest.json").write_text(manifest)
    assert why in files.not_a_build(str(folder))


def test_a_build_holds_only_what_its_manifest_lists_at_the_recorded_sizes(tmp_path):
    build = _fake_build(tmp_path / "b")
    (build / "stats" / "packs.parquet").write_text("mine")  # a build's name, but not listed
    assert "'stats/packs.parquet', which its manifest.json does not list" in files.not_a_build(str(build))
    os.remove(build / "stats" / "packs.parquet")
    (build / "stats" / "records.parquet").write_text("MY DATA")  # listed, but not what the build wrote
    assert "stats/records.parquet is not the size" in files.not_a_build(str(build))
    with pytest.raises(OutputError):
        files.remove_build(str(build))
    assert (build / "stats" / "records.parquet").read_text() == "MY DATA"


def test_symlinks_inside_or_as_the_build_are_not_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    build = _fake_build(tmp_path / "b")
    os.symlink(elsewhere, build / "rejected")
    assert "'rejected'" in files.not_a_build(str(build))
    os.remove(build / "rejected")
    os.symlink(build, tmp_path / "link")
    assert files.not_a_build(str(tmp_path / "link")) == "it is not a directory"
    assert (elsewhere / "keep.txt").exists()


def test_atomic_path_leaves_the_old_file_until_the_new_one_is_complete(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with files.atomic_open(str(target)) as handle:
            handle.write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]
    with files.atomic_open(str(target)) as handle:
        handle.write("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["out.txt"]


def test_output_files_may_not_go_inside_a_build(tmp_path):
    build = _fake_build(tmp_path / "b")
    for inside in ("manifest.json", "shards/train-00000-of-00001.array_record", "stats/new.html"):
        with pytest.raises(OutputError, match="inside the tzc build"):
            files.check_output_file(str(build / inside))
    with pytest.raises(OutputError, match="is empty"):
        files.check_output_file("")
    with pytest.raises(OutputError, match="is a directory"):
        files.check_output_file(str(tmp_path))
    with pytest.raises(OutputError, match="does not exist"):
        files.check_output_file(str(tmp_path / "no" / "x.html"))
    assert files.check_output_file(str(tmp_path / "r.html")) == str(tmp_path / "r.html")


def test_a_second_writer_is_refused_naming_the_first_ones_pid(tmp_path):
    staging = str(tmp_path / ".b.tzc-partial")
    fd = files.lock_staging(staging, "b")
    try:
        with pytest.raises(OutputError, match=f"another build \\(pid {os.getpid()}\\) is writing --out b"):
            files.lock_staging(staging, "b")
    finally:
        os.close(fd)
    os.close(files.lock_staging(staging, "b"))  # released with its descriptor


def test_a_folder_that_merely_has_the_staging_name_is_not_taken(tmp_path):
    staging = tmp_path / ".b.tzc-partial"
    staging.mkdir()
    (staging / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="is not tzc's"):
        files.lock_staging(str(staging), "b")
    with pytest.raises(OutputError, match="not a tzc staging directory"):
        files.clear_staging(str(staging))
    assert (staging / "notes.txt").read_text() == "mine"




def test_a_staging_folder_is_emptied_only_of_what_a_build_writes_there(tmp_path):
    """A marker proves the folder ours, but not every file in it: a foreign file refuses the whole
    clear (nothing removed), and a clear of our own files leaves the marker."""
    staging = tmp_path / ".b.tzc-partial"
    (staging / ".units").mkdir(parents=True)
    (staging / files.STAGING_MARKER).write_text("{}")
    (staging / ".units" / "u000000.tokens").write_bytes(b"x")
    (staging / ".units" / "u1000000.json").write_bytes(b"x")
    (staging / ".units" / ".plan.json.tzc-tmp-12").write_bytes(b"x")
    (staging / "sub").mkdir()
    (staging / "sub" / "x").write_text("mine")
    with pytest.raises(OutputError, match="holds 'sub', which a build does not write"):
        files.clear_staging(str(staging))
    assert (staging / "sub" / "x").read_text() == "mine" and (staging / ".units" / "u000000.tokens").exists()
    (staging / "sub" / "x").unlink()
    (staging / "sub").rmdir()
    (staging / ".units" / "thesis.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"holds .units/'thesis.txt'"):
        files.remove_scratch(str(staging))
    (staging / ".units" / "thesis.txt").unlink()
    files.clear_staging(str(staging))
    assert os.listdir(staging) == [files.STAGING_MARKER]


def test_an_unnamed_file_is_read_by_another_process_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with files.unnamed_file(b"the stage", "tzc-stage-") as path:
        assert os.listdir(tmp_path) == []  # no name while it is read: a killed process leaves nothing
        read = subprocess.run([sys.executable, "-c", f"print(open({path!r}, 'rb').read().decode())"],
                              capture_output=True, text=True, check=True)
        assert read.stdout.strip() == "the stage"
    assert os.listdir(tmp_path) == []


def test_where_proc_cannot_open_it_the_unnamed_file_keeps_its_name_until_the_end(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr(files.os.path, "exists", lambda path: False)
    with files.unnamed_file(b"x", "tzc-stage-") as path:
        assert os.listdir(tmp_path) == [os.path.basename(path)] and open(path, "rb").read() == b"x"
    assert os.listdir(tmp_path) == []


def test_an_unnamed_file_that_cannot_be_written_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "gone"))
    with pytest.raises(OutputError, match=rf"a temporary file in {tmp_path / 'gone'}: .*set TMPDIR"):
        with files.unnamed_file(b"x", "tzc-stage-"):
            pass
