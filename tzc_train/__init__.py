"""tzc_train: a small tunix LoRA trainer that consumes tzc_data shards on a JAX device mesh.

    model.py     packed rows on Gemma 2: block-diagonal causal mask, per-example positions, chunked loss
    trainer.py   tunix's PeftTrainer with token-mean steps (gradient accumulation) and eval
    session.py   --time-limit, the train feed that stops before it, summary.json
    train.py     the run, top to bottom; resume checks; export of a run
    sample.py    batched greedy decoding and the format check
    evaluate.py  `tzc-train eval` / `sample`: the run's model on eval-split prompts, and the report
    export.py    adapters, merged weights (Hugging Face safetensors and Kaggle Flax layouts)
    cli.py       `tzc-train` and its subcommands
"""
