"""The serial dedup pass: deciding only the candidates that share a key gives every outcome a pass
over all candidates gives, and every twin is a kept row."""

import random
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tzc_data.build import loops
from tzc_data.build.dedup import decide, fixed_width, sharing_a_key
from tzc_data.text.dedupe import ExactIndex, prompt_hash
from tzc_data.text.minhash import RECORD, NearDupIndex, band_keys, decide_batch, signature

BASES = ["how many apples does sara have if she buys three more and eats two of them today",
         "find the derivative of x squared plus three x minus seven with respect to x please",
         "write a short poem about the sea at night when the moon is full and bright",
         "explain why the sky is blue in simple words a child of ten would understand"]
WORDS = ["red", "green", "blue", "quickly", "slowly"]


def _prompt(choice: tuple[int, int, int]) -> str:
    base, where, word = choice
    words = BASES[base].split()
    if where:  # one word changed: a near duplicate of the base (or a different one)
        words[where % len(words)] = WORDS[word]
    return " ".join(words) + ("" if where < 40 else f" variant {where}")


def _excluded_index(excluded: list[str]) -> NearDupIndex:
    near = NearDupIndex(0.8)
    if excluded:  # an earlier build's near_dup.bin, loaded as --exclude loads it
        sig = np.stack([signature(p) for p in excluded])
        records = np.empty(len(excluded), dtype=RECORD)
        records["bands"], records["sketch"], records["row"] = band_keys(sig), sig & 0xFF, 1000 + np.arange(len(sig))
        with tempfile.TemporaryDirectory() as folder:
            records.tofile(f"{folder}/near_dup.bin")
            near.load(f"{folder}/near_dup.bin", label="earlier")
    return near


def _outcomes(prompts, *, involved_only: bool, exact_on: bool, near_on: bool, excluded: list[str]):
    signatures = np.stack([signature(p) for p in prompts])
    keys, sketches = band_keys(signatures), (signatures & 0xFF).astype(np.uint8)
    hashes = [prompt_hash(p) for p in prompts]
    near = _excluded_index(excluded)
    rows = np.arange(len(prompts))
    mask = np.ones(len(prompts), bool)
    if involved_only:
        raw = np.frombuffer(b"".join(hashes), np.uint8).reshape(-1, 16)
        mask = sharing_a_key(raw if exact_on else None, keys if near_on else None, near if near_on else None)
    chosen = np.flatnonzero(mask)
    decided = decide_batch(rows[chosen].tolist(), [hashes[k] for k in chosen], keys[chosen], sketches[chosen],
                           near if near_on else None, ExactIndex() if exact_on else None)
    out = [None] * len(prompts)
    for k, outcome in zip(chosen.tolist(), decided):
        out[k] = outcome
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 45), st.integers(0, 4)), min_size=1, max_size=40),
       st.sampled_from([(True, True), (True, False), (False, True)]),
       st.lists(st.tuples(st.integers(0, 3), st.integers(0, 45), st.integers(0, 4)), max_size=3))
def test_property_deciding_only_rows_that_share_a_key_is_deciding_them_all(choices, dedup, excluded):
    exact_on, near_on = dedup
    prompts = [_prompt(c) for c in choices]
    others = [_prompt(c) for c in excluded] if near_on else []
    every = _outcomes(prompts, involved_only=False, exact_on=exact_on, near_on=near_on, excluded=others)
    assert _outcomes(prompts, involved_only=True, exact_on=exact_on, near_on=near_on, excluded=others) == every
    kept = {k for k, outcome in enumerate(every) if outcome is None}
    assert all(outcome[3] is not None or outcome[1] in kept for outcome in every if outcome is not None)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 45), st.integers(0, 4)), min_size=1, max_size=40),
       st.sampled_from([(True, True), (True, False), (False, True)]),
       st.lists(st.tuples(st.integers(0, 3), st.integers(0, 45), st.integers(0, 4)), max_size=3))
def test_property_the_compiled_pass_decides_as_decide_batch(choices, dedup, excluded):
    _check_passes(choices, dedup, excluded)


