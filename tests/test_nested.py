"""The A/B's nested test (harness/judge/stats.py: pooled_lean, nested_test) as a specification: pairs of
rounds nest in visits, each visit a fresh pair of processes with a lean of its own. Every test plants
the lean and the noise (or an effect) and fails when the rule is broken."""

import math
import random
import statistics

import pytest

from harness.judge.stats import Lean, nested_test, pooled_lean, units_test


def simulate(rng, cases=11, visits=6, pairs=4, lean_sd=0.0, pair_sd=0.03, effect=0.0, order=0.05):
    """Each case's visits, each a list of (pair log, order): effect + the visit's lean + `order` times the
    pair's order (+-1, opposite within each block of two pairs) + each pair's noise."""
    out = []
    for _ in range(cases):
        case = []
        for _ in range(visits):
            lean, first = rng.gauss(0, lean_sd), rng.choice((-1, 1))
            signs = [first if i % 2 == 0 else -first for i in range(pairs)]
            case.append([(effect + lean + order * o + rng.gauss(0, pair_sd), o) for o in signs])
        out.append(case)
    return out


def rejections(rng, runs, level, lean_of=pooled_lean, **kw):
    """How often a case's one-sided test of a decrease rejects at `level`, and in how many tests."""
    hits = total = 0
    for _ in range(runs):
        run = simulate(rng, **kw)
        lean = lean_of(run)
        for case in run:
            hits += nested_test(case, lean).p_lower < level
            total += 1
    return hits / total, total


def test_pooled_lean_recovers_the_planted_lean_variance():
    run = simulate(random.Random(0), cases=60, lean_sd=0.02, pair_sd=0.04)
    lean = pooled_lean(run)
    assert lean.variance == pytest.approx(0.02**2, rel=0.3)
    assert pooled_lean(simulate(random.Random(1), cases=60, pair_sd=0.04)).variance < 0.2 * 0.02**2


def test_the_lean_s_degrees_of_freedom_are_what_its_estimate_varies_by():
    """Where the pairs' noise is as large a part of the visits' spread as the lean, the estimate varies
    as a chi-square of about 12 df, not of the visits' 55: Satterthwaite's df follow it."""
    rng = random.Random(5)
    leans = [pooled_lean(simulate(rng, cases=11, lean_sd=0.02, pair_sd=0.04)) for _ in range(400)]
    values = [lean.variance for lean in leans]
    empirical = 2 * statistics.fmean(values) ** 2 / statistics.variance(values)
    assert 0.5 * empirical < statistics.median(lean.df for lean in leans) < 1.5 * empirical
    assert 11 * 5 > 3 * empirical  # the visits' df alone would overstate it


def test_with_leaning_visits_the_level_holds_and_ignoring_the_lean_breaks_it():
    kw = dict(lean_sd=0.02, pair_sd=0.03)
    rate, n = rejections(random.Random(2), 300, 0.01, **kw)
    assert rate < 0.01 + 3 * math.sqrt(0.01 * 0.99 / n)
    broken, _ = rejections(random.Random(2), 300, 0.01, lean_of=lambda run: Lean(0.0, 1e9), **kw)
    assert broken > 0.04  # pairs treated as independent units: about 8 in 100


def test_without_lean_pairs_count_and_a_5_percent_drop_is_seen_where_visits_alone_cannot():
    rng = random.Random(3)
    level = 0.01 / 2 / 11  # the plan's stage-1 level over the quick tier's 11 cases
    nested = visits_only = 0
    for _ in range(200):
        run = simulate(rng, cases=11, pair_sd=0.05, effect=math.log(0.95))
        lean = pooled_lean(run)
        nested += nested_test(run[0], lean).p_lower < level
        visits_only += units_test([sum(x for x, _ in v) / len(v) for v in run[0]]).p_lower < level
    assert nested / 200 > 0.5  # 58%: the lean's own uncertainty (its Satterthwaite df) costs some
    assert visits_only / 200 < 0.4  # 26%


def test_the_order_of_rounds_is_an_effect_not_noise():
    run = simulate(random.Random(4), cases=11, pair_sd=0.01, order=0.08)
    assert nested_test(run[0], Lean(0.0, 40)).se < 0.01  # 0.01 / sqrt(24) and a little: the 8% is removed
    blind = [[(x, 1) for x, _ in v] for v in run[0]]  # broken: the orders not told apart
    assert nested_test(blind, Lean(0.0, 40)).se > 0.014


def test_its_degrees_of_freedom_are_satterthwaites():
    case = [[(0.01, 1), (0.03, -1), (-0.01, 1)], [(0.02, -1), (0.0, 1), (0.01, -1)]]
    no_lean = nested_test(case, Lean(0.0, 40))
    assert no_lean.df == pytest.approx(3)  # the within-visit df alone, less one for the order effect
    leaning = nested_test(case, Lean(1e-3, 40))
    assert 40 <= leaning.df < 48  # the lean dominates: about its df
    assert leaning.se > no_lean.se


def test_without_a_pooled_lean_it_is_students_t_over_the_visits():
    case = [[(0.01, 1), (0.03, -1)], [(0.02, 1), (0.0, -1)], [(-0.01, -1), (0.02, 1)]]
    t = nested_test(case, Lean(math.nan, 0))
    assert t.p_lower == pytest.approx(units_test([0.02, 0.01, 0.005]).p_lower)
