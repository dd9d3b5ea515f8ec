"""SentencePiece encoding memoised per word, equal to ``sp.encode(text)`` id for id.

Why: SentencePiece's BPE encodes Gemma 2 text at about 1.1 M tokens/s on one core of these
machines (about 1.4 ms for a 5 KB reasoning trace), and it was the build's single largest cost.
Reasoning traces are highly repetitive at the word level, so a text can be encoded as the
concatenation of its words' encodings, each encoded once and looked up afterwards: a
``str.split`` and a ``bytes.join`` over dictionary hits, about 15x less CPU than the encoder.

Why it is exact (checked for each model by :func:`why_not_exact`, never assumed):
  1. the normalizer is the identity, adds no dummy prefix and keeps every space, so normalizing a
     piece of the text gives that piece of the normalized text (a space becomes ``▁``);
  2. BPE starts from single characters and user-defined symbols (matched greedily, longest
     first) and only ever merges two adjacent symbols into a piece of the vocabulary;
  3. no piece of the vocabulary holds a ``▁`` after another character (Gemma 2's pieces are
     ``▁`` + a word, or runs of whitespace alone), so no symbol, merged or user-defined, ever
     spans the boundary just before a run of spaces;
  4. so the merges on one side of such a boundary never see the other side, and BPE's order of
     merges (highest score first, leftmost on ties) restricted to one word is the order of that
     word encoded alone.
A vocabulary may hold a few pieces that break condition 3 (Gemma 3 has one, ``>▁</``, score
-106,574): a *bridge*. Every symbol BPE ever forms is a piece (or a single character) covering
exactly the stretch of the normalized text that spells it, so a bridge can span a cut only where
its text (``▁`` read as a space) occurs in the text; a text in which no bridge occurs meets
condition 3 as Gemma 2's texts do. :func:`exact_rule` names the bridges, and the cache encodes a
text holding one with SentencePiece whole (``"x> </"`` is ``x`` + ``>▁</``, not ``x>`` + ``▁</``).
Words are therefore cut just before each run of spaces (a literal ``▁`` counts as a space: it
normalizes to the same symbol): ``"a b  c"`` is ``"a"``, ``" b"``, ``"  c"``. Most texts have no
double space and no ``▁``, and take the fast path, ``text.split(" ")``: ``" "`` + each part after
the first. The others go through a regular expression that keeps runs of spaces whole.

Memory stays flat: two generations of at most ``capacity`` words each; when the young one is
full it becomes the old one, and a word looked up there is moved back. The result never depends
on what is cached (every entry is exact), so a build's bytes do not either.

Encodings are kept as int32 bytes (native order, as ``array("i")``), joined in one C call. A word
whose encoding holds a special id (content that spells ``<start_of_turn>``…) is cached as None:
joining it fails, and the caller takes the slow path that names the offending token.

Given ``decode_ids``, a word whose ids do not decode back to the word is cached as None too: a
literal ``▁`` normalizes to the same symbol as a space, so ``"a▁b"`` gets the ids of ``"a b"``
and training on them would teach other text than the example holds. Decoding is a concatenation
of the pieces' texts, cut nowhere inside a character, so a text whose every word decodes back
decodes back as a whole; the check runs once per word, on a miss, never on the hot path. An ASCII
word skips it when every ASCII character decodes back alone (checked once, at construction): a
piece's text is the text it matched, so only a character with no piece (``<unk>``) or a ``▁``,
which no ASCII word holds, can come back otherwise; on real traces that halves what misses cost.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable, Collection, Sequence
from itertools import islice, repeat
from typing import Any

# Words of a text that has a double space or a literal "▁": a run of spaces and what follows it.
_WORD = re.compile(r"[ \u2581]*[^ \u2581]+|[ \u2581]+")
_SPACE = "\u2581"
_BPE = 2  # sentencepiece_model.proto: TrainerSpec.ModelType.BPE

Encoded = bytes | None  # int32 ids, or None when the ids hold a special token
_ABSENT = object()  # not in a table (None is a value: a word refused)


MAX_BRIDGES = 16  # more bridging pieces than this: the per-text search would cost what the cache saves


def exact_rule(model_proto: bytes, pieces: Sequence[str] | None = None) -> tuple[str | None, tuple[str, ...]]:
    """(None, bridges) when word-memoised encoding equals whole-text encoding for this SentencePiece
    model on every text in which no bridge occurs (the conditions and the bridges of the module
    docstring); else (the first condition that fails, ()). Bridges are given as text, ``▁`` read as a
    space. ``pieces``, the model's pieces by id, saves reading them out of the proto."""
    from sentencepiece import sentencepiece_model_pb2

    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(model_proto)
    norm = model.normalizer_spec
    if model.trainer_spec.model_type != _BPE:
        return "not a BPE model", ()
    if norm.precompiled_charsmap or norm.name not in ("identity", ""):
        return f"normalizer {norm.name!r} rewrites text", ()
    if norm.add_dummy_prefix:
        return "the normalizer adds a dummy prefix", ()
    if norm.remove_extra_whitespaces:
        return "the normalizer removes extra whitespace", ()
    if not norm.escape_whitespaces or model.trainer_spec.treat_whitespace_as_suffix:
        return "spaces are not escaped as a prefix '▁'", ()
    if pieces is None:
        pieces = [piece.piece for piece in model.pieces]
    # A piece may only hold '▁' in its leading run: strip that run, and no '▁' may remain. One
    # search over the joined rest (256,000 pieces: ~20 ms); only a failure looks for the culprits.
    if _SPACE not in "".join(map(str.lstrip, pieces, repeat(_SPACE))):
        return None, ()
    bridges = [piece for piece in pieces if _SPACE in piece.lstrip(_SPACE)]
    if len(bridges) > MAX_BRIDGES:
        return f"{len(bridges)} pieces hold '▁' after another character, e.g. {bridges[0]!r}", ()
    return None, tuple(piece.replace(_SPACE, " ") for piece in bridges)


