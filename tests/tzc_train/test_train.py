"""The trainer end to end on a tiny random Gemma 2 over 8 fake CPU devices, on a real small build."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from tzc_data.cli import main as tzc_data_main
from tzc_train import train as train_module
from tzc_train.train import TrainConfig, base_model, lora_state, make_mesh, train

SYSTEM = "Answer with reasoning, then the answer."


@pytest.fixture(scope="module")
def short_build(tmp_path_factory, tiny_model_path):
    """400 short arithmetic examples, tokenized with the throwaway tokenizer, in rows of 256 tokens."""
    root = tmp_path_factory.mktemp("train")
    src = root / "rows.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"What is {i} mod 17?", "response":
                                       f"<think>{i} = 17 x {i // 17} + {i % 17}.</think>The answer is {i % 17}."}) + "\n"
                           for i in range(400)))
    out = root / "build"
    assert tzc_data_main(["build", "--source", str(src), "--range", "0:400", "--out", str(out), "--tokenizer",
                          tiny_model_path, "--seq-len", "256", "--system", SYSTEM, "--eval-fraction", "0.05",
                          "--no-near-dup", "--no-progress"]) == 0
    return out


def _config(build, out, **overrides):
    settings = dict(data=str(build), out=str(out), model="tiny", steps=24, batch_size=4, lr=1e-2, lora_rank=8,
                    lora_alpha=8.0, warmup_steps=2, save_every=8, eval_every=8)
    return TrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def full_run(short_build, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "full"
    return out, train(_config(short_build, out))


def test_loss_falls_and_only_adapters_change(full_run, short_build):
    _, result = full_run
    vocab = json.loads((short_build / "manifest.json").read_text())["tokenizer"]["vocab_size"]
    losses = result["losses"]
    assert len(losses) == 24 and np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.2
    mesh = make_mesh(None)
    with mesh:
        fresh, _ = base_model(_config("x", "y"), vocab, mesh)  # deterministic random weights
    trained = train_module.base_state(result["model"])
    for name, value in train_module.base_state(fresh).items():
        if name in trained:
            np.testing.assert_array_equal(trained[name], value, err_msg=name)
    assert any(np.abs(v).sum() > 0 for v in lora_state(result["model"]).values())


def test_resume_after_a_crash_gives_the_same_adapters(short_build, full_run, tmp_path, monkeypatch):
    out = tmp_path / "crashed"
    original = train_module.ConsoleLine.on_train_step_end

    def crash(self, ctx, step, loss):
        original(self, ctx, step, loss)
        if step == 19:  # after the checkpoint at step 16
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module.ConsoleLine, "on_train_step_end", crash)
    with pytest.raises(KeyboardInterrupt):
        train(_config(short_build, out))
    monkeypatch.setattr(train_module.ConsoleLine, "on_train_step_end", original)
    with pytest.raises(ValueError, match="--resume"):
        train(_config(short_build, out))
    resumed = train(_config(short_build, out, resume=True))
    assert len(resumed["losses"]) == 8  # steps 17..24
    expected = lora_state(full_run[1]["model"])
    for name, value in lora_state(resumed["model"]).items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_init_lora_starts_from_saved_adapters(short_build, full_run, tmp_path):
    run_dir, result = full_run
    follow = train(_config(short_build, tmp_path / "next", init_lora=str(run_dir), steps=1, lr=1e-12))
    expected = lora_state(result["model"])
    for name, value in lora_state(follow["model"]).items():
        np.testing.assert_allclose(value, expected[name], atol=1e-6, err_msg=name)


def test_cli_end_to_end_with_the_tiny_model(short_build, tmp_path):
    out = tmp_path / "cli"
    command = [sys.executable, "-m", "tzc_train.cli", "--model", "tiny", "--data", str(short_build), "--out", str(out),
               "--steps", "6", "--batch-size", "4", "--lr", "1e-2", "--lora-rank", "4", "--save-every", "3"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["trained_steps_this_run"] == 6 and summary["mesh"] == {"fsdp": 2, "tp": 4}
    assert "step      1  loss" in done.stderr and "tokens/s  lr" in done.stderr and "eval loss" in done.stderr
    assert (out / "tensorboard").is_dir() and (out / "6").is_dir()
    again = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["trained_steps_this_run"] == 0
    refused = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "pass --resume" in refused.stderr


def test_format_check_accepts_only_reasoning_then_answer():
    from tzc_train.sample import check_format

    assert check_format("<reasoning>r</reasoning>\n<answer>a</answer><end_of_turn>\n<eos>") == (True, "")
    assert check_format("<reasoning>r</reasoning>\n<answer>a</answer>")[0]
    assert not check_format("<answer>a</answer>")[0]
    assert not check_format("<reasoning>r</reasoning>\n<answer> </answer>")[0]
    assert not check_format("<reasoning>r</reasoning>\n<answer>a")[0]  # cut before </answer>


def test_sample_command_reports_format_validation(short_build, full_run, tmp_path):
    run_dir, _ = full_run
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"What is {i} mod 17?"}) + "\n" for i in (3, 50, 99)))
    command = [sys.executable, "-m", "tzc_train.cli", "sample", "--model", "tiny", "--data", str(short_build),
               "--lora", str(run_dir), "--lora-rank", "8", "--lora-alpha", "8", "--prompts", str(prompts),
               "--max-new-tokens", "12"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("\nprompt: What is ") == 3
    assert re.search(r"Format Validation: \d/3", done.stdout)


@pytest.fixture(scope="module")
def exported(full_run, tmp_path_factory):
    """`tzc-train export` of the trained run, through the CLI."""
    run_dir, _ = full_run
    out = tmp_path_factory.mktemp("export") / "session1"
    done = subprocess.run([sys.executable, "-m", "tzc_train.cli", "export", "--run", str(run_dir), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert set(json.loads(done.stdout.strip().splitlines()[-1])) == {"adapters", "merged"}
    return out


def _logits(model, vocab):
    import jax.numpy as jnp

    rng = np.random.default_rng(7)
    tokens = jnp.asarray(rng.integers(3, vocab, (2, 40)), dtype=jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(40), (2, 40))
    mask = jnp.broadcast_to(jnp.tril(jnp.ones((40, 40), dtype=bool)), (2, 40, 40))
    return np.asarray(model(tokens, positions, None, mask)[0])


def test_merged_export_loads_in_tunix_and_gives_the_trained_models_logits(full_run, exported, short_build):
    """The merged weights, read back by tunix's own safetensors loader into a plain Gemma 2 (no LoRA),
    give the logits of the trained LoRA model; the base weights alone would not."""
    import jax.numpy as jnp
    from tunix.models.gemma import params_safetensors

    from tzc_train.model import tiny_config

    _, result = full_run
    vocab = json.loads((short_build / "manifest.json").read_text())["tokenizer"]["vocab_size"]
    mesh = make_mesh(None)
    with mesh:
        trained = _logits(result["model"], vocab)
        plain = params_safetensors.create_model_from_safe_tensors(str(exported / "merged"), tiny_config(vocab), mesh,
                                                                  dtype=jnp.float32)
        assert not any("lora" in "/".join(map(str, p)) for p, _ in __import__("flax").nnx.state(plain).flat_state())
        np.testing.assert_allclose(_logits(plain, vocab), trained, atol=2e-5)
        base, _ = base_model(_config("x", "y"), vocab, mesh)
        assert np.abs(_logits(base, vocab) - trained).max() > 1e-3  # the adapters matter: the test can fail
    config = json.loads((exported / "merged" / "config.json").read_text())
    assert config["architectures"] == ["Gemma2ForCausalLM"] and config["vocab_size"] == vocab


def test_exported_adapters_load_again_with_init_lora(short_build, full_run, exported, tmp_path):
    _, result = full_run
    adapter_config = json.loads((exported / "adapters" / "adapter_config.json").read_text())
    assert adapter_config["rank"] == 8 and adapter_config["alpha"] == 8.0
    follow = train(_config(short_build, tmp_path / "from-export", init_lora=str(exported / "adapters"), steps=1,
                           lr=1e-12))
    expected = lora_state(result["model"])
    for name, value in lora_state(follow["model"]).items():
        np.testing.assert_allclose(value, expected[name], atol=1e-6, err_msg=name)
    with pytest.raises(ValueError, match="lora-rank|rank/targets"):
        train(_config(short_build, tmp_path / "wrong-rank", init_lora=str(exported / "adapters"), lora_rank=4, steps=1))


def test_sampling_the_merged_weights_equals_sampling_the_run(short_build, full_run, exported):
    """Greedy completions from `--weights EXPORT/merged` (plain Gemma) and from the run's adapters."""
    from tzc_data.look import build_tokenizer
    from tzc_train.sample import sample

    _, result = full_run
    manifest = json.loads((short_build / "manifest.json").read_text())
    tokenizer = build_tokenizer(manifest, None)
    prompts = [f"What is {i} mod 17?" for i in (3, 50)]
    mesh = make_mesh(None)
    with mesh:
        merged, model_config = base_model(_config("x", "y", weights=str(exported / "merged")),
                                          manifest["tokenizer"]["vocab_size"], mesh)
        from_export = sample(merged, model_config, tokenizer, prompts, max_new_tokens=10)
        from_run = sample(result["model"], model_config, tokenizer, prompts, max_new_tokens=10)
    assert [s.completion for s in from_export] == [s.completion for s in from_run]


