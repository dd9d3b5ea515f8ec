"""``tzc-train``: LoRA SFT of Gemma 2 on a tzc build (see ``tzc_train/train.py``)."""

from __future__ import annotations

import argparse
import json
import sys


def sample_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tzc-train sample", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description="Greedy completions of prompts with a trained run's adapters, and "
                                                 "the share that is well formed (<reasoning> then <answer>).")
    parser.add_argument("--data", required=True, help="the build the run trained on (tokenizer, system prompt)")
    parser.add_argument("--lora", help="a run's --out (its latest adapters) or a `tzc-train export`'s adapters/; "
                                       "none: the base model")
    parser.add_argument("--model", choices=["tiny", "gemma2-2b"], default="gemma2-2b")
    parser.add_argument("--weights", help="Gemma 2 2B-IT weights (HF safetensors dir or Kaggle Flax checkpoint)")
    parser.add_argument("--tokenizer", help="the build's tokenizer when it is not found automatically")
    parser.add_argument("--prompts", required=True, help="a .jsonl file with 'prompt' fields, or one prompt per line")
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument("--lora-rank", type=int, help="default: the run's (64 when unknown)")
    parser.add_argument("--lora-alpha", type=float, help="default: the run's (64 when unknown)")
    parser.add_argument("--mesh", help="FSDPxTP, e.g. 2x4")
    args = parser.parse_args(argv)
    import tzc_data
    from tzc_data.look import build_tokenizer
    from tzc_train.sample import sample
    from tzc_train.train import TrainConfig, base_model, make_mesh, recorded_lora, restore_adapters, with_lora

    rank, alpha = (recorded_lora(args.lora) if args.lora else None) or (64, 64.0)
    args.lora_rank = args.lora_rank or rank
    args.lora_alpha = args.lora_alpha or alpha

    try:
        manifest = tzc_data.read_manifest(args.data)
        tokenizer = build_tokenizer(manifest, args.tokenizer)
        with open(args.prompts, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle if line.strip()]
        prompts = [json.loads(line)["prompt"] if args.prompts.endswith(".jsonl") else line for line in lines]
        config = TrainConfig(data=args.data, out=args.lora or ".", model=args.model, weights=args.weights,
                             lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                             mesh=tuple(int(x) for x in args.mesh.split("x")) if args.mesh else None)
        mesh = make_mesh(config.mesh)
        with mesh:
            base, model_config = base_model(config, manifest["tokenizer"]["vocab_size"], mesh)
            model = base
            if args.lora:
                model = with_lora(base, config, mesh)
                restore_adapters(model, args.lora, "--lora")
            samples = sample(model, model_config, tokenizer, prompts, max_new_tokens=args.max_new_tokens)
    except (ValueError, OSError, KeyError) as err:
        print(f"tzc-train sample: error: {err}", file=sys.stderr)
        return 2
    for k, item in enumerate(samples, 1):
        verdict = "ok" if item.well_formed else f"malformed: {item.problem}"
        print(f"--- {k}: {verdict}\nprompt: {item.prompt}\n{item.completion}\n")
    passed = sum(s.well_formed for s in samples)
    print(f"Format Validation: {passed}/{len(samples)}")
    return 0


