"""``tzc-train plan``: the train step compiled ahead of time for one v5e-8 host (libtpu, no TPU here)."""

import json
import re

import jax
import pytest

from tzc_data.cli import main as tzc_data_main
from tzc_train.cli import main
from tzc_train.plan.config import PlanConfig, PlanError
from tzc_train.plan.report import model_flops, plan

# The training command for a v5e-8 in docs/training.md ("The plan at the entry's scale").
README_SETTINGS = ["--batch-size", "8", "--grad-accum", "4", "--remat", "block"]


@pytest.fixture(autouse=True)
def _tpu_programs_stay_out_of_the_compilation_cache():
    """Each TPU program here compiles once a session: writing it to the session's compilation cache
    (tests/conftest.py; 48 MB for the 2B step) would only cost time."""
    previous = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1e9)
    yield
    jax.config.update("jax_persistent_cache_min_compile_time_secs", previous)


@pytest.fixture(scope="module")
def build(tmp_path_factory, tiny_model_path):
    """A small real build in rows of 4096 tokens (the plan reads its manifest: rows, seq_len, fill)."""
    out = tmp_path_factory.mktemp("plan") / "build"
    assert tzc_data_main(["build", "--source", "synthetic", "--range", "0:300", "--out", str(out), "--tokenizer",
                          tiny_model_path, "--seq-len", "4096", "--no-near-dup", "--no-progress"]) == 0
    return out


def test_the_readme_settings_fit_a_v5e_8(build, capsys):
    """The whole 26-layer step at Gemma 2 2B shapes (docs/training.md's figures: 5.58 GiB a chip)."""
    assert main(["plan", "--data", str(build), "--epochs", "4", "--fast-compile", "--mesh", "2x4", *README_SETTINGS]) == 0
    out = capsys.readouterr().out
    assert "v5e:2x4 (8 chips, mesh fsdp x tp = 2x4)" in out and "fits" in out and "DOES NOT FIT" not in out
    peak = float(re.search(r"peak\s+([\d.]+) GiB of\s+16.00 GiB", out).group(1))
    assert 1.0 < peak < 16.0
    manifest = json.loads((build / "manifest.json").read_text())
    rows = manifest["packing"]["by_split"]["train"]["rows"]
    assert f"steps: {max(1, rows // 32):,} per epoch, {max(1, int(4 * rows / 32)):,} in all" in out


def test_every_layout_is_compiled_and_the_cheapest_that_fits_is_chosen(build, capsys):
    """Without --mesh: each fsdp x tp split the model and the batch allow, with its own counts; the plan
    is the cheapest one that fits, and its hours are judged against the time limit less the overheads."""
    from tzc_train.plan.report import layout_candidates

    config = PlanConfig(data=str(build), model="tiny", batch_size=8, steps=100, fast_compile=True)
    assert layout_candidates(config, 600, 8) == [(8, 1), (4, 2), (2, 4)]
    result = plan(config)
    assert [lay.name for lay in result.layouts] == ["8x1", "4x2", "2x4"]
    assert all(lay.peak_bytes and lay.xla_flops > 0 and lay.seconds_per_step > 0 for lay in result.layouts)
    assert len({lay.xla_flops for lay in result.layouts}) > 1  # the program depends on the layout
    cheapest = min(result.layouts, key=lambda lay: lay.seconds_per_step)
    assert result.mesh == cheapest.mesh and result.layout_hours == pytest.approx(100 * cheapest.seconds_per_step / 3600)
    assert set(result.overheads) == {"loading", "compiling", "evals", "save"} and result.overheads["compiling"] > 0
    assert result.available_hours == pytest.approx(9 - sum(result.overheads.values()) / 3600)
    assert "<- chosen: the cheapest that fits" in result.report()

    code = main(["plan", "--data", str(build), "--model", "tiny", "--steps", "100", "--mesh", "2x4", "--fast-compile",
                 "--time-limit", "5m"])
    captured = capsys.readouterr()
    assert code == 1 and "session: " in captured.out
    assert re.fullmatch(r"tzc-train plan: does not fit --time-limit 5m: the steps need [\d.]+ h, the session leaves "
                        r"-?[\d.]+ h after loading, compiling and evals; .*\n", captured.err)


