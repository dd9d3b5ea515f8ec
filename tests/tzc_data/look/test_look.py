"""`tzc-data stats`, `inspect`, `report` (rendered in headless Chromium) and `export`, end to end."""

import json
import re
import shutil
import subprocess

import polars as pl
import pytest

from tzc_data.cli import main
from tzc_data.text.tokenize import gemma2_tokenizer_path


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
                       "hist-tokens", "hist-loss_tokens", "model-turn-fits", "fill", "examples-per-row"]
    assert dom.count("<svg") == len(figures) and dom.count("<rect") > 100
    shot = tmp_path / "report.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000  # a blank page is a few kilobytes


# ---------------------------------------------------------------------------------------------
# Damaged builds: every command that reads one says what is wrong in one line, no traceback


def _damage(build, how):
    from tzc_data.files import sha256_file

    manifest = json.loads((build / "manifest.json").read_text())
    records, packs = build / "stats" / "records.parquet", build / "stats" / "packs.parquet"
    if how == "records truncated":
        records.write_bytes(records.read_bytes()[:1000])
    elif how == "records truncated, sha256 updated":
        records.write_bytes(records.read_bytes()[:1000])
        manifest["stats"]["stats/records.parquet"].update(sha256=sha256_file(records), bytes=records.stat().st_size)
    elif how == "records deleted":
        records.unlink()
    elif how == "packs flipped":
        data = bytearray(packs.read_bytes())
        data[len(data) // 2] ^= 0xFF
        packs.write_bytes(bytes(data))
    elif how == "manifest {}":
        manifest = {}
    elif how == "manifest []":
        manifest = []
    elif how == "no shards":
        del manifest["shards"]
    elif how == "near_dup null":
        manifest["near_dup"] = None
    elif how == "shard is a directory":
        shard = build / manifest["shards"][0]["file"]
        shard.unlink()
        shard.mkdir()
    (build / "manifest.json").write_text(json.dumps(manifest))


_COMMANDS = {  # what each command reads besides the manifest
    "stats": {"records", "packs"}, "report": {"records", "packs"}, "inspect": {"packs", "shard"},
    "explain": {"records"}, "exclude": set(), "export": {"shard"},
}


@pytest.mark.parametrize("how", ["records truncated", "records truncated, sha256 updated", "records deleted",
                                 "packs flipped", "manifest {}", "manifest []", "no shards", "near_dup null",
                                 "shard is a directory"])
def test_damaged_builds_give_one_line_errors(two_builds, tmp_path, capsys, how):
    build = tmp_path / "a"
    shutil.copytree(two_builds[0], build)
    _damage(build, how)
    tok = str(gemma2_tokenizer_path())
    commands = {
        "stats": ["stats", str(build)],
        "report": ["report", str(build), "-o", str(tmp_path / "r.html")],
        "inspect": ["inspect", str(build), "--row", "0", "--no-colour"],
        "explain": ["explain", str(build), "--reason", "loop", "-n", "1", "--no-colour"],
        "exclude": ["build", "--source", "synthetic", "--range", "900:910", "--out", str(tmp_path / "x"),
                    "--exclude", str(build), "--tokenizer", tok, "--no-progress", "--min-kept-ratio", "0"],
        "export": ["export", str(build), "-o", str(tmp_path / "e.parquet")],
    }
    manifest_damage = how.startswith("manifest") or how in ("no shards", "near_dup null")
    for name, argv in commands.items():
        touched = manifest_damage or any(part in how for part in _COMMANDS[name])
        capsys.readouterr()
        code = main(argv)
        out, err = capsys.readouterr()
        assert "Traceback" not in err, (name, err)
        if touched:
            assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("tzc-data: error: "), \
                (name, code, err)
        else:
            assert code == 0, (name, err)


# ---------------------------------------------------------------------------------------------
# Terminal escapes in the data are shown escaped


def test_printable_escapes_control_characters_only():
    from tzc_data.look.inspect import printable

    assert printable("a\x1b]0;owned\x07b\tc\nd\r\u202ee\x85f\\x1b ü ▁") == \
        "a\\x1b]0;owned\\x07b\tc\nd\\r\\u202ee\\x85f\\x1b ü ▁"


def test_inspect_and_explain_escape_terminal_control_characters(tmp_path, capsys):
    from tzc_data.sources.generator import generate

    title = "\x1b]0;owned\x07"
    rows = []
    for i in range(40):
        row = generate(0, i)
        rows.append({"prompt": row.prompt, "response": row.response})
    rows[0]["prompt"] += f" {title}"
    rows[1] = {"prompt": f"{title} {rows[1]['prompt']}", "response": "no closing tag \x1b[2J" * 20}
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "b"
    assert main(["build", "--source", str(source), "--range", "0:40", "--out", str(out), "--keep-rejected",
                 "--tokenizer", str(gemma2_tokenizer_path()), "--no-progress", "--min-kept-ratio", "0"]) == 0
    records = pl.read_parquet(out / "stats" / "records.parquet")
    assert records["status"][0] == "kept" and records["status"][1] == "unterminated_think"
    capsys.readouterr()
    assert main(["inspect", str(out), "--row", "0", "--no-colour"]) == 0
    text = capsys.readouterr().out
    assert "source row 0," in text and "\\x1b]0;owned\\x07" in text and "\x1b" not in text and "\x07" not in text
    assert main(["explain", str(out), "--reason", "unterminated_think", "-n", "5", "--colour"]) == 0
    text = capsys.readouterr().out
    assert "\\x1b]0;owned\\x07" in text and "no closing tag \\x1b[2J" in text
    assert "\x07" not in text and "\x1b]" not in text and "\x1b[2J" not in text
