"""One end-to-end test per CLI command besides `build` (tested in test_pipeline.py)."""

import subprocess
import sys

from tzc_data import format as fmt
from tzc_data.cli import main


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
