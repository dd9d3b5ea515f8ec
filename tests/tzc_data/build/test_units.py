"""The plan record a resume compares: what a refused resume says changed."""

from tzc_data.build.units import _difference


def _record(**config):
    return {"identity": {"config": {"seed": 0, **config}, "source": {"kind": "synthetic"}}, "units": [[0, 4]],
            "stamp": []}


def test_a_changed_seq_len_is_named_as_seq_len_not_as_the_max_tokens_it_implies():
    before, now = _record(seq_len=4096, max_tokens=4096), _record(seq_len=8192, max_tokens=8192)
    assert _difference(before, now) == "--seq-len was 4096, now 8192"
    assert _difference(_record(seq_len=8192, max_tokens=4096), now) == "--max-tokens was 4096, now 8192"