def test_an_oversized_batch_is_refused_in_one_line(build, capsys):
    """Compiled for the TPU, the program does not fit its 16 GiB: RESOURCE_EXHAUSTED becomes one line.
    (The tiny model without remat and a huge batch: the same compiler verdict, in seconds.)"""
    code = main(["plan", "--data", str(build), "--model", "tiny", "--batch-size", "4096", "--remat", "none",
                 "--fast-compile", "--mesh", "2x4"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith("tzc-train plan: error: does not fit: batch 4096 x 4096 tokens on v5e:2x4")
    assert "Traceback" not in err


def test_options_the_plan_cannot_honour_are_refused(build):
    with pytest.raises(PlanError, match="fsdp axis"):
        plan(PlanConfig(data=str(build), model="tiny", batch_size=3))
    with pytest.raises(PlanError, match="--topology"):
        PlanConfig(data=str(build), topology="h100:8")
    with pytest.raises(PlanError, match="--mesh 4x4 needs 16 chips"):
        plan(PlanConfig(data=str(build), model="tiny", mesh=(4, 4)))


def test_model_flops_of_gemma2_2b_match_its_parameter_count():
    """4 FLOPs per frozen weight per token (forward, backward through the activations) plus attention:
    Gemma 2 2B has 2.61e9 parameters, 0.59e9 of them the (tied) embedding."""
    from tunix.models.gemma import model as gemma_lib

    config = gemma_lib.ModelConfig.gemma2_2b_it()
    one_token = model_flops(config, 0, rows=1, seq_len=1)
    assert 4 * 2.55e9 < one_token < 4 * 2.7e9
    long = model_flops(config, 0, rows=1, seq_len=4096) / 4096
    assert long > one_token  # attention grows with the row


@pytest.fixture(scope="module")
def gemma3_build(tmp_path_factory):
    """A small build made for Gemma 3 1B (--tokenizer gemma3) in rows of 4096 tokens."""
    out = tmp_path_factory.mktemp("plan3") / "build"
    assert tzc_data_main(["build", "--source", "synthetic", "--range", "0:300", "--out", str(out), "--tokenizer",
                          "gemma3", "--seq-len", "4096", "--no-near-dup", "--no-progress"]) == 0
    return out


def test_the_readme_settings_fit_a_v5e_8_for_gemma3_1b(gemma3_build, capsys):
    """The whole 26-layer step at Gemma 3 1B shapes (262,144-row embedding, one key/value head; the
    docs/training.md's figures: 3.17 GiB a chip), compiled for the TPU; and a Gemma 3 build is refused for
    Gemma 2 2B before anything compiles."""
    assert main(["plan", "--model", "gemma3-1b", "--data", str(gemma3_build), "--epochs", "4", "--fast-compile",
                 "--mesh", "2x4", *README_SETTINGS]) == 0
    out = capsys.readouterr().out
    assert out.startswith("plan: gemma3-1b on v5e:2x4 (8 chips, mesh fsdp x tp = 2x4)")
    assert "fits" in out and "DOES NOT FIT" not in out
    peak = float(re.search(r"peak\s+([\d.]+) GiB of\s+16.00 GiB", out).group(1))
    assert 1.0 < peak < 16.0
    assert main(["plan", "--data", str(gemma3_build)]) == 2  # --model gemma2-2b, the default: a mistake, exit 2
    err = capsys.readouterr().err
    assert "was tokenized for Gemma 3" in err and "--model gemma2-2b reads Gemma 2's" in err


def test_model_flops_of_gemma3_1b_match_its_parameter_count():
    """Gemma 3 1B: 1.0e9 parameters, 0.30e9 of them the tied 262,144-row embedding; about 2.0 GFLOP a
    token forward, against 5.2 for Gemma 2 2B; its attention over a 4096-token row costs less than
    Gemma 2's (five layers in six see 512 keys)."""
    from tzc_train.model import bases

    gemma3, gemma2 = bases.real_config("gemma3-1b"), bases.real_config("gemma2-2b")
    one_token = model_flops(gemma3, 0, rows=1, seq_len=1)
    assert 4 * 0.98e9 < one_token < 4 * 1.02e9
    attention = lambda c: model_flops(c, 0, rows=1, seq_len=4096) - 4096 * model_flops(c, 0, rows=1, seq_len=1)  # noqa: E731
    assert attention(gemma3) < attention(gemma2) / 3
