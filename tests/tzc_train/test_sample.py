"""Greedy decoding and the format check (tzc_train/sample.py): on a tiny Gemma 3 run, tzc's sampler
decodes what the packed forward pass predicts."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import tiny_runs
from tiny_runs import alone, logits

from tzc_data.text.tokenize import build_tokenizer
from tzc_train.evaluate import DecodeRequest, Prompt, decode
from tzc_train.model import bases
from tzc_train.model.load import make_mesh
from tzc_train.model.views import for_decoding
from tzc_train.sample import check_format, sample


@pytest.fixture(scope="module")
def gemma3_run(tmp_path_factory, tiny_model_path):
    return tiny_runs.gemma3_run(tmp_path_factory, tiny_model_path)


def test_format_check_accepts_only_reasoning_then_answer():
    assert check_format("<reasoning>r</reasoning>\n<answer>a</answer><end_of_turn>\n<eos>") == (True, "")
    assert check_format("<reasoning>r</reasoning>\n<answer>a</answer>")[0]
    assert not check_format("<answer>a</answer>")[0]
    assert not check_format("<reasoning>r</reasoning>\n<answer> </answer>")[0]
    assert not check_format("<reasoning>r</reasoning>\n<answer>a")[0]  # cut before </answer>


def test_tzc_train_trains_a_tiny_gemma3_and_its_greedy_samples_are_the_models_argmax(gemma3_run):
    """End to end on Gemma 3: the loss falls, a checkpoint is written; tzc's sampler (tunix's KV cache
    and Gemma 3's own decoding attention) decodes what the packed forward pass predicts, from the
    trained model and, through `tzc-train eval`'s path, from the run's checkpoint."""
    build, result, run = gemma3_run
    losses = result["losses"]
    assert len(losses) == 12 and np.mean(losses[-3:]) < np.mean(losses[:3])
    assert result["status"] == "finished" and result["eval_loss"] is not None
    manifest = json.loads((build / "manifest.json").read_text())
    tokenizer = build_tokenizer(manifest, None)
    model = result["model"]
    prompts = ["What is 3 mod 17?", "What is 250 mod 17?"]
    with make_mesh(None):
        samples = sample(model, bases.tiny_config("gemma3", manifest["tokenizer"]["vocab_size"]), tokenizer, prompts,
                         max_new_tokens=6, batch_size=2)
        view = for_decoding(model)
        for prompt, got in zip(prompts, samples):
            ids = tokenizer.encode_prompt(prompt)
            new = []
            for _ in range(6):
                tokens, positions, segments = alone(ids + new)
                nxt = int(jnp.argmax(logits(view, tokens, positions, segments)[0, -1]))
                if nxt in (tokenizer.eos, tokenizer.end_of_turn):
                    break
                new.append(nxt)
            assert got.completion == tokenizer.decode(new), prompt
    restored = decode(DecodeRequest(data=str(build), lora=str(run), max_new_tokens=6, batch_size=2),
                      [Prompt(p) for p in prompts])
    assert [s.completion for s in restored] == [s.completion for s in samples]
