"""The A/B's plan: how much each case gets, fixed before any timed round, and stage 2's suspects."""

import pytest
from scipy import stats

from harness.ab.plan import Plan, allocate, reps_for, suspects, sweeps_of
from harness.judge.stats import TTest


def test_a_round_lasts_about_round_s_and_both_sides_repeat_the_same_count():
    assert reps_for([0.003, 0.004], 0.1) == 34  # from the faster side
    assert reps_for([0.5, 0.4], 0.1) == 1
    assert reps_for([0.003], 0) == 1


@pytest.mark.parametrize(
    ("block_s", "seconds", "sweeps", "expected"),
    [
        (0.4, 12.0, 8, (8, 4)),  # a decode step: one visit per sweep, 30 blocks shared out
        (2.0, 12.0, 8, (6, 1)),  # long blocks: fewer visits, one block each
        (9.0, 12.0, 8, (2, 1)),  # a serving block longer than the share: two visits all the same
        (9.0, 12.0, 1, (1, 1)),  # unless there is one sweep
        (0.4, 40.0 / 2, 12, (12, 4)),  # stage 2's share of one of two suspects
    ],
)
def test_allocation(block_s, seconds, sweeps, expected):
    assert allocate(block_s, seconds, sweeps) == expected


def test_visits_are_spread_over_the_sweeps_from_the_first():
    assert sweeps_of(8, 8) == set(range(8))
    assert sweeps_of(2, 8) == {0, 4}
    assert sweeps_of(1, 8) == {0}
    assert sweeps_of(3, 8) == {0, 2, 5}


def t(mean, se=0.01, units=8):
    df = units - 1
    return TTest(mean, float(stats.t.cdf(mean / se, df)), float(stats.t.sf(mean / se, df)), units, se, df)


def test_suspects_lean_slower_with_an_interval_beyond_the_threshold_smallest_p_first():
    tests = {
        "clear drop": t(-0.06, 0.005),  # p tiny: a suspect too (stage 2 adds to it, and it stays judged)
        "drop": t(-0.03, 0.02),
        "small drop, narrow": t(-0.005, 0.002),  # its interval rules out a 2% drop
        "gain": t(0.03, 0.02),
        "one visit": TTest(-0.1, 1.0, 1.0, 1),
    }
    assert suspects(tests, 0.02, 5) == ["clear drop", "drop"]
    assert suspects(tests, 0.02, 1) == ["clear drop"]
    assert suspects(tests, 0.02, 0) == []


def test_a_plan_refuses_nonsense():
    with pytest.raises(ValueError, match="sweeps"):
        Plan(sweeps=0)
    with pytest.raises(ValueError, match="case_s"):
        Plan(case_s=0)
