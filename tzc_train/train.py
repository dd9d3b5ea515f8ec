"""LoRA SFT of Gemma 2 or Gemma 3 on a tzc build, with tunix, on a JAX device mesh. Read it top to bottom.

    config (tzc_train.config: the options, the run record, the resume checks)
      ─ feed (tzc_train.feed: this host's batches, the eval set)
      ─ mesh ─ model (tzc_train.model: tiny random | HF safetensors | Kaggle Flax) ─ qwix LoRA (float32 adapters)
      ─ tzc's Trainer (tzc_train.trainer: tunix PeftTrainer; AdamW, warmup + cosine; token-mean loss over
        grad_accum micro-batches per step; the console line)
      ─ orbax checkpoints, TensorBoard, tzc_run.json and summary.json in --out (tzc_train.session)

One step is ``--batch-size`` x ``--grad-accum`` packed rows (the effective batch); each host reads
its share (``tzc_data.batches`` with ``shard_index = jax.process_index()``), so the rows of a step
do not depend on the number of hosts. The loss is the mean over the step's target tokens.

Resume: tunix restores the latest checkpoint in ``--out`` (adapters, optimizer state, step) and
skips the batches already consumed; ``tzc_data.batches`` is a pure function of the seed, so the
data position is exact as long as the options that shape the data and the schedule are the
run's own (checked against ``tzc_run.json``). ``--time-limit`` ends a session with a checkpoint
before the limit (``tzc_train/session.py``). ``--init-lora`` starts a new run from another run's
adapters (the original entry's "unrestricted mode"). Each session ends by adding its entry to the
run's ``summary.json`` (:func:`record_session`). Exporting a run is ``tzc_train.submit.export``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import jax
import numpy as np

import tzc_data
from tzc_train.config import TrainConfig, check_out, check_resume, write_run_config
from tzc_train.feed import Feed, agreement, check_batch, check_build, eval_set, host_batches
from tzc_train.model.bases import check_tokenizer
from tzc_train.model.load import base_model, make_mesh
from tzc_train.model.lora import restore_adapters, with_lora
from tzc_train.model.views import default_attention, prepare
from tzc_train.session import Deadline, read_summary, saved_step, write_summary
from tzc_train.trainer import ConsoleLine, eval_interval, make_trainer


def train(config: TrainConfig, *, started: float | None = None) -> dict[str, Any]:
    """Run (or continue) a run; returns its summary (``summary.json``) plus this session's losses,
    mesh and model. ``started``: a ``time.monotonic()`` reading that ``--time-limit`` counts from
    (default: now)."""
    started = time.monotonic() if started is None else started
    manifest = tzc_data.read_manifest(config.builds[0])  # a mixture's builds share seq_len and tokenizer
    vocab_size = manifest["tokenizer"]["vocab_size"]
    check_out(config)
    if config.resume:
        check_resume(config)
        finished = read_summary(config.out)
        if finished and finished.get("status") == "finished" and saved_step(config.out) == finished.get("max_steps"):
            print(f"tzc-train: the run in {config.out} finished at step {finished['steps']}; nothing to resume",
                  file=sys.stderr, flush=True)  # a re-run notebook: no model load, no eval, no empty session
            return {**finished, "session": None}
    check_tokenizer(config.model, manifest["tokenizer"], config.builds[0])  # a mixture's share it
    rows = check_build(config.builds[0], manifest)
    rows += sum(check_build(build, tzc_data.read_manifest(build)) for build in config.builds[1:])
    examples_per_step = config.batch_size * config.grad_accum
    steps = config.steps or max(1, int(config.epochs * rows / examples_per_step))  # an epoch: all builds' rows
    # the train batches first: a mixture that cannot be (tzc_data.mixture) is refused before the model loads
    batches = host_batches(config.data, examples_per_step, seed=config.seed, weights=config.data_weights)

    mesh = make_mesh(config.mesh)
    check_batch(config, mesh)
    with mesh:
        base, model_config = base_model(config, vocab_size, mesh)
        model = with_lora(base, config, mesh)
        prepare(model, remat=config.remat,
                attention=default_attention() if config.attention == "auto" else config.attention)
        if config.init_lora and saved_step(config.out) is None:  # a resumed run restores its own adapters
            restore_adapters(model, config.init_lora, "--init-lora")
        if jax.process_index() == 0:
            write_run_config(config)

        trainer, schedule = make_trainer(config, model, steps)
        feed = Feed(batches, Deadline(config.time_limit, started), agree=agreement(), skip=saved_step(config.out) or 0)
        console = ConsoleLine(schedule, feed, steps)
        trainer.with_training_hooks(console)
        eval_batches, eval_note = eval_set(config, manifest)
        print(f"{steps} steps of {examples_per_step} packed rows ({config.batch_size} x {config.grad_accum}); "
              f"{eval_note}, every {eval_interval(config, steps)} steps", file=sys.stderr, flush=True)
        trainer.train(feed, eval_batches or None)
        if eval_batches and feed.stopped != "time limit" and (not console.evals or
                                                              console.evals[-1][0] != trainer.train_steps):
            console.record_eval(trainer.train_steps, trainer.evaluate(eval_batches))
        summary = record_session(config, steps, trainer.train_steps, feed, console, started, mesh)
    return {**summary, "losses": console.losses, "mesh": summary["session"]["mesh"], "model": model}


def record_session(config: TrainConfig, steps: int, done: int, feed: Feed, console: ConsoleLine, started: float,
                   mesh: jax.sharding.Mesh) -> dict[str, Any]:
    """This session's entry and the run's totals, written to ``summary.json`` (by process 0)."""
    stopped = "time limit" if feed.stopped == "time limit" else "finished" if done >= steps else feed.stopped
    session = {"stopped": stopped, "first_step": console.restored + 1, "last_step": done,
               "steps": done - console.restored,
               "tokens": total_tokens(feed.tokens(done) - feed.tokens(console.restored)),
               "wall_seconds": round(time.monotonic() - started, 1),
               "mesh": dict(zip(mesh.axis_names, mesh.devices.shape))}
    last_eval = console.evals[-1] if console.evals else (None, None)
    totals = {"steps": done, "max_steps": steps, "tokens": total_tokens(feed.tokens(done)),
              "train_loss": console.losses[-1] if console.losses else None, "eval_loss": last_eval[1],
              "eval_step": last_eval[0]}
    if jax.process_index() != 0:
        return {**totals, "session": session}
    sessions = [session]
    recorded = ((read_summary(config.out) or {}).get("sessions") or [{"last_step": 0}])[-1]["last_step"]
    if console.restored > recorded:  # a session killed or crashed after a checkpoint wrote no entry: its saved steps
        sessions.insert(0, {"stopped": "interrupted", "first_step": recorded + 1, "last_step": console.restored,
                            "steps": console.restored - recorded,
                            "tokens": total_tokens(feed.tokens(console.restored) - feed.tokens(recorded)),
                            "wall_seconds": None, "mesh": None})
    return {**write_summary(config.out, sessions, **totals), "session": session}


def total_tokens(local: int) -> int:
    """Tokens over all hosts (each host counts the rows it read)."""
    if jax.process_count() == 1:
        return local
    from jax.experimental import multihost_utils

    return int(np.sum(multihost_utils.process_allgather(np.asarray(local, np.int64))))


__all__ = ["record_session", "total_tokens", "train"]