def test_the_just_in_time_pass_decides_as_decide_batch(no_native):
    """Where no extension module can be built: numba's just-in-time code of the same loop."""
    rng = random.Random(3)
    for dedup in [(True, True), (True, False), (False, True)]:
        for _ in range(6):
            choices = [(rng.randint(0, 3), rng.randint(0, 45), rng.randint(0, 4)) for _ in range(rng.randint(1, 40))]
            excluded = [(rng.randint(0, 3), rng.randint(0, 45), rng.randint(0, 4)) for _ in range(rng.randint(0, 3))]
            _check_passes(choices, dedup, excluded)


def _check_passes(choices, dedup, excluded):
    exact_on, near_on = dedup
    prompts = [_prompt(c) for c in choices]
    others = [_prompt(c) for c in excluded] if near_on else []
    every = _outcomes(prompts, involved_only=False, exact_on=exact_on, near_on=near_on, excluded=others)
    signatures = np.stack([signature(p) for p in prompts])
    keys, sketches = band_keys(signatures), (signatures & 0xFF).astype(np.uint8)
    if not near_on:
        keys, sketches = np.zeros((0, 16), np.uint64), np.zeros((0, 128), np.uint8)
    hashes = np.frombuffer(b"".join(prompt_hash(p) for p in prompts), np.uint8).reshape(-1, 16)
    for compiled in (False, True):  # the interpreter; the native module (built if need be)
        got = decide(hashes if exact_on else None, keys, sketches, np.arange(len(prompts)),
                     _excluded_index(others) if near_on else None, compiled=compiled)
        assert [None if not code else (int(code), int(twin), float(jaccard), got.builds.get(k))
                for k, (code, twin, jaccard) in enumerate(zip(got.codes, got.twins, got.jaccards))] == every


@pytest.mark.parametrize("how", ["python", "just-in-time", "native"])
def test_mark_repeated_finds_exactly_the_keys_that_occur_twice(how, request):
    if how == "just-in-time":
        request.getfixturevalue("no_native")
    compiled = how != "python"
    rng = np.random.default_rng(5)
    for n, bits in [(0, 1), (1, 1), (50, 1), (3000, 4), (3000, 16)]:
        keys = rng.integers(0, 2**64, size=(n, 3), dtype=np.uint64)
        keys[rng.random(n) < 0.2, 1] = keys[0, 1] if n else 0  # one key many times
        twice = rng.integers(0, max(n, 1), size=n // 10)
        keys[twice[1:], 1] = keys[twice[:-1], 1]
        column = keys[:, 1]  # a strided view, as the dedup pass gives it
        marks = np.zeros(n, bool)
        loops.run(loops.mark_repeated, n, column, marks, bits, compiled=compiled)
        values, counts = np.unique(column, return_counts=True)
        assert marks.tolist() == np.isin(column, values[counts > 1]).tolist()


@pytest.mark.parametrize("how", ["python", "just-in-time", "native"])
def test_group_ids_gives_equal_keys_one_id_and_different_keys_different_ones(how, request):
    if how == "just-in-time":
        request.getfixturevalue("no_native")
    rng = np.random.default_rng(6)
    for n, bits in [(0, 1), (1, 1), (2, 16), (50, 1), (3000, 4), (5000, loops.bucket_bits(5000)), (3000, 16)]:
        keys = rng.integers(0, 2**64, size=n, dtype=np.uint64)
        keys[rng.random(n) < 0.2] = 0  # one key many times, the value an empty slot would hold
        twice = rng.integers(0, max(n, 1), size=n // 10)
        keys[twice[1:]] = keys[twice[:-1]]
        ids = np.full(n, -7, np.int64)
        groups = loops.run(loops.group_ids, n, keys, ids, bits, compiled=how != "python")
        values, inverse = np.unique(keys, return_inverse=True)
        assert groups == len(values) and sorted(set(ids.tolist())) == list(range(groups))
        assert len({(int(a), int(b)) for a, b in zip(ids, inverse)}) == groups  # the same partition


def test_fixed_width_reads_a_sliced_column_without_copies_of_python_objects():
    import pyarrow as pa

    column = pa.array([bytes([k]) * 4 for k in range(6)], pa.binary(4)).slice(2, 3)
    assert fixed_width(column, 4).tolist() == [[2] * 4, [3] * 4, [4] * 4]
