"""`tzc-data verify`: it accepts intact, disjoint builds and names build, shard and row otherwise."""

import json
import shutil

import pytest

from tzc_data.cli import main
from tzc_data.text.tokenize import gemma2_tokenizer_path
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

    from tzc_data.files import sha256_file

    build = _copy(builds[0], tmp_path)
    manifest = _manifest(build)
    entry = manifest["shards"][0]
    path = build / entry["file"]
    records = _read_records(path)
    row = np.frombuffer(records[3], "<i4").reshape(4, -1).copy()

    def rewrite():
        records[3] = row.tobytes()
        _write_records(path, records)
        entry["sha256"] = sha256_file(path)
        _save(build, manifest)
        return verify([str(build)])

    row[1, 0] = 7  # segment ids no longer start at 1
    problems = rewrite()
    assert problems[0] == f"{build} shard {entry['file']} row 3: segment ids are not contiguous from 1"
    assert all(p.startswith(f"{build} shard {entry['file']} row 3: ") for p in problems)
    row[1, 0], row[1, -1] = 1, -1  # padding with a negative segment id: check_row takes it for padding
    assert f"{build} shard {entry['file']} row 3: segment id -1 is negative (padding is 0)" in rewrite()


def test_stats_and_hash_file_must_agree_with_the_manifest(builds, tmp_path):
    build = _copy(builds[0], tmp_path)
    (build / "prompt_hashes.bin").write_bytes((build / "prompt_hashes.bin").read_bytes()[:-16])
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["counts"]["kept"] += 1
    manifest["counts"]["by_status"]["kept"] += 1
    (build / "manifest.json").write_text(json.dumps(manifest))
    problems = verify([str(build)])
    assert any("prompt hashes" in p and "sha256" in p for p in problems)
    assert any("records.parquet counts by status" in p for p in problems)


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


# ---------------------------------------------------------------------------------------------
# One list of shards, inside the build


def _manifest(build):
    return json.loads((build / "manifest.json").read_text())


def _save(build, manifest):
    (build / "manifest.json").write_text(json.dumps(manifest))


def _read_records(path):
    from array_record.python.array_record_module import ArrayRecordReader

    reader = ArrayRecordReader(str(path))
    records = reader.read_all()
    reader.close()
    return records


def _write_records(path, records):
    from array_record.python.array_record_module import ArrayRecordWriter

    writer = ArrayRecordWriter(str(path), "group_size:1")
    for record in records:
        writer.write(record)
    writer.close()


def _reseal(build, manifest):
    """Make the manifest agree with the files as they now are: what a careful forger does, so that
    only the cross-checks between layers can catch the change."""
    from tzc_data.files import sha256_file

    for entry in manifest["shards"]:
        path = build / entry["file"]
        if path.is_file():
            entry["sha256"], entry["records"] = sha256_file(path), len(_read_records(path))
            entry["bytes"] = path.stat().st_size
    manifest["splits"] = {s: [e["file"] for e in manifest["shards"] if e["split"] == s] for s in manifest["splits"]}
    for split, numbers in manifest["packing"]["by_split"].items():
        numbers["rows"] = sum(e["records"] for e in manifest["shards"] if e["split"] == split)
    manifest["packing"]["rows"] = sum(e["records"] for e in manifest["shards"])
    for name, entry in manifest["stats"].items():
        entry["sha256"], entry["bytes"] = sha256_file(build / name), (build / name).stat().st_size
    _save(build, manifest)


def _refused_by_loaders(build, match):
    import tzc_data
    from tzc_data.errors import OutputError

    with pytest.raises(OutputError, match=match):
        tzc_data.load(build)
    with pytest.raises(OutputError, match=match):
        tzc_data.batches(build, 1, seed=0)


