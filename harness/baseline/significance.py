"""The gate's significance tests: one case against its baseline, the suite row, Holm's adjustment.

Pure statistics on numbers already corrected for machine speed (harness/baseline/speed.py); the
verdicts and their table are harness/baseline/gate.py's.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scipy import stats

from harness.baseline.speed import CaseData, RunNoise
from harness.results import BenchRecord

if TYPE_CHECKING:
    from harness.baseline.gate import Thresholds

SUITE_ROW = "suite geometric mean"


def run_to_run_p(runs: list[float], now_med: float, noise: RunNoise) -> tuple[float, float, float]:
    """(baseline centre, p lower, p higher): this run's median against the baseline runs' spread (positive values)."""
    logs = [math.log(x) for x in runs]
    centre = sum(logs) / len(logs)
    own = statistics.stdev(logs)
    sd = max(own, noise.sd) * math.sqrt(1 + 1 / len(logs))  # a new run's deviation from the runs' mean
    if sd == 0:
        delta = math.log(now_med) - centre
        return math.exp(centre), float(delta >= 0), float(delta <= 0)
    score = (math.log(now_med) - centre) / sd
    return math.exp(centre), float(stats.t.cdf(score, noise.df)), float(stats.t.sf(score, noise.df))


@dataclass(frozen=True)
class CaseTest:
    """One row's change and its one-sided p-values, before the verdict. p_slower is the p-value of a
    change for the worse: lower throughput, or for a latency row (lower_is_better) a higher value."""

    name: str
    fields: dict
    p_slower: float
    p_faster: float
    note: str
    unreliable: bool
    lower_is_better: bool = False  # latency rows (harness/baseline/latency.py): p99 TTFT and TPOT


def case_test(
    name: str, base: BenchRecord, now: BenchRecord, thresholds: Thresholds, data: CaseData, noise: RunNoise | None
) -> CaseTest:
    group = now.group
    b, n = data.base_rounds, data.now_rounds
    now_med = statistics.median(n)
    if data.base_runs and noise is not None:
        base_med, p_slower, p_faster = run_to_run_p(data.base_runs, now_med, noise)
    else:
        base_med = statistics.median(b)
        p_slower = float(stats.mannwhitneyu(b, n, alternative="greater").pvalue)
        p_faster = float(stats.mannwhitneyu(b, n, alternative="less").pvalue)
    fields = {
        "base_tok_s": base.median_tok_s,
        "now_tok_s": now.median_tok_s,
        "change": now_med / base_med - 1,
        "threshold": thresholds.for_case(name, group),
    }
    note = f"raw {data.raw_change:+.1%}" if abs(data.raw_change - fields["change"]) >= 0.0005 else ""
    unhealthy = base.result.gpu_healthy is False or now.result.gpu_healthy is False
    return CaseTest(name, fields, p_slower, p_faster, note, unhealthy)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: rejecting where the adjusted p < alpha keeps the chance of any false
    alarm among the m tests below alpha, whatever their dependence (Holm 1979)."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def suite_test(data: dict[str, CaseData], tests: list[CaseTest], thresholds: Thresholds) -> CaseTest | None:
    """The suite's geometric-mean change, tested against the suite means of the baseline runs.

    Baseline run i has a suite mean S_i (the mean log throughput of its cases); this run has S. A
    slow spell of the machine moves every case of a run together, so the cases of one run are not
    independent samples: the only honest spread of S is the spread of the S_i, with n - 1 degrees of
    freedom (t-test of S against the S_i, as for one case). Needs a baseline pooled from two or more
    runs with every compared case in every run; otherwise there is no suite row."""
    reliable = [t.name for t in tests if not t.unreliable]
    runs = {len(data[name].base_runs) for name in reliable}
    if len(reliable) < 3 or len(runs) != 1 or min(runs) < 2:
        return None
    n = runs.pop()
    base_means = [statistics.fmean(math.log(data[c].base_runs[i]) for c in reliable) for i in range(n)]
    now_mean = statistics.fmean(math.log(statistics.median(data[c].now_rounds)) for c in reliable)
    centre = statistics.fmean(base_means)
    sd = statistics.stdev(base_means) * math.sqrt(1 + 1 / n)
    delta = now_mean - centre
    if sd == 0:
        p_slower, p_faster = float(delta >= 0), float(delta <= 0)
    else:
        p_slower, p_faster = float(stats.t.cdf(delta / sd, n - 1)), float(stats.t.sf(delta / sd, n - 1))
    fields = {"change": math.expm1(delta), "threshold": thresholds.default}
    note = f"{len(reliable)} cases, against the suite means of {n} baseline runs ({n - 1} df)"
    return CaseTest(SUITE_ROW, fields, p_slower, p_faster, note, False)
