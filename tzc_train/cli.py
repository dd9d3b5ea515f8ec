"""``tzc-train``: LoRA SFT of Gemma 2 on a tzc build (see ``tzc_train/train.py``)."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tzc-train", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description="LoRA SFT of Gemma 2 on packed tzc shards with tunix, on a JAX mesh.")
    parser.add_argument("--data", required=True, help="a tzc build (its train split; eval split when present)")
    parser.add_argument("--out", required=True, help="checkpoints (adapters + optimizer state) and TensorBoard logs")
    parser.add_argument("--model", choices=["tiny", "gemma2-2b"], default="gemma2-2b",
                        help="tiny: a random Gemma 2-architecture model for tests and trying the tool")
    parser.add_argument("--weights", help="Gemma 2 2B-IT: an HF safetensors directory or a Kaggle Flax checkpoint")
    parser.add_argument("--init-lora", help="start from the adapters of an earlier run's --out")
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
                             eval_every=args.eval_every, save_every=args.save_every, resume=args.resume)
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
