"""The stored gate's suite row: the mean of every case against each baseline run's, half of alpha."""

import numpy as np
import pytest

from harness.baseline.gate import SUITE_ROW, Thresholds, compare, method_line
from tests.test_gate import bench, doc, has_regression, pooled, rounds


def _files(case_spread, now_factor, cases=10, seed=0, runs=5):
    """A baseline of `runs` runs whose cases each wander by case_spread from run to run (independently),
    and a run now with every case scaled by now_factor (seconds)."""
    rng = np.random.default_rng(seed)
    base = {
        "machine_info": {"slug": "m"},
        "benchmarks": [
            pooled(f"test_decode[c{i}]", (1 + rng.normal(0, case_spread, runs)).tolist(), seed=10 * i)
            for i in range(cases)
        ],
    }
    now = doc(
        *(
            bench(f"test_decode[c{i}]", rounds(now_factor * (1 + rng.normal(0, case_spread)), 0.005, i))
            for i in range(cases)
        )
    )
    return base, now


def _suite(case_spread, now_factor, cases=10, seed=0, runs=5):
    return {v.name: v for v in compare(*_files(case_spread, now_factor, cases, seed, runs), Thresholds())}


def test_a_slowdown_of_every_case_fails_the_suite_row_where_most_cases_cannot_tell():
    verdicts = _suite(case_spread=0.06, now_factor=1.2, seed=1)
    suite = verdicts.pop(SUITE_ROW)
    assert sum(v.status == "regression" for v in verdicts.values()) < 5  # most cases: within their noise
    assert suite.status == "regression"
    assert suite.change == pytest.approx(-0.16, abs=0.03)
    assert "10 cases, against the suite means of 5 baseline runs (4 df)" in suite.note


def test_the_suite_row_stays_quiet_on_noise():
    for seed in range(20):
        verdicts = _suite(case_spread=0.06, now_factor=1.0, seed=seed)
        assert verdicts[SUITE_ROW].status != "regression"
        assert not has_regression(list(verdicts.values()))


def test_the_suite_row_does_not_treat_the_cases_of_a_run_as_independent():
    """A machine-wide slow spell moves every case of a run together. Cases that moved 8% together in
    each baseline run (their suite means differ by 8%) leave an 8% drop of the whole suite unproven."""
    names = [f"test_decode[c{i}]" for i in range(10)]
    spells = [1.0, 1.08, 0.93]  # the machine's phase during each baseline run, shared by every case
    base = {"machine_info": {"slug": "m"}, "benchmarks": [pooled(n, spells, seed=i) for i, n in enumerate(names)]}
    now = doc(*(bench(n, rounds(1.09, 0.002, i)) for i, n in enumerate(names)))
    suite = {v.name: v for v in compare(base, now, Thresholds())}[SUITE_ROW]
    assert suite.change == pytest.approx(-0.08, abs=0.02)
    assert suite.status == "inconclusive"  # across cases as independent samples, p would be ~0


def test_no_suite_row_without_several_baseline_runs():
    base = doc(*(bench(f"test_decode[c{i}]", rounds(1.0, 0.01, i)) for i in range(5)))
    now = doc(*(bench(f"test_decode[c{i}]", rounds(1.2, 0.01, i + 9)) for i in range(5)))
    verdicts = compare(base, now, Thresholds())
    assert SUITE_ROW not in {v.name for v in verdicts}
    assert "single-run baseline" in method_line(base, now, Thresholds())
    two = {
        "machine_info": {"slug": "m"},
        "benchmarks": [pooled(f"test_decode[c{i}]", [1.0, 1.02, 0.98]) for i in (0, 1)],
    }
    assert SUITE_ROW not in {v.name for v in compare(two, now, Thresholds())}
    assert "no suite row" in method_line(two, now, Thresholds())  # the method line says so, not the opposite


def test_the_suite_row_holds_half_of_alpha():
    """Beside 10 cases the suite row is first tested at alpha / 2, not alpha / 11: from 5 runs (4 df)
    a row at alpha / 11 could call only changes about 1.7 times larger."""
    suites = [_suite(case_spread=0.03, now_factor=1.07, seed=seed)[SUITE_ROW] for seed in range(5)]
    assert [s.status for s in suites] == ["regression"] * 5  # each about 6.5% down; at alpha / 11, 2 of 5 pass
    assert "the suite row weighted as the rest together" in method_line(*_files(0.03, 1.07))
