"""Property tests of the formatting, shared by the test suite and ``tzc-data fuzz-format``.

Users fuzz their own formatting too (their system prompt, their tokenizer) at any scale, so the
properties live here, in the package, and the tests run the very same functions.

Properties:
  * ``round_trip``: ``render`` refuses (FormatError) or ``parse(render(p, r, a)) == trimmed (p, r, a)``,
    and the inference prompt is exactly the sample's prefix;
  * ``split``: ``split_response("<think>r</think>a")`` gives back trimmed (r, a) for clean r, a;
  * ``tokens`` (with a tokenizer): the ids decode to exactly the rendered text, special ids occur
    only at the template's six markup places (never inside content), the loss mask starts right
    after ``<start_of_turn>model\\n``, and the inference prompt's ids are the sample's prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.reporting import with_reporter

from tzc_data.text import format as fmt
from tzc_data.text.tokenize import Tokenizer

# Fragments that stress the template: our tags, Gemma control strings, halves of them, separators.
INJECTIONS = [
    "<reasoning>", "</reasoning>", "<answer>", "</answer>", "<think>", "</think>", "<start_of_turn>",
    "<end_of_turn>", "<bos>", "<eos>", "<pad>", "<mask>", "<unused7>", "[@BOS@]", "<start_of", "_turn>",
    "</reasoning>\n<answer>", "user\n", "model\n", "\n\n", "\n", " ", "\t", "<", ">", "</", "\u00a0", "\u2028",
]
MARKUP_SPECIALS = 6  # <bos>, <start_of_turn> x2, <end_of_turn> x2, <eos>


def content() -> st.SearchStrategy[str]:
    """Arbitrary unicode with template fragments spliced in."""
    piece = st.one_of(st.text(max_size=24), st.sampled_from(INJECTIONS))
    return st.lists(piece, max_size=8).map("".join)


def systems(fixed: str | None) -> st.SearchStrategy[str]:
    return st.just(fixed) if fixed is not None else st.one_of(st.just(fmt.DEFAULT_SYSTEM), content())


def check_round_trip(prompt: str, reasoning: str, answer: str, system: str) -> None:
    try:
        text = fmt.render(prompt, reasoning, answer, system=system)
    except fmt.FormatError as err:
        _check_refusal(err, prompt, reasoning, answer, system)
        return
    parsed = fmt.parse(text)
    expected = (prompt.strip(), reasoning.strip(), answer.strip())
    if parsed != expected:
        raise AssertionError(f"parse(render(...)) = {parsed!r}, expected {expected!r}")
    head = fmt.render_prompt(prompt, system=system)
    if not text.startswith(head) or not text[len(head):].startswith(fmt.REASONING_OPEN):
        raise AssertionError("the inference prompt is not the sample's prefix")


def _check_refusal(err: fmt.FormatError, *parts: str) -> None:
    """A refusal must be justified by the input, not a parser's accident."""
    joined = "\x00".join(parts)
    justified = {
        "control_in_content": any(s in joined for s in ("<", "[")),
        "tag_in_content": any(t in "\x00".join(parts[:3]) for t in (
            "<reasoning>", "</reasoning>", "<answer>", "</answer>", "<think>", "</think>")),
        "bad_system": "\n\n" in parts[3],
    }.get(err.reason, err.reason.startswith("empty_") and any(not p.strip() for p in parts))
    if not justified:
        raise AssertionError(f"render refused {parts!r} with {err}")


def check_split(reasoning: str, answer: str) -> None:
    try:
        fmt.check_content("reasoning", reasoning)
        fmt.check_content("answer", answer)
    except fmt.FormatError:
        return  # tags inside: split may legitimately cut elsewhere; render refuses them anyway
    response = f"{fmt.THINK_OPEN}{reasoning}{fmt.THINK_CLOSE}{answer}"
    try:
        got = fmt.split_response(response)
    except fmt.FormatError as err:
        if err.reason == "empty_reasoning" and not reasoning.strip():
            return
        if err.reason == "empty_answer" and not answer.strip():
            return
        raise AssertionError(f"split_response refused {response!r}: {err}") from None
    if got != (reasoning.strip(), answer.strip()):
        raise AssertionError(f"split_response({response!r}) = {got!r}")


def check_tokens(tokenizer: Tokenizer, prompt: str, reasoning: str, answer: str) -> None:
    try:
        text = fmt.render(prompt, reasoning, answer, system=tokenizer.system)
        ids, prompt_length = tokenizer.encode_example(prompt.strip(), reasoning.strip(), answer.strip())
    except fmt.FormatError:
        return
    specials = [i for i, t in enumerate(ids) if t in tokenizer.special_ids]
    if len(specials) != MARKUP_SPECIALS:
        where = [(i, tokenizer.sp.id_to_piece(ids[i])) for i in specials]
        raise AssertionError(f"special token ids at {where}: a control token inside content")
    decoded = tokenizer.decode(ids)
    if decoded != text:
        raise AssertionError(f"tokens decode to {decoded!r}, rendered text is {text!r}")
    prompt_ids = tokenizer.encode_prompt(prompt)
    if ids[:prompt_length] != prompt_ids or len(prompt_ids) != prompt_length:
        raise AssertionError("the inference prompt's ids are not the sample's prefix (loss mask start)")


@dataclass
class Failure:
    prop: str
    report: str


def properties(tokenizer: Tokenizer | None, system: str | None) -> dict[str, Callable[..., None]]:
    """The hypothesis-wrapped properties, ready to call with a ``settings`` object."""
    props = {
        "round_trip": given(content(), content(), content(), systems(system))(check_round_trip),
        "split": given(content(), content())(check_split),
    }
    if tokenizer is not None:
        props["tokens"] = given(content(), content(), content())(
            lambda p, r, a: check_tokens(tokenizer, p, r, a))
    return props


def run(examples: int, *, tokenizer: Tokenizer | None = None, system: str | None = None,
        derandomize: bool = False) -> list[Failure]:
    """Run every property on ``examples`` inputs each; returns the shrunk counterexamples."""
    failures = []
    config = settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize,
                      suppress_health_check=list(HealthCheck), print_blob=False)
    for name, prop in properties(tokenizer, system).items():
        lines: list[str] = []
        with with_reporter(lines.append):
            try:
                config(prop)()
            except Exception as err:  # noqa: BLE001 - any exception is a counterexample
                notes = [n for n in getattr(err, "__notes__", []) if "Falsifying" in n or "=" in n]
                failures.append(Failure(name, "\n".join([*lines, *notes, f"{type(err).__name__}: {err}"])))
    return failures
