"""Benchmark decontamination and the model-turn bound, on real prompts and traces (../shared/data).

Benchmark items are real GlaiveAI prompts; training rows are real R1 traces, some with a planted
prompt: an exact copy of an item, a copy in other case and spacing, one in full-width (NFKC) form,
one inside a longer prompt, and near misses that share fewer words in a row than the n-gram."""

import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
from conftest import read_jsonl
from conftest import sha256s

from tzc_data.build.rowstage import RowStage
from tzc_data.cli import main
from tzc_data.errors import ConfigError
from tzc_data.text.decontaminate import benchmark_index, words
from tzc_data.text.tokenize import Tokenizer
from tzc_data.verify.contamination import overlapping_prompts

GLAIVE = [r["prompt"] for r in read_jsonl("glaive_prompts_real.jsonl")]
TRACES = read_jsonl("r1_traces_clean.jsonl")


def _upper_spaced(text: str) -> str:
    return "  ".join(text.upper().split(" ")).replace(",  ", ",\n")


def _full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def _every_seventh_changed(text: str) -> str:
    return " ".join("zebra" if k % 7 == 6 else w for k, w in enumerate(text.split()))


# planted prompt -> (benchmark item it must be caught as, or None: kept)
PLANTED = {
    "exact copy": (GLAIVE[0], 0),
    "case and spacing": (_upper_spaced(GLAIVE[1]), 1),
    "full-width (NFKC)": (_full_width(GLAIVE[2]), 2),
    "inside a longer prompt": (f"My teacher asked this: {GLAIVE[3].replace(', ', ' , ')} Please answer briefly.", 3),
    "seven words in a row": (" ".join(GLAIVE[4].split()[:7]) + " - asked about a different topic entirely.", None),
    "every seventh word changed": (_every_seventh_changed(GLAIVE[5]), None),
    "a prompt not in the benchmark": (GLAIVE[20], None),
}


def _benchmark(path: Path) -> Path:
    """Items 0-9 are GlaiveAI prompts 0-9 (item 6 only in a response); item 10 is under 8 words."""
    with open(path, "w", encoding="utf-8") as out:
        for prompt in GLAIVE[:10]:
            out.write(json.dumps({"question": prompt, "answer": "x"}) + "\n")
        out.write(json.dumps({"question": "What comes next"}) + "\n")
    return path


def _source(folder: Path) -> tuple[Path, dict[str, int]]:
    """Three JSONL files (three units) of real traces, planted prompts spread across them; returns
    the folder and the row of each planted prompt."""
    folder.mkdir()
    rows = [{"prompt": t["prompt"], "response": t["response"]} for t in TRACES[:150]]
    short = min(TRACES[150:], key=lambda t: len(t["response"]))["response"]
    where = {}
    for k, (name, (prompt, _)) in enumerate(PLANTED.items()):
        where[name] = 7 + 20 * k
        rows[where[name]] = {"prompt": prompt, "response": short}
    where["benchmark text in the response"] = 145
    rows[145] = {"prompt": "Summarise the question below.",
                 "response": short.replace("</think>", f"The question: {GLAIVE[6]}\n</think>")}
    for part, (lo, hi) in enumerate([(0, 50), (50, 100), (100, 150)]):
        with open(folder / f"part-{part}.jsonl", "w", encoding="utf-8") as out:
            out.writelines(json.dumps(r) + "\n" for r in rows[lo:hi])
    return folder, where


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("decon")
    folder, where = _source(root / "src")
    return root, folder, _benchmark(root / "bench.jsonl"), where


def _args(folder: Path, bench: Path, tiny_model_path: str, *extra: str) -> list[str]:
    return ["--source", str(folder), "--range", "0:150", "--tokenizer", tiny_model_path, "--seq-len", "8192",
            "--rows-per-shard", "8", "--min-kept-ratio", "0", "--no-progress", "--decontaminate", str(bench),
            "--max-model-tokens", "2500", *extra]


