"""The gate's latency rows: serving under a fixed request rate, gated on p99 TTFT, p99 TPOT and goodput.

A serving case offered a finite load (CaseResult.request_rate set; None means every request at t=0,
which measures a queue, not a service level) keeps each timed round's ROUND_LATENCY metrics in
CaseResult.round_latency. For every such case on both sides, each metric both sides have is one more
row of the gate, named "<case> <metric>" (`test_serving[small-paged-mixed16-rate2] ttft_ms_p99`):

- direction: p99 TTFT and p99 TPOT regress when they go UP, goodput when it goes DOWN. The row's
  change is the metric's own (TTFT up 50% reads +50%); it regresses when the change for the worse
  exceeds `[tool.perf] latency_threshold` and the one-sided p, adjusted, is below alpha;
- the test is the throughput rows' (rows.py): with a baseline pooled from several runs (run_latency,
  each run's median), this run's median against the baseline runs, on the metric's run-to-run
  spread pooled over the gated cases where that is larger than the case's own; with a single-run
  baseline, a test on the rounds; where a value is 0 (goodput can be), Mann-Whitney U alone, with
  no interval (such a row is never "unchanged");
- the rows join the throughput rows in the judge's adjustment (harness/judge, decide);
- no machine-speed correction: under a fixed arrival rate latency is not proportional to how fast
  the machine is (near saturation a 10% slower machine queues far more than 10% longer, and goodput
  counts requests against fixed SLOs), so dividing by the reference forward would not be sound. The
  rows compare raw values.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats

from harness.baseline.speed import CaseData, run_noise
from harness.judge import Estimate, Thresholds
from harness.judge.stats import Prior, TTest, rounds_test, runs_test
from harness.results import ROUND_LATENCY, BenchRecord

LOWER_IS_BETTER = frozenset({"ttft_ms_p99", "tpot_ms_p99"})
UNITS = {"ttft_ms_p99": "ms", "tpot_ms_p99": "ms", "goodput": "req/s"}


def gated_metrics(bench: BenchRecord) -> dict[str, list[float]]:
    """The latency metrics a case is gated on, each with its value in every timed round ({} when none)."""
    result = bench.result
    if result.request_rate is None or not result.round_latency:
        return {}
    return {m: [float(x) for x in result.round_latency[m]] for m in ROUND_LATENCY if result.round_latency.get(m)}


@dataclass(frozen=True)
class LatencyRow:
    """One latency metric of one case on both sides, raw (see the module docstring)."""

    case: str
    metric: str
    data: CaseData  # base_runs: each baseline run's median ([] unless two or more runs were pooled)
    unreliable: bool

    @property
    def name(self) -> str:
        return f"{self.case} {self.metric}"


def latency_rows(base: dict[str, BenchRecord], now: dict[str, BenchRecord]) -> list[LatencyRow]:
    """The rows of every case on both sides that has latency metrics on both sides, sorted by case."""
    rows = []
    for name in sorted(base.keys() & now.keys()):
        b, n = gated_metrics(base[name]), gated_metrics(now[name])
        per_run = base[name].result.run_latency or {}
        sides = (base[name].result, now[name].result)
        # an unhealthy GPU, or failed requests (their latencies are missing from the percentiles): not judged
        unhealthy = any(r.gpu_healthy is False or (r.failed_requests or 0) > 0 for r in sides)
        same_slos = base[name].result.slo_ms == now[name].result.slo_ms  # goodput counts against them
        for metric in (m for m in ROUND_LATENCY if m in b and m in n and (m != "goodput" or same_slos)):
            runs = [float(x) for x in per_run.get(metric) or []]
            runs = runs if len(runs) >= 2 else []
            rows.append(LatencyRow(name, metric, CaseData(b[metric], n[metric], runs, 0.0), unhealthy))
    return rows


def _positive(values: list[float]) -> bool:
    return all(x > 0 for x in values)


def noise_by_metric(rows: list[LatencyRow]) -> dict[str, Prior | None]:
    """Each metric's run-to-run spread of log values, pooled over the rows whose baseline runs allow logs."""
    return {
        m: run_noise([r.data for r in rows if r.metric == m and _positive(r.data.base_runs)]) for m in ROUND_LATENCY
    }


def _against_runs(row: LatencyRow, noise: Prior | None) -> bool:
    """Tested against the baseline runs (else on the rounds): pooled runs, a known spread, logs defined."""
    runs = row.data.base_runs
    return noise is not None and bool(runs) and _positive([*runs, statistics.median(row.data.now_rounds)])


def _with_zeros(base: list[float], now: list[float]) -> TTest:
    """Mann-Whitney U where a value is 0: no interval; the change from the medians (0 -> x reads as +inf)."""
    b, n = statistics.median(base), statistics.median(now)
    if len(set(base) | set(now)) == 1:  # the same value in every round on both sides: no change at all
        return TTest(0.0, 1.0, 1.0, min(len(base), len(now)), 0.0, 1)
    mean = 0.0 if b == n else (math.log(n / b) if b > 0 and n > 0 else math.copysign(math.inf, n - b))
    lower = float(stats.mannwhitneyu(now, base, alternative="less").pvalue)
    higher = float(stats.mannwhitneyu(now, base, alternative="greater").pvalue)
    return TTest(mean, lower, higher, min(len(base), len(now)))


def latency_row(row: LatencyRow, thresholds: Thresholds, noise: Prior | None) -> Estimate:
    data = row.data
    now_med = statistics.median(data.now_rounds)
    if _against_runs(row, noise):
        test = runs_test(data.base_runs, now_med, noise)
    elif _positive(data.base_rounds + data.now_rounds):
        test = rounds_test(data.base_rounds, data.now_rounds)
    else:
        test = _with_zeros(data.base_rounds, data.now_rounds)
    return Estimate(
        row.name,
        test,
        thresholds.latency_threshold,
        unit=UNITS[row.metric],
        lower_is_better=row.metric in LOWER_IS_BETTER,
        base=statistics.median(data.base_rounds),
        now=now_med,
        why_not="an unhealthy GPU or failed requests" if row.unreliable else "",
    )


def latency_estimates(base: dict[str, BenchRecord], now: dict[str, BenchRecord], t: Thresholds) -> list[Estimate]:
    """One row per latency metric (none for a case without a finite request rate on both sides)."""
    rows = latency_rows(base, now)
    noise = noise_by_metric(rows)
    return [latency_row(row, t, noise[row.metric]) for row in rows]


def latency_method(base: dict[str, BenchRecord], now: dict[str, BenchRecord], thresholds: Thresholds) -> str:
    """The latency rows' part of the method line ("" when there are none)."""
    rows = latency_rows(base, now)
    if not rows:
        return ""
    noise = noise_by_metric(rows)
    runs = sum(_against_runs(r, noise[r.metric]) for r in rows)
    tests = [f"{runs} against the baseline runs"] if runs else []
    tests += [f"{len(rows) - runs} on the rounds"] if runs < len(rows) else []
    return (
        f"; {len(rows)} latency row(s), serving at a fixed rate (p99 TTFT/TPOT worse going up, goodput going "
        f"down, threshold {thresholds.latency_threshold:.0%}): {' and '.join(tests)}, raw (no machine-speed "
        "correction)"
    )
