"""The stored gate's rows: each case's throughput, and the suite's geometric mean, as Estimates for
harness/judge (the verdicts are its). Numbers are corrected for machine speed first (speed.py).

A case's test depends on what the baseline holds:
- several pooled runs (`baseline update --runs N`, or a history grown with `--append`): this run's
  median against the runs' medians, on their spread moderated over the cases (judge.stats.runs_test). On a
  shared machine the rounds of one run agree far better than two runs do, so only the runs tell how
  far a run can move on its own;
- a single run: Mann-Whitney U on the rounds (judge.stats.rounds_test), too sure on a shared machine.

The suite row: the mean log throughput over the cases, against the same mean of each baseline run,
with that spread (n - 1 degrees of freedom). A slowdown that touches every case a little moves the
mean of many cases beyond the noise they share, even where each case alone is too noisy to tell.
"""

from __future__ import annotations

import math
import statistics

from harness.baseline.speed import CaseData
from harness.judge import Estimate, Thresholds
from harness.judge.stats import Prior, rounds_test, runs_test
from harness.results import BenchRecord

SUITE_ROW = "suite geometric mean"


def case_row(name: str, base: BenchRecord, now: BenchRecord, data: CaseData, noise: Prior | None, t: Thresholds):
    now_med = statistics.median(data.now_rounds)
    if data.base_runs and noise is not None:
        test = runs_test(data.base_runs, now_med, noise)
    else:
        test = rounds_test(data.base_rounds, data.now_rounds)
    change = math.expm1(test.mean)
    note = f"raw {data.raw_change:+.1%}" if abs(data.raw_change - change) >= 0.0005 else ""
    unhealthy = base.result.gpu_healthy is False or now.result.gpu_healthy is False
    return Estimate(
        name,
        test,
        t.for_case(name, now.group),
        base=base.median_tok_s,
        now=now.median_tok_s,
        note=note,
        why_not="recorded on an unhealthy GPU" if unhealthy else "",
    )


def suite_row(data: dict[str, CaseData], rows: list[Estimate], t: Thresholds) -> Estimate | None:
    """The suite's row, where at least 3 judged cases share a baseline of 2 runs or more (else None)."""
    judged = [e.name for e in rows if not e.why_not]
    runs = {len(data[name].base_runs) for name in judged}
    if len(judged) < 3 or len(runs) != 1 or min(runs) < 2:
        return None
    n = runs.pop()
    base_means = [statistics.fmean(math.log(data[c].base_runs[i]) for c in judged) for i in range(n)]
    now_mean = statistics.fmean(math.log(statistics.median(data[c].now_rounds)) for c in judged)
    test = runs_test([math.exp(m) for m in base_means], math.exp(now_mean), None)
    note = f"{len(judged)} cases, against the suite means of {n} baseline runs ({n - 1} df)"
    return Estimate(SUITE_ROW, test, t.default, unit="", note=note)