def test_the_index_catches_copies_in_other_case_spacing_and_forms_and_keeps_near_misses(planted):
    _, _, bench, _ = planted
    index = benchmark_index([str(bench)], 8)
    assert [b.items for b in index.benchmarks] == [11] and index.benchmarks[0].items_under_ngram == 1
    for name, (prompt, item) in PLANTED.items():
        match = index.match(prompt)
        assert (match.item if match else None) == item, name
        if match:
            assert match.ngram in " ".join(words(GLAIVE[item])) and len(match.ngram.split()) == 8
    assert index.match("What comes next: A1, B2, C3") is None  # the item under 8 words matches nothing
    assert benchmark_index([str(bench)], 7).match(PLANTED["seven words in a row"][0]).item == 4
    assert all(index.match(t["prompt"]) is None and index.match(t["response"]) is None for t in TRACES)


def test_a_build_drops_the_planted_copies_naming_file_item_and_ngram(planted, tmp_path, tiny_model_path, capsys):
    _, folder, bench, where = planted
    out = tmp_path / "b"
    assert main(["build", "--out", str(out), *_args(folder, bench, tiny_model_path)]) == 0
    printed = capsys.readouterr().out
    assert f"{bench}: 4 of 11 items matched, 4 rows dropped" in printed and "model turn tokens p1/p50/p90/p99" in printed
    stats = pl.read_parquet(out / "stats" / "records.parquet")
    status = dict(zip(stats["row"], stats["status"]))
    for name, (_, item) in PLANTED.items():
        assert (status[where[name]] == "contaminated") == (item is not None), name
    assert status[where["benchmark text in the response"]] != "contaminated"
    caught = stats.filter(pl.col("status") == "contaminated").sort("row")
    assert caught["contaminated_item"].to_list() == [0.0, 1.0, 2.0, 3.0]
    assert caught["contaminated_benchmark"].to_list() == [0.0] * 4
    assert f'with item 1 of {bench}' in caught["detail"][1] and 'shares the 8-gram "' in caught["detail"][1]
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["decontamination"]["benchmarks"][0]
    import hashlib
    assert entry["sha256"] == hashlib.sha256(bench.read_bytes()).hexdigest()
    assert (entry["items_matched"], entry["rows_dropped"], entry["first_rows"]) == (4, 4, sorted(caught["row"]))
    # The model-turn bound: what the stats call loss_tokens, dropped above it with its own reason.
    long = stats.filter(pl.col("status") == "model_turn_too_long")
    kept = stats.filter(pl.col("status") == "kept")
    assert long.height > 0 and long["loss_tokens"].min() > 2500 >= kept["loss_tokens"].max()
    assert manifest["model_turn"]["max"] == kept["loss_tokens"].max()
    assert manifest["model_turn"]["examples"] == kept.height
    # explain shows the training text with the n-gram marked, and the benchmark item
    assert main(["explain", str(out), "--reason", "contaminated", "-n", "4", "--no-colour"]) == 0
    shown = capsys.readouterr().out
    assert "[[" in shown and f"benchmark item 2 of {bench}: {GLAIVE[2][:60]}" in shown
    # verify re-checks: this build is clean; one built without --decontaminate is not, by the same rule
    assert main(["verify", str(out), "--decontaminate", str(bench)]) == 0
    plain = [a for a in _args(folder, bench, tiny_model_path) if a not in ("--decontaminate", str(bench))]
    assert main(["build", "--out", str(tmp_path / "plain"), *plain]) == 0
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "plain")]) == 0
    assert main(["verify", str(tmp_path / "plain"), "--decontaminate", str(bench)]) == 1
    problems = capsys.readouterr().out
    plain_status = dict(pl.read_parquet(tmp_path / "plain" / "stats" / "records.parquet").select("row", "status").iter_rows())
    planted_kept = [item for name, (_, item) in PLANTED.items() if item is not None and plain_status[where[name]] == "kept"]
    assert len(planted_kept) >= 3 and problems.count("is contaminated") == len(planted_kept)
    assert all(f"with item {item} of {bench}" in problems for item in planted_kept)


def test_responses_are_checked_only_when_asked(planted, tmp_path, tiny_model_path):
    _, folder, bench, where = planted
    out = tmp_path / "r"
    assert main(["build", "--out", str(out), *_args(folder, bench, tiny_model_path, "--decontaminate-responses")]) == 0
    stats = pl.read_parquet(out / "stats" / "records.parquet").filter(pl.col("row") == where["benchmark text in the response"])
    assert stats["status"][0] == "contaminated" and stats["detail"][0].startswith("response shares the 8-gram")
    assert stats["contaminated_item"][0] == 6


