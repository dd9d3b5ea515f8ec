import pytest

from tzc_data.sources.generator import generate

from .helpers import write_rows

FILES, GROUPS, GROUP_ROWS = 3, 4, 60


@pytest.fixture(scope="session")
def hub_tree(tmp_path_factory):
    """A directory laid out like the hub: data/{split}-0000k-of-0000n.parquet, several row groups each;
    row i is generate(3, i)."""
    root = tmp_path_factory.mktemp("hub")
    (root / "data").mkdir()
    row = 0
    for k in range(FILES):
        rows = [generate(3, row + i) for i in range(GROUPS * GROUP_ROWS)]
        write_rows(root / "data" / f"train-{k:05d}-of-{FILES:05d}.parquet", rows, row_group_size=GROUP_ROWS,
                   compression="none")
        row += len(rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": ["x"], "response": ["y"]}), root / "data" / "test-00000-of-00001.parquet")
    (root / "README.md").write_text("card")
    return root
