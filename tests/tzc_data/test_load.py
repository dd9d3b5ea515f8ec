"""Reading builds back: Grain, batches, numpy, PyTorch, Hugging Face, Parquet export."""

import numpy as np
import pytest

import tzc_data
from tzc_data.config import BuildConfig
from tzc_data.errors import OutputError
from tzc_data.pack import FIELDS, check_row
from tzc_data.pipeline import build


@pytest.fixture(scope="module")
def small_build(tmp_path_factory, tiny_model_path):
    from tzc_data.tokenize import Tokenizer

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


def test_host_shards_are_disjoint_and_cover_the_rows(small_build):
    out, _ = small_build
    n = len(tzc_data.load(out))
    seen = []
    for host in range(3):
        seen += [_signature(b) for b in tzc_data.batches(out, 1, seed=0, num_epochs=1, shard_index=host,
                                                          shard_count=3, drop_remainder=False)]
    assert len(seen) == n and len(set(seen)) == len({_signature({"tokens": r["tokens"][None]})
                                                    for r in tzc_data.iter_rows(out)})


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
    from tzc_data.tokenize import Tokenizer

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
    from tzc_data.load import shard_paths

    assert shard_paths(out, "eval") == [str(out / e["file"]) for e in manifest["shards"]
                                                      if e["split"] == "eval"]
    manifest["splits"]["eval"] = manifest["splits"]["train"][:1]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(OutputError, match=r"splits\['eval'\] is \[.*\], but the shards of split 'eval' are"):
        tzc_data.load(out, "eval")
