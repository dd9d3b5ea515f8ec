"""`tzc-train export` (tzc_train/submit/export.py) of tiny trained runs: every layout loads again with
tunix's own loaders (and --init-lora) and gives the trained model's logits and greedy samples, for a
Gemma 2 and a Gemma 3 run."""

import contextlib
import io
import json

import jax.numpy as jnp
import numpy as np
import pytest
import tiny_runs
from flax import nnx
from tiny_runs import VOCAB, alone, logits, run_config

from tzc_data.text.tokenize import build_tokenizer
from tzc_train.model.load import base_model, load_base, make_mesh
from tzc_train.model.lora import lora_state
from tzc_train.model.views import prepare
from tzc_train.train import train


@pytest.fixture(scope="module")
def short_build(tmp_path_factory, tiny_model_path):
    return tiny_runs.short_build(tmp_path_factory, tiny_model_path)


@pytest.fixture(scope="module")
def full_run(short_build, tmp_path_factory):
    return tiny_runs.full_run(short_build, tmp_path_factory)


@pytest.fixture(scope="module")
def gemma3_run(tmp_path_factory, tiny_model_path):
    return tiny_runs.gemma3_run(tmp_path_factory, tiny_model_path)


@pytest.fixture(scope="module")
def exported(full_run, tmp_path_factory):
    """`tzc-train export` of the trained run, through the CLI (in-process: its own process adds only
    the start-up, which test_cli_end_to_end_with_the_tiny_model covers)."""
    from tzc_train.cli import main

    run_dir, _ = full_run
    out = tmp_path_factory.mktemp("export") / "session1"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["export", "--run", str(run_dir), "--out", str(out)]) == 0
    assert set(json.loads(stdout.getvalue().strip().splitlines()[-1])) == {"adapters", "kaggle", "merged", "flax"}
    return out


def _logits(model, vocab):
    import jax.numpy as jnp

    rng = np.random.default_rng(7)
    tokens = jnp.asarray(rng.integers(3, vocab, (2, 40)), dtype=jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(40), (2, 40))
    mask = jnp.broadcast_to(jnp.tril(jnp.ones((40, 40), dtype=bool)), (2, 40, 40))
    return np.asarray(_forward(model, tokens, positions, mask))


@nnx.jit
def _forward(model, tokens, positions, mask):
    """One compiled forward pass (eager op-by-op calls over 8 fake devices are slow)."""
    return model(tokens, positions, None, mask)[0]


