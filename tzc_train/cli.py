"""``tzc-train``: LoRA SFT of Gemma 2 or Gemma 3 on a tzc build (see ``tzc_train/train.py``).

Subcommands: ``sample``, ``eval``, ``export``, ``notebook``, ``plan``; no subcommand trains. Every command reports a
user's mistake (a bad option, a missing build or run) as one line, ``tzc-train[ CMD]: error: …``,
exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from tzc_train.model.bases import MODELS


def _report(prog: str, action: Callable[[], int]) -> int:
    """Run ``action``; a user's error becomes one line on stderr and exit status 2."""
    from tzc_data.errors import TzcError

    try:
        return action()
    except (TzcError, ValueError, OSError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2


def _model_options(parser: argparse.ArgumentParser) -> None:
    """The options that pick the model to decode with: base weights, adapters, mesh."""
    parser.add_argument("--data", required=True, help="the build the run trained on (tokenizer, system prompt)")
    parser.add_argument("--lora", help="a run's --out (its latest adapters) or a `tzc-train export`'s adapters/; "
                                       "none: the base model")
    parser.add_argument("--model", choices=list(MODELS), default=None,
                        help="default: the run's when --lora is a run, else gemma2-2b")
    parser.add_argument("--weights", help="Gemma 2 2B-IT or Gemma 3 1B-IT weights (HF safetensors dir or Kaggle Flax "
                                          "checkpoint); default: the run's")
    parser.add_argument("--tokenizer", help="the build's tokenizer when it is not found automatically")
    parser.add_argument("--lora-rank", type=int, help="default: the run's (64 when unknown)")
    parser.add_argument("--lora-alpha", type=float, help="default: the run's (64 when unknown)")
    parser.add_argument("--mesh", help="FSDPxTP, e.g. 2x4")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts decoded together")
    parser.add_argument("--max-new-tokens", type=int,
                        help="new tokens at most (default: 768, the competition's MAX_GENERATION_STEPS)")


def _decoding_request(args: argparse.Namespace) -> Any:
    from tzc_train.evaluate import DecodeRequest

    return DecodeRequest(data=args.data, lora=args.lora, model=args.model, weights=args.weights,
                         tokenizer=args.tokenizer, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                         mesh=args.mesh, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)


def sample_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tzc-train sample", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description="Greedy completions of prompts with a trained run's adapters, and "
                                                 "the share that is well formed (<reasoning> then <answer>); "
                                                 "completions cut by the token budget are counted apart.")
    _model_options(parser)
    parser.add_argument("--prompts", required=True, help="a .jsonl file with 'prompt' fields, or one prompt per line")
    args = parser.parse_args(argv)

    def run() -> int:
        from tzc_train.evaluate import decode, read_prompts

        samples = decode(_decoding_request(args), read_prompts(args.prompts))
        for k, item in enumerate(samples, 1):
            verdict = "ok" if item.well_formed else ("truncated" if item.truncated else f"malformed: {item.problem}")
            print(f"--- {k}: {verdict}\nprompt: {item.prompt}\n{item.completion}\n")
        passed = sum(s.well_formed for s in samples)
        cut = sum(s.truncated for s in samples)
        print(f"Format Validation: {passed}/{len(samples)}" + (f" ({cut} cut by the token budget)" if cut else ""))
        return 0

    return _report("tzc-train sample", run)


