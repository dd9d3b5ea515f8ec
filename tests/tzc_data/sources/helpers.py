"""What the source tests share: files that record what is read, and hostile-file writers."""

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

GOOD = {"prompt": "p", "response": "<think>r</think>a"}


class RecordingFile(io.FileIO):
    """A file that remembers every byte range read from it (module level: a source holding an
    opener made of it pickles)."""

    def __init__(self, path, log):
        super().__init__(path, "rb")
        self.log = log

    def read(self, size=-1):
        at = self.tell()
        data = super().read(size)
        self.log.append((self.name, at, at + len(data)))
        return data

    def readinto(self, buffer):
        at = self.tell()
        n = super().readinto(buffer)
        self.log.append((self.name, at, at + (n or 0)))
        return n


class RecordingOpener:
    """An ``opener`` for FileSetSource whose files append each byte range read to ``log``."""

    def __init__(self, log: list):
        self.log = log

    def __call__(self, path):
        return RecordingFile(path, self.log)


def write_jsonl(path, lines: list[bytes]) -> None:
    path.write_bytes(b"\n".join(lines) + b"\n")


def write_rows(path, rows, **options) -> None:
    """Synthetic rows as a Parquet file."""
    pq.write_table(pa.table({"prompt": [r.prompt for r in rows], "response": [r.response for r in rows]}), path,
                   **options)


def jsonl_line(row) -> str:
    return json.dumps({"prompt": row.prompt, "response": row.response})


def group_ranges(path):
    """Each row group's byte range in a Parquet file."""
    meta = pq.ParquetFile(path).metadata
    ranges = []
    for g in range(meta.num_row_groups):
        cols = [meta.row_group(g).column(c) for c in range(meta.row_group(g).num_columns)]
        lo = min(c.dictionary_page_offset or c.data_page_offset for c in cols)
        hi = max((c.dictionary_page_offset or c.data_page_offset) + c.total_compressed_size for c in cols)
        ranges.append((lo, hi))
    return ranges


def corrupt_group(path, group: int, step: int = 97) -> None:
    meta = pq.ParquetFile(path).metadata
    data = bytearray(path.read_bytes())
    for c in range(meta.row_group(group).num_columns):
        col = meta.row_group(group).column(c)
        lo = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
        for k in range(lo + 30, lo + col.total_compressed_size - 30, step):
            data[k] ^= 0x5A
    path.write_bytes(bytes(data))


def as_tuples(examples):
    return [(e.row, e.status, e.detail, e.prompt, e.response) for e in examples]


def read_unit_tuples(source, unit):
    """``as_tuples`` of one unit, for a worker process."""
    return as_tuples(source.read_unit(unit))
