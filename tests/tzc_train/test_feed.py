"""The data a run reads (tzc_train/feed.py): hosts' shares of the train batches, the feed that stops
before --time-limit, the eval set."""

import json

import jax
import numpy as np
import pytest
import tiny_runs
from tiny_runs import run_config

from tzc_train.feed import Feed, eval_set, host_batches
from tzc_train.session import Deadline


@pytest.fixture(scope="module")
def short_build(tmp_path_factory, tiny_model_path):
    return tiny_runs.short_build(tmp_path_factory, tiny_model_path)


def test_hosts_read_disjoint_shares_of_the_same_global_batches(short_build, monkeypatch):
    """Two hosts of a multi-host job: each reads half of every global batch, and together they read
    exactly what one host reads."""
    def first_batches(index, count):
        monkeypatch.setattr(jax, "process_index", lambda: index)
        monkeypatch.setattr(jax, "process_count", lambda: count)
        batches = host_batches(str(short_build), 8, seed=0)
        return [next(batches)["tokens"] for _ in range(3)]

    alone = first_batches(0, 1)
    host0, host1 = first_batches(0, 2), first_batches(1, 2)
    for whole, a, b in zip(alone, host0, host1):
        assert a.shape == b.shape == (4, whole.shape[1])
        rows = lambda x: sorted(map(bytes, x))  # noqa: E731
        assert rows(np.concatenate([a, b])) == rows(whole) and not set(rows(a)) & set(rows(b))


def test_eval_uses_a_fixed_bounded_subset(short_build):
    manifest = json.loads((short_build / "manifest.json").read_text())
    config = run_config(short_build, "unused", eval_rows=5)
    first, note = eval_set(config, manifest)
    again, _ = eval_set(config, manifest)
    assert len(first) == 1 and "4 of the eval split's" in note  # whole batches of 4 within 5 rows
    np.testing.assert_array_equal(first[0]["tokens"], again[0]["tokens"])
    assert eval_set(run_config(short_build, "unused", eval_rows=0), manifest) == ([], "eval: off (--eval-rows 0)")
    assert "fewer than one batch" in eval_set(run_config(short_build, "u", batch_size=64), manifest)[1]


def test_the_feed_counts_tokens_and_stops_when_the_next_steps_would_not_fit():
    now = [0.0]
    batches = iter([{"segment_ids": np.array([[1, 1, 0], [1, 2, 2]])}] * 30)
    feed = Feed(batches, Deadline(limit=200.0, started=0.0, reserve=10.0, clock=lambda: now[0]))
    times = []
    for step_seconds in [50.0, 5.0, 20.0] + [5.0] * 30:  # compilation, then steps
        try:
            next(feed)
        except StopIteration:
            break
        times.append(now[0])
        now[0] += step_seconds
    # the longest step after the first is 20 s: the feed stops at t = 150 (150 + 2 x 20 + 10 = 200)
    assert feed.stopped == "time limit" and times[-1] == 145.0 and len(times) == 18
    assert feed.tokens(3) == 15 and feed.tokens(99) == 18 * 5


def test_a_resumed_feed_budgets_like_a_fresh_one():
    """tunix draws and discards a resumed run's trained batches before the first step: those draws
    are not steps, and the interval after them holds the compilation, so a resumed session stops
    where a fresh one with the same step times would (a 120 s compile, 5 s steps)."""
    def stop_time(skip: int) -> tuple[float, int]:
        now = [0.0]
        batch = {"segment_ids": np.array([[1, 1, 0]])}
        feed = Feed(iter([batch] * 2000), Deadline(limit=900.0, started=0.0, reserve=60.0, clock=lambda: now[0]),
                    skip=skip)
        for _ in range(skip):
            next(feed)
            now[0] += 0.01
        steps = 0
        for seconds in [120.0] + [5.0] * 1000:
            try:
                next(feed)
            except StopIteration:
                return round(now[0] - skip * 0.01, 6), steps
            steps += 1
            now[0] += seconds
        raise AssertionError("the feed never stopped")

    fresh, resumed = stop_time(0), stop_time(300)
    assert resumed == fresh and fresh[1] == 143  # 120 + 142 x 5 = 830 s: the 143rd step would end past 900 - 60
