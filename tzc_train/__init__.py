"""tzc_train: a small tunix LoRA trainer that consumes tzc_data shards on a JAX device mesh.

    config.py    TrainConfig (every `tzc-train` option), the run record tzc_run.json, what --resume may change
    model/       the model: bases (Gemma 2 2B, Gemma 3 1B, tiny random ones), loading them and the mesh,
                 packed attention, the training and decoding views, the loss, LoRA and its adapters
    feed.py      this host's train batches, the feed that stops before --time-limit, the eval set
    session.py   --time-limit's clock, the run folder (CKPT_DIR/actor/<step>), summary.json
    trainer.py   tunix's PeftTrainer with token-mean steps (gradient accumulation) and eval, as a run sets
                 it up, and its console line
    train.py     the run, top to bottom
    plan/        `tzc-train plan`: the step compiled for a TPU topology, the layout, the hours
    sample.py    batched greedy decoding and the format check
    evaluate.py  `tzc-train eval` / `sample`: the run's model on eval-split prompts, and the report
    submit/      `tzc-train export` (every layout), the judges' names (kaggle.py), the submission notebook
    cli.py       `tzc-train` and its subcommands

Imports go one way, never in a circle (tests/test_house_rules.py checks it): session.py and the
model's parts (bases, attention, views, loss, adapters) know nothing of a run; config.py knows the
model's names; model/load.py and model/lora.py build a run's model from its config; feed, trainer and
train build on those; plan/, sample, evaluate, submit/ and cli sit on top.
"""
