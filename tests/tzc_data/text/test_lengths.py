"""The model-turn distribution: nearest-rank percentiles and the shares that fit the judges' budgets."""

import numpy as np

from tzc_data.text.lengths import distribution, over_budget_warning


def test_percentiles_are_nearest_rank_and_fits_count_turns_at_most_the_budget():
    lengths = np.array([700] * 10 + [768] * 10 + [1000] * 30 + [2048] * 49 + [5000])
    got = distribution(lengths)
    assert got["examples"] == 100 and got["max"] == 5000 and got["mean"] == round(float(lengths.mean()), 1)
    assert got["percentiles"] == {"p1": 700, "p5": 700, "p10": 700, "p50": 1000, "p90": 2048, "p95": 2048,
                                  "p99": 2048}
    assert got["fits"] == {"768": 0.2, "1024": 0.5, "2048": 0.99}
    assert distribution((), counts=np.bincount(lengths)) == got
    assert over_budget_warning(got) and "p99 model turn (2,048)" in over_budget_warning(got)
    assert over_budget_warning(distribution(np.array([500, 600, 900]))) is None
    assert distribution(np.array([], dtype=np.int64))["examples"] == 0
