"""The model a run trains and decodes: tunix's Gemma 2 or Gemma 3 base, LoRA on it, packed rows in.

    bases.py     the base models by --model name: Gemma 2 2B, Gemma 3 1B, a tiny random one of each
    load.py      the device mesh, and the base loaded: tiny random | HF safetensors | Kaggle Flax
    attention.py packed attention inside tunix's layers: segment ids, the window per example, splash on TPU
    views.py     the model set up for training (remat, packed attention), its compute and decoding views
    loss.py      packed rows as model inputs, and the chunked token-mean loss
    lora.py      qwix LoRA on the base (float32 adapters); a run's adapters restored
    adapters.py  a model's parameters as arrays; exported adapters read back

Nothing here imports the trainer, the feed or the submission (tzc_train/submit/). This package
imports none of its modules itself: import the one you need.
"""
