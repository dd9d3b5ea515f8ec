from tzc_data.dedupe import ExactIndex, drop_duplicates, hash_prompts, normalise, prompt_hash
from tzc_data.record import Example


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
