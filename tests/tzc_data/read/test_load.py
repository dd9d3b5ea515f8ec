"""Reading builds back: Grain, batches, numpy, PyTorch, Hugging Face, Parquet export."""

import os
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tzc_data
from tzc_data.build.config import BuildConfig
from tzc_data.build.pipeline import build
from tzc_data.errors import OutputError
from tzc_data.layout import FIELDS, check_row


@pytest.fixture(scope="module")
def small_build(tmp_path_factory, tiny_model_path):
    from tzc_data.text.tokenize import Tokenizer

    out = tmp_path_factory.mktemp("b") / "b"
    manifest = build(BuildConfig(out=str(out), start=0, stop=90, source="synthetic", seq_len=8192, rows_per_shard=7,
                                 eval_fraction=0.2), tokenizer=Tokenizer(tiny_model_path), progress=False)
    return out, manifest


def test_load_gives_random_access_to_decoded_rows(small_build):
    out, manifest = small_build
    rows = tzc_data.load(out)
    assert len(rows) == manifest["packing"]["by_split"]["train"]["rows"] and len(manifest["splits"]["train"]) > 1
    last = rows[len(rows) - 1]
    assert set(last) == set(FIELDS)
    assert all(v.dtype == np.int32 and v.shape == (8192,) for v in last.values())
    assert check_row(last) == []
    total = sum(int((rows[i]["segment_ids"] > 0).sum()) for i in range(len(rows)))
    assert total == manifest["packing"]["by_split"]["train"]["tokens"]


def test_load_refuses_what_is_not_a_finished_build(tmp_path, small_build):
    with pytest.raises(OutputError, match="not a finished tzc build"):
        tzc_data.load(tmp_path)
    with pytest.raises(OutputError, match="no split 'dev'"):
        tzc_data.load(small_build[0], "dev")


def _signature(batch):
    """Tells packed rows apart (they all start with the same template tokens)."""
    tokens = np.asarray(batch["tokens"]).reshape(-1, batch["tokens"].shape[-1])
    return tuple(int(x) for x in tokens.astype(np.int64).sum(axis=1)) + tuple(tokens[:, -1].tolist())


def test_batches_are_repeatable_reshuffled_per_epoch_and_checkpointable(small_build):
    out, _ = small_build
    n = len(tzc_data.load(out))
    first = [_signature(b) for b in tzc_data.batches(out, 1, seed=3, num_epochs=2)]
    assert len(first) == 2 * n
    assert first == [_signature(b) for b in tzc_data.batches(out, 1, seed=3, num_epochs=2)]
    assert sorted(first[:n]) == sorted(first[n:]) and first[:n] != first[n:]  # each epoch a new permutation
    assert first != [_signature(b) for b in tzc_data.batches(out, 1, seed=4, num_epochs=2)]
    it = tzc_data.batches(out, 2, seed=3)
    next(it)
    state = it.get_state()
    expected = [_signature(next(it)) for _ in range(3)]
    resumed = tzc_data.batches(out, 2, seed=3)
    resumed.set_state(state)
    assert [_signature(next(resumed)) for _ in range(3)] == expected
    batch = next(it)
    assert batch["tokens"].shape == (2, 8192) and batch["tokens"].dtype == np.int32


