"""The gate's latency rows: serving at a fixed request rate, gated on p99 TTFT, p99 TPOT and goodput."""

import numpy as np
import pytest

import harness.baseline.latency as latency
from harness.__main__ import main
from harness.baseline.gate import SUITE_ROW, Thresholds, compare, method_line
from harness.baseline.record import merge_runs
from harness.baseline.run import gate_this_run
from harness.errors import EXIT_OK, EXIT_REGRESSION, ConfigError
from harness.files import write_json_atomic
from harness.results import ResultsFile

CASE = "test_serving[small-paged-mixed16-rate2]"
TTFT, TPOT, GOODPUT = (f"{CASE} {m}" for m in ("ttft_ms_p99", "tpot_ms_p99", "goodput"))


def has_regression(verdicts):
    return any(v.status == "regression" for v in verdicts)


def values(centre, seed, spread=0.02, n=9):
    return np.random.default_rng(seed).normal(centre, spread * centre, n).tolist()


def serving(name=CASE, ttft=200.0, tpot=40.0, goodput=None, rate=2.0, seed=0, n=9):
    """A serving case whose every round took the same 1 s (throughput unchanged between sides), with its
    per-round latency metrics centred on the given values."""
    latency_rounds = {"ttft_ms_p99": values(ttft, seed, n=n), "tpot_ms_p99": values(tpot, seed + 1, n=n)}
    if goodput is not None:
        latency_rounds["goodput"] = values(goodput, seed + 2, n=n)
    info = {"tokens": 640, "kind": "serving", "request_rate": rate, "round_latency": latency_rounds}
    return {"name": name, "stats": {"data": [1.0] * n}, "extra_info": info}


def doc(*benches):
    return {"machine_info": {"slug": "test-machine"}, "benchmarks": list(benches)}


def judged(base, now, thresholds=None):
    return {v.name: v for v in compare(doc(base), doc(now), thresholds or Thresholds())}


def test_p99_ttft_up_50_percent_in_every_round_is_a_regression_and_exits_10(tmp_path, capsys):
    verdicts = judged(serving(), serving(ttft=300.0, seed=10))
    assert verdicts[TTFT].status == "regression"
    assert verdicts[TTFT].change == pytest.approx(0.5, abs=0.05)  # the metric's own change: up 50%
    assert verdicts[TTFT].unit == "ms"
    assert verdicts[TTFT].lower_is_better
    assert verdicts[TPOT].status == "unchanged"
    assert verdicts[CASE].status == "unchanged"  # throughput did not move
    base, now = tmp_path / "base.json", tmp_path / "now.json"
    write_json_atomic(base, doc(serving()))
    write_json_atomic(now, doc(serving(ttft=300.0, seed=10)))
    assert main(["compare", str(base), str(now)]) == EXIT_REGRESSION
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(TTFT))
    assert "REGRESSION" in row
    assert " ms " in row
    assert "latency row(s)" in out


def test_the_same_latencies_pass():
    verdicts = judged(serving(goodput=1.5), serving(goodput=1.5))
    assert {v.status for v in verdicts.values()} == {"unchanged"}
    assert set(verdicts) == {CASE, TTFT, TPOT, GOODPUT}
    assert not has_regression(list(verdicts.values()))


def test_goodput_down_is_a_regression():
    verdicts = judged(serving(goodput=2.0), serving(goodput=1.2, seed=10))
    assert verdicts[GOODPUT].status == "regression"
    assert verdicts[GOODPUT].change == pytest.approx(-0.4, abs=0.05)
    assert verdicts[GOODPUT].unit == "req/s"
    assert not verdicts[GOODPUT].lower_is_better


def test_goodput_against_other_slos_is_not_compared():
    """Goodput counts requests within the SLOs: measured against other SLOs it is another quantity."""
    base, now = serving(goodput=2.0), serving(goodput=1.2, seed=10)
    base["extra_info"]["slo_ms"], now["extra_info"]["slo_ms"] = {"ttft": 2000.0}, {"ttft": 1000.0}
    verdicts = judged(base, now)
    assert GOODPUT not in verdicts
    assert TTFT in verdicts


