"""The competition's deliverables: what the judges' cells restore and decode.

**Single session.** The judges re-run the participant's notebook (:mod:`tzc_train.submit.notebook`), then
list ``CKPT_DIR/actor/``, take the largest all-digit step, restore
``CKPT_DIR/actor/<step>/model_params`` with orbax's ``StandardCheckpointer`` into the abstract state
of the notebook's ``lora_policy`` (``nnx.state(lora_policy, nnx.LoRAParam)``), ``nnx.update`` it, and
decode greedily through tunix's ``Sampler`` with the notebook's ``tokenizer``, ``model_config``,
``MAX_PROMPT_LENGTH``, ``PROMPT_TEMPLATE`` and ``MAX_GENERATION_STEPS``. A tzc run folder is that
``CKPT_DIR`` (``tzc_train.session``); :func:`judges_names` makes the names.

**Unrestricted mode.** The same restore from ``kagglehub.model_download(MODEL_ID + "/jax/size")``:
:func:`tzc_train.submit.export.save_lora_checkpoint` writes the LoRA parameters as that orbax checkpoint
(``tzc-train export`` puts it in ``OUT/kaggle``, the folder to upload as the Kaggle model's files), not
merged weights.

Dtypes: ``lora_policy`` holds its LoRA factors in the base weights' dtype (bfloat16 for Gemma 2 2B),
since tunix's Sampler makes its KV cache in the model's dtype (``tzc_train.model.views.for_decoding``).
A run's checkpoints hold the float32 masters; orbax casts them to the target's dtype on restore,
which is the same rounding as the cast :func:`~tzc_train.model.views.for_decoding` does.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

import tzc_data
from tzc_data.text import format as fmt

JUDGES_BUDGET = 768  # new tokens: MAX_GENERATION_STEPS in the competition's template
MIN_PROMPT_LENGTH = 256


def prompt_template(system: str) -> str:
    """``PROMPT_TEMPLATE``: the training prompt as one string with a ``{question}`` placeholder.

    tunix's ``Sampler.tokenize`` prepends ``<bos>`` and encodes the whole string with SentencePiece,
    which matches ``<start_of_turn>`` and ``<end_of_turn>`` written as text; so
    ``[<bos>] + encode(PROMPT_TEMPLATE.format(question=q))`` is the training sample's prefix for a
    trimmed question (tested on the real prompts in ``../shared/data``). Braces in the system prompt
    are doubled so that ``str.format`` leaves them as they are.
    """
    escaped = fmt.check_system(system).replace("{", "{{").replace("}", "}}")
    return f"{fmt.USER_HEAD[len(fmt.BOS):]}{escaped}{fmt.SYSTEM_SEP}{{question}}{fmt.MODEL_HEAD}"


def build_system(manifest: dict[str, Any]) -> str:
    """The system prompt a build was made with."""
    return manifest["config"].get("system") or fmt.DEFAULT_SYSTEM


def _kept_lengths(data: str, column: str, split: str | None = None) -> np.ndarray:
    import polars as pl

    path = os.path.join(data, "stats", "records.parquet")
    if not os.path.isfile(path):
        return np.zeros(0, np.int64)
    frame = pl.scan_parquet(path).filter(pl.col("status") == "kept")
    if split is not None:
        frame = frame.filter(pl.col("split") == split)
    expression = (pl.col("tokens") - pl.col("loss_tokens")) if column == "prompt" else pl.col("loss_tokens")
    return frame.select(expression.alias("n")).collect()["n"].to_numpy()


def generation_budget(data: str) -> tuple[int, str]:
    """``MAX_GENERATION_STEPS`` for a run on ``data``: the template's 768, or the build's p99 model turn
    (``<end_of_turn>`` and ``<eos>`` included; the manifest's ``model_turn``, or the stats of a build
    made before it recorded one) where that is longer; and a sentence saying which."""
    turn = tzc_data.read_manifest(data).get("model_turn")
    if turn and turn.get("examples"):
        p99, fit = int(turn["percentiles"]["p99"]), float(turn["fits"][str(JUDGES_BUDGET)])
    else:
        turns = _kept_lengths(data, "model")
        if not len(turns):
            return JUDGES_BUDGET, f"the template's {JUDGES_BUDGET} (the build records no model-turn lengths)"
        p99, fit = int(math.ceil(np.percentile(turns, 99))), float(np.mean(turns <= JUDGES_BUDGET))
    if p99 <= JUDGES_BUDGET:
        return JUDGES_BUDGET, (f"the template's {JUDGES_BUDGET}: the build's p99 model turn is {p99} tokens "
                               f"({fit:.1%} of its examples fit {JUDGES_BUDGET})")
    return p99, (f"the build's p99 model turn, {p99} tokens: only {fit:.1%} of its examples fit the template's "
                 f"{JUDGES_BUDGET}, and a model taught on them would be cut before </answer>")


def max_prompt_length(data: str) -> int:
    """``MAX_PROMPT_LENGTH``: the next power of two at or above the build's longest prompt (at least
    256), as tunix's Sampler pads a batch's prompts to a power of two."""
    prompts = _kept_lengths(data, "prompt")
    longest = int(prompts.max()) if len(prompts) else 0
    return max(MIN_PROMPT_LENGTH, 1 << max(0, longest - 1).bit_length())


def judges_names(run: str, *, weights: str | None = None, restore: bool = True) -> dict[str, Any]:
    """The names the judges' cells use, for a run folder (``CKPT_DIR``): ``lora_policy`` (the run's
    base in its dtype with LoRA factors of the run's rank, alpha and targets, in the base's dtype,
    rematerialisation off; the run's latest adapters restored unless ``restore=False``),
    ``tokenizer`` (a ``sentencepiece.SentencePieceProcessor``), ``model_config``,
    ``MAX_PROMPT_LENGTH``, ``PROMPT_TEMPLATE``, ``MAX_GENERATION_STEPS``, and ``mesh``, the device
    mesh ``lora_policy`` is placed on. ``weights``: the base weights, when they moved since the run."""
    import dataclasses

    from tzc_data.text.tokenize import build_tokenizer
    from tzc_train.config import read_run_config
    from tzc_train.model.load import base_model, run_mesh
    from tzc_train.model.lora import restore_adapters, with_lora
    from tzc_train.model.views import for_decoding
    from tzc_train.session import saved_step

    config = read_run_config(run)
    if weights:
        config = dataclasses.replace(config, weights=weights)
    data = config.builds[0]
    manifest = tzc_data.read_manifest(data)
    tokenizer = build_tokenizer(manifest, None)
    mesh = run_mesh(config)
    with mesh:
        base, model_config = base_model(config, manifest["tokenizer"]["vocab_size"], mesh)
        model = with_lora(base, config, mesh)
        if restore and saved_step(run) is not None:
            restore_adapters(model, run, "CKPT_DIR")
        lora_policy = for_decoding(model)
    budget, _ = generation_budget(data)
    return {"lora_policy": lora_policy, "tokenizer": tokenizer.sp, "model_config": model_config,
            "MAX_PROMPT_LENGTH": max_prompt_length(data), "PROMPT_TEMPLATE": prompt_template(build_system(manifest)),
            "MAX_GENERATION_STEPS": budget, "mesh": mesh}


__all__ = ["JUDGES_BUDGET", "build_system", "generation_budget", "judges_names", "max_prompt_length",
           "prompt_template"]