def test_one_build_is_the_same_bytes_on_local_and_processes_and_after_an_interrupted_run(
        planted, tmp_path, tiny_model_path, monkeypatch):
    _, folder, bench, _ = planted
    args = _args(folder, bench, tiny_model_path)
    assert main(["build", "--out", str(tmp_path / "local"), *args]) == 0
    assert main(["build", "--out", str(tmp_path / "procs"), *args, "--engine", "processes", "--workers", "2"]) == 0
    assert sha256s(tmp_path / "local") == sha256s(tmp_path / "procs")
    original = RowStage.__call__

    def interrupted(self, unit):  # ^C while the second unit runs
        if unit.index == 1:
            raise KeyboardInterrupt
        return original(self, unit)

    monkeypatch.setattr(RowStage, "__call__", interrupted)
    assert main(["build", "--out", str(tmp_path / "run"), *args]) == 130
    assert (tmp_path / ".run.tzc-partial" / ".units" / "u000000.json").exists()
    monkeypatch.undo()
    assert main(["build", "--out", str(tmp_path / "run"), *args, "--resume"]) == 0
    assert sha256s(tmp_path / "run") == sha256s(tmp_path / "local")


def test_resume_refuses_a_benchmark_file_edited_since(planted, tmp_path, tiny_model_path, monkeypatch, capsys):
    _, folder, bench, _ = planted
    edited = tmp_path / "bench.jsonl"
    shutil.copy(bench, edited)
    args = [str(edited) if a == str(bench) else a for a in _args(folder, bench, tiny_model_path)]
    original = RowStage.__call__

    def interrupted(self, unit):
        if unit.index == 1:
            raise KeyboardInterrupt
        return original(self, unit)

    monkeypatch.setattr(RowStage, "__call__", interrupted)
    assert main(["build", "--out", str(tmp_path / "run"), *args]) == 130
    monkeypatch.undo()
    with open(edited, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"question": "one more item"}) + "\n")
    capsys.readouterr()
    assert main(["build", "--out", str(tmp_path / "run"), *args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "made from other inputs or options (benchmarks[0].sha256 was" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("content, message", [
    (None, "no such file or folder"),
    ('{"title": "x"}\n', "none of the fields question, prompt, problem"),
    ('{"question": "a b"}\nnot json\n', "line 2: not a JSON object"),
    ('{"question": 3}\n', "the question is a int, not text"),
    ("", "no items in it"),
])
def test_bad_benchmark_files_are_one_line_errors(tmp_path, tiny_model_path, capsys, content, message):
    bench = tmp_path / "b.jsonl"
    if content is not None:
        bench.write_text(content)
    assert main(["build", "--source", "synthetic", "--range", "0:10", "--out", str(tmp_path / "o"), "--tokenizer",
                 tiny_model_path, "--decontaminate", str(bench), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tzc-data: error: --decontaminate {bench}") and message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("args, message", [
    (["--max-model-tokens", "4"], "--max-model-tokens 4: must be between 8 and --seq-len"),
    (["--decontaminate-responses"], "--decontaminate-responses needs --decontaminate FILE"),
    (["--decontaminate", "x", "--decontaminate-ngram", "0"], "--decontaminate-ngram 0: must be between 1 and 64"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, args, message):
    assert main(["build", "--source", "synthetic", "--range", "0:10", "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_parquet_and_folder_benchmarks(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "gsm8k"
    folder.mkdir()
    pq.write_table(pa.table({"problem": GLAIVE[10:12], "solution": ["a", "b"]}), folder / "test.parquet")
    (folder / "train.jsonl").write_text(json.dumps({"prompt": GLAIVE[12]}) + "\n")
    (folder / "README.md").write_text("not a benchmark file")
    index = benchmark_index([str(folder)])
    assert [(b.path.split("/")[-1], b.field, b.items) for b in index.benchmarks] == [("test.parquet", "problem", 2),
                                                                                     ("train.jsonl", "prompt", 1)]
    hit = index.match(GLAIVE[12].lower())
    assert (hit.benchmark, hit.item) == (1, 0) and index.match(GLAIVE[11]).item == 1
    with pytest.raises(ConfigError, match="a folder without .jsonl"):
        benchmark_index([str(tmp_path)])


def test_overlapping_prompts_finds_eval_prompts_that_a_build_trains_on(planted, tmp_path, tiny_model_path):
    _, folder, bench, where = planted
    out = tmp_path / "b"
    plain = [a for a in _args(folder, bench, tiny_model_path) if a not in ("--decontaminate", str(bench))]
    assert main(["build", "--out", str(out), *plain]) == 0
    prompts = [GLAIVE[25], GLAIVE[0].upper(), TRACES[10]["prompt"] + " in other words", GLAIVE[4]]
    found = overlapping_prompts(prompts, str(out), Tokenizer(tiny_model_path))
    assert [o.text for o in found] == [1, 2] and all(o.split == "train" for o in found)
    assert len(found[0].ngram.split()) == 8
    assert [o.text for o in overlapping_prompts(prompts, str(out), Tokenizer(tiny_model_path), n=7)] == [1, 2, 3]
    assert overlapping_prompts(prompts, str(out), Tokenizer(tiny_model_path), splits=("eval",)) == []


def test_stats_fits_counts_what_a_model_turn_bound_would_keep(planted, tmp_path, tiny_model_path, capsys):
    _, folder, bench, _ = planted
    out = tmp_path / "b"
    assert main(["build", "--out", str(out), *_args(folder, bench, tiny_model_path)]) == 0
    stats = pl.read_parquet(out / "stats" / "records.parquet")
    kept = stats.filter(pl.col("status") == "kept")["loss_tokens"]
    capsys.readouterr()
    assert main(["stats", str(out), "--fits", "1000", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)[0]["fits"]
    assert answer["fit"] == int((kept <= 1000).sum()) and answer["rows"] == 150 and answer["upper_bound"]
    assert main(["stats", str(out), "--fits", "3000"]) == 0
    printed = capsys.readouterr().out
    assert "kept model turn p50/p90/p99/max" in printed and "contaminated: bench.jsonl" in printed
    assert "at most: rows dropped as model_turn_too_long were not deduplicated" in printed


def test_the_screened_scan_of_a_long_text_finds_what_the_plain_scan_finds(planted):
    _, _, bench, _ = planted
    index = benchmark_index([str(bench)], 8)

    def plain(found):
        for at in range(len(found) - 7):
            code = index.grams.get(" ".join(found[at:at + 8]))
            if code is not None:
                return code & 0xFFFFFFFF, " ".join(found[at:at + 8])
        return None

    long_traces = read_jsonl("r1_long_clean.jsonl")[:20]
    checked = hits = 0
    for k, trace in enumerate(long_traces):
        found = words(trace["response"])
        for cut in (0, len(found) // 3, len(found) - 5):  # an item's text at the start, inside, across the end
            item = words(GLAIVE[k % 10])
            text = found[:cut] + item[k % 3:] + found[cut:]
            got = index.match_words(text)
            assert (None if got is None else (got.item, got.ngram)) == plain(text)
            checked += 1
            hits += got is not None
        assert index.match_words(found) is None and plain(found) is None
    assert checked == 60 and hits == 60


def test_the_guardrail_names_the_model_turn_bound_and_how_to_state_the_expected_share(planted, tmp_path,
                                                                                       tiny_model_path, capsys):
    _, folder, bench, _ = planted
    args = [a for a in _args(folder, bench, tiny_model_path) if a not in ("--min-kept-ratio", "0")]
    args[args.index("--max-model-tokens") + 1] = "900"
    assert main(["build", "--out", str(tmp_path / "b"), *args]) == 2
    err = capsys.readouterr().err
    assert "'model_turn_too_long'" in err and "controlled by --max-model-tokens" in err and err.count("\n") == 1
    ratio = float(re.search(r"say so with --min-kept-ratio (\d+(?:\.\d+)?)", err).group(1))
    assert 0 < ratio < 0.5 and "with --resume and a lower --min-kept-ratio" in err  # the finished units stay
    assert main(["build", "--out", str(tmp_path / "b"), *args, "--min-kept-ratio", str(ratio), "--resume"]) == 0