def test_latency_of_a_run_with_failed_requests_is_never_a_verdict():
    """A server that drops its slowest requests would show a better p99: such rows are not judged."""
    now = serving(ttft=100.0, seed=10)
    now["extra_info"]["failed_requests"] = 3
    verdicts = judged(serving(), now)
    assert verdicts[TTFT].status == "inconclusive"
    assert "failed requests" in verdicts[TTFT].note


def test_goodput_up_and_latency_down_are_improvements():
    verdicts = judged(serving(goodput=1.2), serving(ttft=100.0, tpot=20.0, goodput=2.0, seed=10))
    assert [verdicts[n].status for n in (TTFT, TPOT, GOODPUT)] == ["improvement"] * 3
    assert not has_regression(list(verdicts.values()))


def test_every_request_at_once_is_not_latency_gated():
    """request_rate None: every request at t=0, a queue rather than a service level."""
    verdicts = judged(serving(rate=None), serving(ttft=600.0, rate=None, seed=10))
    assert set(verdicts) == {CASE}
    assert "latency row" not in method_line(doc(serving(rate=None)), doc(serving(rate=None)), Thresholds())
    one_side = judged(serving(), serving(ttft=600.0, rate=None, seed=10))  # a finite rate on one side only
    assert set(one_side) == {CASE}


def test_a_metric_only_one_side_has_is_not_gated():
    verdicts = judged(serving(goodput=2.0), serving(seed=10))  # this run was not given --goodput
    assert GOODPUT not in verdicts
    assert {TTFT, TPOT} <= set(verdicts)


def _direction_is_right() -> bool:
    """TTFT down 50% must not fail while TTFT up 50% must, and goodput the other way round."""
    ttft_down = judged(serving(), serving(ttft=100.0, seed=10))[TTFT].status
    ttft_up = judged(serving(), serving(ttft=300.0, seed=10))[TTFT].status
    goodput_up = judged(serving(goodput=1.0), serving(goodput=1.5, seed=10))[GOODPUT].status
    goodput_down = judged(serving(goodput=1.5), serving(goodput=1.0, seed=10))[GOODPUT].status
    return (ttft_down, ttft_up, goodput_up, goodput_down) == ("improvement", "regression", "improvement", "regression")


def test_direction_matters_and_a_gate_that_ignored_it_would_be_refused(monkeypatch):
    assert _direction_is_right()
    # mutants: every metric judged like throughput (higher is better), then every one like latency
    monkeypatch.setattr(latency, "LOWER_IS_BETTER", frozenset())
    assert not _direction_is_right()
    monkeypatch.setattr(latency, "LOWER_IS_BETTER", frozenset({"ttft_ms_p99", "tpot_ms_p99", "goodput"}))
    assert not _direction_is_right()


def test_the_latency_threshold_is_read_checked_and_applied(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.perf]\nlatency_threshold = 0.6\n")
    loose = Thresholds.from_pyproject(tmp_path / "pyproject.toml")
    assert loose.latency_threshold == 0.6
    assert Thresholds().latency_threshold == 0.10
    verdicts = judged(serving(), serving(ttft=300.0, seed=10), loose)
    assert verdicts[TTFT].status == "unchanged"  # +50% is within 60%
    assert verdicts[TTFT].threshold == 0.6
    with pytest.raises(ConfigError, match="latency_threshold"):
        Thresholds(latency_threshold=1.5)


def test_latency_rows_join_holms_adjustment():
    """A row significant alone (p ~ 0.004 on 5 + 5 rounds) is not after adjusting over the 3 rows."""
    base, now = serving(n=5), serving(ttft=240.0, seed=10, n=5)  # +20%: beyond the threshold, not a large drop
    adjusted = judged(base, now)[TTFT]
    assert 0.01 < adjusted.p_value < 0.02  # 3 x 0.004
    assert adjusted.status == "inconclusive"
    assert judged(base, now, Thresholds(alpha=0.02))[TTFT].status == "regression"