def test_host_shards_are_disjoint_equal_and_say_what_they_leave_out(small_build):
    """A finite pass over H hosts: every host gets the same number of batches (a multi-host step
    loop stalls otherwise), the hosts' rows are disjoint, and the rows left out are said."""
    import warnings

    out, _ = small_build
    rows = {_signature({"tokens": r["tokens"][None]}) for r in tzc_data.iter_rows(out)}
    n = len(tzc_data.load(out))
    assert len(rows) == n
    for hosts, size, drop in [(3, 1, False), (7, 2, True), (7, 2, False), (4, 3, True), (2, 5, False), (1, 4, True)]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            per_host = [[b["tokens"].shape[0] for b in tzc_data.batches(out, size, seed=0, num_epochs=1,
                                                                       shard_index=host, shard_count=hosts,
                                                                       drop_remainder=drop)]
                        for host in range(hosts)]
            seen = [s for host in range(hosts) for b in tzc_data.batches(out, size, seed=0, num_epochs=1,
                                                                         shard_index=host, shard_count=hosts,
                                                                         drop_remainder=drop)
                    for s in _split_signature(b)]
        share = n // hosts - (n // hosts % size if drop else 0)
        assert all(counts == per_host[0] for counts in per_host) and sum(per_host[0]) == share
        assert len(seen) == len(set(seen)) == share * hosts and set(seen) <= rows
        left = [str(w.message) for w in caught if "left out" in str(w.message)]
        why = (f"so that each of {hosts} hosts gets the same {len(per_host[0])} batch(es) of {size}"
               f"{'' if drop else ' or fewer rows'}" if hosts > 1 else
               f"as drop_remainder leaves {len(per_host[0])} whole batch(es) of {size}")
        said = f"tzc_data.batches: {n - share * hosts:,} of the {n:,} rows of the pass(es) are left out, {why}"
        assert left == ([said] * 2 * hosts if share * hosts < n else [])


def _split_signature(batch):
    return [_signature({"tokens": batch["tokens"][k][None]}) for k in range(batch["tokens"].shape[0])]


def test_torch_hf_and_parquet_adapters_give_the_same_rows(small_build, tmp_path):
    import pyarrow.parquet as pq
    import torch

    out, _ = small_build
    reference = list(tzc_data.iter_rows(out, "eval"))
    torch_rows = tzc_data.torch_dataset(out, "eval")
    assert len(torch_rows) == len(reference)
    assert torch.equal(torch_rows[0]["loss_mask"], torch.from_numpy(reference[0]["loss_mask"].astype("int64")))
    hf = tzc_data.hf_dataset(out, "eval", cache_dir=str(tmp_path / "hf"))
    assert hf.num_rows == len(reference) and hf[0]["tokens"] == reference[0]["tokens"].tolist()
    assert tzc_data.export_parquet(out, tmp_path / "e.parquet", "eval") == len(reference)
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.column_names == list(FIELDS) and table["positions"][0].as_py() == reference[0]["positions"].tolist()


@pytest.fixture(scope="module")
def empty_splits(tmp_path_factory, tiny_model_path):
    """A build whose eval split has no rows, and one that kept no row at all."""
    from tzc_data.text.tokenize import Tokenizer

    root = tmp_path_factory.mktemp("empty")
    tok = Tokenizer(tiny_model_path)
    no_eval = build(BuildConfig(out=str(root / "no-eval"), start=0, stop=100, source="synthetic", seq_len=8192,
                                eval_fraction=0.001), tokenizer=tok, progress=False)
    nothing = build(BuildConfig(out=str(root / "nothing"), start=0, stop=30, source="synthetic", max_tokens=16,
                                min_kept_ratio=0.0), tokenizer=tok, progress=False)
    assert no_eval["packing"]["by_split"]["eval"]["rows"] == 0 and no_eval["splits"]["eval"] == []
    assert nothing["counts"]["kept"] == 0 and nothing["splits"]["train"] == []
    return root / "no-eval", "eval", root / "nothing", "train"


def test_a_split_without_rows_loads_empty_and_says_so_where_it_cannot_be(empty_splits, tmp_path, tiny_model_path,
                                                                         capsys):
    import pyarrow.parquet as pq

    from tzc_data.cli import main
    from tzc_data.verify import verify

    for out, split in (empty_splits[:2], empty_splits[2:]):
        assert len(tzc_data.load(out, split)) == 0 and list(tzc_data.iter_rows(out, split)) == []
        assert list(tzc_data.batches(out, 2, seed=0, split=split, num_epochs=1)) == []
        with pytest.raises(OutputError, match=f"split '{split}' of .* has no packed rows: there is nothing to repeat"):
            tzc_data.batches(out, 2, seed=0, split=split)
        target = tmp_path / f"{out.name}.parquet"
        assert main(["export", str(out), "--split", split, "-o", str(target)]) == 0
        assert pq.read_table(target).num_rows == 0
        empty = tzc_data.hf_dataset(out, split, cache_dir=str(tmp_path / f"hf-{out.name}"))
        assert len(empty) == 0 and list(empty.features) == list(FIELDS)
        capsys.readouterr()
        assert main(["inspect", str(out), "--split", split, "--row", "0", "--tokenizer", tiny_model_path]) == 2
        assert capsys.readouterr().err == f"tzc-data: error: split '{split}' of {out} has no packed rows\n"
        assert verify([str(out)], [tiny_model_path]) == []


