"""The judges' code is the client: the submission notebook runs headless on CPU for a tiny bfloat16
run, then the competition's evaluation cells (single session and unrestricted mode) restore and
decode what it trained, as the judges would."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

import tzc_data
from tzc_data.cli import main as tzc_data_main
from tzc_data.text.format import DEFAULT_SYSTEM
from tzc_train.config import TrainConfig, write_run_config
from tzc_train.submit.kaggle import JUDGES_BUDGET, generation_budget, max_prompt_length, prompt_template
from tzc_train.submit.notebook import write_notebook

SYSTEM = "Answer with reasoning, then the answer. Use {braces} freely."
QUESTIONS = [f"What is {i} mod 17?" for i in (3, 50, 123)]

# The competition's evaluation cells, in substance (the original entry's repository,
# notebooks/submission-template.ipynb; ../shared/notes/competition.md): they use only the names the
# participant's notebook defines.
JUDGES_SINGLE_SESSION = '''
import re
import jax
import orbax.checkpoint as ocp
from flax import nnx
from tunix.generate import sampler as sampler_lib

actor_ckpt_dir = os.path.join(CKPT_DIR, "actor")
latest_step = -1
if os.path.exists(actor_ckpt_dir):
  for item in os.listdir(actor_ckpt_dir):
    if os.path.isdir(os.path.join(actor_ckpt_dir, item)) and re.match(r'^\\d+$', item):
      step = int(item)
      if step > latest_step:
        latest_step = step
if latest_step == -1:
  raise FileNotFoundError(f"No checkpoints found in {actor_ckpt_dir}")
trained_ckpt_path = os.path.join(CKPT_DIR, "actor", str(latest_step), "model_params")
'''

JUDGES_RESTORE_AND_DECODE = '''
abs_params = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
    nnx.state(lora_policy, nnx.LoRAParam),
)
checkpointer = ocp.StandardCheckpointer()
trained_lora_params = checkpointer.restore(trained_ckpt_path, target=abs_params)
nnx.update(
    lora_policy,
    jax.tree.map(
        lambda a, b: b,
        nnx.state(lora_policy, nnx.LoRAParam),
        trained_lora_params,
    ),
)
sampler = sampler_lib.Sampler(
    transformer=lora_policy,
    tokenizer=tokenizer,
    cache_config=sampler_lib.CacheConfig(
        cache_size=MAX_PROMPT_LENGTH + MAX_GENERATION_STEPS + 256,
        num_layers=model_config.num_layers,
        num_kv_heads=model_config.num_kv_heads,
        head_dim=model_config.head_dim,
    ),
)
judged = [sampler(input_strings=[PROMPT_TEMPLATE.format(question=q)], max_generation_steps=MAX_GENERATION_STEPS,
                  temperature=INF_TEMPERATURE, top_k=INF_TOP_K, top_p=INF_TOP_P, seed=SEED).text[0]
          for q in QUESTIONS]
'''


def _dump(name: str) -> str:
    """A cell that writes what the judges' cells produced: their completions and the restored adapters."""
    return f'''
from tzc_train.model.adapters import param_arrays
np_arrays = {{k.replace("/", "|"): np.asarray(v, np.float32) for k, v in param_arrays(lora_policy, nnx.LoRAParam).items()}}
np.savez(os.path.join(WORK, "{name}.npz"), **np_arrays)
with open(os.path.join(WORK, "{name}.json"), "w") as handle:
    json.dump({{"completions": judged, "dtype": str(next(iter(nnx.state(lora_policy, nnx.LoRAParam).flat_state()))[1]
               .get_value().dtype)}}, handle)
'''


SCRAMBLE = '''
import json
import jax
import numpy as np
import jax.numpy as jnp
from flax import nnx
nnx.update(lora_policy, jax.tree.map(jnp.zeros_like, nnx.state(lora_policy, nnx.LoRAParam)))  # the restore must do it
'''