def test_splits_must_be_the_shards_list_each_shard_once(builds, tmp_path):
    build = _copy(builds[0], tmp_path)
    manifest = _manifest(build)
    manifest["splits"]["train"].append(manifest["splits"]["train"][0])  # the loaders would read it twice
    _save(build, manifest)
    problems = verify([str(build)])
    assert len(problems) == 1 and problems[0].startswith(f"{build} manifest.json: splits['train'] is [")
    _refused_by_loaders(build, "splits\\['train'\\]")
    manifest["splits"]["train"].pop()
    manifest["shards"].append(dict(manifest["shards"][0]))  # verify would check it twice
    _save(build, manifest)
    assert any("is listed twice" in p for p in verify([str(build)]))
    _refused_by_loaders(build, "listed twice")


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_a_shard_of_another_build_is_refused(builds, tmp_path, how):
    """The manifest's sha256 and counts match the foreign shard: only the path rule can refuse it."""
    build, other = _copy(builds[0], tmp_path), _copy(builds[1], tmp_path)
    manifest = _manifest(build)
    entry = manifest["shards"][0]
    foreign = sorted((other / "shards").iterdir())[0]
    if how == "dotdot":
        entry["file"] = f"../{other.name}/shards/{foreign.name}"
    elif how == "absolute":
        entry["file"] = str(foreign)
    else:
        (build / entry["file"]).unlink()
        (build / entry["file"]).symlink_to(foreign)
    manifest["splits"]["train"][0] = entry["file"]
    _reseal(build, manifest)
    problems = verify([str(build)])
    assert problems and problems[0].startswith(f"{build} manifest.json: shards[0]: ")
    assert ("leads outside the build" if how == "symlink" else "inside") in problems[0]
    _refused_by_loaders(build, "shards\\[0\\]")


# ---------------------------------------------------------------------------------------------
# Consistent tampering: the manifest is resealed, the cross-checks still fail, naming shard and row


def _shards(build):
    return [build / e["file"] for e in _manifest(build)["shards"]]


def test_a_deleted_shard_fails_even_with_the_manifest_updated(builds, tmp_path):
    build = _copy(builds[0], tmp_path)
    manifest = _manifest(build)
    gone = manifest["shards"].pop(1)
    (build / gone["file"]).unlink()
    _reseal(build, manifest)
    problems = verify([str(build)])
    assert any("stats/packs.parquet" in p and "in no shard" in p for p in problems), problems


def test_swapped_shards_fail_naming_shard_and_row(builds, tmp_path):
    build = _copy(builds[0], tmp_path)
    first, second = _shards(build)[:2]
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b), second.write_bytes(a)
    _reseal(build, _manifest(build))
    problems = verify([str(build)])
    assert any(p.startswith(f"{build} shard shards/{first.name} row 0:") for p in problems), problems
    assert any("another prompt" in p for p in problems)


def test_an_appended_record_fails_naming_shard_and_row(builds, tmp_path):
    build = _copy(builds[0], tmp_path)
    path = _shards(build)[1]
    records = _read_records(path)
    _write_records(path, records + [records[0]])
    _reseal(build, _manifest(build))
    problems = verify([str(build)])
    assert any(f"shards/{path.name} row {len(records)}" in p for p in problems), problems


def test_a_duplicated_record_fails_naming_shard_and_row(builds, tmp_path):
    build = _copy(builds[0], tmp_path)
    path = _shards(build)[0]
    records = _read_records(path)
    records[5] = records[4]
    _write_records(path, records)
    _reseal(build, _manifest(build))
    problems = verify([str(build)])
    assert problems and all(f"shards/{path.name} row 5" in p for p in problems), problems


def test_a_record_blanked_to_padding_fails_naming_shard_and_row(builds, tmp_path):
    build = _copy(builds[0], tmp_path)
    path = _shards(build)[0]
    records = _read_records(path)
    records[2] = bytes(len(records[2]))
    _write_records(path, records)
    _reseal(build, _manifest(build))
    problems = verify([str(build)])
    assert problems[0].startswith(f"{build} shard shards/{path.name} row 2: holds 0 segments, 0 tokens, 0 loss "
                                  "tokens; stats/packs.parquet row 2 says ")
    assert any(f"(placed in shards/{path.name} row 2 segment 1): " in p and "the shard holds 0" in p for p in problems)