def test_the_loaders_read_the_manifests_shards_entries(small_build, tmp_path):
    """``splits`` is only an index of ``shards``: a manifest where they differ is refused, not half read."""
    import json
    import shutil

    out = tmp_path / "b"
    shutil.copytree(small_build[0], out)
    manifest = json.loads((out / "manifest.json").read_text())
    from tzc_data.read.shards import shard_paths

    assert shard_paths(out, "eval") == [str(out / e["file"]) for e in manifest["shards"]
                                                      if e["split"] == "eval"]
    manifest["splits"]["eval"] = manifest["splits"]["train"][:1]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(OutputError, match=r"splits\['eval'\] is \[.*\], but the shards of split 'eval' are"):
        tzc_data.load(out, "eval")


def _damaged_copies(build, root):
    """Copies of ``build``: a truncated shard, a flipped byte in a shard, a manifest whose seq_len
    is not the shards' (each a one-line OutputError naming the shard, never Riegeli's RuntimeError)."""
    import json
    import shutil

    copies = {}
    for name in ("truncated", "flipped", "seq_len"):
        copies[name] = root / name
        shutil.copytree(build, copies[name])
    shard = sorted((copies["truncated"] / "shards").glob("train-00000-*"))[0].name
    with open(copies["truncated"] / "shards" / shard, "r+b") as handle:
        handle.truncate(os.path.getsize(handle.name) // 2)
    with open(copies["flipped"] / "shards" / shard, "r+b") as handle:
        handle.seek(5000)
        byte = handle.read(1)
        handle.seek(5000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    manifest = json.loads((copies["seq_len"] / "manifest.json").read_text())
    manifest["config"]["seq_len"] = 10**12
    (copies["seq_len"] / "manifest.json").write_text(json.dumps(manifest))
    return copies, shard


def test_a_damaged_shard_is_one_line_naming_it_from_the_loaders_and_the_cli(small_build, tmp_path, tiny_model_path,
                                                                             capsys):
    from tzc_data.cli import main

    copies, shard = _damaged_copies(small_build[0], tmp_path)
    for name, out in copies.items():
        named = re.escape(shard) if name != "seq_len" else r"train-\d+-of-\d+\.array_record"  # every shard differs
        what = f"shard {re.escape(str(out / 'shards'))}/{named}: .*tzc-data verify {re.escape(str(out))}"
        for read in (lambda: tzc_data.load(out)[0], lambda: list(tzc_data.iter_rows(out)),
                     lambda: list(tzc_data.batches(out, 2, seed=0, num_epochs=1))):
            with pytest.raises(OutputError, match=what):
                read()
        for argv in (["inspect", str(out), "--row", "0", "--tokenizer", tiny_model_path],
                     ["export", str(out), "-o", str(tmp_path / f"{name}.parquet")]):
            capsys.readouterr()
            assert main(argv) == 2, (name, argv)
            err = capsys.readouterr().err
            assert re.fullmatch(f"tzc-data: error: {what} says what else is wrong\n", err), err
        assert not (tmp_path / f"{name}.parquet").exists()


def test_a_stats_file_swapped_for_another_is_refused_naming_it(small_build, tmp_path, capsys):
    import hashlib
    import json
    import shutil

    from tzc_data.cli import main

    out = tmp_path / "b"
    shutil.copytree(small_build[0], out)
    shutil.copyfile(out / "stats/packs.parquet", out / "stats/records.parquet")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["stats"]["stats/records.parquet"]["sha256"] = hashlib.sha256(
        (out / "stats/records.parquet").read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert main(["explain", str(out), "--reason", "too_long"]) == 2
    assert capsys.readouterr().err == (f"tzc-data: error: {out}/stats/records.parquet has no column row, status, "
                                       f"detail: it is not the build's stats/records.parquet; tzc-data verify {out} "
                                       "says what else is wrong\n")


def test_a_build_path_that_is_not_utf8_is_refused_by_the_loaders_and_verify(small_build, tmp_path):
    """The shard reader takes only UTF-8 paths (it raised its own TypeError), and verify read such a
    build as damaged: both refuse it, naming the path."""
    import shutil

    from tzc_data.errors import ConfigError
    from tzc_data.verify import verify

    bad = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"b\xff"))
    shutil.copytree(small_build[0], bad)
    for read in (lambda: tzc_data.load(bad), lambda: tzc_data.mixture([bad, str(small_build[0])]),
                 lambda: list(tzc_data.batches(bad, 2, seed=0, num_epochs=1))):
        with pytest.raises(ConfigError, match=r"build '.*b\\xff' is not valid UTF-8: paths must be valid UTF-8"):
            read()
    assert verify([bad]) == [f"{bad}: build '{tmp_path}/b\\xff' is not valid UTF-8: paths must be valid UTF-8"]


# ---------------------------------------------------------------------------------------------
# Mixtures


def _jsonl(path, rows):
    import json

    path.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in rows))
    return path