def test_export_refuses_a_directory_that_is_not_a_run(tmp_path):
    from tzc_train.cli import main

    assert main(["export", "--run", str(tmp_path), "--out", str(tmp_path / "x")]) == 2


def _kaggle_layout(params, num_layers):
    """A Kaggle Flax Gemma 2 checkpoint's tree (flat '/' keys, as the Kaggle files hold it):
    ``gating_einsum`` stacks gate and up as [2, embed, hidden], ``linear`` is [hidden, embed]."""
    flat = {"transformer/embedder": {"input_embedding": params["embedder/input_embedding"]},
            "transformer/final_norm": {"scale": params["final_norm/scale"]}}
    for i in range(num_layers):
        ours, theirs = f"layers/{i}", f"transformer/layer_{i}"
        for name in ("q_einsum", "kv_einsum", "attn_vec_einsum"):
            flat[f"{theirs}/attn/{name}"] = {"w": params[f"{ours}/attn/{name}/w"]}
        flat[f"{theirs}/mlp/gating_einsum"] = {"w": np.stack([params[f"{ours}/mlp/gate_proj/kernel"],
                                                              params[f"{ours}/mlp/up_proj/kernel"]])}
        flat[f"{theirs}/mlp/linear"] = {"w": params[f"{ours}/mlp/down_proj/kernel"]}
        for name, kaggle in (("pre_attention_norm", "pre_attention_norm"), ("post_attn_norm", "post_attention_norm"),
                             ("pre_ffw_norm", "pre_ffw_norm"), ("post_ffw_norm", "post_ffw_norm")):
            flat[f"{theirs}/{kaggle}"] = {"scale": params[f"{ours}/{name}/scale"]}
    return flat


def test_a_kaggle_flax_checkpoint_loads_as_the_base_model(tmp_path):
    """--weights with a Kaggle-layout orbax checkpoint (written here at tiny size: no real weights are
    reachable) gives the model whose parameters were written, on the mesh."""
    import orbax.checkpoint as ocp

    from tzc_train.model import tiny_config

    mesh = make_mesh(None)
    with mesh:
        tiny, _ = base_model(_config("x", "y"), 600, mesh)
    params = train_module.base_state(tiny)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "kaggle", _kaggle_layout(params, tiny_config(600).num_layers))
    checkpointer.wait_until_finished()
    with mesh:
        loaded, _ = base_model(_config("x", "y", weights=str(tmp_path / "kaggle")), 600, mesh)
    got = train_module.base_state(loaded)
    assert set(got) == set(params)
    for name, value in params.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    with pytest.raises(ValueError, match="not a Kaggle Flax checkpoint"), mesh:
        base_model(_config("x", "y", weights=str(tmp_path / "missing")), 600, mesh)