RATES = (1.0, 2.0, 4.0)  # a rate sweep: three cases, so each metric's run-to-run spread has 6 df


def sweep(ttft=200.0, goodput=None, seed=0, slow_rate=None):
    """One serving case per rate; the case at slow_rate (if any) has its p99 TTFT 1.5x."""
    return doc(
        *(
            serving(
                CASE.replace("rate2", f"rate{r:g}"), ttft * (1.5 if r == slow_rate else 1), 40.0, goodput, r, seed + i
            )
            for i, r in enumerate(RATES)
        )
    )


def pooled_baseline(ttft_runs, goodput=None):
    return merge_runs([sweep(t, goodput, seed=10 * i) for i, t in enumerate(ttft_runs)])


def test_a_pooled_baseline_keeps_each_runs_latency_median_and_is_tested_against_the_runs():
    base = pooled_baseline([200.0, 210.0, 190.0], goodput=1.5)
    result = base.get(CASE).result
    assert result.run_latency["ttft_ms_p99"] == pytest.approx([200, 210, 190], rel=0.03)
    assert len(result.round_latency["ttft_ms_p99"]) == 27  # every run's rounds
    assert base.to_dict()["benchmarks"][1]["extra_info"]["run_latency"] == result.run_latency
    slower = sweep(goodput=1.5, seed=99, slow_rate=2.0)
    verdicts = {v.name: v for v in compare(base, slower, Thresholds())}
    assert verdicts[TTFT].status == "regression"
    assert [v.name for v in verdicts.values() if v.status == "regression"] == [TTFT]
    assert SUITE_ROW in verdicts  # from the three cases' throughput only
    assert "9 against the baseline runs" in method_line(base, slower, Thresholds())
    assert not has_regression(compare(base, sweep(goodput=1.5, seed=99), Thresholds()))


def test_appending_to_a_pooled_history_keeps_every_runs_latency_rounds():
    from harness.baseline.record import append_runs

    history = append_runs(pooled_baseline([200.0, 210.0]), merge_runs([sweep(190.0, seed=7)]))
    result = history.get(CASE).result
    assert len(result.round_latency["ttft_ms_p99"]) == 27  # three runs of nine rounds, none lost
    assert result.run_latency["ttft_ms_p99"] == pytest.approx([200, 210, 190], rel=0.03)
    assert TTFT in {v.name for v in compare(history, sweep(seed=99), Thresholds())}


def test_a_zero_goodput_falls_back_to_the_rounds():
    base = pooled_baseline([200.0, 200.0, 200.0], goodput=1.0)
    zero = base.get(CASE).result
    zero.round_latency["goodput"], zero.run_latency["goodput"] = [0.0] * 27, [0.0] * 3
    now = sweep(goodput=1.0, seed=99)
    now["benchmarks"][1]["extra_info"]["round_latency"]["goodput"] = [0.0] * 9
    verdicts = {v.name: v for v in compare(base, now, Thresholds())}
    assert verdicts[GOODPUT].status == "unchanged"
    assert verdicts[GOODPUT].change == 0
    assert "8 against the baseline runs and 1 on the rounds" in method_line(base, now, Thresholds())


def test_latency_rows_are_in_the_pytest_gates_table(tmp_path):
    """--benchmark-compare prints gate_this_run's lines: the latency rows follow their case."""
    baseline = tmp_path / "baseline.json"
    write_json_atomic(baseline, doc(serving(goodput=2.0)))
    current = ResultsFile.from_dict(doc(serving(ttft=300.0, goodput=2.0, seed=10)))
    outcome = gate_this_run(current, Thresholds(), tmp_path / "baselines", tmp_path / "results", baseline)
    names = [line.split("  ")[0].strip() for line in outcome.lines[2:6]]
    assert names == [CASE, GOODPUT, TPOT, TTFT]
    assert outcome.exit_code == EXIT_REGRESSION
    same = ResultsFile.from_dict(doc(serving(goodput=2.0, seed=10)))
    assert gate_this_run(same, Thresholds(), tmp_path / "b", tmp_path / "r", baseline).exit_code == EXIT_OK
