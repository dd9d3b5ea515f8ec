"""tzc_train: a small tunix LoRA trainer that consumes tzc_data shards on a JAX device mesh.

    bases.py     the base models by --model name: Gemma 2 2B, Gemma 3 1B, a tiny random one of each
    model.py     packed rows on Gemma 2 and 3: block-diagonal causal mask, per-example positions, chunked loss
    attention.py packed attention inside tunix's layers: segment ids, the window per example, splash on TPU
    trainer.py   tunix's PeftTrainer with token-mean steps (gradient accumulation) and eval
    session.py   --time-limit, the train feed that stops before it, summary.json
    train.py     the run, top to bottom; resume checks; export of a run
    sample.py    batched greedy decoding and the format check
    evaluate.py  `tzc-train eval` / `sample`: the run's model on eval-split prompts, and the report
    export.py    adapters, merged weights (Hugging Face safetensors and Kaggle Flax layouts)
    cli.py       `tzc-train` and its subcommands
"""
