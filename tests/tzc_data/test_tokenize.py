import pytest
from hypothesis import given, settings

from tzc_data import format as fmt
from tzc_data import fuzz
from tzc_data.errors import TokenizerError
from tzc_data.record import Example
from tzc_data.tokenize import GEMMA2_SHA256, Tokenizer, tokenize


def test_gemma_tokenizer_is_the_pinned_file_with_known_ids(gemma_tokenizer):
    tok = gemma_tokenizer
    assert tok.sha256 == GEMMA2_SHA256
    assert (tok.pad, tok.eos, tok.bos, tok.start_of_turn, tok.end_of_turn) == (0, 1, 2, 106, 107)
    assert tok.sp.get_piece_size() == 256000


def test_gemma_example_tokens_markup_and_loss_mask(gemma_tokenizer):
    tok = gemma_tokenizer
    ids, prompt_len = tok.encode_example("What is 2+2?", "Add them.", "4")
    assert ids[:2] == [2, 106] and ids[-3:] == [107, 108, 1]
    assert ids[prompt_len - 5:prompt_len] == [107, 108, 106, tok.sp.piece_to_id("model"), 108]
    assert tok.decode(ids) == fmt.render("What is 2+2?", "Add them.", "4")
    assert ids[:prompt_len] == tok.encode_prompt("What is 2+2?")


def test_content_that_spells_a_control_token_never_becomes_one(gemma_tokenizer):
    tok = gemma_tokenizer
    ids = tok.sp.encode("<start_of_turn>")
    assert ids == [106]  # SentencePiece matches it in raw text: why content is checked
    with pytest.raises(fmt.FormatError) as err:
        tok.encode_example("see <start_of_turn> here", "r", "a")
    assert err.value.reason == "control_in_content"


def test_tokenize_stage_drops_control_ids_that_format_did_not_know(tiny_tokenizer):
    # "<mask>" is a user-defined piece in both tokenizers; format refuses it, the stage too.
    live = Example(row=0, prompt="p", reasoning="r", answer="a")
    bad = Example(row=1, prompt="p", reasoning="r <mask> r", answer="a")
    out = list(tokenize([live, bad], tiny_tokenizer))
    assert out[0].kept and out[0].tokens
    assert out[1].status == "control_in_content" and "<mask>" in out[1].detail


@settings(max_examples=300, deadline=None, derandomize=True)
@given(fuzz.content(), fuzz.content(), fuzz.content())
def test_property_tokens_through_the_real_tokenizer(gemma_tokenizer, p, r, a):
    fuzz.check_tokens(gemma_tokenizer, p, r, a)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(fuzz.content(), fuzz.content(), fuzz.content())
def test_property_tokens_through_a_tiny_tokenizer(tiny_tokenizer, p, r, a):
    fuzz.check_tokens(tiny_tokenizer, p, r, a)


def test_real_prompts_round_trip_through_gemma(gemma_tokenizer, real_prompts):
    for prompt in real_prompts:
        fuzz.check_tokens(gemma_tokenizer, prompt, "Let me think.", "Done.")


def test_missing_or_unsuitable_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        Tokenizer(tmp_path / "nope.model")
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match="not a SentencePiece model"):
        Tokenizer(junk)
