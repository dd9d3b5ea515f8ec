"""Greedy samples from a trained model, and the format check the original entry reported
("Format Validation: 9/10"): a completion passes when it is ``<reasoning>…</reasoning>`` then
``<answer>…</answer>`` (``tzc_data.format.parse_completion``).

Prompts are encoded exactly as in training (``Tokenizer.encode_prompt``: content apart from the
markup, ending in ``<start_of_turn>model\\n``), not by re-tokenizing a rendered string: defect 5 of
the original pipeline was a template that differed between training and inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tzc_data import format as fmt
from tzc_data.tokenize import Tokenizer


class PromptEncoder:
    """What tunix's Sampler needs from a tokenizer, with tzc's prompt encoding."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer

    def encode(self, prompt: str, **_: Any) -> list[int]:
        return self.tokenizer.encode_prompt(prompt)

    def decode(self, ids: list[int], **_: Any) -> str:
        return self.tokenizer.decode(int(i) for i in ids)

    def bos_id(self) -> int:
        return self.tokenizer.bos

    def eos_id(self) -> int:
        return self.tokenizer.eos

    def pad_id(self) -> int:
        return max(self.tokenizer.pad, 0)


@dataclass(frozen=True)
class Sample:
    prompt: str
    completion: str
    well_formed: bool
    problem: str = ""


def check_format(completion: str) -> tuple[bool, str]:
    """Whether a generated model turn is well formed, and why not."""
    text = completion.split(fmt.END)[0].strip()
    try:
        reasoning, answer = fmt.parse_completion(text)
    except fmt.FormatError as err:
        return False, err.detail
    if not reasoning.strip() or not answer.strip():
        return False, "empty reasoning or answer"
    return True, ""


def sample(model: Any, model_config: Any, tokenizer: Tokenizer, prompts: list[str], *,
           max_new_tokens: int = 1024) -> list[Sample]:
    """Greedy completions of ``prompts`` (stops at ``<end_of_turn>`` or ``<eos>``)."""
    from tunix.generate import sampler as sampler_lib

    encoder = PromptEncoder(tokenizer)
    longest = max(len(encoder.encode(p)) for p in prompts)
    cache = sampler_lib.CacheConfig(cache_size=longest + max_new_tokens + 8, num_layers=model_config.num_layers,
                                    num_kv_heads=model_config.num_kv_heads, head_dim=model_config.head_dim)
    sampler = sampler_lib.Sampler(model, encoder, cache)
    output = sampler(prompts, max_generation_steps=max_new_tokens, max_prompt_length=longest,
                     eos_tokens=[tokenizer.end_of_turn, tokenizer.eos], temperature=0.0)
    samples = []
    for prompt, completion in zip(prompts, output.text):
        ok, problem = check_format(completion)
        samples.append(Sample(prompt, completion, ok, problem))
    return samples
