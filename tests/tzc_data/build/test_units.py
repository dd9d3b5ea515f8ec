"""The plan record a resume compares (what a refused resume says changed), and the done-markers."""

import os

from tzc_data.build.units import _difference


def _record(**config):
    return {"identity": {"config": {"seed": 0, **config}, "source": {"kind": "synthetic"}}, "units": [[0, 4]],
            "stamp": []}


def test_a_changed_seq_len_is_named_as_seq_len_not_as_the_max_tokens_it_implies():
    before, now = _record(seq_len=4096, max_tokens=4096), _record(seq_len=8192, max_tokens=8192)
    assert _difference(before, now) == "--seq-len was 4096, now 8192"
    assert _difference(_record(seq_len=8192, max_tokens=4096), now) == "--max-tokens was 4096, now 8192"


def test_units_written_by_an_older_tzc_are_not_resumed(tmp_path):
    """Before the unit tables were Arrow IPC files they were Parquet: a marker naming a
    ``.parquet`` table is refused in one line (the passes after the map would read a missing file)."""
    import pytest

    from tzc_data.build import units
    from tzc_data.errors import OutputError
    from tzc_data.files import file_digest

    os.makedirs(units.folder(str(tmp_path)))
    for name in ("u000000.parquet", "u000000.tokens"):
        (tmp_path / ".units" / name).write_bytes(b"x" * 10)
    names = ("u000000.parquet", "u000000.tokens")
    recorded = {name: [10, file_digest(str(tmp_path / ".units" / name))] for name in names}
    units.write_markers(str(tmp_path), [units.UnitDone(index=0, start=0, stop=1, counts={}, candidates=0, tokens=0,
                                                       files=recorded)])
    with pytest.raises(OutputError, match="written by another version of tzc .*run without --resume"):
        units.read_done(str(tmp_path), 0, 0, 1)
    current = {units.table_path(str(tmp_path), 0), units.tokens_path(str(tmp_path), 0)}
    assert {os.path.basename(path) for path in current} == {"u000000.arrow", "u000000.tokens"}
