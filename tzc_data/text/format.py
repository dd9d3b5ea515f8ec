"""Split R1 responses and render them in the Gemma 2 chat template, and back.

The rendered sample is::

    <bos><start_of_turn>user\\n{system}\\n\\n{prompt}<end_of_turn>\\n<start_of_turn>model\\n
    <reasoning>{reasoning}</reasoning>\\n<answer>{answer}</answer><end_of_turn>\\n<eos>

(the line break after ``model\\n`` above is for reading only). Gemma 2 has no system role, so the
system prompt opens the first user turn. Every part is trimmed, as the Gemma template trims turn
text, and the prompt used at inference (:func:`render_prompt`) is the rendered sample's exact
prefix: the original pipeline trained on ``model\\n`` but sampled after ``model`` (defect 5).

Policy for markup inside content (documented in docs/building.md): content that contains one of our
tags (``<reasoning>``, ``</answer>``, ``<think>``…) or a Gemma control string (``<start_of_turn>``,
``<eos>``, ``<unused7>``…) is *refused* with :class:`FormatError`, never rewritten. Rewriting
would silently change what the model is taught; refusing keeps every kept sample parseable and
makes the drop visible in the stats (reasons ``tag_in_content`` and ``control_in_content``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tzc_data.record import Example

__all__ = [
    "DEFAULT_SYSTEM",
    "FormatError",
    "split_response",
    "check_content",
    "check_system",
    "render",
    "render_prompt",
    "parse",
    "parse_completion",
]

DEFAULT_SYSTEM = (
    "You are a deep thinking AI. Think step by step about the problem and provide your reasoning "
    "between <reasoning> and </reasoning> tags. Then, provide the final answer between <answer> "
    "and </answer> tags."
)

# Markup of the Gemma 2 template; tokenization inserts the control tokens by id.
BOS, EOS = "<bos>", "<eos>"
START, END = "<start_of_turn>", "<end_of_turn>"
USER_HEAD = f"{BOS}{START}user\n"
SYSTEM_SEP = "\n\n"
MODEL_HEAD = f"{END}\n{START}model\n"
REASONING_OPEN, REASONING_CLOSE = "<reasoning>", "</reasoning>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
BETWEEN = f"{REASONING_CLOSE}\n{ANSWER_OPEN}"
MODEL_TAIL = f"{ANSWER_CLOSE}{END}\n{EOS}"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

# Gemma 2 pieces that SentencePiece would turn into special tokens if they appeared in raw text
# (user-defined pieces), plus the control pieces, which must never appear as text either.
_CONTROL = re.compile(
    r"<(?:bos|eos|pad|unk|mask|start_of_turn|end_of_turn|2mass|unused\d+)>|\[@BOS@\]|\[toxicity=0\]"
)
_TAG = re.compile(r"</?(?:reasoning|answer|think)>")


class FormatError(ValueError):
    """A response or sample that cannot be formatted; ``reason`` is the drop reason in the stats."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def split_response(response: str) -> tuple[str, str]:
    """Split an R1 response ``<think>reasoning</think>answer`` into trimmed (reasoning, answer).

    The opening ``<think>`` is optional (some R1 front-ends put it in the prompt template); the
    closing one is not: without it the trace was cut at the generation limit, usually mid-loop,
    and there is no answer to learn. An answer is never invented from the reasoning (defects 2, 3).
    Raises :class:`FormatError` with reason ``unterminated_think``, ``empty_reasoning`` or
    ``empty_answer``.
    """
    close = response.find(THINK_CLOSE)
    if close < 0:
        return _raise("unterminated_think", f"no {THINK_CLOSE} in {len(response)} characters")
    reasoning = response[:close].strip()
    if reasoning.startswith(THINK_OPEN):
        reasoning = reasoning[len(THINK_OPEN):].strip()
    answer = response[close + len(THINK_CLOSE):].strip()
    if not reasoning:
        return _raise("empty_reasoning", "nothing between <think> and </think>")
    if not answer:
        return _raise("empty_answer", "nothing after </think>")
    return reasoning, answer


def check_content(field: str, text: str, *, tags: bool = True) -> None:
    """Refuse markup inside content: a Gemma control string and, unless ``tags=False``, one of our
    tags (see the module docstring). The system prompt may name the tags: it must, to ask for them."""
    if "<" not in text and "[" not in text:  # every pattern starts with one: two memchr, not two regex scans
        return
    match = _CONTROL.search(text)
    if match:
        _raise("control_in_content", f"{field} contains {match.group()!r} at character {match.start()}")
    match = _TAG.search(text) if tags else None
    if match:
        _raise("tag_in_content", f"{field} contains {match.group()!r} at character {match.start()}")


