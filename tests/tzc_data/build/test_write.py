"""The stats and rejected files' writers: what they hold and how much they hold at once."""

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from tzc_data.build.write import REJECTED_BATCH, REJECTED_COLUMNS, TEXT_COLUMNS, write_rejected
from tzc_data.layout import RECORD_COLUMNS, arrow_fields


def _batch(first: int, statuses: list[str]) -> pa.Table:
    rows = range(first, first + len(statuses))
    columns = {name: pa.nulls(len(statuses), kind) for name, kind in arrow_fields(RECORD_COLUMNS) + TEXT_COLUMNS}
    columns.update(row=pa.array(list(rows), pa.int64()), status=pa.array(statuses),
                   response=pa.array([f"text of row {r}" for r in rows]), score=pa.array([0.5] * len(statuses)))
    return pa.table(columns)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["kept", "kept", "duplicate", "malformed"]), max_size=700), max_size=6))
def test_rejected_holds_every_dropped_row_in_order_in_bounded_row_groups(tmp_path_factory, sizes):
    """Whatever the batches, the file is the dropped rows in row order, in row groups of exactly
    REJECTED_BATCH rows (the last shorter): it never holds more text than that at once."""
    path = str(tmp_path_factory.mktemp("rejected") / "rejected.parquet")
    batches, first = [], 0
    for statuses in sizes:
        batches.append(_batch(first, statuses))
        first += len(statuses)
    write_rejected(path, iter(batches), ["score"])
    table = pq.read_table(path)
    dropped = [r for b in batches for r, s in zip(b["row"].to_pylist(), b["status"].to_pylist()) if s != "kept"]
    assert table["row"].to_pylist() == dropped and table.column_names == REJECTED_COLUMNS + ["score"]
    assert table["response"].to_pylist() == [f"text of row {r}" for r in dropped]
    groups = [pq.ParquetFile(path).metadata.row_group(k).num_rows for k in range(pq.ParquetFile(path).num_row_groups)]
    assert all(n == REJECTED_BATCH for n in groups[:-1]) and (not groups or 0 < groups[-1] <= REJECTED_BATCH)


def test_disk_full_in_the_shard_writer_is_one_line_and_resumable(tmp_path, capsys, monkeypatch, tiny_model_path):
    """ArrayRecord reports a failed write as a RuntimeError of many lines; the build says it in the
    one line of every other disk-full error (the path, the cause, --resume), and resumes."""
    import errno as errno_module

    from tzc_data.build import write
    from tzc_data.cli import main

    real = write.ArrayRecordWriter
    monkeypatch.setattr(write, "ArrayRecordWriter", lambda path, options: real("/dev/full", options))
    command = ["build", "--source", "synthetic", "--range", "0:40", "--out", str(tmp_path / "run"), "--tokenizer",
               tiny_model_path, "--min-kept-ratio", "0", "--no-progress"]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left on the device" in err and "--resume" in err
    assert "shards/train-00000-of-00001.array_record" in err
    monkeypatch.setattr(write, "ArrayRecordWriter", real)
    assert main(command + ["--resume"]) == 0
    error = write.writer_error(RuntimeError("write() failed: No space left on device; writing x;\nat byte 0"), "s")
    assert (error.errno, error.filename) == (errno_module.ENOSPC, "s")
