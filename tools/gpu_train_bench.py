"""Training throughput at Gemma 2 2B shapes on one accelerator: tokens/s, MFU and peak memory, packed and not.

    .venv/bin/python tools/gpu_train_bench.py                  # Gemma 2 2B, random bf16 weights, 300 steps each
    .venv/bin/python tools/gpu_train_bench.py --tiny           # the tiny model, a few steps: checks it runs (CPU)

The step is the one ``tzc-train`` runs (``tzc_train.trainer.Trainer``'s accumulating step over
tzc's packed inputs and loss, float32 LoRA masters cast to bfloat16, AdamW, ``--remat``), on a
model with random weights (no weights needed). Two row layouts of the same examples:

- ``packed``: best-fit-decreasing into rows of ``--seq-len`` tokens (``tzc_data.build.pack``), segment
  ids and per-example positions, as a tzc build stores them;
- ``one-per-row``: one example per row, padded to ``--seq-len``, as the original Kaggle entry fed
  tunix.

Example lengths are drawn from a log-normal (median a quarter of ``--seq-len``: about 1,000 tokens at
4096, capped at ``--seq-len``), loss on the latter 80% of each. ``tokens/s`` counts real
(non-padding) tokens, so the two layouts compare on the work that matters; MFU is model FLOPs of
all the rows computed (``tzc_train.plan.report.model_flops``, padding included) over the device's peak
bfloat16 FLOP/s (``--peak-tflops``, or a table by device kind). Peak memory is JAX's
``peak_bytes_in_use`` (not reported by the CPU backend). Compilation and ``--warmup`` steps are not
timed. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Peak dense bfloat16 FLOP/s by device kind (vendors' figures).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "A10G": 125.0, "TPU v5 lite": 197.0}


def example_lengths(count: int, seq_len: int, seed: int) -> list[int]:
    """Log-normal token lengths, median ``seq_len / 4`` (about 1,000 at 4096), at most ``seq_len``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.normal(np.log(seq_len / 4), 0.6, count)).astype(int)
    return np.clip(lengths, 8, seq_len).tolist()


