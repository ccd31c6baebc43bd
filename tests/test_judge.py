"""The judge's rules as specifications: each test plants an effect (or none) and fails when the rule
it checks is broken."""

import math
import random

import numpy as np
import pytest
from scipy import stats

from harness.errors import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_REGRESSION, ConfigError
from harness.judge import SINGLE, TWO_STAGE, Estimate, Thresholds, decide, exit_code
from harness.judge.stats import Prior, TTest, holm, moderated_prior, rounds_test, runs_test, two_stage_p, units_test
from harness.judge.table import format_markdown, format_table


def row(name="c", mean=0.0, se=0.01, df=20, threshold=0.02, **kw):
    """An Estimate whose test is a t on `df` degrees of freedom with this mean and standard error."""
    score = mean / se
    test = TTest(mean, float(stats.t.cdf(score, df)), float(stats.t.sf(score, df)), df + 1, se, df)
    return Estimate(name, test, threshold, **kw)


def test_units_test_is_students_one_sample_t():
    logs = [0.01, -0.02, 0.03, 0.015, -0.005, 0.02]
    t = units_test(logs)
    ref = stats.ttest_1samp(logs, 0.0, alternative="less")
    assert t.p_lower == pytest.approx(ref.pvalue)
    assert t.p_higher == pytest.approx(1 - ref.pvalue)
    assert t.df == 5


def test_one_unit_is_no_test():
    t = units_test([0.3])
    assert (t.p_lower, t.p_higher) == (1.0, 1.0)
    assert math.isinf(t.critical(0.01))


def test_runs_test_moderates_a_cases_own_spread_by_the_prior():
    runs = [100.0, 102.0, 98.0, 101.0, 99.0]
    own = np.var(np.log(runs), ddof=1)
    alone = runs_test(runs, 90.0, None)
    assert alone.df == 4
    assert alone.se == pytest.approx(math.sqrt(own * 1.2))
    shared = runs_test(runs, 90.0, Prior(4 * own, math.inf, 40))
    assert shared.df == 40
    assert shared.se == pytest.approx(math.sqrt(4 * own * 1.2))
    between = runs_test(runs, 90.0, Prior(4 * own, 12.0, 40))
    assert between.df == 16
    assert between.se == pytest.approx(math.sqrt((12 * 4 * own + 4 * own) / 16 * 1.2))
    assert runs_test(runs, 90.0, Prior(4 * own, 60.0, 40)).df == 40  # never more than the pooled df


def _spreads(rng, cases: int, runs: int, prior_df: float):
    """Each case's variance of `runs` normal draws, its true variance drawn from a scaled inverse
    chi-square with prior_df (math.inf: every case the same, 0.05^2)."""
    true = np.full(cases, 0.05**2) if math.isinf(prior_df) else 0.05**2 * prior_df / rng.chisquare(prior_df, cases)
    draws = rng.normal(0.0, np.sqrt(true)[:, None], (cases, runs))
    return list(draws.var(axis=1, ddof=1)), [runs - 1] * cases


def test_moderated_prior_finds_how_much_the_cases_spreads_differ():
    rng = np.random.default_rng(1)
    same = moderated_prior(*_spreads(rng, 400, 5, math.inf))
    assert same.df > 60  # one variance for all: d0 large or infinite
    assert same.sd == pytest.approx(0.05, rel=0.1)
    differ = moderated_prior(*_spreads(rng, 400, 5, 6.0))
    assert 3.0 < differ.df < 12.0
    assert differ.total_df == 1600
    assert moderated_prior([0.01, 0.02], [4, 4]).df == 0.0  # two cases cannot tell: each keeps its own
    assert moderated_prior([], []) is None


