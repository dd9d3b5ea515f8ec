import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tzc_data.text import fuzz
from tzc_data.text.tokenize import Tokenizer, _ints
from tzc_data.text.wordcache import WordCache, plain_codec, why_not_exact

# Whitespace shapes that decide where words are cut: runs of spaces, a literal "▁", newlines, tabs.
SPACES = [" ", "  ", "   ", "\u2581", " \u2581", "\u2581 ", "\n", "\n ", " \n", "\t", "\t ", "\u00a0", "\u3000"]


def texts() -> st.SearchStrategy[str]:
    piece = st.one_of(st.text(max_size=12), st.sampled_from(SPACES + fuzz.INJECTIONS))
    return st.lists(piece, max_size=12).map("".join)


def ids_of(cache: WordCache, text: str) -> list[int] | None:
    encoded = cache.encode(text)
    return None if encoded is None else _ints(encoded).tolist()


def test_gemma_qualifies_and_a_unigram_model_does_not(gemma_tokenizer, tiny_tokenizer):
    assert gemma_tokenizer.memo_refused is None and gemma_tokenizer.memo is not None
    assert tiny_tokenizer.memo is None and tiny_tokenizer.memo_refused == "not a BPE model"
    assert why_not_exact(tiny_tokenizer.sp.serialized_model_proto()) == "not a BPE model"


def test_a_bpe_model_with_a_dummy_prefix_is_refused(tmp_path):
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["a b c " * 50, "hello world " * 50]), model_writer=model,
                                   vocab_size=30, model_type="bpe", add_dummy_prefix=True, minloglevel=2,
                                   normalization_rule_name="identity")
    assert why_not_exact(model.getvalue()) == "the normalizer adds a dummy prefix"


def test_a_piece_that_spans_a_space_is_named(gemma_tokenizer):
    """A symbol holding '▁' after another character would be cut in two by the cache's words."""
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["a b c " * 50, "or so " * 50]), model_writer=model,
                                   vocab_size=11, model_type="bpe", add_dummy_prefix=False, minloglevel=2,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   user_defined_symbols=["or\u2581so"])
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    pieces = sp.id_to_piece(list(range(sp.get_piece_size())))
    expected = "piece 'or\u2581so' holds '▁' after another character"
    assert why_not_exact(model.getvalue()) == expected
    assert why_not_exact(model.getvalue(), pieces) == expected  # pieces given by the caller: the same verdict
    gemma_pieces = gemma_tokenizer.sp.id_to_piece(list(range(gemma_tokenizer.sp.get_piece_size())))
    assert why_not_exact(gemma_tokenizer.sp.serialized_model_proto(), gemma_pieces) is None


@settings(max_examples=1500, deadline=None, derandomize=True)
@given(texts())
def test_property_cached_ids_equal_sentencepiece_on_gemma(gemma_tokenizer, text):
    sp = gemma_tokenizer.sp
    cache = WordCache(sp.encode, gemma_tokenizer.special_ids, capacity=8)  # small: ageing runs too
    expected = sp.encode(text)
    special = not gemma_tokenizer.special_ids.isdisjoint(expected)
    for _ in range(2):  # cold, then from the cache
        got = ids_of(cache, text)
        assert got == (None if special else expected)


def test_cached_ids_equal_sentencepiece_on_real_traces(gemma_tokenizer, clean_traces, loop_traces, real_prompts):
    sp = gemma_tokenizer.sp
    cache = WordCache(sp.encode, gemma_tokenizer.special_ids, capacity=4096)
    texts = [t for row in clean_traces + loop_traces for t in (row["prompt"], row["response"])] + real_prompts
    for text in texts + texts:
        assert ids_of(cache, text) == sp.encode(text)
    assert 0 < cache.misses < cache.lookups
    assert len(cache) <= 4 * 4096 + max(len(t.split(" ")) for t in texts)  # two generations, two tables


def test_a_word_that_encodes_to_a_special_id_makes_the_text_none(gemma_tokenizer):
    cache = WordCache(gemma_tokenizer.sp.encode, gemma_tokenizer.special_ids)
    assert cache.encode("fine text") is not None
    assert cache.encode("see <start_of_turn> here") is None
    assert cache.encode("again <start_of_turn>") is None  # from the cache: still refused


def test_memory_is_bounded_by_two_generations(gemma_tokenizer):
    cache = WordCache(gemma_tokenizer.sp.encode, gemma_tokenizer.special_ids, capacity=100)
    for k in range(50):
        cache.encode(" ".join(f"w{k}x{i}" for i in range(30)))
    assert len(cache) <= 2 * (100 + 30) + 2  # plus the first word of each table
    with pytest.raises(ValueError, match="capacity"):
        WordCache(gemma_tokenizer.sp.encode, (), capacity=0)