def test_merged_export_loads_in_tunix_and_gives_the_trained_models_logits(full_run, exported, short_build):
    """The merged weights, read back by tunix's own safetensors loader into a plain Gemma 2 (no LoRA),
    give the logits of the trained LoRA model; the base weights alone would not."""
    import jax.numpy as jnp
    from tunix.models.gemma import params_safetensors

    from tzc_train.model.views import tiny_config

    _, result = full_run
    vocab = json.loads((short_build / "manifest.json").read_text())["tokenizer"]["vocab_size"]
    mesh = make_mesh(None)
    with mesh:
        trained = _logits(result["model"], vocab)
        plain = params_safetensors.create_model_from_safe_tensors(str(exported / "merged"), tiny_config(vocab), mesh,
                                                                  dtype=jnp.float32)
        assert not any("lora" in "/".join(map(str, p)) for p, _ in __import__("flax").nnx.state(plain).flat_state())
        np.testing.assert_allclose(_logits(plain, vocab), trained, atol=2e-5)
        base, _ = base_model(run_config("x", "y"), vocab, mesh)
        assert np.abs(_logits(base, vocab) - trained).max() > 1e-3  # the adapters matter: the test can fail
    config = json.loads((exported / "merged" / "config.json").read_text())
    assert config["architectures"] == ["Gemma2ForCausalLM"] and config["vocab_size"] == vocab
    tokenizer = build_tokenizer(json.loads((short_build / "manifest.json").read_text()), None)
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (
        tokenizer.bos, tokenizer.eos, tokenizer.pad)
    generation = json.loads((exported / "merged" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [tokenizer.eos, tokenizer.end_of_turn]


def test_flax_export_loads_with_tunixs_kaggle_gemma_loader(full_run, exported, short_build, run_samples, monkeypatch):
    """OUT/flax through tunix's own Kaggle path, exactly as a competition notebook calls it:
    ``params.load_and_format_params`` then ``Gemma.from_params(params, version="2-2b-it")`` (its
    config replaced by the tiny one: no real weights are reachable). A plain Gemma 2 with the
    trained model's logits and greedy samples."""
    from flax import nnx
    from tunix.models.gemma import model as gemma_lib
    from tunix.models.gemma import params as gemma_params

    from tzc_train.model.views import tiny_config
    from tzc_train.sample import sample

    _, result = full_run
    manifest = json.loads((short_build / "manifest.json").read_text())
    vocab = manifest["tokenizer"]["vocab_size"]
    tiny = tiny_config(vocab)
    monkeypatch.setattr(gemma_lib.ModelConfig, "gemma2_2b_it", classmethod(lambda cls: tiny))
    plain = gemma_lib.Gemma.from_params(gemma_params.load_and_format_params(str(exported / "flax")), version="2-2b-it")
    assert not any("lora" in "/".join(map(str, p)) for p, _ in nnx.state(plain).flat_state())
    with make_mesh(None):
        trained = _logits(result["model"], vocab)
    np.testing.assert_allclose(_logits(plain, vocab), trained, atol=2e-5)
    prompts, expected = run_samples
    got = sample(plain, tiny, build_tokenizer(manifest, None), prompts, max_new_tokens=10)
    assert [s.completion for s in got] == expected


def test_exported_adapters_load_again_with_init_lora(short_build, full_run, exported, tmp_path):
    _, result = full_run
    adapter_config = json.loads((exported / "adapters" / "adapter_config.json").read_text())
    assert adapter_config["rank"] == 8 and adapter_config["alpha"] == 8.0
    follow = train(run_config(short_build, tmp_path / "from-export", init_lora=str(exported / "adapters"), steps=1,
                           lr=1e-12))
    expected = lora_state(result["model"])
    for name, value in lora_state(follow["model"]).items():
        np.testing.assert_allclose(value, expected[name], atol=1e-6, err_msg=name)
    with pytest.raises(ValueError, match="lora-rank|rank/targets"):
        train(run_config(short_build, tmp_path / "wrong-rank", init_lora=str(exported / "adapters"), lora_rank=4,
                         steps=1))


@pytest.fixture(scope="module")
def run_samples(short_build, full_run):
    """Greedy completions of two prompts by the trained run (its LoRA model)."""
    from tzc_train.model.views import tiny_config
    from tzc_train.sample import sample

    manifest = json.loads((short_build / "manifest.json").read_text())
    prompts = [f"What is {i} mod 17?" for i in (3, 50)]
    with make_mesh(None):
        samples = sample(full_run[1]["model"], tiny_config(manifest["tokenizer"]["vocab_size"]),
                         build_tokenizer(manifest, None), prompts, max_new_tokens=10)
    return prompts, [s.completion for s in samples]


def test_sampling_the_merged_weights_equals_sampling_the_run(short_build, exported, run_samples):
    """Greedy completions from `--weights EXPORT/merged` (plain Gemma) and from the run's adapters."""
    from tzc_train.sample import sample

    manifest = json.loads((short_build / "manifest.json").read_text())
    prompts, expected = run_samples
    mesh = make_mesh(None)
    with mesh:
        merged, model_config = base_model(run_config("x", "y", weights=str(exported / "merged")),
                                          manifest["tokenizer"]["vocab_size"], mesh)
        from_export = sample(merged, model_config, build_tokenizer(manifest, None), prompts, max_new_tokens=10)
    assert [s.completion for s in from_export] == expected


def test_export_refuses_a_directory_that_is_not_a_run(tmp_path):
    from tzc_train.cli import main

    assert main(["export", "--run", str(tmp_path), "--out", str(tmp_path / "x")]) == 2


def test_a_gemma3_run_exports_in_every_layout_and_each_loads_back_with_tunix_gemma3_loaders(gemma3_run, tmp_path):
    """tzc-train export of a Gemma 3 run: adapters, Hugging Face Gemma3ForCausalLM safetensors (read by
    tunix.models.gemma3.params_safetensors) and Google's Gemma 3 Flax layout (read by
    tunix.models.gemma3.params.create_model_from_checkpoint): each merged model gives the LoRA model's
    logits."""
    from tzc_train.config import TrainConfig
    from tzc_train.model.lora import restore_adapters, with_lora
    from tzc_train.submit.export import export_run

    build, result, run = gemma3_run
    written = export_run(str(run), str(tmp_path / "export"))
    assert set(written) == {"adapters", "kaggle", "merged", "flax"}
    config = json.loads((tmp_path / "export" / "merged" / "config.json").read_text())
    assert config["architectures"] == ["Gemma3ForCausalLM"] and config["final_logit_softcapping"] is None
    assert config["layer_types"] == ["sliding_attention"] * 5 + ["full_attention"]
    vocab = json.loads((build / "manifest.json").read_text())["tokenizer"]["vocab_size"]
    inputs = alone(np.random.default_rng(7).integers(5, VOCAB, 30))
    mesh = make_mesh(None)
    with mesh:
        lora = prepare(result["model"], remat="none", attention="plain")
        want = logits(lora, *inputs)
        for layout in ("merged", "flax"):
            merged, _ = load_base("tiny-gemma3", str(tmp_path / "export" / layout), vocab, mesh)
            got = logits(prepare(merged, remat="none", attention="plain"), *inputs)
            assert float(jnp.abs(got - want).max()) < 1e-4, layout
        back = with_lora(load_base("tiny-gemma3", None, vocab, mesh)[0],
                         TrainConfig(data="-", out="-", model="tiny-gemma3", lora_rank=8, lora_alpha=8.0), mesh)
        restore_adapters(back, str(tmp_path / "export" / "adapters"), "--init-lora")
        assert float(jnp.abs(logits(prepare(back, remat="none", attention="plain"), *inputs) - want).max()) < 1e-6