def _null_rate(prior_df: float, pool_all: bool = False) -> float:
    """How often an unchanged case is called slower at p < 0.01: 11 cases of 5 baseline runs whose true
    spreads differ as planted (prior_df; math.inf: all alike). pool_all: the broken rule that gives
    every case the pooled sd on the pooled df, however its own runs spread."""
    rng = np.random.default_rng(7)
    calls = trials = 0
    for _ in range(600):
        true = np.full(11, 0.05) if math.isinf(prior_df) else 0.05 * np.sqrt(prior_df / rng.chisquare(prior_df, 11))
        runs = np.exp(rng.normal(0.0, true[:, None], (11, 6)))
        variances = list(np.log(runs[:, :5]).var(axis=1, ddof=1))
        prior = Prior(float(np.mean(variances)), math.inf, 44) if pool_all else moderated_prior(variances, [4] * 11)
        for c in range(11):
            calls += runs_test(list(runs[c, :5]), float(runs[c, 5]), prior).p_lower < 0.01
            trials += 1
    return calls / trials


@pytest.mark.parametrize("prior_df", [math.inf, 4.0])
def test_a_run_of_unchanged_cases_is_called_slower_near_alpha(prior_df):
    assert _null_rate(prior_df) < 0.016


def test_the_pooled_sd_for_every_case_is_too_sure_where_spreads_differ():
    assert _null_rate(4.0, pool_all=True) > 0.016


def test_rounds_test_sees_a_planted_shift_and_not_noise():
    rng = np.random.default_rng(0)
    base = rng.normal(100, 1, 12).tolist()
    assert rounds_test(base, rng.normal(95, 1, 12).tolist()).p_lower < 0.001
    assert rounds_test(base, rng.normal(100, 1, 12).tolist()).p_lower > 0.01


def test_holm_step_down():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def _fwer(rule, rows: int, suspects: int, alpha: float, trials: int, seed: int) -> float:
    """How often any row is rejected when nothing changed, the suspects picked the worst way (the
    smallest stage-1 p first), stage 2 on fresh data."""
    rng = random.Random(seed)
    false = 0
    for _ in range(trials):
        p1 = [rng.random() for _ in range(rows)]
        chosen = set(sorted(range(rows), key=p1.__getitem__)[:suspects])
        q = [rule(p1[i], rng.random() if i in chosen else None, rows, suspects) for i in range(rows)]
        false += min(q) < alpha
    return false / trials


def _closed(p1, p2, m, k):
    return two_stage_p(min(1.0, m * p1), None if p2 is None else min(1.0, k * p2))


def _no_stage1_correction(p1, p2, m, k):  # a broken rule: stage 1 not adjusted for the rows
    return two_stage_p(p1, None if p2 is None else min(1.0, k * p2))


def test_two_stage_keeps_the_family_wise_error_at_alpha():
    bound = 0.05 + 3 * math.sqrt(0.05 * 0.95 / 1500)
    assert _fwer(_closed, rows=8, suspects=2, alpha=0.05, trials=1500, seed=1) <= bound


def test_two_stage_without_the_correction_is_caught_by_the_same_check():
    assert _fwer(_no_stage1_correction, rows=8, suspects=2, alpha=0.05, trials=600, seed=1) > 0.15


def test_two_stage_single_row_has_exactly_its_level():
    rng = random.Random(3)
    hits = sum(two_stage_p(rng.random(), rng.random()) < 0.05 for _ in range(3000)) / 3000
    assert hits == pytest.approx(0.05, abs=3 * math.sqrt(0.05 * 0.95 / 3000))


def test_two_stage_combines_evidence_neither_stage_has_alone():
    p1, p2 = 0.03, 0.004  # stage 1 alone needs p1 <= alpha/2; stage 2 alone is not the rule
    assert p1 > 0.01 / 2
    assert two_stage_p(p1, p2) < 0.01
    assert two_stage_p(p1, None) > 0.01


