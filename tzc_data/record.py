"""The one record type that flows through every stage, and the catalogue of drop reasons.

Every stage is a generator ``Iterable[Example] -> Iterator[Example]`` that yields *every* example
it receives, in order: a stage that rejects one sets ``status`` and passes it on, and the stages
after it leave dropped examples alone. So the writer sees each input row exactly once, in row
order, and the accounting (rows read == kept + dropped) holds by construction.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

KEPT = "kept"

# reason -> (what it means, the option that controls it). The guardrail, explain and docs/building.md use this.
REASONS: dict[str, tuple[str, str]] = {
    "malformed": ("missing/null/non-string field, invalid UTF-8 or an undecodable line", "none (fix the source)"),
    "format_mismatch": ("the row does not fit --format (an OpenO1 output without <Thought>, two user turns…)",
                        "--format"),
    "unterminated_think": ("the response has no </think>: cut at the generation limit", "none (never trainable)"),
    "empty_reasoning": ("nothing between <think> and </think>", "none (never trainable)"),
    "empty_answer": ("nothing after </think>", "none (never trainable)"),
    "empty_prompt": ("the prompt is empty after trimming", "none (never trainable)"),
    "tag_in_content": ("a <reasoning>/<answer>/<think> tag inside content", "none (would be unparseable)"),
    "control_in_content": ("a Gemma control string such as <end_of_turn> inside content", "none (injection)"),
    "lossy_tokens": ("the tokens decode to other text than the content (a literal '▁' encodes like a space)",
                     "none (would teach other text than shown)"),
    "duplicate": ("the normalised prompt was already kept in this build", "--no-dedup"),
    "in_excluded_split": ("the prompt is in a build given to --exclude", "--exclude"),
    "contaminated": ("the prompt (or, with --decontaminate-responses, the response) shares a word n-gram with a "
                     "benchmark question", "--decontaminate / --decontaminate-ngram"),
    "near_duplicate": ("a prompt kept in this build is nearly the same (MinHash)", "--near-dup-threshold / --no-near-dup"),
    "loop": ("the reasoning or answer ends in a repeated unit", "--loop-min-repeats / --loop-min-chars"),
    "repeated_paragraphs": ("a paragraph or long sentence repeated many times", "--max-paragraph-repeats / "
                            "--max-sentence-repeats"),
    "ngram_repetition": ("too much text inside repeated word n-grams", "--max-ngram-dup-share / --max-ngram-top-share"),
    "compressible": ("the text compresses far better than prose (zlib)", "--min-compression-ratio"),
    "non_english": ("the prompt and reasoning are not English", "--min-english-score / --no-language-filter"),
    "too_long": ("the templated example is longer than --max-tokens", "--max-tokens / --seq-len"),
    "model_turn_too_long": ("the model turn (reasoning, answer and markup, through <eos>: what a decode generates) "
                            "is longer than --max-model-tokens", "--max-model-tokens"),
    "answer_too_short": ("the answer has fewer tokens than --min-answer-tokens", "--min-answer-tokens"),
    "reasoning_too_short": ("the reasoning has fewer tokens than --min-reasoning-tokens", "--min-reasoning-tokens"),
}


def controlled_by(reason: str) -> str:
    """How a reason's drops are controlled, as words for a message: "controlled by --no-dedup", or
    "no option keeps these (never trainable)"."""
    option = REASONS[reason][1]
    if option.startswith("none"):
        return "no option keeps these" + option.removeprefix("none")
    return f"controlled by {option}"


@dataclass(slots=True)
class Example:
    """One input row on its way through the pipeline.

    ``row`` is the global row index in the source; it travels to the stats and the packed rows'
    provenance. Text fields are filled by the read and split stages, token fields by tokenize.
    """

    row: int
    prompt: str = ""
    response: str = ""
    reasoning: str = ""
    answer: str = ""
    status: str = KEPT
    detail: str = ""
    normalised: str = ""  # the prompt as dedup compares it (dedupe.normalise)
    prompt_hash: bytes = b""
    twin: int | None = None
    tokens: array | None = None  # int32 ids of the templated example (tokenize.Tokenizer.assemble)
    prompt_tokens: int = 0
    answer_tokens: int = 0
    reasoning_tokens: int = 0
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def kept(self) -> bool:
        return self.status == KEPT

    def drop(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown drop reason {reason!r}; add it to tzc_data.record.REASONS")
        self.status = reason
        self.detail = detail