def test_stats_rows_moved_or_recounted_fail_naming_the_row(builds, tmp_path):
    import polars as pl

    build = _copy(builds[0], tmp_path)
    records = pl.read_parquet(build / "stats" / "records.parquet")
    kept = records.filter(pl.col("status") == "kept")["row"].to_list()
    changed = records.with_columns(
        tokens=pl.when(pl.col("row") == kept[0]).then(pl.col("tokens") + 1).otherwise(pl.col("tokens")),
        segment=pl.when(pl.col("row") == kept[1]).then(pl.col("segment") + 5).otherwise(pl.col("segment")))
    changed.write_parquet(build / "stats" / "records.parquet")
    _reseal(build, _manifest(build))
    problems = verify([str(build)])
    assert any(p.startswith(f"{build} stats/records.parquet row {kept[0]} (placed in ") and "tokens, the shard holds"
               in p for p in problems), problems
    assert any(p.startswith(f"{build} stats/records.parquet row {kept[1]}: placed in segment") for p in problems)
    assert any("no kept row of stats/records.parquet placed there" in p for p in problems)


# ---------------------------------------------------------------------------------------------
# Token ids: the template's control ids where it puts them, text that parses


def _edit_segment(build, edit, shard=0, row=3):
    """Apply ``edit(tokens, loss_mask)`` to segment 1 of one packed row (numpy views), and reseal."""
    import numpy as np

    path = _shards(build)[shard]
    records = _read_records(path)
    packed = np.frombuffer(records[row], "<i4").reshape(4, -1).copy()
    where = packed[1] == 1
    tokens, mask = packed[0][where], packed[3][where]
    edit(tokens, mask)
    packed[0][where], packed[3][where] = tokens, mask
    records[row] = packed.tobytes()
    _write_records(path, records)
    _reseal(build, _manifest(build))
    return f"{build} shard shards/{path.name} row {row} segment 1: "


def test_token_ids_must_be_the_templates(builds, tmp_path, gemma_tokenizer):
    tok = gemma_tokenizer
    head = len(tok.user_head) + len(tok.system_ids)

    def special_in_prompt(tokens, mask):
        tokens[head + 1] = tok.start_of_turn

    def no_bos(tokens, mask):
        tokens[0] = tok.sp.encode("The")[0]

    def answer_closed_early(tokens, mask):  # plain ids, but the text no longer parses
        close = tok.sp.encode("</answer>")
        end = len(tokens) - len(tok.tail)
        tokens[end - len(close):end] = close

    def loss_on_the_prompt(tokens, mask):
        mask[head] = 1

    def another_prompt(tokens, mask):  # well formed; only the stats' prompt hash can tell
        tokens[head] = tok.sp.encode("Zebra")[0]

    cases = [(special_in_prompt, "holds the special ids [<bos> at 0, <start_of_turn> at 1, <start_of_turn> at "),
             (no_bos, "does not start with <bos>"),
             (answer_closed_early, "decodes to text that format.parse refuses (unparseable: unexpected text after"),
             (loss_on_the_prompt, "the loss mask is not exactly the model turn")]
    for n, (edit, message) in enumerate(cases):
        build = _copy(builds[0], tmp_path / str(n))
        where = _edit_segment(build, edit)
        problems = verify([str(build)])
        assert any(p.startswith(where + message) for p in problems), (edit.__name__, problems)
    build = _copy(builds[0], tmp_path / "prompt")
    _edit_segment(build, another_prompt)
    problems = verify([str(build)])
    assert len(problems) == 1 and "(placed in shards/train-00000-of-00004.array_record row 3 segment 1): the shard's " \
                                  "text there has another prompt" in problems[0], problems


