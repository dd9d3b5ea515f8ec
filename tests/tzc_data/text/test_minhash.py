"""Near-duplicate prompts: recall on planted twins, false merges on distinct prompts, determinism."""

import subprocess
import sys

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tzc_data.record import Example
from tzc_data.sources.generator import _near_variant, _prompt, generate
from tzc_data.text.minhash import RECORD, NearDupIndex, drop_near_duplicates, exact_jaccard, fingerprint, signature


def _through_the_stage(prompts: list[str]) -> list[Example]:
    return list(drop_near_duplicates([Example(row=i, prompt=p) for i, p in enumerate(prompts)], NearDupIndex(0.8)))


def test_recall_on_planted_near_duplicates_is_at_least_90_percent():
    rows = [generate(0, i) for i in range(15000)]
    out = _through_the_stage([row.prompt for row in rows])
    planted = [e for row, e in zip(rows, out) if row.defect == "near_duplicate"]
    found = sum(e.status == "near_duplicate" for e in planted)
    assert len(planted) > 150 and found / len(planted) >= 0.9


def test_false_merges_on_distinct_prompts_are_at_most_one_in_a_thousand():
    """A merge is false when the exact Jaccard of the two prompts' shingles is under the threshold."""
    prompts = [_prompt(1, i) for i in range(4000)]
    out = _through_the_stage(prompts)
    false = sum(e.twin is not None and exact_jaccard(e.prompt, prompts[e.twin]) < 0.8 for e in out)
    assert false / len(prompts) <= 0.001


def test_one_edit_variants_are_found_and_the_stage_names_the_twin():
    import random

    rng = random.Random(4)
    base = _prompt(2, 7)
    rows = [Example(row=10, prompt=base)] + [Example(row=11 + k, prompt=_near_variant(base, rng)) for k in range(5)]
    rows.append(Example(row=20, prompt=_prompt(2, 8)))
    out = list(drop_near_duplicates(rows, NearDupIndex(0.8)))
    assert [e.status for e in out] == ["kept"] + ["near_duplicate"] * 5 + ["kept"]
    assert all(e.twin == 10 and "row 10" in e.detail for e in out[1:6])


def test_signatures_are_identical_in_another_process():
    prompt = _prompt(3, 3)
    code = f"from tzc_data.text.minhash import signature; print(signature({prompt!r}).tolist())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123"}).stdout
    assert [int(v) for v in other.strip()[1:-1].split(",")] == signature(prompt).tolist()


def test_a_closed_index_holds_nothing_and_a_loaded_one_finds_its_twins(tmp_path):
    prompts = [_prompt(5, i) for i in range(30)]
    index = NearDupIndex(0.8)
    records = np.empty(len(prompts), dtype=RECORD)
    for i, p in enumerate(prompts):
        keys, sketch = fingerprint(p)
        index.add(keys, sketch, i)
        records[i] = (keys, sketch, i)
    records.tofile(tmp_path / "near_dup.bin")
    index.close()
    assert len(index) == 0 and index.nbytes() < 20_000  # closed: the build packs without the tables
    loaded = NearDupIndex(0.8)
    assert loaded.load(str(tmp_path / "near_dup.bin"), label="earlier") == 30
    assert loaded.find(*fingerprint(prompts[3]))[0] == 3 and loaded.label(3) == "earlier"


def _one_by_one(examples, index):
    """The stage's reference semantics: find, then add, one prompt at a time."""
    for example in examples:
        keys, sketch = fingerprint(example.prompt)
        twin = index.find(keys, sketch)
        if twin is None:
            index.add(keys, sketch, example.row)
        else:
            example.twin = twin[0]
            example.drop("near_duplicate")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 11), st.integers(0, 3)), min_size=1, max_size=40), st.integers(1, 9))