def test_tokenizer_with_and_without_the_cache_give_the_same_examples(gemma_tokenizer, clean_traces):
    plain = Tokenizer(gemma_tokenizer.path, memo=False)
    assert plain.memo is None and plain.memo_refused == "turned off"
    for row in clean_traces[:40]:
        reasoning, answer = row["response"].split("</think>", 1)
        parts = (row["prompt"].strip(), reasoning.replace("<think>", "").strip(), answer.strip())
        assert gemma_tokenizer.encode_example(*parts) == plain.encode_example(*parts)
    assert json.dumps(gemma_tokenizer.encode_prompt("hi  there")) == json.dumps(plain.encode_prompt("hi  there"))


@settings(max_examples=800, deadline=None, derandomize=True)
@given(texts())
def test_property_with_decode_a_text_is_refused_exactly_when_its_ids_do_not_decode_back(gemma_tokenizer, text):
    """The verdict per word equals the verdict on the whole text (a literal '▁' is the usual culprit)."""
    sp = gemma_tokenizer.sp
    cache = WordCache(sp.encode, gemma_tokenizer.special_ids, decode_ids=sp.decode, capacity=8)
    expected = sp.encode(text)
    refused = not gemma_tokenizer.special_ids.isdisjoint(expected) or sp.decode(expected) != text
    for _ in range(2):
        assert ids_of(cache, text) == (None if refused else expected)


def test_the_decode_verdict_is_cached_per_word(gemma_tokenizer):
    sp = gemma_tokenizer.sp
    calls = []

    def decode(ids):
        calls.append(ids)
        return sp.decode(ids)

    cache = WordCache(sp.encode, gemma_tokenizer.special_ids, decode_ids=decode)
    assert cache._ascii_decodes and len(calls) == 128  # each ASCII character, once
    del calls[:]
    assert cache.encode("one two two one") is not None and calls == []  # ASCII words: proven, not decoded
    assert cache.encode("caf\u00e9 na\u00efve caf\u00e9") is not None and len(calls) == 3  # "café", " naïve", " café"
    assert cache.encode("a\u2581b and more") is None  # "\u2581b": '▁' comes back as ' '
    assert ids_of(cache, "a b and more") == sp.encode("a b and more")
    seen = len(calls)
    assert cache.encode("a\u2581b and more") is None and cache.encode("caf\u00e9 one na\u00efve") is not None
    assert len(calls) == seen  # every word's verdict came from the cache


def test_without_the_ascii_proof_every_word_is_decoded():
    """A model whose ASCII characters do not all decode back (here 'x' comes back as 'y')."""
    def encode(text):
        return [ord(c) for c in text]

    def decode(ids):
        return "".join(map(chr, ids)).replace("x", "y")

    cache = WordCache(encode, (), decode_ids=decode)
    assert not cache._ascii_decodes
    assert cache.encode("a b") is not None and cache.encode("a box") is None and cache.encode("box") is None
    assert WordCache(encode, ()).encode("a box") is not None  # no decode_ids: ids only, as before


# Gemma 3's one bridging piece, ">▁</", in the places a cut can fall: after ">" and before "</".
BRIDGED = ["x> </", "> </", "a=> </div>", "<b>x</b> </p>", ">\u2581</", "x>  </", "x> </ y> </", "<i>> </i>"]


def test_gemma3_has_one_bridge_and_the_plain_cache_would_get_it_wrong(gemma3_tokenizer):
    """Gemma 3's vocabulary breaks condition 3 with one piece, '>▁</': cut into words, "x> </" would
    be "x>" + " </", where SentencePiece makes "x" + ">▁</". The cache encodes such texts whole."""
    from tzc_data.text.wordcache import exact_rule

    sp = gemma3_tokenizer.sp
    pieces = sp.id_to_piece(list(range(sp.get_piece_size())))
    assert exact_rule(sp.serialized_model_proto(), pieces) == (None, ("> </",))
    assert why_not_exact(sp.serialized_model_proto(), pieces) == "piece '>\u2581</' holds '▁' after another character"
    plain, bridged = WordCache(sp.encode, ()), WordCache(sp.encode, (), bridges=("> </",))
    assert ids_of(plain, "x> </") != sp.encode("x> </")  # the rule is needed
    for text in BRIDGED:
        assert ids_of(bridged, text) == sp.encode(text), text
    assert [t for t in BRIDGED if not bridged._bridged(t)] == ["x>  </"]  # the rest: encoded whole, never cut
    with pytest.raises(ValueError, match="bridges"):
        WordCache(sp.encode, (), bridges=("  ",))


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(st.lists(st.one_of(st.text(max_size=8), st.sampled_from(SPACES + fuzz.INJECTIONS + BRIDGED + [">", "</"])),
                max_size=12).map("".join))
