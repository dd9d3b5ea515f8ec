"""What leaves a run: exported layouts and the competition's deliverables.

    export.py    `tzc-train export`: adapters, the judges' LoRA checkpoint (kaggle/), merged weights in
                 Hugging Face safetensors and Kaggle Flax layouts
    kaggle.py    the judges' facts: lora_policy, tokenizer, model_config, MAX_PROMPT_LENGTH, PROMPT_TEMPLATE,
                 MAX_GENERATION_STEPS for a run folder (CKPT_DIR)
    notebook.py  `tzc-train notebook`: the submission notebook written from a run

This package imports none of its modules itself: import the one you need.
"""