def export_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="tzc-train export",
        description="Write a run's latest adapters (OUT/adapters: safetensors + adapter_config.json, for --init-lora "
                    "and `sample --lora`) and the adapters merged into the base weights (OUT/merged: a Hugging Face "
                    "layout Gemma 2 checkpoint that tunix's safetensors loader and --weights read).")
    parser.add_argument("--run", required=True, help="a tzc-train --out directory")
    parser.add_argument("--out", required=True, help="where adapters/ and merged/ go")
    parser.add_argument("--weights", help="the base weights, when they moved since the run (otherwise the run's)")
    parser.add_argument("--no-merged", dest="merged", action="store_false",
                        help="export the adapters only (without it: adapters and merged weights)")
    args = parser.parse_args(argv)
    from tzc_train.train import export_run

    try:
        written = export_run(args.run, args.out, weights=args.weights, merged=args.merged)
    except (ValueError, OSError) as err:
        print(f"tzc-train export: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(written))
    return 0


def plan_main(argv: list[str]) -> int:
    """``tzc-train plan``: compile the train step for a TPU topology here and size it (tzc_train/plan.py)."""
    parser = argparse.ArgumentParser(
        prog="tzc-train plan", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Compile the training step ahead of time for a TPU topology on this machine (no TPU, no "
                    "weights: Gemma 2 2B shapes) and print memory per chip, FLOPs per step, steps per epoch "
                    "from the build's manifest and the projected hours at an assumed MFU. Exits 1 when the run "
                    "does not fit the chips' memory or --hours.")
    parser.add_argument("--data", required=True, help="the tzc build to train on (its manifest: rows, seq_len)")
    parser.add_argument("--topology", default="v5e:2x4", help="TPU topology: v5e:2x4 is one v5e-8 host")
    parser.add_argument("--hours", type=float, default=9.0, help="the time budget (a Kaggle TPU session: 9 h)")
    parser.add_argument("--mfu", type=float, default=0.35, help="assumed model FLOPs utilisation for the projection")
    parser.add_argument("--model", choices=["tiny", "gemma2-2b"], default="gemma2-2b")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--steps", type=int, help="bound the run by optimizer steps instead of epochs")
    parser.add_argument("--batch-size", type=int, default=8, help="packed rows per micro-batch")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--lora-rank", type=int, default=64)
    parser.add_argument("--lora-alpha", type=float, default=64.0)
    parser.add_argument("--lora-targets", help="regex of module paths that get adapters")
    parser.add_argument("--mesh", help="FSDPxTP, e.g. 2x4 (default: chips/tp x tp, tp = gcd(chips, 4))")
    parser.add_argument("--remat", choices=["none", "block", "decoder"], default="block")
    parser.add_argument("--attention", choices=["plain", "splash"], default="splash")
    parser.add_argument("--fast-compile", action="store_true",
                        help="XLA's least optimisation effort: about 4x faster, memory figures within a few percent")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)
    from tzc_train.plan import PlanConfig, PlanError, plan

    try:
        mesh = tuple(int(x) for x in args.mesh.lower().split("x")) if args.mesh else None
        config = PlanConfig(data=args.data, model=args.model, topology=args.topology, batch_size=args.batch_size,
                            grad_accum=args.grad_accum, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                            lora_targets=args.lora_targets, mesh=mesh, remat=args.remat, attention=args.attention,
                            epochs=args.epochs, steps=args.steps, mfu=args.mfu, hours=args.hours,
                            fast_compile=args.fast_compile)
        result = plan(config)
    except (PlanError, ValueError, OSError) as err:
        print(f"tzc-train plan: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result.summary()) if args.json else result.report())
    if result.hours > config.hours:
        print(f"tzc-train plan: does not fit --hours {config.hours:g}: {result.hours:.2f} h projected at "
              f"{config.mfu:.0%} MFU; bound each session with --steps", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plan"]:
        return plan_main(argv[1:])
    if argv[:1] == ["sample"]:
        return sample_main(argv[1:])
    if argv[:1] == ["export"]:
        return export_main(argv[1:])
    parser = argparse.ArgumentParser(prog="tzc-train", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description="LoRA SFT of Gemma 2 on packed tzc shards with tunix, on a JAX mesh. "
                                                 "`tzc-train sample --help` for greedy samples and the format check, "
                                                 "`tzc-train export --help` for adapters and merged weights, "
                                                 "`tzc-train plan --help` to check a run fits a TPU before you have one.")
    parser.add_argument("--data", required=True, help="a tzc build (its train split; eval split when present)")
    parser.add_argument("--out", required=True, help="checkpoints (adapters + optimizer state) and TensorBoard logs")
    parser.add_argument("--model", choices=["tiny", "gemma2-2b"], default="gemma2-2b",
                        help="tiny: a random Gemma 2-architecture model for tests and trying the tool")
    parser.add_argument("--weights", help="Gemma 2 2B-IT: an HF safetensors directory or a Kaggle Flax checkpoint")
    parser.add_argument("--init-lora", help="start from the adapters of an earlier run's --out (or its export)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out at its last checkpoint")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--steps", type=int, help="bound the run by optimizer steps instead of epochs")
    parser.add_argument("--batch-size", type=int, default=8, help="packed rows per micro-batch")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--lora-rank", type=int, default=64)
    parser.add_argument("--lora-alpha", type=float, default=64.0)
    parser.add_argument("--lora-targets", help="regex of module paths that get adapters")
    parser.add_argument("--mesh", help="FSDPxTP, e.g. 2x4 (default: devices/tp x tp, tp = gcd(devices, 4))")
    parser.add_argument("--remat", choices=["none", "block", "decoder"], default="block",
                        help="recompute each attention/MLP block (block) or each layer (decoder) in the backward "
                             "pass; block needed the least memory in `tzc-train plan` (README)")
    parser.add_argument("--attention", choices=["auto", "plain", "splash"], default="auto",
                        help="auto: splash attention (Pallas) on TPU, the plain reference elsewhere")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--save-every", type=int, default=50)
    args = parser.parse_args(argv)
    from tzc_train.train import LORA_TARGETS, TrainConfig, train

    try:
        mesh = tuple(int(x) for x in args.mesh.lower().split("x")) if args.mesh else None
        config = TrainConfig(data=args.data, out=args.out, model=args.model, weights=args.weights,
                             init_lora=args.init_lora, epochs=args.epochs, steps=args.steps, batch_size=args.batch_size,
                             grad_accum=args.grad_accum, lr=args.lr, warmup_steps=args.warmup_steps,
                             weight_decay=args.weight_decay, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                             lora_targets=args.lora_targets or LORA_TARGETS, mesh=mesh, seed=args.seed,
                             eval_every=args.eval_every, save_every=args.save_every, resume=args.resume,
                             remat=args.remat, attention=args.attention)
        result = train(config)
    except (ValueError, OSError) as err:
        print(f"tzc-train: error: {err}", file=sys.stderr)
        return 2
    losses = result["losses"]
    print(json.dumps({"steps": result["steps"], "trained_steps_this_run": len(losses),
                      "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
                      "seconds": result["seconds"], "mesh": result["mesh"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