def why_not_exact(model_proto: bytes, pieces: Sequence[str] | None = None) -> str | None:
    """None when word-memoised encoding equals whole-text encoding for this SentencePiece model on
    every text (:func:`exact_rule` with no bridge), else the first condition that fails."""
    reason, bridges = exact_rule(model_proto, pieces)
    if reason is None and bridges:
        return f"piece {bridges[0].replace(' ', _SPACE)!r} holds '▁' after another character"
    return reason


def checked_int32(ids: list[int], special_ids: frozenset[int]) -> Encoded:
    """``ids`` as int32 bytes, or None when one of them is special: the one rule every encoding
    path of the build applies to content."""
    return array("i", ids).tobytes() if special_ids.isdisjoint(ids) else None


# Texts on which plain_codec's direct calls must agree with SentencePiece's own functions.
_PROBES = ("", " ", "a", " the", "  two  spaces", "wörld", " 日本語", "\u2581x", "<start_of_turn>", " 123.45", "\t\n")


def plain_codec(sp: Any) -> tuple[Callable[[str], list[int]], Callable[[list[int]], str]]:
    """``sp.encode`` and ``sp.decode`` of one text (``sp``, a SentencePieceProcessor) without the
    per-call option handling of SentencePiece's Python wrapper: the extension's own entry points,
    with the model's options (:class:`_Direct`). The word cache calls them once per new word: on
    the real traces' 26,000 new words, 3.0 us a word through them against 4.1 us through the
    wrapper. They are used only where this sentencepiece has them and they agree with the wrapper
    on :data:`_PROBES`; else the wrapper's functions are returned. Either way they pickle (as ``sp``)."""
    try:
        direct = _Direct(sp)
        if all(direct.encode(t) == ids and direct.decode(ids) == sp.decode(ids)
               for t, ids in zip(_PROBES, map(sp.encode, _PROBES))):
            return direct.encode, direct.decode
    except (AttributeError, TypeError, RuntimeError, ValueError):  # another sentencepiece: its wrapper
        pass
    return sp.encode, sp.decode


class _Direct:
    """SentencePiece's extension entry points for one text's ids and back, bound to ``sp``'s
    options; pickled as ``sp``, bound again when unpickled."""

    def __init__(self, sp: Any) -> None:
        self.sp = sp
        self._bind()

    def _bind(self) -> None:
        sp = self.sp
        options = (sp._enable_sampling, sp._nbest_size, sp._alpha, sp._add_bos, sp._add_eos, sp._reverse)
        if options[0]:
            raise ValueError("sampling draws other ids on each call: the wrapper alone handles it")
        self._options = options
        self._encode, self._decode = sp._processor._EncodeAsIds, sp._processor._DecodeIds

    def encode(self, text: str) -> list[int]:
        return self._encode(text, *self._options)

    def decode(self, ids: list[int]) -> str:
        return self._decode(ids)

    def __getstate__(self) -> dict[str, Any]:
        return {"sp": self.sp}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.sp = state["sp"]
        self._bind()


