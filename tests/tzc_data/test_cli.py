"""One end-to-end test per CLI command besides `build` (tested in test_pipeline.py)."""

import subprocess
import sys

from tzc_data.cli import main
from tzc_data.text import format as fmt


def test_fuzz_format_passes_through_a_tokenizer(capsys, tiny_model_path):
    assert main(["fuzz-format", "--examples", "60", "--tokenizer", tiny_model_path]) == 0
    out = capsys.readouterr().out
    assert "round_trip   ok" in out and "split        ok" in out and "tokens       ok" in out


def test_fuzz_format_prints_the_smallest_counterexample(capsys, monkeypatch):
    real = fmt.split_response
    monkeypatch.setattr(fmt, "split_response", lambda response: tuple(s[:-1] for s in real(response)))
    assert main(["fuzz-format", "--examples", "200", "--no-tokenizer"]) == 1
    out = capsys.readouterr().out
    assert "split        FAIL" in out and "smallest counterexample" in out and "check_split(" in out


def test_console_script_help_lists_the_options():
    done = subprocess.run([sys.executable, "-m", "tzc_data.cli", "build", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for option in ("--range", "--source", "--seq-len", "--max-tokens", "--min-kept-ratio", "--no-dedup", "--overwrite"):
        assert option in done.stdout


def test_explain_shows_examples_with_the_trigger_marked(tmp_path, capsys):
    from tzc_data.text.tokenize import gemma2_tokenizer_path

    out = tmp_path / "b"
    assert main(["build", "--source", "synthetic", "--range", "0:1500", "--out", str(out), "--keep-rejected",
                 "--tokenizer", str(gemma2_tokenizer_path()), "--no-progress"]) == 0
    rejected = __import__("polars").read_parquet(out / "rejected" / "rejected.parquet")
    manifest = __import__("json").loads((out / "manifest.json").read_text())
    assert rejected.height == manifest["counts"]["dropped"]
    assert rejected.filter(rejected["status"] == "unterminated_think")["response"].str.len_chars().min() > 1000
    capsys.readouterr()
    assert main(["explain", str(out), "--reason", "loop", "-n", "2", "--no-colour"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("loop: ") and text.count("\nrow ") == 2 and "[[" in text and "]]" in text
    assert main(["explain", str(out), "--reason", "near_duplicate", "-n", "1"]) == 0
    assert "kept twin (row " in capsys.readouterr().out
    (out / "rejected" / "rejected.parquet").unlink()  # texts then come from the source again
    assert main(["explain", str(out), "--reason", "control_in_content", "-n", "1", "--no-colour"]) == 0
    assert "[[<" in capsys.readouterr().out


def test_a_tzc_data_process_puts_arrow_on_the_system_allocator():
    """The choice that ``import tzc_data`` does not make: the command (:func:`tzc_data.cli.run`)
    makes it before Arrow loads (mimalloc kept the memory of every table a build writes), unless
    the user chose a pool."""
    import os

    code = ("import contextlib, io, sys; from tzc_data.cli import run\nsys.argv = ['tzc-data', '--version']\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()): run()\n"
            "import pyarrow as pa; print(pa.default_memory_pool().backend_name)")
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    for chosen, expected in ((None, "system"), ("jemalloc", "jemalloc")):
        run_env = env if chosen is None else {**env, "ARROW_DEFAULT_MEMORY_POOL": chosen}
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=run_env, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == expected


def test_a_whole_number_for_a_float_option_is_recorded_as_the_cli_records_it():
    """BuildConfig(min_kept_ratio=0) from Python and --min-kept-ratio 0 from the CLI are one build:
    the manifest (and so a resume's check) records 0.0 for both."""
    from tzc_data.build.config import BuildConfig

    config = BuildConfig(out="x", start=0, stop=5, min_kept_ratio=0, eval_fraction=0)
    assert repr(config.recorded()["min_kept_ratio"]) == "0.0" and repr(config.eval_fraction) == "0.0"


def test_explain_takes_any_count_of_examples(tmp_path, capsys, tiny_model_path):
    """``-n`` larger than a 64-bit integer shows every example there is, not an OverflowError."""
    out = tmp_path / "b"
    assert main(["build", "--source", "synthetic", "--range", "0:40", "--out", str(out), "--tokenizer", tiny_model_path,
                 "--min-kept-ratio", "0", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["explain", str(out), "--reason", "kept", "-n", "99999999999999999999", "--no-colour"]) == 0
    text = capsys.readouterr().out
    kept = int(text.split(":")[1].split()[0].replace(",", ""))
    assert kept > 0 and text.count("\nrow ") == kept


def test_arguments_that_are_not_utf8_are_refused_naming_the_option_before_anything_is_written(
        tmp_path, capsys, monkeypatch, tiny_model_path):
    """argv bytes that are not UTF-8 arrive as surrogate escapes: text options and paths holding them
    are one line naming the option, and the build writes nothing (no staging folder to --resume)."""
    import os

    monkeypatch.chdir(tmp_path)
    bad = os.fsdecode(b"bad \xff byte")
    build = ["build", "--source", "synthetic", "--range", "0:4", "--out", "out", "--tokenizer", tiny_model_path,
             "--no-progress"]
    cases = [(build + ["--system", bad], "--system"), (build + ["--revision", bad], "--revision"),
             (build + ["--format", f"columns:prompt={bad},response=r"], "--format"),
             (build[:6] + [bad] + build[7:], "--out"), (build + ["--exclude", bad], "--exclude"),
             (build[:8] + [bad] + build[9:], "--tokenizer"), (["fuzz-format", "--system", bad], "--system"),
             (["verify", bad], "DIR")]
    for argv, option in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"tzc-data: error: {option} ") and err.count("\n") == 1, err
        assert "'" + r"bad \xff byte" in err or r"prompt=bad \xff byte" in err, err
        assert "must be valid UTF-8" in err and os.listdir(tmp_path) == [], (argv, os.listdir(tmp_path))