def test_a_tokenizer_not_found_is_a_problem_and_can_be_given(tmp_path, tiny_model_path, capsys):
    model = tmp_path / "tok.model"
    shutil.copy(tiny_model_path, model)
    build = tmp_path / "b"
    assert main(["build", "--source", "synthetic", "--range", "0:60", "--out", str(build), "--seq-len", "8192",
                 "--tokenizer", str(model), "--no-progress"]) == 0
    assert verify([str(build)]) == []
    moved = model.rename(tmp_path / "elsewhere.model")
    problems = verify([str(build)])
    assert problems == [f"{build}: cannot find the build's tokenizer tok.model (sha256 "
                        f"{_manifest(build)['tokenizer']['sha256'][:12]}...) (not at {model}); pass --tokenizer PATH; "
                        "token ids and texts were not checked"]
    capsys.readouterr()
    assert main(["verify", str(build)]) == 1
    assert main(["verify", str(build), "--tokenizer", str(moved)]) == 0
    assert "ok (1 build(s))" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Damaged files and malformed manifests: one line per problem, exit 1, no traceback


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _damage_records(build, how):
    path = build / "stats" / "records.parquet"
    if how == "flipped":
        _flip(path)
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.unlink()


@pytest.mark.parametrize("how, reseal, expected", [
    ("flipped", False, "stats/records.parquet: sha256 "),
    # Parquet has no checksum here: the flipped byte (in the tokens column) reads, and only the shards disagree.
    ("flipped", True, "stats/records.parquet row "),
    ("truncated", True, "stats/records.parquet: cannot be read as Parquet ("),
    ("deleted", False, "stats/records.parquet: missing"),
])
def test_a_damaged_records_file_is_one_line(builds, tmp_path, capsys, how, reseal, expected):
    build = _copy(builds[0], tmp_path)
    _damage_records(build, how)
    if reseal:
        manifest = _manifest(build)
        _reseal(build, manifest)
    capsys.readouterr()
    assert main(["verify", str(build)]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith(f"{build} {expected}") and all(line.startswith(str(build)) for line in lines)
    assert len(lines) == 1 or how == "flipped"  # a changed file that still reads is cross-checked: rows named
    assert "Traceback" not in err and err.strip() == f"tzc-data verify: {len(lines)} problem(s)"


def _structure(build, how):
    manifest = _manifest(build)
    if how == "empty object":
        manifest = {}
    elif how == "array":
        manifest = []
    elif how == "no shards":
        del manifest["shards"]
    elif how == "near_dup null":
        manifest["near_dup"] = None
    elif how == "not JSON":
        (build / "manifest.json").write_text('{"shards": [')
        return
    _save(build, manifest)


@pytest.mark.parametrize("how, expected", [
    ("empty object", ["no 'format_version'", "no 'source'", "no 'range'", "no 'config'", "no 'tokenizer'",
                      "no 'counts'", "no 'packing'", "no 'splits'", "no 'shards'", "no 'hashes'", "no 'near_dup'",
                      "no 'stats'"]),
    ("array", ["the manifest is a JSON array, not an object"]),
    ("no shards", ["no 'shards'"]),
    ("near_dup null", ["near_dup is null, but the build's config has near-dup on: its signatures are not recorded"]),
])
def test_a_malformed_manifest_is_one_line_per_problem(builds, tmp_path, capsys, how, expected):
    build = _copy(builds[0], tmp_path)
    _structure(build, how)
    capsys.readouterr()
    assert main(["verify", str(build)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{build} manifest.json: {line}" for line in expected]
    assert "Traceback" not in err


def test_a_manifest_that_is_not_json_and_a_shard_that_is_a_directory(builds, tmp_path, capsys):
    build = _copy(builds[0], tmp_path / "json")
    _structure(build, "not JSON")
    assert verify([str(build)]) == [f"{build}: {build}/manifest.json is not valid JSON: Expecting value: line 1 "
                                    "column 13 (char 12)"]
    build = _copy(builds[0], tmp_path / "dir")
    shard = _shards(build)[2]
    shard.unlink()
    shard.mkdir()
    capsys.readouterr()
    assert main(["verify", str(build)]) == 1
    out, err = capsys.readouterr()
    assert f"{build} shard shards/{shard.name}: is a directory, not a file" in out.splitlines()
    assert "Traceback" not in err


def _key_paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _key_paths(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value[:2]):
            yield from _key_paths(item, path + (index,))


def test_any_field_deleted_or_of_another_type_is_a_one_line_refusal_or_checked(builds, tmp_path):
    """Every path of a real manifest, deleted or set to null, a string, a negative or a huge number:
    read_manifest raises OutputError or returns; nothing else escapes."""
    import copy

    from tzc_data.errors import OutputError
    from tzc_data.read.manifest import read_manifest

    build = _copy(builds[0], tmp_path)
    base = _manifest(build)
    refused = 0
    for path in list(_key_paths(base))[1:]:
        for value in ("DELETE", None, "x", -1, 10**12):
            doc = copy.deepcopy(base)
            parent = doc
            for key in path[:-1]:
                parent = parent[key]
            if value == "DELETE":
                if isinstance(parent, list):
                    continue
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
            _save(build, doc)
            try:
                read_manifest(build)
            except OutputError as err:
                assert "\n" not in str(err)
                refused += 1
    assert refused > 250  # most fields are read by some reader; the others (config details) are only shown
    for path, value, message in ((("counts", "by_status", "kept"), "x", "'counts.by_status['kept']' is \"x\""),
                                 (("shards", 0, "records"), 10**12, "lists 40 packed rows of shard")):
        doc = copy.deepcopy(base)
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
        _save(build, doc)
        assert any(message in p for p in verify([str(build)]))


def test_a_stats_column_of_another_type_is_named(builds, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    build = _copy(builds[0], tmp_path)
    path = build / "stats" / "packs.parquet"
    table = pq.read_table(path)
    rows = table.column_names.index("rows")
    pq.write_table(table.set_column(rows, "rows", pa.array([str(r) for r in table["rows"].to_pylist()])), path)
    _reseal(build, _manifest(build))
    assert f"{build} stats/packs.parquet: column rows is string, not list<item: int64>" in verify([str(build)])


def test_files_a_build_does_not_list_are_problems(builds, tmp_path):
    """A stray file is read by no loader, but it makes the folder no longer provably a build (so
    --overwrite would refuse it): verify says so."""
    for stray in ("README", "shards/evil.txt", "stats/packs2.parquet"):
        build = _copy(builds[0], tmp_path / stray.replace("/", "_"))
        (build / stray).write_text("x")
        problems = verify([str(build)])
        assert len(problems) == 1 and "which" in problems[0] and stray.split("/")[-1] in problems[0], problems


def test_near_duplicates_are_checked_whatever_the_builds_recorded(tmp_path, capsys, tiny_model_path):
    """Twelve prompts and the same with " Thanks." appended (Jaccard about 0.9): verify finds them
    when either build or both were made with --no-near-dup (it decodes their prompts); a mixture,
    which decodes nothing, says they were not checked; --exclude refuses what it could not drop."""
    import warnings

    import tzc_data
    from tzc_data.errors import ConfigError

    topics = ["rivers", "mountains", "deserts", "forests", "glaciers", "volcanoes", "islands", "lakes", "canyons",
              "reefs", "plains", "valleys"]
    prompts = [f"Please explain in a few careful sentences how {t} form over long periods of geological time and "
               f"which natural forces shape {t} the most" for t in topics]
    for name, suffix in (("a", ""), ("b", " Thanks.")):
        (tmp_path / f"{name}.jsonl").write_text("".join(
            json.dumps({"prompt": p + suffix, "response": "<think>Slowly, by erosion.</think>Erosion."}) + "\n"
            for p in prompts))

    def build(name, source, *extra):
        out = tmp_path / name
        assert main(["build", "--source", str(tmp_path / f"{source}.jsonl"), "--range", "0:12", "--out", str(out),
                     "--tokenizer", tiny_model_path, "--seq-len", "512", "--no-progress", *extra]) == 0
        return str(out)

    near_a, near_b = build("near_a", "a"), build("near_b", "b")
    plain_a, plain_b = build("plain_a", "a", "--no-near-dup"), build("plain_b", "b", "--no-near-dup")
    for pair in ([near_a, near_b], [near_a, plain_b], [plain_a, near_b], [plain_a, plain_b]):
        problems = verify(pair, [tiny_model_path])
        assert len(problems) == 1 and "share 12 near-duplicate prompts" in problems[0], (pair, problems)
    assert verify([plain_a], [tiny_model_path]) == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tzc_data.mixture([near_a, plain_b])
    assert [str(w.message) for w in caught] == [
        f"tzc_data.mixture: builds {near_a} and {plain_b}: near-duplicate prompts were not checked: {plain_b} has no "
        f"near-dup keys (built with --no-near-dup) and its prompts were not decoded (tzc-data verify {near_a} "
        f"{plain_b} decodes them)"]
    with pytest.raises(ConfigError, match="near-duplicate prompts"):
        tzc_data.mixture([near_a, near_b])
    capsys.readouterr()
    for source, exclude, extra in (("b", near_a, "--no-near-dup"), ("b", plain_a, None)):
        argv = ["build", "--source", str(tmp_path / f"{source}.jsonl"), "--range", "0:12", "--out",
                str(tmp_path / "x"), "--tokenizer", tiny_model_path, "--no-progress", "--exclude", exclude]
        assert main(argv + ([extra] if extra else [])) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--exclude {exclude}: " in err and "tzc-data verify would report them" in err


def test_a_gemma3_build_is_its_own_and_never_mixes_with_a_gemma2_build(builds, tmp_path, capsys):
    """--tokenizer gemma3 builds for Gemma 3 1B; its manifest names the tokenizer. A Gemma 2 build and
    a Gemma 3 build verify alone; together (a mixture) verify and the loaders refuse them, naming both.
    --exclude reads prompt hashes of the text, whatever tokenized it: a Gemma 2 build's prompts can be
    held out of a Gemma 3 build."""
    import tzc_data
    from tzc_data.errors import ConfigError
    from tzc_data.text.tokenize import GEMMA3_SHA256

    first, _, _ = builds
    gemma3 = tmp_path / "g3"
    assert main(["build", "--source", "synthetic", "--range", "300:400", "--out", str(gemma3), "--tokenizer", "gemma3",
                 "--no-progress", "--exclude", str(first)]) == 0
    manifest = json.loads((gemma3 / "manifest.json").read_text())
    assert manifest["tokenizer"]["sha256"] == GEMMA3_SHA256 and manifest["tokenizer"]["name"] == "gemma3"
    assert manifest["tokenizer"]["vocab_size"] == 262144 and manifest["config"]["tokenizer"] == "gemma3"
    assert json.loads((first / "manifest.json").read_text())["tokenizer"]["name"] == "gemma2"
    assert main(["verify", str(gemma3)]) == 0  # its tokenizer found by name, from the cache
    capsys.readouterr()
    problems = verify([str(first), str(gemma3)])
    assert problems == [f"builds {first} and {gemma3} were tokenized by different tokenizers (gemma2 tokenizer, "
                        f"sha256 61a7b147390c... and gemma3 tokenizer, sha256 a96dfa1c2969...): they cannot be mixed"]
    assert main(["verify", str(first), str(gemma3)]) == 1
    with pytest.raises(ConfigError, match="gemma2 tokenizer.*gemma3 tokenizer"):
        tzc_data.batches([str(first), str(gemma3)], 2, seed=0)


def test_recorded_options_the_data_contradicts_are_problems(builds, tmp_path):
    """config.stop other than the range, config.max_tokens below the kept examples' tokens: never ``ok``."""
    build = _copy(builds[0], tmp_path)
    manifest = _manifest(build)
    import polars as pl

    records = pl.read_parquet(build / "stats" / "records.parquet")
    longest = int(records.filter(pl.col("status") == "kept")["tokens"].max())
    _save(build, {**manifest, "config": {**manifest["config"], "stop": 301, "max_tokens": longest - 1}})
    problems = verify([str(build)])
    assert f"{build}: config records the range 0:301, the manifest's range is 0:300" in problems
    assert (f"{build}: a kept example of stats/records.parquet holds {longest} tokens, more than config.max_tokens "
            f"{longest - 1}") in problems
    _save(build, {**manifest, "config": {**manifest["config"], "max_tokens": "many"}})
    assert verify([str(build)]) == [f'{build}: config.max_tokens "many" is not a token count from 1 to '
                                    f"config.seq_len ({manifest['config']['seq_len']})"]
