"""The base models by --model name (tzc_train/model/bases.py): Gemma 3's architecture in the tiny model,
the build check, and tiny models identical on every device."""

import numpy as np
import pytest
from tiny_runs import VOCAB

from tzc_train.model import bases


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


def _tokenizer_entry(name, vocab):
    from tzc_data.text.tokenize import KNOWN

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


def test_every_replica_of_every_tiny_parameter_agrees(model):
    """tunix's dummy creator, given a mesh, drew each device's shard with its own key: replicated
    norm scales then differed between devices, and a checkpoint (which keeps one replica) could not
    reproduce the model. Every replica must hold the same values."""
    from flax import nnx

    for path, variable in nnx.state(model, nnx.Param).flat_state():
        array = variable.get_value()
        first: dict[str, np.ndarray] = {}
        for shard in array.addressable_shards:
            data = np.asarray(shard.data)
            np.testing.assert_array_equal(first.setdefault(str(shard.index), data), data, err_msg=str(path))