@pytest.mark.parametrize(
    ("mean", "se", "expected"),
    [
        (-0.10, 0.01, "regression"),
        (0.10, 0.01, "improvement"),
        (0.002, 0.004, "unchanged"),  # interval -0.6%..+1.0%, inside +-2%
        (-0.01, 0.02, "inconclusive"),  # interval -5%..+3%: cannot tell
        (-0.015, 0.002, "unchanged"),  # significant, but inside the threshold
        (-0.025, 0.01, "inconclusive"),  # beyond the threshold, not significant after adjustment
    ],
)
def test_four_verdicts(mean, se, expected):
    others = [row(f"o{i}", 0.0, 0.004) for i in range(4)]
    assert decide([row("c", mean, se), *others], alpha=0.01)[0].status == expected


def test_a_latency_row_regresses_going_up():
    up = row("ttft", 0.2, 0.01, lower_is_better=True, unit="ms")
    assert decide([up], 0.01)[0].status == "regression"
    assert decide([row("tok", 0.2, 0.01)], 0.01)[0].status == "improvement"


def test_inconclusive_rows_say_what_they_could_detect():
    v = decide([row("c", -0.01, 0.02)], 0.01)[0]
    assert v.status == "inconclusive"
    assert v.detectable == pytest.approx(math.expm1(stats.t.isf(0.01, 20) * 0.02))


def test_a_row_that_cannot_be_judged_is_inconclusive_and_not_counted():
    sick = Estimate("gpu", row(mean=-0.5, se=0.01).test, 0.02, why_not="recorded on an unhealthy GPU")
    verdicts = decide([sick, row("c", -0.06, 0.015)], alpha=0.01)
    assert verdicts[0].status == "inconclusive"
    assert "unhealthy" in verdicts[0].note
    assert verdicts[1].status == "regression"  # one row judged: no adjustment for the sick one


def test_multiplicity_is_adjusted():
    alone = decide([row("c", -0.03, 0.01, df=30)], alpha=0.01)[0]
    crowded = decide([row("c", -0.03, 0.01, df=30)] + [row(f"o{i}", 0.0, 0.01) for i in range(30)], alpha=0.01)[0]
    assert alone.status == "regression"
    assert crowded.status == "inconclusive"


def test_a_large_drop_fails_whatever_the_adjustment():
    crowded = [row("c", math.log(0.7), 0.12, df=40, threshold=0.05)] + [row(f"o{i}", 0.0, 0.05) for i in range(20)]
    assert decide(crowded, alpha=0.01, large_drop=0.2)[0].status == "regression"
    assert decide(crowded, alpha=0.01, large_drop=0.0)[0].status != "regression"


@pytest.mark.parametrize("lower_is_better", [False, True])
def test_a_threshold_is_a_fraction_of_the_metric_either_way(lower_is_better):
    """At 5%: a sure move to 0.951x or 1.049x is inside it; to 0.949x or 1.051x, beyond it."""

    def status(fraction):
        e = row("c", math.log1p(fraction), 1e-4, threshold=0.05, lower_is_better=lower_is_better)
        return decide([e], 0.01)[0].status

    worse = 1 if lower_is_better else -1
    assert [status(worse * 0.049), status(worse * 0.051)] == ["unchanged", "regression"]
    assert [status(-worse * 0.049), status(-worse * 0.051)] == ["unchanged", "improvement"]


def test_the_large_drop_guard_fires_beyond_its_own_fraction():
    crowd = [row(f"o{i}", 0.0, 0.05) for i in range(20)]
    at = lambda drop: decide([row("c", math.log1p(-drop), 0.06, df=40, threshold=0.05), *crowd], 0.01, large_drop=0.2)  # noqa: E731
    assert at(0.19)[0].status != "regression"  # 19% is not beyond 20%, however sure
    assert at(0.21)[0].status == "regression"


def test_no_spread_is_certainty_in_the_direction_of_the_change():
    down, up = runs_test([100.0] * 3, 80.0, None), runs_test([100.0] * 3, 120.0, None)
    assert (down.p_lower, down.p_higher) == (0.0, 1.0)
    assert (up.p_lower, up.p_higher) == (1.0, 0.0)
    assert decide([Estimate("c", down, 0.05)], 0.01)[0].status == "regression"