@pytest.fixture(scope="module", params=["tiny", "tiny-gemma3"])
def submission(request, tmp_path_factory, tiny_model_path):
    """A run's options (a tiny Gemma 2 or Gemma 3, bfloat16, the tiny tokenizer's build), the notebook
    written from them, run headless with its parameters pointed at a temporary folder, followed by the
    judges' cells for both modes; and the export the unrestricted mode uploads."""
    model = request.param
    root = tmp_path_factory.mktemp(f"kaggle-{model}")
    rows = [(f"What is {i} mod 17?", f"<think>{i} = 17 x {i // 17} + {i % 17}.</think>The answer is {i % 17}.")
            for i in range(300)]
    source = root / "rows.jsonl"
    source.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in rows))
    build = root / "build"
    assert tzc_data_main(["build", "--source", str(source), "--range", "0:300", "--out", str(build), "--tokenizer",
                          tiny_model_path, "--seq-len", "128", "--system", SYSTEM, "--eval-fraction", "0.05",
                          "--no-near-dup", "--no-progress"]) == 0
    run = root / "planned"
    write_run_config(TrainConfig(data=str(build), out=str(run), model=model, dtype="bfloat16", steps=40, batch_size=8,
                                 lr=1e-2, lora_rank=8, lora_alpha=8.0, warmup_steps=2, save_every=20, eval_rows=0))
    path = root / "submission.ipynb"
    assert write_notebook(str(run), str(path), package=str(root)) == str(path)
    notebook = nbformat.read(path, as_version=4)
    at = next(i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", []))
    work = root / "work"
    overrides = (f"WORK = {str(work)!r}\nBUILD_DIR = os.path.join(WORK, 'data')\nCKPT_DIR = os.path.join(WORK, 'ckpt')\n"
                 f"MAX_GENERATION_STEPS = 40\nQUESTIONS = {QUESTIONS!r}\nos.makedirs(WORK, exist_ok=True)\n")
    notebook.cells.insert(at + 1, nbformat.v4.new_code_cell(overrides, metadata={"tags": ["injected-parameters"]}))
    export = root / "export"
    notebook.cells += [nbformat.v4.new_code_cell(src) for src in (
        SCRAMBLE, JUDGES_SINGLE_SESSION, JUDGES_RESTORE_AND_DECODE, _dump("single"),
        f"subprocess.run([sys.executable, '-m', 'tzc_train.cli', 'export', '--run', CKPT_DIR, '--out', {str(export)!r},"
        " '--no-merged'], check=True)",
        SCRAMBLE, f"trained_ckpt_path = {str(export / 'kaggle')!r}  # kagglehub.model_download(MODEL_ID + '/jax/size')",
        JUDGES_RESTORE_AND_DECODE, _dump("unrestricted"))]
    NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(root)}}).execute()
    nbformat.write(notebook, root / "executed.ipynb")
    return {"root": root, "work": work, "notebook": notebook, "export": export, "model": model}


def _adapters(path) -> dict[str, np.ndarray]:
    with np.load(path) as loaded:
        return {k.replace("|", "/"): loaded[k] for k in loaded.files}


def _run_adapters(ckpt) -> dict[str, np.ndarray]:
    """The run's latest adapters (float32 masters) rounded to bfloat16, restored by tzc's own code."""
    import jax.numpy as jnp

    from tzc_train.config import read_run_config
    from tzc_train.model.load import base_model, make_mesh
    from tzc_train.model.lora import lora_state, restore_adapters, with_lora

    config = read_run_config(str(ckpt))
    manifest = tzc_data.read_manifest(config.builds[0])
    mesh = make_mesh(None)
    with mesh:
        base, _ = base_model(config, manifest["tokenizer"]["vocab_size"], mesh)
        model = with_lora(base, config, mesh)
        restore_adapters(model, str(ckpt), "--run")
    return {k: np.asarray(jnp.asarray(v).astype(jnp.bfloat16), np.float32) for k, v in lora_state(model).items()}


def test_the_notebook_trains_into_ckpt_dir_actor_and_the_judges_restore_the_runs_adapters(submission):
    ckpt = submission["work"] / "ckpt"
    assert sorted(int(p.name) for p in (ckpt / "actor").iterdir() if p.name.isdigit())[-1] == 40
    assert (ckpt / "actor" / "40" / "model_params").is_dir()
    expected = _run_adapters(ckpt)
    assert any(np.abs(v).sum() > 0 for v in expected.values())
    for mode in ("single", "unrestricted"):
        got = _adapters(submission["work"] / f"{mode}.npz")
        assert set(got) == set(expected), mode
        for name, value in expected.items():
            np.testing.assert_array_equal(got[name], value, err_msg=f"{mode}: {name}")
        assert json.loads((submission["work"] / f"{mode}.json").read_text())["dtype"] == "bfloat16"
    assert sorted(p.name for p in submission["export"].iterdir()) == ["adapters", "kaggle"]


