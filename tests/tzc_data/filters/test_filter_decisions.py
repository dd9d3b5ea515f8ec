"""The quality filters' decisions on every shared real trace, pinned: a change that makes them
faster must decide exactly as before (each filter's reason, detail and scores, on every trace).

Every trace of ../shared/data that has a response is split as a build splits it; a trace the split
drops (an unterminated ``<think>``, most real loops) is judged with its whole response as the
reasoning, so the filters see every trace. Each file's decisions are hashed. A change that means
to decide differently re-pins the digests and says so in its commit.
"""

import hashlib
import json

import pytest
from conftest import SHARED

from tzc_data.build.config import BuildConfig
from tzc_data.build.rowstage import build_filters
from tzc_data.record import Example
from tzc_data.text.format import split_examples

PINNED = {
    "r1_long_clean.jsonl": "0b10016abd2361a7a272ea2fadbbf3da2049c06250f72244fc2efe66679948ee",
    "r1_long_loops.jsonl": "22af6fa7bad0eff5dbc5b32b1545bde85b4a1feffe8cb9c9b80d0b92eae29d85",
    "r1_long_truncated.jsonl": "1031246facf6ce33105327215561891e2c7c57e8bdca3dae75205a0f4e6a8311",
    "r1_traces_clean.jsonl": "dbed61cb356d03d942ae0e8afea80546ee8182b36a998a2c5c4668303b99f7d8",
    "r1_traces_loops.jsonl": "ebbc4321658f0f1bc33703fa2720069e64c44c98825bb685827b10f5bc006073",
}


def decisions(name: str) -> list:
    filters = build_filters(BuildConfig(out="x", start=0, stop=1, source="synthetic"))
    with open(SHARED / name, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    made = []
    for row, record in enumerate(rows):
        example = next(split_examples([Example(row=row, prompt=record["prompt"], response=record["response"])]))
        if not example.kept:
            example = Example(row=row, prompt=record["prompt"], reasoning=record["response"])
        made.append([[check.name, verdict.reason, verdict.detail, sorted(verdict.scores.items())]
                     for check in filters for verdict in [check(example)]])
    return made


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_filters_decide_on_every_shared_trace_as_pinned(name):
    made = decisions(name)
    dropped = sum(any(verdict[1] for verdict in row) for row in made)
    assert made and (dropped == 0 if "clean" in name else dropped > 0)
    assert hashlib.sha256(json.dumps(made).encode()).hexdigest() == PINNED[name]
