"""`tzc-data verify`: it accepts intact, disjoint builds and names build, shard and row otherwise."""

import json
import shutil

import pytest

from tzc_data.cli import main
from tzc_data.tokenize import gemma2_tokenizer_path
from tzc_data.verify import verify


def _build(out, range_, *extra):
    assert main(["build", "--source", "synthetic", "--range", range_, "--out", str(out), "--rows-per-shard", "40",
                 "--tokenizer", str(gemma2_tokenizer_path()), "--no-progress", *extra]) == 0
    return out


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("v")
    first = _build(root / "s1", "0:300")
    second = _build(root / "s2", "300:600", "--exclude", str(first))
    leaky = _build(root / "leaky", "300:600")  # same rows, without --exclude: shares prompts with s1
    return first, second, leaky


def _copy(build, tmp_path):
    target = tmp_path / build.name
    shutil.copytree(build, target)
    return target


def test_intact_disjoint_builds_verify(builds, capsys):
    first, second, _ = builds
    assert verify([str(first), str(second)]) == []
    assert main(["verify", str(first), str(second)]) == 0
    assert "ok (2 build(s))" in capsys.readouterr().out


def test_a_flipped_byte_is_named_with_its_shard(builds, tmp_path):
    build = _copy(builds[0], tmp_path)
    shard = sorted((build / "shards").iterdir())[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    problems = verify([str(build)])
    assert any(f"shard shards/{shard.name}" in p and "sha256" in p for p in problems)


def test_a_truncated_shard_is_caught(builds, tmp_path):
    build = _copy(builds[0], tmp_path)
    shard = sorted((build / "shards").iterdir())[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    problems = verify([str(build)])
    assert any(shard.name in p for p in problems) and len(problems) >= 2


def test_a_broken_row_is_named_with_its_index(builds, tmp_path):
    """Rewrite one record with a bad segment id, and its sha256 in the manifest, to pass the hash check."""
    import numpy as np
    from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

    from tzc_data.tokenize import sha256_file

    build = _copy(builds[0], tmp_path)
    manifest = json.loads((build / "manifest.json").read_text())
    entry = manifest["shards"][0]
    path = build / entry["file"]
    reader = ArrayRecordReader(str(path))
    records = reader.read_all()
    reader.close()
    row = np.frombuffer(records[3], "<i4").reshape(4, -1).copy()
    row[1, 0] = 7  # segment ids no longer start at 1
    records[3] = row.tobytes()
    writer = ArrayRecordWriter(str(path), "group_size:1")
    for record in records:
        writer.write(record)
    writer.close()
    entry["sha256"] = sha256_file(path)
    (build / "manifest.json").write_text(json.dumps(manifest))
    problems = verify([str(build)])
    assert problems[0] == f"{build} shard {entry['file']} row 3: segment ids are not contiguous from 1"
    assert all(p.startswith(f"{build} shard {entry['file']} row 3: ") for p in problems)


def test_stats_and_hash_file_must_agree_with_the_manifest(builds, tmp_path):
    build = _copy(builds[0], tmp_path)
    (build / "prompt_hashes.bin").write_bytes((build / "prompt_hashes.bin").read_bytes()[:-16])
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["counts"]["kept"] += 1
    manifest["counts"]["by_status"]["kept"] += 1
    (build / "manifest.json").write_text(json.dumps(manifest))
    problems = verify([str(build)])
    assert any("prompt hashes" in p and "sha256" in p for p in problems)
    assert any("stats count" in p for p in problems)


def test_shared_prompts_and_overlapping_ranges_fail_with_examples(builds, capsys):
    first, second, leaky = builds
    problems = verify([str(first), str(leaky)])
    exact = [p for p in problems if "prompt hashes, e.g." in p]
    near = [p for p in problems if "near-duplicate prompts" in p]
    assert len(problems) == 2 and len(exact) == 1 and len(near) == 1
    assert "row " in exact[0] and "?" not in exact[0] and "Jaccard" in near[0]
    problems = verify([str(second), str(leaky)])
    assert any("row ranges overlap at rows 300:600" in p for p in problems)
    assert main(["verify", str(first), str(leaky)]) == 1
    assert "2 problem(s)" in capsys.readouterr().err


def test_a_directory_that_is_not_a_finished_build_fails(tmp_path):
    assert verify([str(tmp_path)]) == [f"{tmp_path}: {tmp_path} is not a finished tzc build: no manifest.json"]
