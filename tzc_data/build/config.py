"""The build's one configuration object: frozen, keyword-only, validated on construction.

Every field is an option of ``tzc-data build``; the manifest stores :meth:`BuildConfig.recorded`,
so a build can be repeated from its manifest alone.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from tzc_data.engines import ENGINES
from tzc_data.errors import ConfigError
from tzc_data.text import format as fmt

COMPRESSIONS = ("zstd:1", "zstd:3", "uncompressed")
MAX_SEQ_LEN = 131_072  # the longest context of current open models; a row of it is 2 MiB


def parse_range(text: str) -> tuple[int, int]:
    """``"180000:280000"`` -> (180000, 280000); underscores are allowed (``180_000:280_000``)."""
    start, sep, stop = text.partition(":")
    if not sep:
        raise ConfigError(f"--range {text!r}: expected START:STOP, e.g. 180000:280000")
    try:
        begin, end = int(start.replace("_", "")), int(stop.replace("_", ""))
    except ValueError:
        raise ConfigError(f"--range {text!r}: START and STOP must be integers") from None
    return begin, end


@dataclass(frozen=True, kw_only=True)
class BuildConfig:
    """What to read, how to clean it, how to pack it, and where to write it."""

    out: str
    start: int
    stop: int
    source: str = "hf"
    revision: str | None = None
    seed: int = 0
    format: str = "glaive"  # how the source's columns make a prompt and a response (tzc_data.sources.formats)
    dataset: str | None = None  # --source hf: OWNER/NAME (None: glaiveai/reasoning-v1-20m)
    hub_split: str | None = None  # --source hf: the dataset's split (None: train)
    tokenizer: str | None = None  # gemma2 | gemma3 (fetched and hash-checked) | a path; None: gemma2
    system: str = fmt.DEFAULT_SYSTEM
    seq_len: int = 4096
    max_tokens: int | None = None  # None: seq_len
    max_model_tokens: int | None = None  # the model turn (what a decode generates), in tokens; None: no bound
    min_answer_tokens: int = 1
    min_reasoning_tokens: int = 1
    dedup: bool = True
    near_dup: bool = True
    near_dup_threshold: float = 0.8
    loop_filter: bool = True  # all repetition signals; each threshold below also switches off at 0
    loop_min_repeats: float = 3.0
    loop_min_chars: int = 200
    loop_min_cycle_repeats: float = 3.0
    loop_min_run: int = 4
    max_paragraph_repeats: int = 3
    max_sentence_repeats: int = 8
    min_repeated_share: float = 0.08
    max_ngram_dup_share: float = 0.9
    max_ngram_top_share: float = 0.4
    min_compression_ratio: float = 0.12
    language_filter: bool = True
    min_english_score: float = 0.12
    keep_rejected: bool = False
    min_kept_ratio: float = 0.5
    rows_per_shard: int = 1024
    compression: str = "zstd:1"
    exclude: tuple[str, ...] = ()  # earlier builds whose prompts this one must not share
    decontaminate: tuple[str, ...] = ()  # benchmark files whose questions no kept prompt may share an n-gram with
    decontaminate_ngram: int = 8  # words an n-gram holds (tzc_data.text.decontaminate)
    decontaminate_responses: bool = False  # check the response too, not only the prompt
    eval_fraction: float = 0.0
    engine: str = "local"  # what runs the units' per-row stages: "local", "processes" or "ray"
    # processes (engine "processes") or Ray actors (engine "ray"; 0: the cluster's CPUs less one) for
    # the per-row stages; the output does not depend on it
    workers: int = 1
    ray_address: str | None = None  # the Ray cluster to run on (engine "ray"); None: a local instance
    resume: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not self.out or not self.out.strip():
            raise ConfigError("--out is empty (an unset shell variable?): give the output directory")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            for text in value if isinstance(value, (tuple, list)) else (value,):
                _check_utf8(field.name, text)
            if field.type in (float, "float") and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)  # 0 and 0.0 are one option: the manifest records one spelling
                object.__setattr__(self, field.name, value)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"--{field.name.replace('_', '-')} {value}: must be a finite number")
        if self.start < 0 or self.stop <= self.start:
            raise ConfigError(f"--range {self.start}:{self.stop}: need 0 <= START < STOP")
        if not 64 <= self.seq_len <= MAX_SEQ_LEN:
            raise ConfigError(f"--seq-len {self.seq_len}: must be between 64 and {MAX_SEQ_LEN:,} tokens "
                              f"(a packed row is 16 bytes a token)")
        if self.max_tokens is not None and not 16 <= self.max_tokens <= self.seq_len:
            raise ConfigError(f"--max-tokens {self.max_tokens}: must be between 16 and --seq-len ({self.seq_len}); "
                              "an example longer than a row cannot be packed without splitting it")
        if self.max_model_tokens is not None and not 8 <= self.max_model_tokens <= self.seq_len:
            raise ConfigError(f"--max-model-tokens {self.max_model_tokens}: must be between 8 and --seq-len "
                              f"({self.seq_len})")
        if not 1 <= self.decontaminate_ngram <= 64:
            raise ConfigError(f"--decontaminate-ngram {self.decontaminate_ngram}: must be between 1 and 64 words")
        if self.decontaminate_responses and not self.decontaminate:
            raise ConfigError("--decontaminate-responses needs --decontaminate FILE")
        if self.min_answer_tokens < 0 or self.min_reasoning_tokens < 0:
            raise ConfigError("--min-answer-tokens and --min-reasoning-tokens must be >= 0")
        if not 0.0 <= self.min_kept_ratio <= 1.0:
            raise ConfigError(f"--min-kept-ratio {self.min_kept_ratio}: must be between 0 and 1")
        if not (self.loop_min_repeats == 0 or self.loop_min_repeats >= 2) or self.loop_min_chars < 1:
            raise ConfigError("--loop-min-repeats must be 0 (off) or >= 2, and --loop-min-chars >= 1")
        if not (self.loop_min_cycle_repeats == 0 or self.loop_min_cycle_repeats >= 2) or \
                not (self.loop_min_run == 0 or self.loop_min_run >= 2):
            raise ConfigError("--loop-min-cycle-repeats and --loop-min-run must be 0 (off) or >= 2")
        if not 0.0 < self.near_dup_threshold <= 1.0:
            raise ConfigError(f"--near-dup-threshold {self.near_dup_threshold}: must be in (0, 1]")
        for name in ("max_ngram_dup_share", "max_ngram_top_share", "min_compression_ratio", "min_english_score",
                     "min_repeated_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be between 0 and 1")
        if self.max_paragraph_repeats < 0 or self.max_sentence_repeats < 0:
            raise ConfigError("--max-paragraph-repeats and --max-sentence-repeats must be >= 0 (0 is off)")
        if self.rows_per_shard < 1:
            raise ConfigError(f"--rows-per-shard {self.rows_per_shard}: must be >= 1")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ConfigError(f"--eval-fraction {self.eval_fraction}: must be in [0, 1)")
        if self.engine not in ENGINES:
            raise ConfigError(f"--engine {self.engine!r}: choose one of {', '.join(ENGINES)}")
        if not (1 <= self.workers <= 256 or (self.workers == 0 and self.engine == "ray")):
            raise ConfigError(f"--workers {self.workers}: must be between 1 and 256")
        if self.ray_address is not None and self.engine != "ray":
            raise ConfigError("--ray-address needs --engine ray")
        if self.workers > 1 and self.engine == "local":
            raise ConfigError(f"--workers {self.workers} needs --engine processes (--engine local is one process)")
        from tzc_data.sources.formats import parse_format

        parse_format(self.format)  # ConfigError naming the formats there are
        if self.source != "hf" and (self.dataset is not None or self.hub_split is not None):
            raise ConfigError(f"--{'dataset' if self.dataset is not None else 'split'} applies only to --source hf")
        if self.compression not in COMPRESSIONS:
            raise ConfigError(f"--compression {self.compression!r}: choose one of {', '.join(COMPRESSIONS)}")
        try:
            fmt.check_system(self.system)
        except fmt.FormatError as err:
            raise ConfigError(f"--system: {err}") from None

    @property
    def token_limit(self) -> int:
        return self.max_tokens if self.max_tokens is not None else self.seq_len

    @property
    def split_names(self) -> tuple[str, ...]:
        return ("train", "eval") if self.eval_fraction > 0 else ("train",)

    @property
    def array_record_options(self) -> str:
        # group_size:1 so that every record can be read on its own (Grain's random access).
        return f"group_size:1,{self.compression}"

    def recorded(self) -> dict[str, Any]:
        """The fields that determine the output (not where it goes, which engine, how
        many worker processes, nor whether to overwrite or resume)."""
        fields = dataclasses.asdict(self)
        for name in ("out", "overwrite", "resume", "engine", "workers", "ray_address"):
            fields.pop(name)
        fields["exclude"] = list(self.exclude)
        fields["decontaminate"] = list(self.decontaminate)
        fields["max_tokens"] = self.token_limit
        return fields


def _check_utf8(name: str, value: Any) -> None:
    """ConfigError for a text option holding bytes that are not UTF-8 (surrogate escapes, as
    Python decodes such argv or file names): the manifest records every option as UTF-8 text."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            shown = repr(value.encode("utf-8", "surrogateescape"))[1:]
            raise ConfigError(f"--{name.replace('_', '-')} {shown} is not valid UTF-8: text options and paths "
                              "must be valid UTF-8") from None
