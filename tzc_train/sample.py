"""Greedy samples from a trained model, and the format check the original entry reported
("Format Validation: 9/10"): a completion passes when it is ``<reasoning>…</reasoning>`` then
``<answer>…</answer>`` (``tzc_data.text.format.parse_completion``).

Prompts are encoded exactly as in training (``Tokenizer.encode_prompt``: content apart from the
markup, ending in ``<start_of_turn>model\\n``), not by re-tokenizing a rendered string: defect 5 of
the original pipeline was a template that differed between training and inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tzc_data.text import format as fmt
from tzc_data.text.tokenize import Tokenizer


class PromptEncoder:
    """What tunix's Sampler needs from a tokenizer, with tzc's prompt encoding. A prompt is text
    (encoded as in training) or a list of token ids already so encoded (the eval split's)."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer

    def encode(self, prompt: str | list[int], **_: Any) -> list[int]:
        return list(prompt) if isinstance(prompt, list) else self.tokenizer.encode_prompt(prompt)

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
    """One completion. ``truncated``: the budget ran out before ``<end_of_turn>`` / ``<eos>``."""

    prompt: str
    completion: str
    well_formed: bool
    problem: str = ""
    truncated: bool = False
    new_tokens: int = 0


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


def sample(model: Any, model_config: Any, tokenizer: Tokenizer, prompts: list[str | list[int]], *,
           max_new_tokens: int = 1024, batch_size: int = 8) -> list[Sample]:
    """Greedy completions of ``prompts``, ``batch_size`` at a time (stops at ``<end_of_turn>`` or
    ``<eos>``, or after ``max_new_tokens``).

    Every batch has the same shapes (the last one is padded with repeats of its first prompt, and
    every prompt is left-padded to the longest), so the sampler compiles once.
    """
    from tunix.generate import sampler as sampler_lib

    from tzc_train.model.views import for_decoding

    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"need --max-new-tokens >= 1 and --batch-size >= 1; got {max_new_tokens}, {batch_size}")
    if not prompts:
        return []
    encoder = PromptEncoder(tokenizer)
    longest = max(len(encoder.encode(p)) for p in prompts)
    cache = sampler_lib.CacheConfig(cache_size=longest + max_new_tokens + 8, num_layers=model_config.num_layers,
                                    num_kv_heads=model_config.num_kv_heads, head_dim=model_config.head_dim)
    sampler = sampler_lib.Sampler(for_decoding(model), encoder, cache)
    samples = []
    for at in range(0, len(prompts), batch_size):
        batch = prompts[at:at + batch_size]
        padded = batch + [batch[0]] * (batch_size - len(batch))
        output = sampler(padded, max_generation_steps=max_new_tokens, max_prompt_length=longest,
                         eos_tokens=[tokenizer.end_of_turn, tokenizer.eos], temperature=0.0)
        for prompt, completion, tokens in zip(batch, output.text, output.tokens):
            ok, problem = check_format(completion)
            shown = prompt if isinstance(prompt, str) else encoder.decode(prompt)
            # tunix cuts each output before its first stop token: a full budget means none came.
            samples.append(Sample(shown, completion, ok, problem, truncated=len(tokens) >= max_new_tokens,
                                  new_tokens=len(tokens)))
    return samples
