"""``tzc-train notebook``: the competition's submission notebook, written from a run.

The notebook follows the competition's template (``notebooks/submission-template.ipynb`` of the
original entry's repository): its writeup sections, filled with the build's and the run's facts;
its prompt cell; the fine-tuning code; the unrestricted-mode model id. Re-run by the judges on a
Kaggle TPU, it

1. installs tzc (``TZC_PACKAGE``: a pinned name, a wheel or a source folder) unless it is there;
2. builds the data with the run's recorded build options, or uses an attached build (``BUILD_ATTACHED``);
3. trains with the run's recorded options into ``CKPT_DIR`` (``CKPT_DIR/actor/<step>/model_params``),
   with ``--time-limit`` set from what is left of the session;
4. defines the names the judges' cells use: ``lora_policy``, ``tokenizer``, ``model_config``,
   ``MAX_PROMPT_LENGTH``, ``PROMPT_TEMPLATE``, ``MAX_GENERATION_STEPS`` (``tzc_train.submit.kaggle``).

Its first code cell is tagged ``parameters`` (papermill's convention): a test, or a user, replaces
any value there, e.g. to run it small on CPU.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

import tzc_data
from tzc_data.text import format as fmt
from tzc_train.session import read_summary
from tzc_train.submit.kaggle import build_system, generation_budget, prompt_template

# tzc is not on PyPI (a different "tzc" is): the notebook installs the wheel attached as a Kaggle dataset
# (`python -m pip wheel --no-deps . -w dist`), or any pip argument the user names.
DEFAULT_PACKAGE = f"/kaggle/input/tzc/tzc-{tzc_data.__version__}-py3-none-any.whl[train]"
# The base's Flax weights on Kaggle, by family (tzc_train.model.bases): a folder of that name holds the checkpoint.
KAGGLE_WEIGHTS = {"gemma2": "google/gemma-2/flax/gemma2-2b-it", "gemma3": "google/gemma-3/flax/gemma3-1b-it"}
# Options of tzc_run.json the notebook sets itself, from where it runs.
_SET_HERE = ("data", "out", "weights", "resume", "time_limit", "mesh")


def write_notebook(run: str, out: str, *, package: str = DEFAULT_PACKAGE, overwrite: bool = False) -> str:
    """Write the submission notebook for ``run`` (a ``tzc-train`` run folder) to ``out``; returns ``out``.
    Refuses an existing ``out`` unless ``overwrite``; written under a temporary name and renamed."""
    from tzc_data.verify import verify
    from tzc_train.config import read_run_config

    config = read_run_config(run)
    if len(config.builds) != 1:
        raise ValueError(f"--run {run} trains on a mixture of {len(config.builds)} builds; the notebook makes one "
                         "build: train the submission on one build")
    if not out.endswith(".ipynb"):
        raise ValueError(f"--out {out}: a notebook's name ends in .ipynb")
    if os.path.lexists(out) and not overwrite:
        raise ValueError(f"--out {out} exists; pass --overwrite to replace it")
    data = config.builds[0]
    manifest = tzc_data.read_manifest(data)
    facts = {"run": run, "config": config, "manifest": manifest, "summary": read_summary(run) or {},
             "verify": verify([data]), "budget": generation_budget(data), "package": package,
             "template": prompt_template(build_system(manifest))}
    notebook = {"cells": cells(facts), "metadata": {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}, "tzc": {"run": os.path.abspath(run), "version": tzc_data.__version__}},
        "nbformat": 4, "nbformat_minor": 5}
    temporary = os.path.join(os.path.dirname(os.path.abspath(out)), f".{os.path.basename(out)}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(notebook, handle, indent=1, ensure_ascii=False)
        handle.write("\n")
    os.replace(temporary, out)
    return out


def _cell(kind: str, text: str, **metadata: Any) -> dict[str, Any]:
    cell: dict[str, Any] = {"cell_type": kind, "id": "", "metadata": metadata,
                            "source": text.strip("\n").splitlines(True)}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def cells(facts: dict[str, Any]) -> list[dict[str, Any]]:
    """The notebook's cells, in the template's order (ids: ``cell-1``, ``cell-2``…)."""
    made = [
        _cell("markdown", _title(facts)),
        _cell("markdown", "## Your overall training and evaluation strategy\n\n" + strategy(facts)),
        _cell("markdown", "## How your finetuning dataset is created\n\n" + dataset(facts)),
        _cell("markdown", f"## Your Tunix finetuning code\n\n{_base(facts).title}, LoRA SFT with tunix "
                          "through tzc's trainer. Every value in the next cell may be changed; a test runs this "
                          "notebook small on CPU by replacing them."),
        _cell("code", parameters(facts), tags=["parameters"]),
        _cell("code", prompt_cell(facts)),
        _cell("markdown", "Here is the finetuning code: install tzc, build (or attach) the data, train into "
                          "`CKPT_DIR`, then define what the judges' cells use."),
        _cell("code", _INSTALL),
        _cell("code", _BUILD),
        _cell("code", _TRAIN),
        _cell("code", _NAMES),
        _cell("markdown", _UNRESTRICTED_TEXT),
        _cell("code", '# Example: \'windmaple/gpt2\' in https://www.kaggle.com/models/windmaple/gpt2\n\n'
                      'unrestricted_kaggle_model = "user_name/model_name"'),
        _cell("markdown", "## Other things you want the judges to know\n\n" + other(facts)),
    ]
    for number, cell in enumerate(made, 1):
        cell["id"] = f"cell-{number}"
    return made


def _title(facts: dict[str, Any]) -> str:
    day = datetime.date.today().isoformat()
    return (f"# {_base(facts).title} taught to reason: LoRA SFT on packed, verified GlaiveAI traces\n\n"
            f"Written by `tzc-train notebook` on {day} from the run `{os.path.basename(os.path.abspath(facts['run']))}` "
            f"(tzc {tzc_data.__version__}). Output format: `<reasoning>…</reasoning><answer>…</answer>`.")


def _base(facts: dict[str, Any]) -> Any:
    from tzc_train.model.bases import base

    return base(facts["config"].model)


def strategy(facts: dict[str, Any]) -> str:
    """The template's "overall strategy" section, from the run's options and summary."""
    config, summary, manifest = facts["config"], facts["summary"], facts["manifest"]
    budget, why = facts["budget"]
    lines = [
        f"- **Model:** `{config.model}` base in {config.base_dtype.name}, LoRA rank {config.lora_rank}, alpha "
        f"{config.lora_alpha:g} on the attention and MLP projections (float32 master adapters, cast to the base "
        "dtype in the forward pass).",
        f"- **Optimisation:** AdamW, peak learning rate {config.lr:g}, {config.warmup_steps} warmup steps then "
        f"cosine decay; {config.batch_size} packed rows of {manifest['config']['seq_len']:,} tokens x "
        f"{config.grad_accum} micro-batches a step; "
        + (f"{config.steps:,} steps." if config.steps else f"{config.epochs:g} epoch(s)."),
        "- **Loss:** token mean over the model turn only (reasoning, answer and the closing markup), never across "
        "two packed examples: each example attends only to itself, positions restart per example.",
        "- **Compute:** one 9-hour TPU v5e-8 session; training stops with a checkpoint before the session's end "
        "(`--time-limit`), and `tzc-train plan` compiled the step for the v5e-8 beforehand to check its memory.",
        f"- **Decoding:** the judges' greedy decoding; `MAX_GENERATION_STEPS` = {budget}: {why}.",
    ]
    if summary.get("steps"):
        lines.append(f"- **This run:** {summary['steps']:,} of {summary.get('max_steps', 0):,} steps, "
                     f"{summary.get('tokens', 0):,} tokens; last train loss {_num(summary.get('train_loss'))}, "
                     f"eval loss {_num(summary.get('eval_loss'))} (step {summary.get('eval_step')}).")
    return "\n".join(lines)


def dataset(facts: dict[str, Any]) -> str:
    """The template's "dataset" section: the build's source, range, counts, tokens, fill and verify result."""
    manifest = facts["manifest"]
    counts, packing, recorded = manifest["counts"], manifest["packing"], manifest["config"]
    source = manifest["source"]
    name = recorded.get("dataset") or ("glaiveai/reasoning-v1-20m" if source["kind"] == "hf" else source.get("spec")
                                       or source["kind"])
    dropped = ", ".join(f"{reason} {n:,}" for reason, n in sorted(counts["by_status"].items(), key=lambda kv: -kv[1])
                        if reason != "kept") or "none"
    problems = facts["verify"]
    verdict = ("`tzc-data verify`: ok (manifest, shards, stats and template checked)" if not problems else
               f"`tzc-data verify` found {len(problems)} problem(s): " + "; ".join(problems[:3]))
    return "\n".join([
        f"Built with [tzc](https://pypi.org/project/tzc/) `tzc-data build` from **{name}** "
        f"(format `{recorded.get('format', 'glaive')}`), rows {manifest['range']['start']:,}:"
        f"{manifest['range']['stop']:,}. Every row read is kept or dropped with a reason:",
        "",
        f"- read {counts['read']:,}, **kept {counts['kept']:,}**, dropped {counts['dropped']:,} ({dropped});",
        f"- exact and near-duplicate prompts removed, looping and unterminated traces dropped, `<think>…</think>` "
        f"rewritten as `<reasoning>…</reasoning><answer>…</answer>`, examples over {recorded['max_tokens']:,} "
        "tokens dropped whole (never truncated);",
        f"- {packing['tokens']:,} tokens ({packing['loss_tokens']:,} trained on) packed into {packing['rows']:,} "
        f"rows of {packing['seq_len']:,} tokens, fill {packing['fill']:.2%};",
        f"- {verdict}.",
        "",
        "The data is public (GlaiveAI's dataset on the Hugging Face hub, Apache-2.0); the build's manifest records "
        "the sha256 of every shard and of the source files, so the same command gives the same bytes.",
    ])


def other(facts: dict[str, Any]) -> str:
    sessions = facts["summary"].get("sessions") or []
    lines = [f"- The run took {len(sessions)} session(s): " + "; ".join(
        f"{s['stopped']} at step {s['last_step']}" for s in sessions) + "." if sessions else "",
        "- Every step of the pipeline is tested, and a test runs this notebook small on CPU followed by the judges' "
        "cells, in bfloat16: the restored adapters equal the run's, and the judges' greedy completions equal "
        "`tzc-train eval`'s.",
        "- tunix 0.1.7 extension points used: `PeftTrainer.create_train_step_fn` (token-mean loss over gradient "
        "accumulation), training hooks, a custom loss and model-input function for packed rows."]
    return "\n".join(line for line in lines if line)


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def parameters(facts: dict[str, Any]) -> str:
    config, manifest = facts["config"], facts["manifest"]
    build_options = dict(manifest["config"])
    train_options = {k: v for k, v in json.loads(json.dumps(_train_fields(config))).items() if k not in _SET_HERE}
    budget, why = facts["budget"]
    return f'''# Parameters: any value here may be replaced (papermill's "parameters" cell).
import os
import time

NOTEBOOK_STARTED = time.time()  # the session's clock: training stops in time for what follows it
TZC_PACKAGE = {facts["package"]!r}  # pip's argument for tzc: its wheel (attached), a source folder
TZC_VERSION = {tzc_data.__version__!r}
WORK = "/kaggle/working" if os.path.isdir("/kaggle/working") else os.path.abspath("work")
BUILD_ATTACHED = None  # a finished tzc build attached to the notebook (/kaggle/input/...): used as it is
BUILD_DIR = os.path.join(WORK, "data")  # otherwise the data is built here, with the run's options:
BUILD_OPTIONS = {_literal(build_options)}
CKPT_DIR = os.path.join(WORK, "ckpt")  # the run folder: checkpoints in CKPT_DIR/actor/<step>/model_params
MODEL_WEIGHTS = None  # the base's weights; None: the Kaggle model below (Flax), for {_base(facts).title}
KAGGLE_WEIGHTS = {KAGGLE_WEIGHTS[_base(facts).family]!r}
TRAIN_OPTIONS = {_literal(train_options)}
SESSION_HOURS = 9.0  # a Kaggle TPU session
KEEP_MINUTES = 15.0  # kept free after training: saving, defining the judges' names
MAX_GENERATION_STEPS = {budget}  # {why}
'''


def _train_fields(config: Any) -> dict[str, Any]:
    import dataclasses

    fields = dataclasses.asdict(config)
    fields["data_weights"] = list(config.data_weights) if config.data_weights else None
    return fields


def _literal(value: dict[str, Any]) -> str:
    """A dict as a Python literal (JSON's null/true/false spelled as Python's), one key a line."""
    items = ",\n    ".join(f"{key!r}: {item!r}" for key, item in value.items())
    return "{\n    " + items + ",\n}" if value else "{}"


def prompt_cell(facts: dict[str, Any]) -> str:
    return f'''# Your prompt: tzc's training prompt (Gemma's chat template; the system prompt opens the user turn),
# with {{question}} where the judges' question goes. [<bos>] + its tokens are the training prefix.
PROMPT_TEMPLATE = {facts["template"]!r}

# Training parameters; feel free to change (the judges decode greedily, below)
TEMPERATURE=0.7
TOP_K=50
TOP_P=0.9

# You may also change this parameter for inference if you want: MAX_GENERATION_STEPS is set in the
# parameters cell above, from the build's model-turn lengths.

# DO NOT CHANGE BELOW

# Use these standard output tags so that your model's output follow this format in plain text (no JSON/XML):
# <reasoning>model_reasoning_trace</reasoning>
# <answer>model_final_answer</answer>

REASONING_START = {fmt.REASONING_OPEN!r}
REASONING_END = "</reasoning>"
SOLUTION_START = "<answer>"
SOLUTION_END = "</answer>"

# Use these parameters for greedy decoding; used in competition evaluation
INF_TEMPERATURE=0
INF_TOP_K=1
INF_TOP_P=None
SEED=42
'''


_INSTALL = '''# tzc (and tunix without its unused dependencies), unless this environment has them already.
import subprocess
import sys
from importlib import metadata

try:
    import tzc_train.train  # noqa: F401  (the trainer and its pinned stack)
    if metadata.version("tzc") != TZC_VERSION:
        raise ImportError(f"tzc {metadata.version('tzc')} is installed, this notebook wants {TZC_VERSION}")
    print("tzc", TZC_VERSION, "is installed")
except ImportError:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", TZC_PACKAGE], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "google-tunix==0.1.7"],
                   check=True)
'''

_BUILD = '''# The data: an attached build as it is, else this session builds it (GlaiveAI rows from the hub).
import tzc_data
from tzc_data.build.config import BuildConfig
from tzc_data.build.pipeline import build
from tzc_data.verify import verify

if BUILD_ATTACHED:
    DATA = BUILD_ATTACHED
elif os.path.isfile(os.path.join(BUILD_DIR, "manifest.json")):
    DATA = BUILD_DIR  # built earlier in this session
else:
    DATA = BUILD_DIR
    build(BuildConfig(out=DATA, **{**BUILD_OPTIONS, "exclude": tuple(BUILD_OPTIONS.get("exclude") or ())}))
problems = verify([DATA])
if problems:
    raise RuntimeError(f"tzc-data verify {DATA}: " + "; ".join(problems[:5]))
manifest = tzc_data.read_manifest(DATA)
print(f"{DATA}: {manifest['counts']['kept']:,} examples in {manifest['packing']['rows']:,} packed rows; verify: ok")
'''

_TRAIN = '''# Training: the run's options, into CKPT_DIR; stops with a checkpoint in time, and a re-run continues it.
from tzc_train.config import TrainConfig
from tzc_train.model.bases import base
from tzc_train.train import train

if MODEL_WEIGHTS is None and not base(TRAIN_OPTIONS["model"]).tiny:
    import kagglehub

    _downloaded = kagglehub.model_download(KAGGLE_WEIGHTS)  # its checkpoint folder and tokenizer.model
    MODEL_WEIGHTS = os.path.join(_downloaded, os.path.basename(KAGGLE_WEIGHTS))
left = SESSION_HOURS * 3600 - (time.time() - NOTEBOOK_STARTED) - KEEP_MINUTES * 60
summary = train(TrainConfig(data=DATA, out=CKPT_DIR, weights=MODEL_WEIGHTS, time_limit=left,
                            resume=os.path.isfile(os.path.join(CKPT_DIR, "tzc_run.json")), **TRAIN_OPTIONS))
summary.pop("model", None)  # the trained model's memory goes back before lora_policy is built
print({k: v for k, v in summary.items() if k not in ("losses", "sessions")})
'''

_NAMES = '''# What the judges' cells use: lora_policy (the base with LoRA factors in its dtype, the latest
# checkpoint restored), tokenizer, model_config, MAX_PROMPT_LENGTH; PROMPT_TEMPLATE must be the build's.
from tzc_train.submit.kaggle import judges_names

_names = judges_names(CKPT_DIR, weights=MODEL_WEIGHTS)
lora_policy, tokenizer, model_config = _names["lora_policy"], _names["tokenizer"], _names["model_config"]
MAX_PROMPT_LENGTH = _names["MAX_PROMPT_LENGTH"]
if PROMPT_TEMPLATE != _names["PROMPT_TEMPLATE"]:
    raise ValueError("PROMPT_TEMPLATE is not the training prompt of the build in CKPT_DIR's run")
'''

_UNRESTRICTED_TEXT = '''## [Optional 15pts] unrestricted mode

The unrestricted-mode model is the LoRA parameters as an orbax checkpoint, the files the judges restore
into the same `lora_policy` (the same base model): `tzc-train export` writes them to `OUT/kaggle/`.

```python
# after the run (any number of sessions: `--resume`, or `--init-lora` for a continuation run):
#   tzc-train export --run CKPT_DIR --out export --no-merged
import kagglehub
kagglehub.model_upload(f"{unrestricted_kaggle_model}/jax/size", "export/kaggle", license_name="Apache 2.0")
```

Then set the model's visibility to Public.'''


__all__ = ["DEFAULT_PACKAGE", "cells", "write_notebook"]