class _Generation(dict):
    """word -> encoding of ``prefix`` + word; a miss looks in the previous generation, then encodes."""

    def __init__(self, encode: Callable[[str], Encoded], prefix: str, older: dict | None) -> None:
        super().__init__()
        self.encode = encode
        self.prefix = prefix
        self.older = older

    def __missing__(self, word: str) -> Encoded:
        older = self.older
        if older is not None and word in older:
            value = older.pop(word)
        else:
            value = self.encode(self.prefix + word)
        self[word] = value
        return value


class WordCache:
    """``encode(text)``: the text's ids as int32 bytes, or None when a word of it encodes to one
    of ``special_ids`` or (given ``decode_ids``) its ids do not decode back to the word.
    ``encode_ids(text)`` is the plain encoder it memoises. A text in which one of ``bridges``
    occurs (:func:`exact_rule`; ``▁`` read as a space) is encoded whole, never memoised: None
    when its ids hold a special id or do not decode back to it."""

    def __init__(self, encode_ids: Callable[[str], list[int]], special_ids: Collection[int], *,
                 decode_ids: Callable[[list[int]], str] | None = None, capacity: int = 1 << 16,
                 bridges: Sequence[str] = ()) -> None:
        if capacity < 1:
            raise ValueError(f"capacity {capacity}: must hold at least one word")
        self.encode_ids = encode_ids
        self.decode_ids = decode_ids
        self._ascii_decodes = decode_ids is not None and all(
            decode_ids(encode_ids(c)) == c for c in map(chr, range(128)))
        self.special_ids = frozenset(special_ids)
        self.capacity = capacity
        self.bridges = tuple(bridges)
        if any(not bridge.strip(" ") for bridge in self.bridges):
            raise ValueError(f"bridges {self.bridges!r}: each must hold a character besides spaces")
        self.lookups = self.misses = 0  # words looked up, and encoded afresh (the benchmark's hit rate)
        self._literal = _Generation(self._encode_word, "", None)  # "word" -> encode("word")
        self._spaced = _Generation(self._encode_spaced, " ", None)  # "word" -> encode(" word")

    def __len__(self) -> int:
        """Words held, both generations of both tables."""
        return sum(len(g) + len(g.older or ()) for g in (self._literal, self._spaced))

    def _encode_word(self, word: str) -> Encoded:
        """A miss of the literal table. A word of one leading space and no other (most words of a
        text with a double space) is the spaced table's entry: each word is encoded once."""
        if word[:1] == " " and word[1:2] not in ("", " ", _SPACE):
            return self._spaced[word[1:]]
        return self._encode_literal(word)

    def _encode_spaced(self, text: str) -> Encoded:
        """A miss of the spaced table (``text`` is ``" " + word``): the literal table's entry if it has one."""
        literal = self._literal
        found = literal.get(text, _ABSENT)
        if found is _ABSENT and literal.older is not None:
            found = literal.older.get(text, _ABSENT)
        return self._encode_literal(text) if found is _ABSENT else found

    def _encode_literal(self, word: str) -> Encoded:
        self.misses += 1
        ids = self.encode_ids(word)
        decode = self.decode_ids
        if decode is not None and not (self._ascii_decodes and word.isascii()) and decode(ids) != word:
            return None
        return checked_int32(ids, self.special_ids)

    def encode(self, text: str) -> Encoded:
        if self.bridges and self._bridged(text):
            return self._encode_whole(text)
        if "  " in text or _SPACE in text:
            words = _WORD.findall(text)
            encoded = list(map(self._literal.__getitem__, words))
        else:
            words = text.split(" ")
            encoded = [self._literal[words[0]]]
            encoded += map(self._spaced.__getitem__, islice(words, 1, None))
        self.lookups += len(words)
        self._age()
        try:
            return b"".join(encoded)
        except TypeError:  # a None: a word that encodes to a special id
            return None

    def _bridged(self, text: str) -> bool:
        spaced = text.replace(_SPACE, " ") if _SPACE in text else text
        return any(bridge in spaced for bridge in self.bridges)

    def _encode_whole(self, text: str) -> Encoded:
        ids = self.encode_ids(text)
        if self.decode_ids is not None and self.decode_ids(ids) != text:
            return None
        return checked_int32(ids, self.special_ids)

    def _age(self) -> None:
        """Start a new generation of a table once it holds ``capacity`` words."""
        for name in ("_literal", "_spaced"):
            young = getattr(self, name)
            if len(young) >= self.capacity:
                setattr(self, name, _Generation(young.encode, young.prefix, young))
                young.older = None  # the generation before it is dropped
