"""Length bounds in tokens: run after tokenization."""

from __future__ import annotations

from dataclasses import dataclass

from tzc_data.filters.base import Verdict
from tzc_data.record import Example


@dataclass(frozen=True)
class LengthFilter:
    """Bound the templated example in tokens: longer than ``max_tokens`` is dropped (``too_long``),
    never truncated (defect 7 cut ``</answer>`` and ``<eos>`` off a quarter of the rows); a model
    turn (the loss tokens, ``<reasoning>`` through ``<eos>``: what the judges' greedy decode must
    generate within ``MAX_GENERATION_STEPS``) longer than ``max_model_tokens`` is dropped
    (``model_turn_too_long``); an answer
    or a reasoning under its minimum is dropped (``answer_too_short`` / ``reasoning_too_short``)."""

    max_tokens: int
    min_answer_tokens: int = 1
    min_reasoning_tokens: int = 1
    max_model_tokens: int | None = None
    name: str = "length"
    score_names: tuple[str, ...] = ()

    def __call__(self, example: Example) -> Verdict:
        count = len(example.tokens or ())
        if count > self.max_tokens:
            return Verdict("too_long", f"{count:,} tokens > --max-tokens {self.max_tokens:,}")
        model_turn = count - example.prompt_tokens  # the loss tokens: what a decode must generate, <eos> included
        if self.max_model_tokens is not None and model_turn > self.max_model_tokens:
            return Verdict("model_turn_too_long",
                           f"model turn {model_turn:,} tokens > --max-model-tokens {self.max_model_tokens:,}")
        if example.answer_tokens < self.min_answer_tokens:
            return Verdict("answer_too_short",
                           f"answer has {example.answer_tokens} tokens < --min-answer-tokens {self.min_answer_tokens}")
        if example.reasoning_tokens < self.min_reasoning_tokens:
            return Verdict("reasoning_too_short", f"reasoning has {example.reasoning_tokens} tokens "
                                                  f"< --min-reasoning-tokens {self.min_reasoning_tokens}")
        return Verdict()
