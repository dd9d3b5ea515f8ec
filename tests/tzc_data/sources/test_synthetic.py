import pickle

from tzc_data.sources import changed_since, reopen, source_identity
from tzc_data.sources.generator import generate
from tzc_data.sources.synthetic import UNIT_ROWS, SyntheticSource

from .helpers import as_tuples


def test_synthetic_rows_are_pure_functions_of_seed_and_index():
    a = list(SyntheticSource(seed=5).rows(1_000_000, 1_000_005))
    b = list(SyntheticSource(seed=5).rows(1_000_003, 1_000_005))
    assert [(e.prompt, e.response) for e in a[3:]] == [(e.prompt, e.response) for e in b]
    assert (a[0].prompt, a[0].response) == (generate(5, 1_000_000).prompt, generate(5, 1_000_000).response)


def test_synthetic_units_are_aligned_runs_of_256_rows_clipped():
    assert UNIT_ROWS == 256
    units = SyntheticSource(seed=1).plan(4000, 4_800)
    assert [(u.index, u.start, u.stop, u.where) for u in units] == [
        (0, 4000, 4096, "synthetic rows 4,000..4,095"), (1, 4096, 4352, "synthetic rows 4,096..4,351"),
        (2, 4352, 4608, "synthetic rows 4,352..4,607"), (3, 4608, 4800, "synthetic rows 4,608..4,799")]
    assert [(u.start, u.stop, u.where) for u in SyntheticSource().plan(5, 6)] == [(5, 6, "synthetic row 5")]
    assert SyntheticSource().plan(7, 7) == []


def test_a_synthetic_source_and_its_units_pickle_and_read_the_same():
    source = SyntheticSource(seed=2)
    unit = source.plan(4090, 4100)[1]
    again = pickle.loads(pickle.dumps(source))
    assert again == source and pickle.loads(pickle.dumps(unit)) == unit
    assert as_tuples(again.read_unit(unit)) == as_tuples(source.rows(4096, 4100))


def test_a_synthetic_source_reopens_at_its_seed():
    recorded = SyntheticSource(seed=3).describe()
    assert reopen(recorded) == SyntheticSource(seed=3)
    assert source_identity(recorded) == ("synthetic", 3, "tzc_data.sources.generator v1")
    assert changed_since(recorded, SyntheticSource(3).describe()) is None
    assert changed_since(recorded, SyntheticSource(4).describe()) == "its seed is 4 now, the build recorded 3"