def _cli_build(source, out, tokenizer, *options):
    from tzc_data.cli import main

    assert main(["build", "--source", str(source), "--out", str(out), "--tokenizer", tokenizer, "--seq-len", "256",
                 "--no-near-dup", "--no-progress", *options]) == 0
    return out


@pytest.fixture(scope="module")
def mix_builds(tmp_path_factory, tiny_model_path, other_model_path):
    """Short arithmetic builds of 256-token rows: A and B (other sources, other prompts) mix;
    the rest each differ from A in one way that must refuse the mixture."""
    root = tmp_path_factory.mktemp("mix")
    mod = _jsonl(root / "mod.jsonl", [(f"What is {i} mod 17?", f"<think>{i} = 17 x {i // 17} + {i % 17}.</think>"
                                       f"The answer is {i % 17}.") for i in range(300)])
    add = _jsonl(root / "add.jsonl", [(f"Add {i} and {2 * i + 1}.", f"<think>{i} + {2 * i + 1} = {3 * i + 1}.</think>"
                                       f"It is {3 * i + 1}.") for i in range(200)])
    copied = _jsonl(root / "copied.jsonl",
                    [(f"What is {i} mod 17?", "<think>Copied prompt.</think>Same.") for i in range(5)]
                    + [(f"What is {i} mod 13?", f"<think>It is {i % 13}.</think>{i % 13}.") for i in range(40)])
    tok = tiny_model_path
    builds = {
        "a": _cli_build(mod, root / "a", tok, "--range", "0:300"),
        "b": _cli_build(add, root / "b", tok, "--range", "0:200"),
        "a_tail": _cli_build(mod, root / "a_tail", tok, "--range", "250:300"),  # rows 250:300 of A's source
        "copied": _cli_build(copied, root / "copied", tok, "--range", "0:45"),  # 5 of A's prompts
        "seq_len": _cli_build(add, root / "seq_len", tok, "--range", "0:50", "--seq-len", "512"),
        "tokenizer": _cli_build(add, root / "tokenizer", other_model_path, "--range", "0:50"),
        "empty": _cli_build(_jsonl(root / "long.jsonl", [("What is 1 mod 17?", "<think>Long.</think>1.")]),
                            root / "empty", tok, "--range", "0:1", "--max-tokens", "16", "--min-kept-ratio", "0"),
    }
    return {name: str(path) for name, path in builds.items()}


def _origins(*builds):
    """Packed row bytes -> the build it comes from (the builds' rows are all distinct)."""
    origin = {}
    for made in builds:
        for row in tzc_data.iter_rows(made):
            key = row["tokens"].tobytes() + row["segment_ids"].tobytes()
            assert key not in origin
            origin[key] = made
    return origin


def _rows_of(batch):
    return [batch["tokens"][k].tobytes() + batch["segment_ids"][k].tobytes() for k in range(len(batch["tokens"]))]


