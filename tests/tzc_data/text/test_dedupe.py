import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tzc_data.record import Example
from tzc_data.text.dedupe import ExactIndex, drop_duplicates, hash_prompts, normalise, prompt_hash


def test_normalisation_folds_case_width_and_whitespace():
    assert normalise("  What  IS\n2+2?\t") == "what is 2+2?"
    assert prompt_hash("ＡBC  def") == prompt_hash("abc def")
    assert prompt_hash("abc") != prompt_hash("abd") and len(prompt_hash("abc")) == 16


def test_first_kept_occurrence_wins_and_names_its_twin():
    rows = [Example(row=10, prompt="Same prompt"), Example(row=11, prompt="same   PROMPT"),
            Example(row=12, prompt="other")]
    dropped_first = Example(row=9, prompt="Other")
    dropped_first.drop("loop")
    out = list(drop_duplicates(hash_prompts([dropped_first, *rows]), ExactIndex()))
    assert [(e.row, e.status, e.twin) for e in out] == [
        (9, "loop", None), (10, "kept", None), (11, "duplicate", 10), (12, "kept", None)]
    assert "row 10" in out[2].detail


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=2, max_size=2), st.binary(min_size=1, max_size=1),
                          st.integers(0, 2**40)), max_size=3000))
def test_property_exact_index_is_a_first_wins_map(ops):
    """Like ``dict.setdefault``: the first row of a hash wins. Hashes are built to collide in their
    low bytes (the table's slot) and to fill it past several growths."""
    index, model = ExactIndex(), {}
    for low, high, row in ops:
        digest = low + bytes(13) + high  # slot from the first 8 bytes: many equal, distinct hashes
        assert index.twin(digest) == model.get(digest)
        index.add(digest, row)
        model.setdefault(digest, row)
    assert len(index) == len(model)
    assert all(index.twin(digest) == row for digest, row in model.items())
    assert index.twin(bytes(16)) == model.get(bytes(16))


def test_exact_index_refuses_a_hash_of_the_wrong_size():
    with pytest.raises(ValueError, match="16 bytes, not 8"):
        ExactIndex().add(bytes(8), 1)


def test_exact_index_holds_no_python_object_per_prompt():
    """About 40 bytes a prompt (16 of hash, 8 of row, a table at most half full): a dict took 140."""
    index = ExactIndex()
    for row in range(20_000):
        index.add(prompt_hash(f"prompt {row}"), row)
    assert len(index) == 20_000
    assert index.nbytes() / len(index) <= 48


IGNORABLES = ["\u00ad", "\u034f", "\u061c", "\u115f", "\u17b4", "\u180e", "\u200b", "\u200c", "\u200d", "\u200e",
              "\u202e", "\u2060", "\u2066", "\u3164", "\ufe0f", "\ufeff", "\uffa0", "\U0001d173", "\U000e0041",
              "\U000e0100"]


@settings(max_examples=300, deadline=None)
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
       inserts=st.lists(st.tuples(st.integers(0, 40), st.sampled_from(IGNORABLES)), max_size=6))
def test_property_invisible_characters_do_not_tell_prompts_apart(text, inserts):
    """Default-ignorable code points (zero-width space, soft hyphen, joiners, bidi controls,
    variation selectors, tags) render as nothing: inserted anywhere they change neither the exact
    key nor the near-dup shingles."""
    from tzc_data.text.minhash import shingles

    clean = "".join(c for c in text if c not in IGNORABLES)
    marked = clean
    for at, char in sorted(inserts, reverse=True):
        marked = marked[:at] + char + marked[at:]
    assert normalise(marked) == normalise(clean) and prompt_hash(marked) == prompt_hash(clean)
    assert shingles(marked) == shingles(clean)


def test_zero_width_and_soft_hyphens_inside_words_are_the_same_prompt():
    assert prompt_hash("What is the cap\u200bital of Fr\u00adance?") == prompt_hash("What is the capital of France?")
    assert prompt_hash("cafe\u00ad\u0301") == prompt_hash("caf\u00e9")  # no soft hyphen blocks NFKC's composition
