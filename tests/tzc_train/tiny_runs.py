"""What the tzc_train tests share: small builds, a tiny run's options, tiny Gemma 3 runs, packed rows.

Plain functions (each test module wraps the ones it needs in its own fixtures): a run trained for one
module's tests is that module's own.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tzc_data.cli import main as tzc_data_main
from tzc_train.config import TrainConfig

SYSTEM = "Answer with reasoning, then the answer."
VOCAB = 600  # the throwaway tokenizer's (tests/conftest.py)


def arithmetic(count: int) -> list[tuple[str, str]]:
    """``count`` short (prompt, response) rows: "What is i mod 17?"."""
    return [(f"What is {i} mod 17?", f"<think>{i} = 17 x {i // 17} + {i % 17}.</think>The answer is {i % 17}.")
            for i in range(count)]


def small_build(root, rows: list[tuple[str, str]], tokenizer: str, *, eval_fraction: float):
    """A build of (prompt, response) rows in rows of 256 tokens, with the tests' system prompt."""
    src = root / "rows.jsonl"
    src.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in rows))
    out = root / "build"
    assert tzc_data_main(["build", "--source", str(src), "--range", f"0:{len(rows)}", "--out", str(out),
                          "--tokenizer", tokenizer, "--seq-len", "256", "--system", SYSTEM, "--eval-fraction",
                          str(eval_fraction), "--no-near-dup", "--no-progress"]) == 0
    return out


def short_build(tmp_path_factory, tokenizer: str):
    """400 short arithmetic examples, tokenized with the throwaway tokenizer, in rows of 256 tokens."""
    return small_build(tmp_path_factory.mktemp("train"), arithmetic(400), tokenizer, eval_fraction=0.05)


def other_build(tmp_path_factory, tokenizer: str):
    """A second small build that mixes with short_build: same tokenizer and seq_len, other prompts."""
    rows = [(f"Add {i} and {2 * i + 1}.", f"<think>{i} + {2 * i + 1} = {3 * i + 1}.</think>It is {3 * i + 1}.")
            for i in range(200)]
    return small_build(tmp_path_factory.mktemp("other"), rows, tokenizer, eval_fraction=0.1)


def run_config(build, out, **overrides) -> TrainConfig:
    """The tiny Gemma 2 run the tests train: 24 steps of 4 rows, rank 8, saved and evaluated every 8."""
    settings = dict(data=str(build), out=str(out), model="tiny", steps=24, batch_size=4, lr=1e-2, lora_rank=8,
                    lora_alpha=8.0, warmup_steps=2, save_every=8, eval_every=8, eval_rows=8)
    return TrainConfig(**{**settings, **overrides})


def full_run(build, tmp_path_factory):
    """(run folder, train()'s result) of :func:`run_config` on ``build``."""
    from tzc_train.train import train

    out = tmp_path_factory.mktemp("runs") / "full"
    return out, train(run_config(build, out))


def gemma3_run(tmp_path_factory, tokenizer: str):
    """A few steps of tzc-train on --model tiny-gemma3 over a small build (the 600-piece tokenizer):
    (build, train()'s result, run folder)."""
    from tzc_train.train import train

    root = tmp_path_factory.mktemp("g3run")
    (root / "rows.jsonl").write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n"
                                             for p, r in arithmetic(300)))
    build = root / "build"
    assert tzc_data_main(["build", "--source", str(root / "rows.jsonl"), "--range", "0:300", "--out", str(build),
                          "--tokenizer", tokenizer, "--seq-len", "256", "--eval-fraction", "0.05",
                          "--no-near-dup", "--no-progress"]) == 0
    config = TrainConfig(data=str(build), out=str(root / "run"), model="tiny-gemma3", steps=12, batch_size=4,
                         lr=1e-2, lora_rank=8, lora_alpha=8.0, warmup_steps=2, save_every=6, eval_every=6, eval_rows=4)
    return build, train(config), root / "run"


def eight_devices() -> jax.sharding.Mesh:
    """The tests' 2 x 4 mesh over 8 fake CPU devices."""
    assert len(jax.devices()) == 8, "tests/conftest.py sets XLA_FLAGS for 8 fake CPU devices"
    return jax.make_mesh((2, 4), ("fsdp", "tp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


@nnx.jit
def logits(model, tokens, positions, mask):
    """One compiled forward pass: eager calls over 8 fake devices (and Pallas' interpreter) are slow."""
    return model(tokens, positions, None, mask)[0]


def packed_row(examples, length, prompt_lengths):
    """One packed row of ``examples`` (token ids), each with its first ``prompt_lengths`` untrained."""
    tokens, segments, positions, mask = (np.zeros(length, np.int32) for _ in range(4))
    at = 0
    for k, (ids, prompt) in enumerate(zip(examples, prompt_lengths), 1):
        n = len(ids)
        tokens[at:at + n], segments[at:at + n], positions[at:at + n] = ids, k, np.arange(n)
        mask[at + prompt:at + n] = 1
        at += n
    return {"tokens": tokens[None], "segment_ids": segments[None], "positions": positions[None],
            "loss_mask": mask[None]}


def alone(ids):
    """(tokens, positions, segment ids) of one example by itself."""
    n = len(ids)
    return jnp.asarray(ids)[None], jnp.arange(n)[None], jnp.ones((1, n), jnp.int32)