def test_a_side_of_one_round_is_no_test():
    t = rounds_test([100.0], [101.0])
    assert (t.p_lower, t.p_higher) == (1.0, 1.0)
    assert decide([Estimate("c", t, 0.05)], 0.01)[0].status == "inconclusive"


def test_two_stage_spends_half_of_alpha_on_stage_1():
    r = row("c", -0.05, 0.0185, df=40)  # p about 0.005: enough alone at 0.01, not at 0.005
    assert decide([r], 0.01, SINGLE)[0].status == "regression"
    assert decide([r], 0.01, TWO_STAGE)[0].status == "inconclusive"


def test_exit_codes():
    reg, inc = decide([row("a", -0.1, 0.01)], 0.01), decide([row("b", 0.0, 0.05)], 0.01)
    assert exit_code(reg) == EXIT_REGRESSION
    assert exit_code(inc) == EXIT_OK
    assert exit_code(inc, strict=True) == EXIT_INCONCLUSIVE


def test_tables_count_each_verdict_and_name_every_row():
    verdicts = decide([row("a", -0.1, 0.01), row("b", 0.0, 0.05), row("c", 0.0, 0.002)], 0.01)
    text = format_table(verdicts, "the method")
    assert "verdicts: 1 regression, 0 improvement, 1 unchanged, 1 inconclusive, 0 missing" in text
    assert text[-1] == "method: the method"
    md = format_markdown(verdicts, "the method", "A/B")
    assert "**REGRESSION**" in md
    assert "`b`" in md
    assert "could tell a change beyond" in md


def test_config_refuses_unknown_keys_and_bad_values(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.perf]\nthreshhold = 0.1\n")
    with pytest.raises(ConfigError, match="unknown key.*threshhold.*valid keys: threshold"):
        Thresholds.from_pyproject(path)
    path.write_text("[tool.perf]\nalpha = 2\n")
    with pytest.raises(ConfigError, match="alpha"):
        Thresholds.from_pyproject(path)
    path.write_text("[tool.perf]\nthreshold = 0.07\nstrict = true\n[tool.perf.groups]\nserving = 0.1\n")
    t = Thresholds.from_pyproject(path)
    assert (t.default, t.strict, t.for_case("test_serving[x]", "serving")) == (0.07, True, 0.1)
    assert Thresholds.from_pyproject(tmp_path / "absent.toml") == Thresholds()


def test_weighted_holm_steps_by_p_over_weight():
    assert holm([0.01, 0.04, 0.03, 0.005], [1, 1, 1, 1]) == holm([0.01, 0.04, 0.03, 0.005])
    # weight 2 beside two rows of 1: first step 0.004 x 4 / 2, then the others over what is left
    assert holm([0.004, 0.01, 0.3], [2, 1, 1]) == pytest.approx([0.008, 0.02, 0.3])
    with pytest.raises(ValueError, match="positive weight"):
        holm([0.1, 0.2], [1, 0])


def _weighted_fwer(rule, cases: int, trials: int, seed: int, alpha: float = 0.01) -> float:
    """How often any of 1 + cases null rows is rejected, the first weighted as all the cases."""
    rng = random.Random(seed)
    weights = [cases] + [1] * cases
    return sum(min(rule([rng.random() for _ in weights], weights)) < alpha for _ in range(trials)) / trials


def _free_first_row(p, w):  # a broken rule: the weighted row gets alpha / 2 and the rest Holm as before
    return [p[0] * 2, *holm(p[1:])]


def test_weighted_holm_keeps_the_family_error_and_a_free_share_does_not():
    assert _weighted_fwer(holm, cases=10, trials=20000, seed=1) <= 0.0115
    assert _weighted_fwer(_free_first_row, cases=10, trials=20000, seed=1) > 0.0125
