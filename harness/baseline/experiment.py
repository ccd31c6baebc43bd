"""`python -m harness gate-check`: does the gate pass unchanged runs and fail a real slowdown?

Records a baseline of the chosen tier, then runs the tier `trials` times unchanged and `trials`
times with PERF_INJECT_SLOWDOWN, applying the gate to each. An experiment to run and report, not a test.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from harness.baseline.gate import Thresholds, compare, has_regression
from harness.baseline.record import record_runs, run_suite
from harness.baseline.storage import load_results
from harness.errors import BaselineError
from harness.timing import SLOWDOWN_ENV


def _trial(args: list[str], out: Path, slowdown: float) -> tuple[float, dict]:
    env = {**os.environ, SLOWDOWN_ENV: str(slowdown)} if slowdown else {**os.environ, SLOWDOWN_ENV: ""}
    start = time.perf_counter()
    if run_suite(args, out, env) != 0:
        raise BaselineError(f"a trial run failed (pytest perf_tests {' '.join(args)})")
    return time.perf_counter() - start, load_results(out)


def gate_check(trials: int, slowdown: float, tier: str, pytest_args: list[str], baseline_runs: int = 3) -> int:
    args = ["--perf-tier", tier, *[a for a in pytest_args if a != "--"]]
    thresholds = Thresholds.from_pyproject()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        baseline = record_runs(args, baseline_runs, {**os.environ, SLOWDOWN_ENV: ""})
        print(
            f"baseline: {len(baseline['benchmarks'])} cases pooled from {baseline_runs} run(s), "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )
        tally = {}
        for label, factor in (("unchanged", 0.0), (f"slowdown {slowdown:.0%}", slowdown)):
            failed, runtimes = 0, []
            for i in range(trials):
                runtime, doc = _trial(args, Path(tmp) / f"trial{i}.json", factor)
                verdicts = compare(baseline, doc, thresholds)
                bad = [v.name for v in verdicts if v.status == "regression"]
                failed += has_regression(verdicts)
                runtimes.append(runtime)
                print(
                    f"{label} trial {i + 1}/{trials}: {'FAIL' if bad else 'pass'} ({runtime:.0f} s)"
                    f"{': ' + ', '.join(bad) if bad else ''}",
                    flush=True,
                )
            tally[label] = (trials - failed, failed, sum(runtimes) / len(runtimes))
    print(
        f"\nthreshold {thresholds.default:.0%} (groups {thresholds.groups}), alpha {thresholds.alpha}, tier {tier}, "
        f"baseline pooled from {baseline_runs} run(s)"
    )
    for label, (passed, failed, mean_s) in tally.items():
        print(f"{label:>16}: {passed} passed, {failed} failed of {trials} (mean run {mean_s:.0f} s)")
    return 0
