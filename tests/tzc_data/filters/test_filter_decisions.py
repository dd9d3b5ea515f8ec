"""The quality filters' decisions, pinned: a change that makes them faster must decide exactly as
before (each filter's reason, detail and scores, on every trace).

Two sets of traces:

* every trace of ../shared/data that has a response, split as a build splits it; a trace the split
  drops (an unterminated ``<think>``, most real loops) is judged with its whole response as the
  reasoning, so the filters see every trace;
* the synthetic source's rows 0:20000 (seed 0, as ``tzc-data build --source synthetic`` reads
  them), with every planted defect, the same way.

Each is judged under three settings of the build's options: the defaults, every repetition
threshold at 0 (each signal off: the counts then look for units with 2 copies, not 3 or 8), and
strict thresholds under which most signals fire (so every reason and detail is reached). Every
filter judges every trace (a drop does not stop the others), and the decisions of each file, or of
each 5,000 synthetic rows, are hashed: each filter's reason, detail and every score (the stats'
columns). The digests were computed by the code before issue 28's speed-up (commit c004257) and
must not change: a change that means to decide differently re-pins them and says so in its commit.

The filters decide in Python or with their compiled code (``compiled=True``, what a build uses
from its first row where this machine has built the compiled code's extension module, or once a
process has judged ``COMPILE_FROM`` rows): both are pinned, the compiled code on every set, the
Python code on the shared traces and the first 5,000 synthetic rows (the rest would take a minute
and a half). The compiled code is the extension module's; numba's just-in-time code of the same
functions (where no module can be built) is pinned on the shared traces, and compared with the
module's on generated texts in test_filter_compiled.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
from conftest import SHARED

from tzc_data.build.config import BuildConfig
from tzc_data.build.rowstage import build_filters
from tzc_data.record import Example
from tzc_data.sources.base import validate
from tzc_data.sources.generator import generate
from tzc_data.text.format import split_examples

SETTINGS = {
    "default": {},
    "off": dict(loop_min_repeats=0, loop_min_cycle_repeats=0, loop_min_run=0, max_paragraph_repeats=0,
                max_sentence_repeats=0, min_repeated_share=0, max_ngram_dup_share=0, max_ngram_top_share=0,
                min_compression_ratio=0, min_english_score=0),
    "strict": dict(loop_min_repeats=2, loop_min_chars=50, loop_min_cycle_repeats=2, loop_min_run=2,
                   max_paragraph_repeats=2, max_sentence_repeats=2, min_repeated_share=0.02,
                   max_ngram_dup_share=0.3, max_ngram_top_share=0.05, min_compression_ratio=0.3,
                   min_english_score=0.3),
}
SHARED_FILES = ("r1_long_clean.jsonl", "r1_long_loops.jsonl", "r1_long_truncated.jsonl", "r1_traces_clean.jsonl",
                "r1_traces_loops.jsonl")
SYNTHETIC_ROWS, CHUNK = 20000, 5000

PINNED = {
    ("default", "r1_long_clean.jsonl"):
        "0b10016abd2361a7a272ea2fadbbf3da2049c06250f72244fc2efe66679948ee",
    ("default", "r1_long_loops.jsonl"):
        "22af6fa7bad0eff5dbc5b32b1545bde85b4a1feffe8cb9c9b80d0b92eae29d85",
    ("default", "r1_long_truncated.jsonl"):
        "1031246facf6ce33105327215561891e2c7c57e8bdca3dae75205a0f4e6a8311",
    ("default", "r1_traces_clean.jsonl"):
        "dbed61cb356d03d942ae0e8afea80546ee8182b36a998a2c5c4668303b99f7d8",
    ("default", "r1_traces_loops.jsonl"):
        "ebbc4321658f0f1bc33703fa2720069e64c44c98825bb685827b10f5bc006073",
    ("off", "r1_long_clean.jsonl"):
        "dbdd42c449bcecbf2a562d148fe6c29e1fe2a6348bb3e05cef05e9418716c86f",
    ("off", "r1_long_loops.jsonl"):
        "a13c5553f68337319102c0da448bccc5336be3f2bbe9782bd118b282a14a051a",
    ("off", "r1_long_truncated.jsonl"):
        "369b3f726f12deffad1741059657aff9f1944b691c823d432e36d5acfacc2d72",
    ("off", "r1_traces_clean.jsonl"):
        "86bc57f54ae281d81118bee2c82a7ea6eec835619858c7cf6787d4f98d26b262",
    ("off", "r1_traces_loops.jsonl"):
        "1b1f1a28946fed4b2ff37cb3f07deab9cc681735306409665640e64c1f0f8a0e",
    ("strict", "r1_long_clean.jsonl"):
        "1e4d1b645154e1e8e54245275b8032af0994175e1674d9481a08adcf7c1e03c0",
    ("strict", "r1_long_loops.jsonl"):
        "d40f22ee63804dc75f65c62875282801e8c742ee6ba918bf6d212bf175f6b4c3",
    ("strict", "r1_long_truncated.jsonl"):
        "517e80fecc975ed1cb05d1905407b930e944b56eef11bf2560aa735713d237b6",
    ("strict", "r1_traces_clean.jsonl"):
        "4e9b72ced3955266498e168ff6d9330c573729cd328fb3066ee85a8212689f72",
    ("strict", "r1_traces_loops.jsonl"):
        "8ee49eea5c7cb73dab712c1155ff19a3c40400743e92a5a1482bd29e6a3c0d75",
    ("default", "synthetic 0:5000"):
        "789649f2bf4e9526d8d32e8e1f1397e9edd0ba35685f917ac3079a397015ce56",
    ("off", "synthetic 0:5000"):
        "2bdd25bff7c49e0983edee85dd1545be7948d6ffd3646136c4a1903a55f9f095",
    ("strict", "synthetic 0:5000"):
        "a24c0b4718496490ad4d8d81e3ad2643c3251365b7f620bcc1a6a2f8e6dbf314",
    ("default", "synthetic 5000:10000"):
        "380dab7b8242e0c70fcd270a675db551f4282645d569c806876376757481e752",
    ("off", "synthetic 5000:10000"):
        "b0ff48b240ef6b571471485a90840c2a4f4e2bd0e847a092330ec37d0f55aaf1",
    ("strict", "synthetic 5000:10000"):
        "41431dc23c88f17eb7e5d11c6edcabcd4ff92f06522245b4f24bbdf577ff4c4c",
    ("default", "synthetic 10000:15000"):
        "504a310b58033eeea8019b1bc3a5d1c2d404456dff138446b2c936778fff0418",
    ("off", "synthetic 10000:15000"):
        "d8a0f2f0591026f1d7332941db1092f97a6db2627762761bcc2487c1c0b839b7",
    ("strict", "synthetic 10000:15000"):
        "8f42d551508d5032b0c11139dacd5f4088b7667df35f0485b655a06746172915",
    ("default", "synthetic 15000:20000"):
        "796a278cb14e258c549cbbcd591857d129e3e40b1abd84cd0dec2efb7c9f7d93",
    ("off", "synthetic 15000:20000"):
        "973fce921036253e9c0950d499ced5a1736d69419b5839bbff9493e618475088",
    ("strict", "synthetic 15000:20000"):
        "5d39e7cb2093294212f42dbdb601da6248ebca555aa65e7e2a44b65bb391f8c0",
}


def filters_for(setting: str, compiled: bool | None = None) -> list:
    """The build's quality filters under ``setting``, deciding in Python (``compiled=False``), with
    their compiled code (True), or as a build does (None)."""
    filters = build_filters(BuildConfig(out="x", start=0, stop=1, source="synthetic", **SETTINGS[setting]))
    return [dataclasses.replace(f, compiled=compiled) for f in filters]


def as_judged(example: Example) -> Example:
    """The example as the filters see it: split as the build splits it, or, where the split drops it,
    with its whole response as the reasoning."""
    split = next(split_examples([Example(row=example.row, prompt=example.prompt, response=example.response)]))
    return split if split.kept else Example(row=example.row, prompt=example.prompt, reasoning=example.response)


def shared_examples(name: str) -> list[Example]:
    with open(SHARED / name, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [as_judged(Example(row=row, prompt=record["prompt"], response=record["response"]))
            for row, record in enumerate(rows)]


def synthetic_examples(start: int, stop: int) -> list[Example]:
    examples = []
    for i in range(start, stop):
        row = generate(0, i)
        example = validate(i, {"prompt": row.prompt, "response": row.response})
        if example.kept:
            examples.append(as_judged(example))
    return examples


def decisions(examples: list[Example], filters: list) -> list:
    return [[[check.name, verdict.reason, verdict.detail, sorted(verdict.scores.items())]
             for check in filters for verdict in [check(example)]] for example in examples]


def digest(made: list) -> str:
    return hashlib.sha256(json.dumps(made).encode()).hexdigest()


@pytest.mark.parametrize("how", ["python", "compiled", "just-in-time"])
@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("name", SHARED_FILES)
def test_the_filters_decide_on_every_shared_trace_as_pinned(name, setting, how, request):
    """Python, the native module (what a build uses where it can be built), and numba's
    just-in-time code of the same functions (where it cannot)."""
    if how == "just-in-time":
        request.getfixturevalue("no_native")
    compiled = how != "python"
    made = decisions(shared_examples(name), filters_for(setting, compiled))
    if setting == "default":
        dropped = sum(any(verdict[1] for verdict in row) for row in made)
        assert made and (dropped == 0 if "clean" in name else dropped > 0)
    assert digest(made) == PINNED[setting, name]


@pytest.fixture(scope="module")
def synthetic():
    return {start: synthetic_examples(start, start + CHUNK) for start in range(0, SYNTHETIC_ROWS, CHUNK)}


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize(("start", "compiled"),
                         [(0, False)] + [(start, True) for start in range(0, SYNTHETIC_ROWS, CHUNK)],
                         ids=["python-0"] + [f"compiled-{start}" for start in range(0, SYNTHETIC_ROWS, CHUNK)])
def test_the_filters_decide_on_20000_synthetic_rows_as_pinned(synthetic, start, setting, compiled):
    assert digest(decisions(synthetic[start], filters_for(setting, compiled))) == \
        PINNED[setting, f"synthetic {start}:{start + CHUNK}"]


def test_every_planted_defect_and_every_reason_is_among_the_pinned_rows(synthetic):
    from tzc_data.sources.generator import DEFECT_RATES, planted
    assert {planted(0, i) for i in range(SYNTHETIC_ROWS)} == {"clean", *DEFECT_RATES}
    reasons = {verdict[1] for setting in SETTINGS for row in decisions(synthetic[0], filters_for(setting, True))
               for verdict in row}
    assert reasons == {None, "non_english", "loop", "repeated_paragraphs", "ngram_repetition", "compressible"}