def test_property_cached_ids_equal_sentencepiece_on_gemma3(gemma3_tokenizer, text):
    tok = gemma3_tokenizer
    cache = WordCache(tok.sp.encode, tok.special_ids, decode_ids=tok.sp.decode, capacity=8, bridges=tok.memo.bridges)
    expected = tok.sp.encode(text)
    refused = not tok.special_ids.isdisjoint(expected) or tok.sp.decode(expected) != text
    for _ in range(2):
        assert ids_of(cache, text) == (None if refused else expected)


def test_gemma3_cached_ids_equal_sentencepiece_on_real_traces(gemma3_tokenizer, clean_traces, loop_traces,
                                                              real_prompts):
    from tests.conftest import read_jsonl

    tok = gemma3_tokenizer
    long = [row for name in ("r1_long_clean.jsonl", "r1_long_loops.jsonl", "r1_long_truncated.jsonl")
            for row in read_jsonl(name)]
    texts = [t for row in clean_traces + loop_traces + long for t in (row["prompt"], row["response"])] + real_prompts
    for text in texts:
        assert ids_of(tok.memo, text) == tok.sp.encode(text)
    plain = Tokenizer(tok.path, memo=False)
    for row in clean_traces[:40]:
        reasoning, answer = row["response"].split("</think>", 1)
        parts = (row["prompt"].strip(), reasoning.replace("<think>", "").strip(), answer.strip())
        assert tok.encode_example(*parts) == plain.encode_example(*parts)


@settings(max_examples=800, deadline=None, derandomize=True)
@given(texts())
def test_property_plain_codec_is_sentencepiece_without_its_wrapper(gemma_tokenizer, text):
    sp = gemma_tokenizer.sp
    encode, decode = plain_codec(sp)
    assert encode != sp.encode and decode != sp.decode  # the pinned sentencepiece has the entry points
    ids = encode(text)
    assert ids == sp.encode(text) and decode(ids) == sp.decode(ids)


def test_the_build_tokenizer_caches_through_the_plain_codec_and_gives_sentencepiece_ids(gemma_tokenizer, clean_traces):
    sp, memo = gemma_tokenizer.sp, gemma_tokenizer.memo
    assert memo.encode_ids != sp.encode and memo.decode_ids != sp.decode
    for row in clean_traces:
        assert ids_of(memo, row["response"]) == sp.encode(row["response"])


class _Wrapper:
    """A SentencePieceProcessor's Python face, over a processor whose entry points may disagree."""

    _enable_sampling, _nbest_size, _alpha, _add_bos, _add_eos, _reverse = False, -1, 0.1, False, False, False

    def __init__(self, sp, processor):
        self.sp, self._processor = sp, processor

    def encode(self, text):
        return self.sp.encode(text)

    def decode(self, ids):
        return self.sp.decode(ids)


@pytest.mark.parametrize("case", ["no processor", "sampling", "entry points disagree", "other signature"])
def test_plain_codec_falls_back_to_the_wrapper(gemma_tokenizer, case):
    sp = gemma_tokenizer.sp
    processor = sp._processor

    class Wrong:  # encodes one id off
        def _EncodeAsIds(self, text, *options):
            return [i + 1 for i in processor._EncodeAsIds(text, *options)]

        _DecodeIds = processor._DecodeIds

    class Other:  # another sentencepiece: other arguments
        def _EncodeAsIds(self, text):
            return processor._EncodeAsIds(text, False, -1, 0.1, False, False, False)

        _DecodeIds = processor._DecodeIds

    wrapper = _Wrapper(sp, {"no processor": None, "sampling": processor, "entry points disagree": Wrong(),
                            "other signature": Other()}[case])
    if case == "sampling":
        wrapper._enable_sampling = True
    encode, decode = plain_codec(wrapper)
    assert (encode, decode) == (wrapper.encode, wrapper.decode)


def test_a_tokenizer_and_its_word_cache_pickle_and_encode_the_same_after(gemma_tokenizer, clean_traces):
    import pickle

    again = pickle.loads(pickle.dumps(gemma_tokenizer))
    text = clean_traces[0]["response"]
    assert again.memo.encode(text) == gemma_tokenizer.memo.encode(text) is not None
    assert again.memo.encode_ids != again.sp.encode  # still the direct entry points
