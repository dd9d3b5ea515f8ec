import itertools
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tzc_data.build.pack import Kept, best_fit_decreasing, fill, packed_rows
from tzc_data.layout import check_row, decode_row

lengths_st = st.lists(st.integers(1, 64), min_size=0, max_size=60)


@settings(max_examples=300, deadline=None)
@given(lengths_st)
def test_property_bins_hold_every_item_once_within_capacity_in_source_order(lengths):
    bins = best_fit_decreasing(lengths, 64)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 64 for b in bins)
    assert all(b == sorted(b) for b in bins) and [b[0] for b in bins] == sorted(b[0] for b in bins)


def _bfd_reference(lengths, capacity, *, bins_too=False):
    """Textbook BFD, quadratic: the fullest bin that fits, ties to the oldest bin (with
    ``bins_too``, the bins themselves, ordered as the module docstring's step 5 says)."""
    bins, left = [], []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        fits = [k for k in range(len(bins)) if left[k] >= lengths[i]]
        if fits:
            k = min(fits, key=lambda k: (left[k], k))
            bins[k].append(i)
            left[k] -= lengths[i]
        else:
            bins.append([i])
            left.append(capacity - lengths[i])
    return sorted(sorted(b) for b in bins) if bins_too else len(bins)


@settings(max_examples=200, deadline=None)
@given(lengths_st)
def test_property_same_row_count_as_textbook_best_fit_decreasing(lengths):
    assert len(best_fit_decreasing(lengths, 64)) == _bfd_reference(lengths, 64)


@pytest.mark.parametrize("how", ["python", "just-in-time", "native"])
def test_compiled_and_interpreted_packing_give_the_textbook_bins(how, request, monkeypatch):
    from tzc_data.build import loops

    if how == "just-in-time":
        request.getfixturevalue("no_native")
    if how == "python":
        monkeypatch.setattr(loops, "module", lambda build: None)
    monkeypatch.setattr(loops, "COMPILE_FROM", 1 << 62 if how == "python" else 0)
    rng = np.random.default_rng(11)
    for capacity, n, high in [(64, 300, 64), (4096, 500, 4096), (131_072, 150, 131_072), (5000, 400, 90)]:
        lengths = rng.integers(1, high + 1, size=n)
        members, offsets = packed_rows(lengths, capacity)
        bins = [members[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]
        assert bins == _bfd_reference(lengths.tolist(), capacity, bins_too=True)


def test_fill_on_glaive_like_lengths_is_near_the_lower_bound():
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(np.log(1900), 0.3, 3000).astype(int), 50, 4096).tolist()
    bins = best_fit_decreasing(lengths, 4096)
    lower_bound_rows = -(-sum(lengths) // 4096)
    assert len(bins) <= lower_bound_rows * 1.06
    assert fill(lengths, bins, 4096) > 0.94


def test_oversized_item_is_refused():
    with pytest.raises(ValueError, match="outside 1..10"):
        best_fit_decreasing([5, 11], 10)


def _kept(folder, items, unit_of) -> tuple[Kept, list[list[int]]]:
    """Items (length, prompt length) with distinct tokens, written to one tokens file per unit."""
    examples, offsets, files = [], [], {}
    for k, (n, _) in enumerate(items):
        tokens = list(range(1000 * (k + 1), 1000 * (k + 1) + n))
        examples.append(tokens)
        written = files.setdefault(unit_of[k], [])
        offsets.append(len(written))
        written.extend(tokens)
    paths = [str(folder / f"u{u}.tokens") for u in range(max(unit_of) + 1)]
    for u, path in enumerate(paths):
        np.array(files.get(u, []), dtype="<i4").tofile(path)
    kept = Kept(paths, rows=np.arange(len(items), dtype=np.int64), lengths=np.array([n for n, _ in items], np.int32),
                prompt_lengths=np.array([p for _, p in items], np.int32), splits=np.zeros(len(items), np.uint8),
                hashes=np.zeros(len(items), "S16"), units=np.array(unit_of, np.int32),
                offsets=np.array(offsets, np.int64))
    return kept, examples


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.integers(0, 39), st.integers(0, 3)), min_size=1, max_size=30))
def test_property_packed_rows_conserve_tokens_and_keep_invariants(tmp_path_factory, items):
    """Examples read back from several units' tokens files, at their offsets, into packed rows."""
    unit_of = sorted(u for _, _, u in items)  # units in row order, as a build has them
    items = [(n, min(p, n - 1)) for n, p, _ in items]
    kept, examples = _kept(tmp_path_factory.mktemp("units"), items, unit_of)
    bins = best_fit_decreasing([n for n, _ in items], 48)
    rows = [decode_row(r.tobytes(), 48) for r in kept.read_rows(bins, 48)]
    for row, members in zip(rows, bins):
        assert check_row(row) == []
        for segment, item in enumerate(members, 1):
            where = row["segment_ids"] == segment
            assert row["tokens"][where].tolist() == examples[item]
            n, prompt = items[item]
            assert row["loss_mask"][where].tolist() == [0] * prompt + [1] * (n - prompt)
    assert sum(int((r["segment_ids"] > 0).sum()) for r in rows) == sum(n for n, _ in items)


def test_check_row_finds_broken_rows():
    good = {"tokens": np.array([5, 6, 7, 0]), "segment_ids": np.array([1, 1, 2, 0]),
            "positions": np.array([0, 1, 0, 0]), "loss_mask": np.array([0, 1, 1, 0])}
    assert check_row(good) == []
    for field, value, needle in [("segment_ids", [2, 2, 3, 0], "contiguous"), ("positions", [0, 1, 1, 0], "restart"),
                                 ("loss_mask", [0, 1, 1, 1], "padding"), ("segment_ids", [1, 0, 2, 0], "padding before")]:
        broken = dict(good, **{field: np.array(value)})
        assert any(needle in p for p in check_row(broken)), (field, value)


def test_decode_row_refuses_a_wrong_size():
    with pytest.raises(ValueError, match="bytes"):
        decode_row(b"\0" * 10, 4)
    assert list(itertools.islice(decode_row(b"\0" * 64, 4), 4)) == ["tokens", "segment_ids", "positions", "loss_mask"]


def test_rows_lower_bound_counts_examples_that_cannot_share_a_row():
    from tzc_data.build.pack import rows_lower_bound

    assert rows_lower_bound([60, 60, 60], 100) == 3  # tokens alone would say 2
    assert rows_lower_bound([30, 30, 30, 30], 100) == 2
    lengths = [60, 60, 60, 40, 40, 40, 10]
    assert len(best_fit_decreasing(lengths, 100)) >= rows_lower_bound(lengths, 100)


def test_a_tokens_file_shorter_than_its_marker_says_is_an_error_naming_it(tmp_path):
    from tzc_data.errors import OutputError

    kept, _ = _kept(tmp_path, [(5, 1), (7, 2)], [0, 0])
    os.truncate(kept.tokens_paths[0], 4 * 8)
    with pytest.raises(OutputError, match="u0.tokens is shorter"):
        list(kept.read_rows([[0, 1]], 16))