def _clean(field: str, text: str, empty_reason: str, *, tags: bool = True) -> str:
    if not isinstance(text, str):
        _raise("malformed", f"{field} is {type(text).__name__}, not str")
    text = text.strip()
    if not text:
        _raise(empty_reason, f"{field} is empty after trimming")
    check_content(field, text, tags=tags)
    return text


def check_system(system: str) -> str:
    """The trimmed system prompt, or FormatError: non-empty, no blank line, no control strings."""
    system = _clean("system", system, "empty_system", tags=False)
    if SYSTEM_SEP in system:
        # parse() finds the prompt after the first blank line of the user turn.
        _raise("bad_system", "system prompt must not contain a blank line ('\\n\\n')")
    return system


def render_prompt(prompt: str, *, system: str = DEFAULT_SYSTEM) -> str:
    """The inference prompt: exactly the prefix of :func:`render` that precedes the model's text."""
    return f"{USER_HEAD}{check_system(system)}{SYSTEM_SEP}{_clean('prompt', prompt, 'empty_prompt')}{MODEL_HEAD}"


def render(prompt: str, reasoning: str, answer: str, *, system: str = DEFAULT_SYSTEM) -> str:
    """Render one training sample; raises :class:`FormatError` on input it refuses."""
    head = render_prompt(prompt, system=system)
    reasoning = _clean("reasoning", reasoning, "empty_reasoning")
    answer = _clean("answer", answer, "empty_answer")
    return f"{head}{REASONING_OPEN}{reasoning}{BETWEEN}{answer}{MODEL_TAIL}"


def parse(text: str) -> tuple[str, str, str]:
    """Inverse of :func:`render`: (prompt, reasoning, answer). Raises :class:`FormatError`."""
    if not text.startswith(USER_HEAD):
        _raise("unparseable", f"sample does not start with {USER_HEAD!r}")
    user_end = text.find(MODEL_HEAD, len(USER_HEAD))
    if user_end < 0:
        _raise("unparseable", "no model turn")
    user = text[len(USER_HEAD):user_end]
    sep = user.find(SYSTEM_SEP)
    if sep < 0:
        _raise("unparseable", "user turn has no system prompt separator")
    reasoning, answer = parse_completion(text[user_end + len(MODEL_HEAD):])
    return user[sep + len(SYSTEM_SEP):], reasoning, answer


def parse_completion(text: str) -> tuple[str, str]:
    """(reasoning, answer) of a model turn; accepts a generation that stops at ``</answer>``.

    Used both to invert :func:`render` and to check a sampled completion's format.
    """
    if not text.startswith(REASONING_OPEN):
        _raise("unparseable", f"model turn does not start with {REASONING_OPEN}")
    mid = text.find(BETWEEN, len(REASONING_OPEN))
    if mid < 0:
        _raise("unparseable", f"no {BETWEEN!r} in the model turn")
    end = text.find(ANSWER_CLOSE, mid + len(BETWEEN))
    if end < 0:
        _raise("unparseable", f"no {ANSWER_CLOSE} in the model turn")
    tail = text[end:]
    if tail not in (ANSWER_CLOSE, MODEL_TAIL, f"{ANSWER_CLOSE}{END}", f"{ANSWER_CLOSE}{END}\n"):
        _raise("unparseable", f"unexpected text after {ANSWER_CLOSE}: {tail[:40]!r}")
    return text[len(REASONING_OPEN):mid], text[mid + len(BETWEEN):end]


def _raise(reason: str, detail: str):
    raise FormatError(reason, detail)


# ---------------------------------------------------------------------------------------------
# Pipeline stages (generators over Example; see tzc_data.record)


def split_examples(examples: Iterable[Example], *, keep_response: bool = False) -> Iterator[Example]:
    """Stage: split each kept example's response into reasoning and answer, or drop it.

    The raw response is then cleared (in-flight examples stay small, and workers pickle less)
    unless ``keep_response``: ``--keep-rejected`` promises the full text of every dropped row, and
    a row dropped by a later stage has only its trimmed parts otherwise.
    """
    for example in examples:
        if example.kept:
            try:
                example.reasoning, example.answer = split_response(example.response)
                if not keep_response:
                    example.response = ""
            except FormatError as err:
                example.drop(err.reason, err.detail)
        yield example


def format_examples(examples: Iterable[Example]) -> Iterator[Example]:
    """Stage: trim the parts as the template does and refuse markup inside them.

    Tokenization then encodes exactly these parts, so the tokens decode to :func:`render`'s text.
    """
    for example in examples:
        if example.kept:
            try:
                example.prompt = _clean("prompt", example.prompt, "empty_prompt")
                example.reasoning = _clean("reasoning", example.reasoning, "empty_reasoning")
                example.answer = _clean("answer", example.answer, "empty_answer")
            except FormatError as err:
                example.drop(err.reason, err.detail)
        yield example
