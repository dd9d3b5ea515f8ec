"""Gemma 3 on packed rows, on a tiny random Gemma 3 (6 layers: five local, one global; width 64; one
key/value head as in 1B) over 8 fake CPU devices; and the model names and the build check of
tzc_train.bases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tzc_train import bases
from tzc_train.model import attention_mask, chunked_cross_entropy, packed_inputs, packed_loss, prepare

VOCAB = 600


@pytest.fixture(scope="module")
def mesh():
    assert len(jax.devices()) == 8, "tests/conftest.py sets XLA_FLAGS for 8 fake CPU devices"
    return jax.make_mesh((2, 4), ("fsdp", "tp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


@nnx.jit
def _logits(model, tokens, positions, mask):
    return model(tokens, positions, None, mask)[0]


def _row(examples, length, prompt_lengths):
    tokens, segments, positions, mask = (np.zeros(length, np.int32) for _ in range(4))
    at = 0
    for k, (ids, prompt) in enumerate(zip(examples, prompt_lengths), 1):
        n = len(ids)
        tokens[at:at + n], segments[at:at + n], positions[at:at + n] = ids, k, np.arange(n)
        mask[at + prompt:at + n] = 1
        at += n
    return {"tokens": tokens[None], "segment_ids": segments[None], "positions": positions[None],
            "loss_mask": mask[None]}


def _alone(ids):
    n = len(ids)
    return jnp.asarray(ids)[None], jnp.arange(n)[None], jnp.ones((1, n), jnp.int32)


def test_the_tiny_gemma3_is_gemma3s_architecture():
    config = bases.tiny_config("gemma3", VOCAB)
    lib = bases.module("gemma3")
    types = bases.attention_types(config)
    assert types == [lib.AttentionType.LOCAL_SLIDING] * 5 + [lib.AttentionType.GLOBAL]
    real = bases.real_config("gemma3-1b")
    assert (real.num_embed, real.sliding_window_size, real.num_kv_heads, real.num_layers) == (262144, 512, 1, 26)
    assert sum(t == lib.AttentionType.GLOBAL for t in bases.attention_types(real)) == 4  # layers 6, 12, 18, 24
    assert config.num_kv_heads == 1 and config.query_pre_attn_norm == real.query_pre_attn_norm
    assert (config.local_base_frequency, config.global_base_frequency) == (10_000, 1_000_000)


@pytest.mark.parametrize("attention", ["plain", "splash"])
def test_gemma3_packed_logits_equal_each_example_alone_and_tunix_own_attention(mesh, attention):
    """Rows twice the window (8): an example that starts past it and is longer than it. Its packed
    logits equal its logits alone; tunix's own Gemma 3 attention with the dense block-diagonal mask
    (its prefill window is by index, right within an example) gives the same; a plain causal mask and
    a model without the window do not."""
    window = 8
    rng = np.random.default_rng(0)
    first, second = rng.integers(5, VOCAB, 13), rng.integers(5, VOCAB, 21)
    row = _row([first, second], 40, [5, 4])
    tokens, positions, segments = (jnp.asarray(row[k]) for k in ("tokens", "positions", "segment_ids"))
    with mesh:
        tunix = bases.tiny_model("gemma3", VOCAB, mesh, sliding_window_size=window)
        dense = _logits(tunix, tokens, positions, attention_mask(segments))
        model = prepare(bases.tiny_model("gemma3", VOCAB, mesh, sliding_window_size=window), remat="none",
                        attention=attention, interpret=True)
        packed = _logits(model, tokens, positions, segments)
        alone = _logits(model, *_alone(second))
        causal = _logits(model, tokens, jnp.arange(40)[None], jnp.asarray((np.arange(40) < 34).astype(np.int32))[None])
        unwindowed = _logits(prepare(bases.tiny_model("gemma3", VOCAB, mesh, sliding_window_size=64), remat="none",
                                     attention=attention, interpret=True), *_alone(second))
    assert float(jnp.abs(packed[0, 13:34] - alone[0]).max()) < 1e-5
    assert float(jnp.abs(packed[0, :34] - dense[0, :34]).max()) < 1e-5
    assert float(jnp.abs(causal[0, 13:34] - alone[0]).max()) > 1e-2
    assert float(jnp.abs(unwindowed[0] - alone[0]).max()) > 1e-3  # the window is in force


def test_gemma3_loss_has_no_soft_cap_and_equals_the_full_logits_loss():
    """packed_loss over Gemma 3's tied embedding, in slices, equals cross entropy of the model's own
    logits (which Gemma 3 does not soft-cap)."""
    import optax

    one = jax.make_mesh((1, 1), ("fsdp", "tp"), devices=jax.devices()[:1], axis_types=(jax.sharding.AxisType.Auto,) * 2)
    inputs = packed_inputs(_row([np.arange(5, 400), np.arange(100, 250) % VOCAB], 600, [40, 25]))

    @nnx.jit
    def full_logits_loss(model, inputs):
        logits, _ = model(inputs["input_tokens"], inputs["positions"], None, inputs["segment_ids"])
        full = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1].astype(jnp.float32),
                                                               inputs["input_tokens"][:, 1:])
        weights = inputs["target_mask"].astype(jnp.float32)
        return jnp.sum(full * weights) / jnp.sum(weights)

    with one:
        model = prepare(bases.tiny_model("gemma3", VOCAB, one), remat="block", attention="plain")
        assert getattr(model, "final_logits_softcap", None) is None
        expected = full_logits_loss(model, inputs)
        assert abs(float(nnx.jit(packed_loss)(model, **inputs)) - float(expected)) < 1e-5
    hidden, embedding = jnp.ones((1, 4, 8)), jnp.ones((10, 8)) * 10.0
    capped = chunked_cross_entropy(hidden, embedding, jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4)), softcap=30.0)
    assert float(chunked_cross_entropy(hidden, embedding, jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4)),
                                       softcap=None)) != float(capped)


def test_remat_and_the_decoding_view_use_gemma3s_own_enum(mesh):
    from tzc_train.model import for_decoding

    lib = bases.module("gemma3")
    with mesh:
        trained = prepare(bases.tiny_model("gemma3", VOCAB, mesh), remat="block", attention="plain")
    assert {layer.attn.remat_config for layer in trained.layers} == {lib.RematConfig.BLOCK}
    assert {layer.mlp.config.remat_config for layer in trained.layers} == {lib.RematConfig.BLOCK}
    view = for_decoding(trained)
    assert {layer.config.remat_config for layer in view.layers} == {lib.RematConfig.NONE}


def _tokenizer_entry(name, vocab):
    from tzc_data.tokenize import KNOWN

    return {"sha256": KNOWN[name].sha256, "vocab_size": vocab, "file": f"{name}.model", "name": name}


def test_a_build_for_the_other_model_is_refused_in_one_line_naming_both():
    with pytest.raises(ValueError) as err:
        bases.check_tokenizer("gemma3-1b", _tokenizer_entry("gemma2", 256000), "runs/g2")
    assert str(err.value) == ("--data runs/g2 was tokenized for Gemma 2 (gemma2 tokenizer, sha256 61a7b147390c...) "
                              "but --model gemma3-1b reads Gemma 3's (gemma3, sha256 a96dfa1c2969...): rebuild it "
                              "with tzc-data build --tokenizer gemma3")
    with pytest.raises(ValueError, match="Gemma 3 .* but --model gemma2-2b reads Gemma 2's"):
        bases.check_tokenizer("gemma2-2b", _tokenizer_entry("gemma3", 262144), "runs/g3")
    older = {k: v for k, v in _tokenizer_entry("gemma2", 256000).items() if k != "name"}  # a build before names
    with pytest.raises(ValueError, match="tokenized for Gemma 2"):
        bases.check_tokenizer("gemma3-1b", older, "runs/g2")
    bases.check_tokenizer("gemma3-1b", _tokenizer_entry("gemma3", 262144), "runs/g3")
    bases.check_tokenizer("tiny-gemma3", _tokenizer_entry("gemma2", 256000), "runs/g2")  # tiny: any vocabulary
    custom = {"sha256": "0" * 64, "vocab_size": 300000, "file": "big.model", "name": None}
    with pytest.raises(ValueError, match="300,000 ids, more than the 262,144 rows"):
        bases.check_tokenizer("gemma3-1b", custom, "runs/big")


def test_model_names_and_weights():
    from tzc_train.train import TrainConfig

    with pytest.raises(ValueError, match="--model gemma3-1b needs --weights"):
        TrainConfig(data="d", out="o", model="gemma3-1b")
    with pytest.raises(ValueError, match="choose one of tiny, gemma2-2b, tiny-gemma3, gemma3-1b"):
        TrainConfig(data="d", out="o", model="gemma3-4b")
    assert TrainConfig(data="d", out="o", model="tiny-gemma3").model == "tiny-gemma3"


@pytest.fixture(scope="module")
def gemma3_run(tmp_path_factory, tiny_model_path):
    """A few steps of tzc-train on --model tiny-gemma3 over a small build (the 600-piece tokenizer)."""
    import json

    from tzc_data.cli import main as tzc_data_main
    from tzc_train.train import TrainConfig, train

    root = tmp_path_factory.mktemp("g3run")
    rows = [(f"What is {i} mod 17?", f"<think>{i} = 17 x {i // 17} + {i % 17}.</think>The answer is {i % 17}.")
            for i in range(300)]
    (root / "rows.jsonl").write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in rows))
    build = root / "build"
    assert tzc_data_main(["build", "--source", str(root / "rows.jsonl"), "--range", "0:300", "--out", str(build),
                          "--tokenizer", tiny_model_path, "--seq-len", "256", "--eval-fraction", "0.05",
                          "--no-near-dup", "--no-progress"]) == 0
    config = TrainConfig(data=str(build), out=str(root / "run"), model="tiny-gemma3", steps=12, batch_size=4,
                         lr=1e-2, lora_rank=8, lora_alpha=8.0, warmup_steps=2, save_every=6, eval_every=6, eval_rows=4)
    return build, train(config), root / "run"


def test_tzc_train_trains_a_tiny_gemma3_and_its_greedy_samples_are_the_models_argmax(gemma3_run):
    """End to end on Gemma 3: the loss falls, a checkpoint is written; tzc's sampler (tunix's KV cache
    and Gemma 3's own decoding attention) decodes what the packed forward pass predicts, from the
    trained model and, through `tzc-train eval`'s path, from the run's checkpoint."""
    import json

    from tzc_data.look import build_tokenizer
    from tzc_train.evaluate import DecodeRequest, Prompt, decode
    from tzc_train.model import for_decoding
    from tzc_train.sample import sample
    from tzc_train.train import make_mesh

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
                tokens, positions, segments = _alone(ids + new)
                nxt = int(jnp.argmax(_logits(view, tokens, positions, segments)[0, -1]))
                if nxt in (tokenizer.eos, tokenizer.end_of_turn):
                    break
                new.append(nxt)
            assert got.completion == tokenizer.decode(new), prompt
    restored = decode(DecodeRequest(data=str(build), lora=str(run), max_new_tokens=6, batch_size=2),
                      [Prompt(p) for p in prompts])
    assert [s.completion for s in restored] == [s.completion for s in samples]


def test_a_gemma3_run_exports_in_every_layout_and_each_loads_back_with_tunix_gemma3_loaders(gemma3_run, tmp_path):
    """tzc-train export of a Gemma 3 run: adapters, Hugging Face Gemma3ForCausalLM safetensors (read by
    tunix.models.gemma3.params_safetensors) and Google's Gemma 3 Flax layout (read by
    tunix.models.gemma3.params.create_model_from_checkpoint): each merged model gives the LoRA model's
    logits."""
    import json

    from tzc_train.train import TrainConfig, export_run, make_mesh, with_lora
    from tzc_train.train import restore_adapters

    build, result, run = gemma3_run
    written = export_run(str(run), str(tmp_path / "export"))
    assert set(written) == {"adapters", "kaggle", "merged", "flax"}
    config = json.loads((tmp_path / "export" / "merged" / "config.json").read_text())
    assert config["architectures"] == ["Gemma3ForCausalLM"] and config["final_logit_softcapping"] is None
    assert config["layer_types"] == ["sliding_attention"] * 5 + ["full_attention"]
    vocab = json.loads((build / "manifest.json").read_text())["tokenizer"]["vocab_size"]
    inputs = _alone(np.random.default_rng(7).integers(5, VOCAB, 30))
    mesh = make_mesh(None)
    with mesh:
        lora = prepare(result["model"], remat="none", attention="plain")
        want = _logits(lora, *inputs)
        for layout in ("merged", "flax"):
            merged, _ = bases.load("tiny-gemma3", str(tmp_path / "export" / layout), vocab, mesh)
            got = _logits(prepare(merged, remat="none", attention="plain"), *inputs)
            assert float(jnp.abs(got - want).max()) < 1e-4, layout
        back = with_lora(bases.load("tiny-gemma3", None, vocab, mesh)[0],
                         TrainConfig(data="-", out="-", model="tiny-gemma3", lora_rank=8, lora_alpha=8.0), mesh)
        restore_adapters(back, str(tmp_path / "export" / "adapters"), "--init-lora")
        assert float(jnp.abs(_logits(prepare(back, remat="none", attention="plain"), *inputs) - want).max()) < 1e-6
