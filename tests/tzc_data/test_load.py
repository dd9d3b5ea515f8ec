import numpy as np
import pytest

import tzc_data
from tzc_data.errors import OutputError
from tzc_data.pack import check_row
from tzc_data.pipeline import build
from tzc_data.config import BuildConfig


def test_load_gives_random_access_to_decoded_rows(tmp_path, tiny_tokenizer):
    out = tmp_path / "b"
    manifest = build(BuildConfig(out=str(out), start=0, stop=60, source="synthetic", seq_len=8192,
                                 rows_per_shard=7), tokenizer=tiny_tokenizer, progress=False)
    rows = tzc_data.load(out)
    assert len(rows) == manifest["packing"]["rows"] and len(manifest["shards"]) > 1
    last = rows[len(rows) - 1]
    assert set(last) == {"tokens", "segment_ids", "positions", "loss_mask"}
    assert all(v.dtype == np.int32 and v.shape == (8192,) for v in last.values())
    assert check_row(last) == []
    assert sum(int((rows[i]["segment_ids"] > 0).sum()) for i in range(len(rows))) == manifest["packing"]["tokens"]


def test_load_refuses_what_is_not_a_finished_build(tmp_path):
    with pytest.raises(OutputError, match="not a finished tzc build"):
        tzc_data.load(tmp_path)