def test_property_the_batched_stage_equals_one_prompt_at_a_time(picks, batch):
    """Twins inside one batch, twins across batches, shared bands that are not twins: the batched
    stage must drop the same rows, name the same twins and leave the same index as the reference."""
    import random

    bases = [_prompt(5, k) for k in range(12)]
    prompts = [bases[k] if edit == 0 else _near_variant(bases[k], random.Random(edit * 100 + k))
               for k, edit in picks]
    reference, batched = NearDupIndex(0.8), NearDupIndex(0.8)
    expected = [Example(row=i, prompt=p) for i, p in enumerate(prompts)]
    _one_by_one(expected, reference)
    got = list(drop_near_duplicates([Example(row=i, prompt=p) for i, p in enumerate(prompts)], batched, batch=batch))
    assert [(e.status, e.twin) for e in got] == [(e.status, e.twin) for e in expected]
    assert list(batched.rows) == list(reference.rows) and batched.sketches == reference.sketches
    probe = np.stack([fingerprint(p)[0] for p in prompts])
    assert np.array_equal(batched.lookup_many(probe), reference.lookup_many(probe))


def _both_checks(prompts: list[str], batch: int = 256) -> list[Example]:
    from tzc_data.text.dedupe import ExactIndex, hash_prompts

    rows = hash_prompts([Example(row=i, prompt=p) for i, p in enumerate(prompts)])
    return list(drop_near_duplicates(rows, NearDupIndex(0.8), exact=ExactIndex(), batch=batch))


def test_an_exact_copy_of_a_near_duplicate_is_a_near_duplicate_of_the_kept_row():
    """A, A' (one word changed), A': row 2 has no kept exact twin (row 1 was dropped), so it is a
    near duplicate of row 0, the row that was kept."""
    a = _prompt(5, 0)
    a_prime = _near_variant(a, __import__("random").Random(1))
    assert exact_jaccard(a, a_prime) >= 0.8
    out = _both_checks([a, a_prime, a_prime])
    assert [(e.status, e.twin) for e in out] == [("kept", None), ("near_duplicate", 0), ("near_duplicate", 0)]
    out = _both_checks([a, a, a_prime])
    assert [(e.status, e.twin) for e in out] == [("kept", None), ("duplicate", 0), ("near_duplicate", 0)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2)), min_size=1, max_size=30), st.integers(1, 7))
def test_property_every_twin_is_an_earlier_kept_row(picks, batch):
    """Whatever mix of copies and one-word variants, in whatever batches: a dropped row's twin is
    a kept row before it, and no kept prompt has a kept exact copy."""
    import random

    bases = [_prompt(6, k) for k in range(6)]
    prompts = [bases[k] if edit == 0 else _near_variant(bases[k], random.Random(edit * 100 + k)) for k, edit in picks]
    out = _both_checks(prompts, batch)
    kept = {e.row for e in out if e.kept}
    for e in out:
        if not e.kept:
            assert e.twin in kept and e.twin < e.row, (e.row, e.status, e.twin)
    kept_hashes = [e.prompt_hash for e in out if e.kept]
    assert len(kept_hashes) == len(set(kept_hashes))
    assert [(e.status, e.twin) for e in out] == [(e.status, e.twin) for e in _both_checks(prompts, 256)]


def test_the_written_out_multipliers_and_salts_are_numpy_random_s_draws():
    # Band keys are stored in builds: the constants must stay the draws they were written out from.
    from tzc_data.text import minhash

    mix = np.random.default_rng(minhash.SEED).integers(1, 2**63, size=(minhash.BANDS, minhash.ROWS), dtype=np.uint64)
    salt = np.random.default_rng(minhash.SEED + 1).integers(1, 2**63, size=minhash.BANDS, dtype=np.uint64)
    assert minhash._MIX.dtype == minhash._BAND_SALT.dtype == np.uint64
    assert np.array_equal(minhash._MIX, mix | np.uint64(1))
    assert np.array_equal(minhash._BAND_SALT, salt)