def test_a_mixture_draws_each_build_in_proportion(mix_builds):
    """3,000 rows drawn at 0.7/0.3 from builds of 300 and 200 packed rows (so B repeats): each
    build's count is within 4 binomial standard deviations of its weight's share (sqrt(n w (1 - w))
    = 25 rows here), the bound that i.i.d. sampling would meet with probability 1 - 6e-5; Grain's
    interleaving is deterministic and lands within a few rows of it."""
    a, b = mix_builds["a"], mix_builds["b"]
    origin = _origins(a, b)
    it = tzc_data.batches([a, b], 10, seed=5, weights=[7, 3])  # normalised: 0.7, 0.3
    drawn = [origin[row] for _ in range(300) for row in _rows_of(next(it))]
    n, share = len(drawn), 0.7
    assert abs(drawn.count(a) - n * share) <= 4 * (n * share * (1 - share)) ** 0.5
    assert drawn.count(a) + drawn.count(b) == n
    # every batch holds both builds in about that share: the interleaving spreads them out
    assert all(5 <= sum(o == a for o in drawn[k:k + 10]) <= 9 for k in range(0, n, 10))
    # without weights each build weighs its packed rows: every row is as likely as in one build
    rows_a, rows_b = len(tzc_data.load(a)), len(tzc_data.load(b))
    assert tzc_data.mixture([a, b]) == pytest.approx([rows_a / (rows_a + rows_b), rows_b / (rows_a + rows_b)])
    once = [row for batch in tzc_data.batches([a, b], 1, seed=0, num_epochs=1) for row in _rows_of(batch)]
    assert len(once) == rows_a + rows_b and set(once) == set(origin)  # every row once
    loaded = tzc_data.load([a, b])
    assert len(loaded) == len(once)
    assert {_rows_of({k: v[None] for k, v in row.items()})[0] for row in loaded} == set(origin)


def test_a_mixture_is_repeatable_and_resumes_from_its_state(mix_builds):
    a, b = mix_builds["a"], mix_builds["b"]
    stream = [_rows_of(batch) for batch, _ in zip(tzc_data.batches([a, b], 3, seed=2, weights=[0.5, 0.5]), range(40))]
    again = [_rows_of(batch) for batch, _ in zip(tzc_data.batches([a, b], 3, seed=2, weights=[1, 1]), range(40))]
    other = [_rows_of(batch) for batch, _ in zip(tzc_data.batches([a, b], 3, seed=3, weights=[1, 1]), range(40))]
    assert stream == again and stream != other
    it = tzc_data.batches([a, b], 3, seed=2, weights=[0.5, 0.5])
    for _ in range(17):
        next(it)
    state = it.get_state()
    expected = [_rows_of(next(it)) for _ in range(10)]
    assert expected == stream[17:27]
    resumed = tzc_data.batches([a, b], 3, seed=2, weights=[0.5, 0.5])
    resumed.set_state(state)
    assert [_rows_of(next(resumed)) for _ in range(10)] == expected
    # hosts split the mixture: disjoint shares of the same global sequence
    hosts = [tzc_data.batches([a, b], 1, seed=2, weights=[1, 1], shard_index=h, shard_count=2) for h in range(2)]
    interleaved = [row for _ in range(30) for host in hosts for row in _rows_of(next(host))]
    assert interleaved == [row for rows in stream[:20] for row in rows]


def test_one_build_reads_the_same_alone_or_in_a_list(small_build):
    out, _ = small_build
    alone = [_rows_of(b) for b in tzc_data.batches(out, 2, seed=3, num_epochs=1)]
    listed = [_rows_of(b) for b in tzc_data.batches([str(out)], 2, seed=3, num_epochs=1, weights=[1.0])]
    assert alone == listed and len(alone) > 3
    assert len(tzc_data.load([out])) == len(tzc_data.load(out))