def eval_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="tzc-train eval", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Decode the build's eval-split prompts greedily with a run's adapters and report format "
                    "compliance, stop rate, truncations, reasoning and answer lengths, and exact match of the "
                    "answer against the eval split's reference answers.")
    parser.add_argument("--run", help="a tzc-train --out directory (same as --lora RUN)")
    _model_options(parser)
    parser.add_argument("--prompts", help="a .jsonl file with 'prompt' (and optional 'answer') fields instead of the "
                                          "eval split")
    parser.add_argument("--limit", type=int, default=64, help="at most this many prompts (0: all)")
    parser.add_argument("--allow-overlap", action="store_true",
                        help="evaluate --prompts that share word 8-grams with the build's training prompts (warn, "
                             "naming the count, instead of refusing)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.run and args.lora and args.run != args.lora:
        parser.error("give --run or --lora, not both")
    args.lora = args.lora or args.run

    def run() -> int:
        from tzc_train.evaluate import evaluate, format_report

        report = evaluate(_decoding_request(args), prompts=args.prompts, limit=args.limit,
                          allow_overlap=args.allow_overlap)
        if report.get("overlap"):
            print(f"tzc-train eval: {report['overlap']}", file=sys.stderr)
        print(json.dumps(report, indent=2) if args.json else format_report(report))
        return 0

    return _report("tzc-train eval", run)


def export_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="tzc-train export",
        description="Write a run's latest adapters for the competition and for everyone else: OUT/kaggle (the "
                    "unrestricted-mode deliverable: the LoRA parameters as the orbax checkpoint the judges' cells "
                    "restore into lora_policy; upload this folder as the Kaggle model's files, see docs/submission.md), "
                    "OUT/adapters (safetensors + adapter_config.json, for --init-lora and `sample --lora`), and the "
                    "adapters merged into the base weights, for Hugging Face and tunix users (the competition loads "
                    "neither): OUT/merged (Hugging Face layout safetensors) and OUT/flax (the Kaggle Flax layout of "
                    "base weights, read by tunix's gemma.params.load_and_format_params and Gemma.from_params).")
    parser.add_argument("--run", required=True, help="a tzc-train --out directory (the competition's CKPT_DIR)")
    parser.add_argument("--out", required=True, help="where kaggle/, adapters/, merged/ and flax/ go")
    parser.add_argument("--weights", help="the base weights, when they moved since the run (otherwise the run's)")
    parser.add_argument("--no-merged", dest="merged", action="store_false",
                        help="export kaggle/ and adapters/ only (without it: the merged layouts too)")
    args = parser.parse_args(argv)

    def run() -> int:
        from tzc_train.submit.export import export_run

        print(json.dumps(export_run(args.run, args.out, weights=args.weights, merged=args.merged)))
        return 0

    return _report("tzc-train export", run)


def notebook_main(argv: list[str]) -> int:
    from tzc_train.submit.notebook import DEFAULT_PACKAGE

    parser = argparse.ArgumentParser(
        prog="tzc-train notebook", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Write the competition's submission notebook from a run: the template's writeup sections "
                    "filled with the build's and the run's facts, a parameters cell, and code that installs tzc, "
                    "builds (or attaches) the data, trains with the run's options inside the 9-hour session, and "
                    "defines lora_policy, tokenizer, model_config, MAX_PROMPT_LENGTH, PROMPT_TEMPLATE and "
                    "MAX_GENERATION_STEPS for the judges' cells.")
    parser.add_argument("--run", required=True, help="a tzc-train --out directory: its options and build")
    parser.add_argument("--out", required=True, help="the notebook to write, e.g. submission.ipynb")
    parser.add_argument("--package", default=DEFAULT_PACKAGE,
                        help="what the notebook gives `pip install` for tzc: its wheel attached as a Kaggle dataset "
                             "(`python -m pip wheel --no-deps . -w dist`), or a source folder")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)

    def run() -> int:
        from tzc_train.submit.notebook import write_notebook

        print(write_notebook(args.run, args.out, package=args.package, overwrite=args.overwrite))
        return 0

    return _report("tzc-train notebook", run)