def test_the_judges_greedy_completions_equal_tzc_train_eval(submission, tmp_path):
    """`tzc-train eval --json` (its own process) on the same questions at MAX_GENERATION_STEPS gives the
    completions the judges' Sampler gave, in both modes; the judges stop at <eos>, tzc at
    <end_of_turn> too, so both are compared up to <end_of_turn>."""
    work = submission["work"]
    prompts = tmp_path / "questions.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in QUESTIONS))
    done = subprocess.run([sys.executable, "-m", "tzc_train.cli", "eval", "--run", str(work / "ckpt"), "--data",
                           str(work / "data"), "--prompts", str(prompts), "--max-new-tokens", "40", "--batch-size",
                           "1", "--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    ours = [row["completion"].split("<end_of_turn>")[0] for row in report["samples"]]
    assert report["budget"] == 40 and len(ours) == len(QUESTIONS)
    assert any(ours) and len(set(ours)) > 1  # a trained model that answers each question its own way
    for mode in ("single", "unrestricted"):
        judged = json.loads((work / f"{mode}.json").read_text())["completions"]
        assert [text.split("<end_of_turn>")[0] for text in judged] == ours, mode


def test_the_notebook_fills_the_template_and_defines_the_judges_names(submission):
    from tzc_train.model.bases import base

    cells = submission["notebook"].cells
    text = "\n".join(c.source for c in cells)
    assert text.startswith(f"# {base(submission['model']).title} taught to reason")
    for heading in ("## Your overall training and evaluation strategy", "## How your finetuning dataset is created",
                    "## Your Tunix finetuning code", "## [Optional 15pts] unrestricted mode",
                    "## Other things you want the judges to know"):
        assert heading in text
    manifest = tzc_data.read_manifest(submission["work"] / "data")
    assert f"kept {manifest['counts']['kept']:,}" in text and "`tzc-data verify`: ok" in text
    assert f"fill {manifest['packing']['fill']:.2%}" in text and "rows 0:300" in text
    assert "--time-limit" in text and "unrestricted_kaggle_model" in text
    errors = [o for c in cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    template = prompt_template(SYSTEM)
    assert "{{braces}}" in template and template.format(question="q").count("{braces}") == 1
    assert f"PROMPT_TEMPLATE = {template!r}" in text


@pytest.mark.parametrize("family", ["gemma2", "gemma3"])
def test_prompt_template_is_the_training_prefix_on_every_shared_prompt(family, request):
    """[<bos>] + SentencePiece(PROMPT_TEMPLATE.format(question=q)), as tunix's Sampler.tokenize encodes
    the judges' prompt, is token for token the prefix tzc trains on, for every prompt in ../shared/data,
    with Gemma 2's and Gemma 3's real tokenizers."""
    from conftest import SHARED, read_jsonl

    tokenizer = request.getfixturevalue("gemma_tokenizer" if family == "gemma2" else "gemma3_tokenizer")
    template = prompt_template(DEFAULT_SYSTEM)
    prompts = [row["prompt"] for name in sorted(p.name for p in SHARED.glob("*.jsonl")) for row in read_jsonl(name)]
    assert len(prompts) > 400
    for prompt in prompts:
        judged = [tokenizer.bos] + tokenizer.sp.encode(template.format(question=prompt.strip()))
        assert judged == tokenizer.encode_prompt(prompt), prompt[:80]


def test_budgets_follow_the_build(submission):
    data = str(submission["work"] / "data")
    budget, why = generation_budget(data)
    assert budget == JUDGES_BUDGET and "p99 model turn" in why  # short answers: the template's 768
    assert max_prompt_length(data) == 256


def test_notebook_refusals_are_one_line(submission, tmp_path, capsys):
    from tzc_train.cli import main

    ckpt = submission["work"] / "ckpt"
    existing = tmp_path / "taken.ipynb"
    existing.write_text("{}")
    cases = [(["notebook", "--run", str(tmp_path), "--out", str(tmp_path / "a.ipynb")], "not a tzc-train run"),
             (["notebook", "--run", str(ckpt), "--out", str(existing)], "exists; pass --overwrite"),
             (["notebook", "--run", str(ckpt), "--out", str(tmp_path / "a.txt")], "ends in .ipynb")]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert existing.read_text() == "{}"
    assert main(["notebook", "--run", str(ckpt), "--out", str(existing), "--overwrite"]) == 0
    assert re.search(r"PROMPT_TEMPLATE = ", existing.read_text())