def test_builds_that_cannot_be_mixed_are_refused_naming_them(mix_builds):
    from tzc_data.errors import ConfigError

    a, b = mix_builds["a"], mix_builds["b"]
    cases = [
        ([a, a], None, f"refusing to mix: {a} and {a} are the same build, given twice"),
        ([a, b, a + "/"], None, f"refusing to mix: {a} and {a}/ are the same build, given twice"),
        ([a, mix_builds["seq_len"]], None, f"refusing to mix: {a} has seq_len 256 and {mix_builds['seq_len']} 512"),
        ([a, mix_builds["tokenizer"]], None, f"refusing to mix: {a} and {mix_builds['tokenizer']} were tokenized by "
                                             "different tokenizers"),
        ([a, mix_builds["a_tail"]], None, f"refusing to mix: builds {a} and {mix_builds['a_tail']}: row ranges "
                                          "overlap at rows 250:300 of the same source"),
        ([b, mix_builds["copied"], a], None, f"refusing to mix: builds {mix_builds['copied']} and {a} share 5 prompt "
                                             "hashes"),
        ([a, b], [0.7], f"1 weight.s. for 2 build.s. .{a}, {b}.: give one weight per build"),
        ([a, b], [0.7, 0], f"weight 0 of build {b}: weights must be positive finite numbers"),
        ([a, b], [float("nan"), 1], f"weight nan of build {a}"),
        ([a, b], [1, float("inf")], f"weight inf of build {b}"),
        ([a, b], [-1, 2], f"weight -1 of build {a}"),
        ([], None, "no builds given"),
    ]
    for builds, weights, message in cases:
        for call in (lambda: tzc_data.batches(builds, 2, seed=0, weights=weights),
                     lambda: tzc_data.load(builds, weights=weights)):
            with pytest.raises(ConfigError) as caught:
                call()
            text = str(caught.value)
            assert re.match(re.escape(message) if "refusing" in message else message, text), (text, message)
            assert "\n" not in text
    # verify agrees: what the mixture refuses as overlapping, verify reports
    from tzc_data.verify import verify

    assert any("row ranges overlap" in p for p in verify([a, mix_builds["a_tail"]], ()))


def test_a_mixture_with_an_empty_split_is_refused(mix_builds):
    from tzc_data.errors import ConfigError

    empty = mix_builds["empty"]
    for num_epochs in (None, 1):
        with pytest.raises(ConfigError, match=f"split 'train' of {empty} has no packed rows: a mixture cannot draw"):
            tzc_data.batches([mix_builds["b"], empty], 2, seed=0, num_epochs=num_epochs)
    with pytest.raises(OutputError, match=f"{mix_builds['a']}: no split 'eval'"):
        tzc_data.load([mix_builds["a"], mix_builds["b"]], "eval")


def test_importing_the_loaders_is_light_and_changes_no_setting():
    """A trainer imports tzc_data: no SentencePiece, JAX or tzc_train comes with it, nor with the
    checks a mixture of builds runs (``verify``), and no environment variable changes (Arrow's
    allocator is the build CLI's choice)."""
    import subprocess
    import sys

    code = ("import os, sys; before = dict(os.environ); import tzc_data, tzc_data.read.load, tzc_data.read.mixture, tzc_data.verify; "
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'sentencepiece', 'jax', 'tzc_train'}); "
            "changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)); "
            "print(heavy, changed)")
    env = {k: v for k, v in __import__("os").environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] []"


@settings(max_examples=150, deadline=None)
@given(sizes=st.lists(st.integers(1, 60), min_size=2, max_size=4), repeats=st.sampled_from([1, 2, 3]))
def test_property_an_unweighted_mixture_holds_every_row_once_per_epoch(sizes, repeats):
    """For every combination of sizes (Grain's own mixture rounds the proportions and lost rows:
    9 + 24 rows loaded as 32), each epoch of the mixture holds each element of each part once, in
    its part's order, and any prefix holds each part within one row per part of its share."""
    from tzc_data.read.load import grain_module, mix

    grain = grain_module()
    parts = [grain.MapDataset.range(1000 * k, 1000 * k + n) for k, n in enumerate(sizes)]
    mixed = list(mix(parts, None, repeats=repeats))
    total = sum(sizes)
    assert len(mixed) == total * repeats
    for epoch in range(repeats):
        this = mixed[epoch * total:(epoch + 1) * total]
        for k, n in enumerate(sizes):
            assert [x for x in this if x // 1000 == k] == list(range(1000 * k, 1000 * k + n))
    for length in range(1, total + 1):
        for k, n in enumerate(sizes):
            assert abs(sum(x // 1000 == k for x in mixed[:length]) - length * n / total) <= len(sizes)
