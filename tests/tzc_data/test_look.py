"""`tzc-data stats`, `inspect`, `report` (rendered in headless Chromium) and `export`, end to end."""

import json
import re
import shutil
import subprocess

import polars as pl
import pytest

from tzc_data.cli import main
from tzc_data.tokenize import gemma2_tokenizer_path


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("look")
    for name, range_ in (("a", "0:400"), ("b", "400:700")):
        assert main(["build", "--source", "synthetic", "--range", range_, "--out", str(root / name),
                     "--tokenizer", str(gemma2_tokenizer_path()), "--no-progress", "--eval-fraction", "0.1"]) == 0
    return root / "a", root / "b"


def test_stats_side_by_side_and_json(two_builds, capsys):
    a, b = two_builds
    capsys.readouterr()
    assert main(["stats", str(a), str(b)]) == 0
    table = capsys.readouterr().out
    header, *lines = table.splitlines()
    assert header.split() == ["a", "b"]
    assert any(line.startswith("  kept") for line in lines) and any("fill" in line for line in lines)
    assert main(["stats", str(a), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)[0]
    records = pl.read_parquet(a / "stats" / "records.parquet")
    assert data["rows"] == records.height == 400
    assert data["status"]["kept"]["rows"] == records.filter(pl.col("status") == "kept").height
    assert data["kept_lengths"]["tokens"]["p50"] == records.filter(pl.col("status") == "kept")["tokens"].quantile(
        0.5, interpolation="nearest")
    assert set(data["packing"]["splits"]) == {"train", "eval"}


def test_inspect_marks_the_loss_span_and_names_source_rows(two_builds, capsys):
    a, _ = two_builds
    capsys.readouterr()
    assert main(["inspect", str(a), "--row", "2", "--no-colour"]) == 0
    text = capsys.readouterr().out
    rows = pl.read_parquet(a / "stats" / "packs.parquet").filter(pl.col("split") == "train")["rows"][2].to_list()
    assert [int(r) for r in re.findall(r"source row (\d+)", text)] == rows
    assert text.count("«<reasoning>") == len(rows)  # the loss span starts at the model's text
    assert text.count("<end_of_turn>\n<eos>»") == len(rows)  # and ends after <eos>
    assert main(["inspect", str(a), "--row", "99999"]) == 2
    assert main(["inspect", str(a), "--row", "0", "--colour"]) == 0
    assert "\x1b[32m<reasoning>" in capsys.readouterr().out


def test_export_parquet(two_builds, tmp_path, capsys):
    a, _ = two_builds
    out = tmp_path / "rows.parquet"
    assert main(["export", str(a), "--format", "parquet", "-o", str(out)]) == 0
    table = pl.read_parquet(out)
    manifest = json.loads((a / "manifest.json").read_text())
    assert table.height == manifest["packing"]["by_split"]["train"]["rows"]
    assert table["tokens"].list.len().unique().to_list() == [4096]


def test_report_renders_in_headless_chromium_with_its_plots(two_builds, tmp_path):
    a, _ = two_builds
    page = tmp_path / "report.html"
    assert main(["report", str(a), "-o", str(page)]) == 0
    html = page.read_text()
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # self-contained
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed: make test installs it"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    figures = re.findall(r'<figure id="([^"]+)">', dom)
    assert figures == ["drop-reasons", "hist-prompt_chars", "hist-reasoning_chars", "hist-answer_chars",
                       "hist-tokens", "hist-loss_tokens", "fill", "examples-per-row"]
    assert dom.count("<svg") == len(figures) and dom.count("<rect") > 100
    shot = tmp_path / "report.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000  # a blank page is a few kilobytes