def rows(lengths: list[int], seq_len: int, vocab: int, *, packed: bool, seed: int) -> dict:
    """All rows of one layout, as ``tzc_data.batches`` yields them (numpy int32 ``[rows, seq_len]``)."""
    import numpy as np

    from tzc_data.build.pack import best_fit_decreasing

    bins = best_fit_decreasing(lengths, seq_len) if packed else [[k] for k in range(len(lengths))]
    rng = np.random.default_rng(seed)
    out = {name: np.zeros((len(bins), seq_len), np.int32) for name in ("tokens", "segment_ids", "positions",
                                                                       "loss_mask")}
    for r, members in enumerate(bins):
        at = 0
        for s, k in enumerate(members, 1):
            n = lengths[k]
            out["tokens"][r, at:at + n] = rng.integers(5, vocab, n)
            out["segment_ids"][r, at:at + n] = s
            out["positions"][r, at:at + n] = np.arange(n)
            out["loss_mask"][r, at + n // 5:at + n] = 1
            at += n
    return out


def build(args: argparse.Namespace, mesh) -> tuple:
    """(model, optimizer, model config): random weights, LoRA as ``tzc-train`` adds it, ``prepare``d."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx
    from tunix.models import dummy_model_creator
    from tunix.models.gemma import model as gemma_lib

    from tzc_train.config import TrainConfig
    from tzc_train.model.lora import with_lora
    from tzc_train.model.views import prepare, tiny_config

    if args.tiny:
        model_config, dtype = tiny_config(args.vocab), jnp.float32
    else:
        model_config, dtype = gemma_lib.ModelConfig.gemma2_2b_it(), jnp.bfloat16
    base = dummy_model_creator.create_dummy_model(gemma_lib.Gemma, model_config, mesh=mesh, dtype=dtype, scale=0.02)
    config = TrainConfig(data="-", out="-", model="tiny", lora_rank=args.lora_rank, lora_alpha=float(args.lora_rank),
                         remat=args.remat)
    model = prepare(with_lora(base, config, mesh), remat=args.remat, attention=args.attention,
                    interpret=args.attention == "splash" and jax.default_backend() != "tpu")
    optimizer = nnx.Optimizer(model, optax.adamw(1e-5), wrt=nnx.LoRAParam)
    return model, optimizer, model_config


def run_layout(name: str, data: dict, args: argparse.Namespace, mesh, model, optimizer, model_config) -> dict:
    import jax
    import numpy as np
    from flax import nnx
    from tunix.sft import sharding_utils

    from tzc_train.model.loss import packed_inputs, packed_loss
    from tzc_train.plan.compile import step_owner
    from tzc_train.plan.report import model_flops
    from tzc_train.trainer import Trainer

    owner = step_owner(packed_inputs, packed_loss, args.grad_accum)

    step = nnx.jit(lambda model, optimizer, batch: Trainer._accumulating_step(owner, model, optimizer, batch),
                   donate_argnums=(0, 1))

    per_step = args.batch_size * args.grad_accum
    total = data["tokens"].shape[0]

    def batch(k: int) -> dict:
        pick = np.arange(k * per_step, (k + 1) * per_step) % total
        return sharding_utils.shard_input({n: v[pick] for n, v in data.items()}, ("fsdp",))

    started = time.perf_counter()
    loss = None
    for k in range(args.warmup):  # the first call compiles
        loss, _, _ = step(model, optimizer, batch(k))
    jax.block_until_ready(loss)
    compile_and_warmup = time.perf_counter() - started
    real = 0
    started = time.perf_counter()
    for k in range(args.warmup, args.warmup + args.steps):
        b = batch(k)
        real += int(np.count_nonzero(data["segment_ids"][np.arange(k * per_step, (k + 1) * per_step) % total]))
        loss, _, _ = step(model, optimizer, b)
    jax.block_until_ready(loss)
    seconds = time.perf_counter() - started
    adapters = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.LoRAParam)))
    flops = model_flops(model_config, adapters, per_step, args.seq_len) * args.steps
    device = jax.devices()[0]
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in device.device_kind), None)
    stats = device.memory_stats() or {}
    return {"layout": name, "rows": total, "fill": float(np.count_nonzero(data["segment_ids"])) / data["tokens"].size,
            "steps": args.steps, "seconds": seconds, "compile_s": compile_and_warmup,
            "tokens_per_s": real / seconds,
            "mfu": flops / seconds / (len(jax.devices()) * peak * 1e12) if peak else None,
            "peak_gib": stats["peak_bytes_in_use"] / 2**30 if "peak_bytes_in_use" in stats else None,
            "loss": float(loss)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny model at toy sizes (a check that it runs)")
    parser.add_argument("--steps", type=int, help="timed steps per layout (default 300; --tiny 3)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first compiles)")
    parser.add_argument("--batch-size", type=int, help="rows per micro-batch (default 2; --tiny 2)")
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--seq-len", type=int, help="default 4096; --tiny 256")
    parser.add_argument("--examples", type=int, default=4000, help="examples drawn (both layouts hold the same)")
    parser.add_argument("--lora-rank", type=int, default=64)
    parser.add_argument("--remat", choices=["none", "block", "decoder"], default="block")
    parser.add_argument("--attention", choices=["plain", "splash"], default="plain",
                        help="plain on GPU (splash is a TPU kernel; on CPU it runs interpreted)")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak bf16 TFLOP/s (default: by device kind)")
    parser.add_argument("--layouts", default="packed,one-per-row")
    args = parser.parse_args()
    args.steps = args.steps or (3 if args.tiny else 300)
    args.batch_size = args.batch_size or 2
    args.seq_len = args.seq_len or (256 if args.tiny else 4096)
    args.vocab = 600 if args.tiny else 256128
    if args.tiny:
        args.examples = min(args.examples, 64)
        args.lora_rank = min(args.lora_rank, 8)
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-8")  # libtpu installed, no TPU: stay quiet
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")

    import jax

    from tzc_train.model.load import make_mesh

    mesh = make_mesh(None)
    lengths = example_lengths(args.examples, args.seq_len, seed=0)
    device = jax.devices()[0]
    print(f"{len(jax.devices())} x {device.device_kind} ({jax.default_backend()}), mesh "
          f"{dict(zip(mesh.axis_names, mesh.devices.shape))}; {'tiny' if args.tiny else 'Gemma 2 2B'} shapes, random "
          f"weights, LoRA rank {args.lora_rank}, remat {args.remat}, {args.attention} attention, batch "
          f"{args.batch_size} x grad-accum {args.grad_accum} x {args.seq_len} tokens; {args.steps} timed steps\n",
          flush=True)
    results = []
    with mesh:
        for layout in args.layouts.split(","):
            model, optimizer, model_config = build(args, mesh)  # fresh each time: same start, memory per layout
            data = rows(lengths, args.seq_len, model_config.num_embed, packed=layout == "packed", seed=1)
            results.append(run_layout(layout, data, args, mesh, model, optimizer, model_config))
            del model, optimizer
    show = lambda v, f: "n/a" if v is None else format(v, f)  # noqa: E731
    print("| layout | rows | fill | tokens/s (real) | MFU | peak memory | s/step | compile + warmup | last loss |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['layout']} | {r['rows']:,} | {r['fill']:.1%} | {r['tokens_per_s']:,.0f} | {show(r['mfu'], '.1%')} | "
              f"{show(r['peak_gib'], '.2f')}{' GiB' if r['peak_gib'] is not None else ''} | {r['seconds'] / r['steps']:.3f} | {r['compile_s']:.0f} s | "
              f"{r['loss']:.4f} |")


if __name__ == "__main__":
    main()