def plan_main(argv: list[str]) -> int:
    """``tzc-train plan``: compile the train step for a TPU topology here and size it (tzc_train/plan/)."""
    parser = argparse.ArgumentParser(
        prog="tzc-train plan", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Compile the training step ahead of time for a TPU topology on this machine (no TPU, no "
                    "weights: Gemma 2 2B shapes) and print memory per chip, FLOPs per step, steps per epoch "
                    "from the build's manifest and the projected hours at an assumed MFU. Exits 1 when the run "
                    "does not fit the chips' memory or --hours.")
    parser.add_argument("--data", required=True, help="the tzc build to train on (its manifest: rows, seq_len)")
    parser.add_argument("--topology", default="v5e:2x4", help="TPU topology: v5e:2x4 is one v5e-8 host")
    parser.add_argument("--hours", type=float, default=9.0, help="the session's length (a Kaggle TPU session: 9 h)")
    parser.add_argument("--time-limit", help="tzc-train's --time-limit, e.g. 8h40m (default: --hours); the run's "
                                             "steps must fit it less loading, compiling, evals and the final save")
    parser.add_argument("--eval-rows", type=int, default=256, help="tzc-train's --eval-rows (0: no eval)")
    parser.add_argument("--eval-every", type=int, help="tzc-train's --eval-every (default: about 20 evals a run)")
    parser.add_argument("--mfu", type=float, default=0.35, help="assumed model FLOPs utilisation for the projection")
    parser.add_argument("--model", choices=list(MODELS), default="gemma2-2b")
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the train split (a fraction is fine)")
    parser.add_argument("--steps", type=int, help="bound the run by optimizer steps instead of epochs")
    parser.add_argument("--batch-size", type=int, default=8, help="packed rows per micro-batch")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--lora-rank", type=int, default=64, help="rank of each LoRA adapter")
    parser.add_argument("--lora-alpha", type=float, default=64.0, help="LoRA scale: the update is x A B alpha/rank")
    parser.add_argument("--lora-targets", help="regex of module paths that get adapters")
    parser.add_argument("--mesh", help="FSDPxTP, e.g. 2x4 (default: compile every layout the model and batch allow, "
                                       "report each, and choose the cheapest that fits)")
    parser.add_argument("--remat", choices=["none", "block", "decoder"], default="block")
    parser.add_argument("--attention", choices=["plain", "splash"], default="splash")
    parser.add_argument("--fast-compile", action="store_true",
                        help="XLA's least optimisation effort: about 4x faster, memory figures within a few percent")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)

    def run() -> int:
        from tzc_train.config import parse_mesh
        from tzc_train.plan.config import DoesNotFit, PlanConfig
        from tzc_train.plan.report import plan
        from tzc_train.session import parse_duration

        config = PlanConfig(data=args.data, model=args.model, topology=args.topology, batch_size=args.batch_size,
                            grad_accum=args.grad_accum, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                            lora_targets=args.lora_targets, mesh=parse_mesh(args.mesh), remat=args.remat,
                            attention=args.attention, epochs=args.epochs, steps=args.steps, mfu=args.mfu,
                            hours=args.hours, fast_compile=args.fast_compile, eval_rows=args.eval_rows,
                            eval_every=args.eval_every,
                            time_limit=parse_duration(args.time_limit) if args.time_limit else None)
        try:
            result = plan(config)
        except DoesNotFit as verdict:  # the plan's answer, not a mistake: exit status 1
            print(f"tzc-train plan: error: {verdict}", file=sys.stderr)
            return 1
        print(json.dumps(result.summary()) if args.json else result.report())
        if result.training_hours > result.available_hours:
            limit = f"--time-limit {args.time_limit}" if args.time_limit else f"--hours {config.hours:g}"
            print(f"tzc-train plan: does not fit {limit}: the steps need {result.training_hours:.2f} h, the session "
                  f"leaves {result.available_hours:.2f} h after loading, compiling and evals; bound each session "
                  "with --time-limit and --resume the next", file=sys.stderr)
            return 1
        return 0

    return _report("tzc-train plan", run)



def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tzc-train", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description="LoRA SFT of Gemma 2 on packed tzc shards with tunix, on a JAX mesh. "
                                                 "`tzc-train eval --help` for the eval-split report, `tzc-train sample "
                                                 "--help` for greedy samples of your prompts, `tzc-train export --help` "
                                                 "for the competition's unrestricted-mode model and other layouts, "
                                                 "`tzc-train notebook --help` for the submission notebook, "
                                                 "`tzc-train plan --help` to check that a run fits a TPU before you "
                                                 "have one.")
    parser.add_argument("--data", required=True, action="append", metavar="BUILD",
                        help="a tzc build (its train split; eval split when present); repeat it to train on a "
                             "mixture of builds (same seq_len and tokenizer, no shared rows: tzc_data.mixture)")
    parser.add_argument("--data-weights", metavar="W1,W2,...",
                        help="the mixture's weights, one per --data in order, e.g. 0.7,0.3 (normalised); without "
                             "it each build weighs its packed rows, so every row is equally likely. An epoch is the "
                             "builds' packed rows together")
    parser.add_argument("--out", required=True, help="the run folder, the competition's CKPT_DIR: checkpoints in "
                                                     "OUT/actor/<step>/{model_params,optimizer_state} (where the "
                                                     "judges' cells look), TensorBoard logs, tzc_run.json (the "
                                                     "options) and summary.json")
    parser.add_argument("--model", choices=list(MODELS), default="gemma2-2b",
                        help="gemma2-2b (a build made with --tokenizer gemma2, the default) or gemma3-1b (--tokenizer "
                             "gemma3); tiny, tiny-gemma3: a random Gemma 2 / Gemma 3-architecture model for tests and "
                             "trying the tool")
    parser.add_argument("--weights", help="Gemma 2 2B-IT or Gemma 3 1B-IT: an HF safetensors directory or a Kaggle "
                                          "Flax checkpoint (the model's weights; a mixture's are --data-weights)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                        help="the base weights' dtype (default: the model's own: the tiny ones float32, the real "
                             "ones bfloat16); the adapters' master copies stay float32")
    parser.add_argument("--init-lora", help="start from the adapters of an earlier run's --out (or its export)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out at its last checkpoint (its options must be the run's)")
    parser.add_argument("--time-limit", help="save and stop before this much time from the start, e.g. 8h40m "
                                             "(compilation included); --resume continues")
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the train split (a fraction is fine)")
    parser.add_argument("--steps", type=int, help="bound the run by optimizer steps instead of epochs")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="packed rows per micro-batch, all hosts together (a multiple of the mesh's fsdp axis)")
    parser.add_argument("--grad-accum", type=int, default=1,
                        help="micro-batches per optimizer step; the loss is the token mean over all of them")
    parser.add_argument("--lr", type=float, default=2e-5, help="peak learning rate (AdamW), reached at the last warmup "
                        "step, then cosine decay: the last step trains just above 0")
    parser.add_argument("--warmup-steps", type=int, default=10, help="optimizer steps of linear warmup: the first "
                        "trains at --lr / --warmup-steps (never at 0)")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay of the adapters")
    parser.add_argument("--lora-rank", type=int, default=64, help="rank of each LoRA adapter")
    parser.add_argument("--lora-alpha", type=float, default=64.0, help="LoRA scale: the update is x A B alpha/rank")
    parser.add_argument("--lora-targets", help="regex of module paths that get adapters")
    parser.add_argument("--mesh", help="FSDPxTP, e.g. 2x4 (default: devices/tp x tp, tp = gcd(devices, 4))")
    parser.add_argument("--remat", choices=["none", "block", "decoder"], default="block",
                        help="recompute each attention/MLP block (block) or each layer (decoder) in the backward "
                             "pass; block needed the least memory in `tzc-train plan` (docs/training.md)")
    parser.add_argument("--attention", choices=["auto", "plain", "splash"], default="auto",
                        help="auto: splash attention (Pallas) on TPU, the plain reference elsewhere")
    parser.add_argument("--seed", type=int, default=0, help="the data order and the adapters' initialisation")
    parser.add_argument("--eval-every", type=int,
                        help="steps between evals (default: about 20 a run, at least 50 steps apart)")
    parser.add_argument("--eval-rows", type=int, default=256,
                        help="packed rows of the eval split each eval uses: a fixed subset (0: no eval)")
    parser.add_argument("--save-every", type=int, default=50, help="optimizer steps between checkpoints (a run "
                                                                    "also saves when it ends or stops for --time-limit)")
    return parser


def _mixture_weights_as_model_weights(weights: str | None) -> bool:
    """``--weights 0.7,0.3`` (numbers, not a path): a mixture's weights given to the model's option."""
    if not weights or os.path.exists(weights):
        return False
    try:
        [float(part) for part in weights.split(",")]
    except ValueError:
        return False
    return True


def train_main(argv: list[str], started: float) -> int:
    args = train_parser().parse_args(argv)

    def run() -> int:
        from tzc_train.config import LORA_TARGETS, TrainConfig, parse_data_weights, parse_mesh
        from tzc_train.session import parse_duration
        from tzc_train.train import train

        if _mixture_weights_as_model_weights(args.weights):
            raise ValueError(f"--weights {args.weights}: --weights is the model's weights (a path); a mixture's "
                             f"weights are --data-weights {args.weights}")
        config = TrainConfig(data=args.data, data_weights=parse_data_weights(args.data_weights), out=args.out,
                             model=args.model, weights=args.weights,
                             init_lora=args.init_lora, epochs=args.epochs, steps=args.steps, batch_size=args.batch_size,
                             grad_accum=args.grad_accum, lr=args.lr, warmup_steps=args.warmup_steps,
                             weight_decay=args.weight_decay, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                             lora_targets=args.lora_targets or LORA_TARGETS, mesh=parse_mesh(args.mesh), seed=args.seed,
                             eval_every=args.eval_every, eval_rows=args.eval_rows, save_every=args.save_every,
                             time_limit=parse_duration(args.time_limit) if args.time_limit else None,
                             resume=args.resume, remat=args.remat, attention=args.attention, dtype=args.dtype)
        result = train(config, started=started)
        print(json.dumps({k: v for k, v in result.items() if k not in ("model", "losses", "sessions")}))
        return 0

    return _report("tzc-train", run)


COMMANDS: dict[str, Callable[[list[str]], int]] = {"sample": sample_main, "eval": eval_main, "export": export_main,
                                                   "notebook": notebook_main, "plan": plan_main}


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()  # --time-limit counts from here: imports and compilation included
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    return train_main(argv, started)


if __name__ == "__main__":
    sys.exit(main())
