"""`python -m harness gate-check`: does the gate pass unchanged runs and fail a real slowdown?

Records a baseline of the chosen tier, then runs the tier `trials` times unchanged and `trials`
times with PERF_INJECT_SLOWDOWN, applying the gate to each. An experiment to run and report, not a test.
With `--keep DIR` every run is stored (baseline.json, unchanged-NN.json, slowdown-NN.json), and
`--replay DIR` judges stored runs again (after a change of threshold or test) without re-running them.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from harness.baseline.gate import SUITE_ROW, Thresholds, compare, has_regression
from harness.baseline.record import record_runs, run_suite
from harness.baseline.storage import load_results
from harness.errors import BaselineError
from harness.timing import CASE_ENV, SLOWDOWN_ENV


def _trial(args: list[str], out: Path, slowdown: float, case: str = "") -> float:
    env = {**os.environ, SLOWDOWN_ENV: str(slowdown) if slowdown else "", CASE_ENV: case if slowdown else ""}
    start = time.perf_counter()
    if run_suite(args, out, env) != 0:
        raise BaselineError(f"a trial run failed (pytest perf_tests {' '.join(args)})")
    return time.perf_counter() - start


def _judge(label: str, i: int, trials: int, baseline: dict, doc: dict, thresholds: Thresholds, extra: str) -> bool:
    verdicts = compare(baseline, doc, thresholds)
    bad = [v.name for v in verdicts if v.status == "regression"]
    suite = next((v for v in verdicts if v.name == SUITE_ROW), None)
    suite_text = f"suite {suite.change:+.1%} p={suite.p_value:.4f}" if suite else "no suite row"
    print(
        f"{label} trial {i + 1}/{trials}: {'FAIL' if bad else 'pass'} ({extra}{suite_text})"
        f"{': ' + ', '.join(bad) if bad else ''}",
        flush=True,
    )
    return has_regression(verdicts)


def _summary(thresholds: Thresholds, tier: str, baseline: dict, tally: dict, trials: int) -> None:
    runs = (baseline.benches[0].result.baseline_runs or 1) if baseline.benches else 0
    print(
        f"\nthreshold {thresholds.default:.0%} (groups {thresholds.groups}, cases {thresholds.cases}), "
        f"machine-speed correction {thresholds.normalise}, multiple-testing adjustment {thresholds.multiple}, "
        f"alpha {thresholds.alpha}, tier {tier}, {len(baseline.benches)} cases, "
        f"baseline pooled from {runs} run(s)"
    )
    for label, (failed, runtimes) in tally.items():
        mean = f" (mean run {sum(runtimes) / len(runtimes):.0f} s)" if runtimes else ""
        print(f"{label:>16}: {trials - failed} passed, {failed} failed of {trials}{mean}")


def gate_check(
    trials: int,
    slowdown: float,
    tier: str,
    pytest_args: list[str],
    baseline_runs: int = 3,
    keep: str | None = None,
    normalise: str | None = None,
    multiple: str | None = None,
    case: str = "",
    seed: int = 0,
) -> int:
    """Unchanged and slowed trials in a seeded random order (a slow spell of the machine then hits both
    kinds alike); `case` slows only the cases whose name contains it."""
    args = ["--perf-tier", tier, *[a for a in pytest_args if a != "--"]]
    thresholds = _thresholds(normalise, multiple)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(keep) if keep else Path(tmp)
        store.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        baseline = record_runs(args, baseline_runs, {**os.environ, SLOWDOWN_ENV: "", CASE_ENV: ""})
        baseline.save(store / "baseline.json")
        print(
            f"baseline: {len(baseline.benches)} cases pooled from {baseline_runs} run(s), "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )
        slowed = f"slowdown {slowdown:.0%}" + (f" of {case}" if case else "")
        tally: dict[str, tuple[int, list[float]]] = {"unchanged": (0, []), slowed: (0, [])}
        schedule = [(label, i) for label in tally for i in range(trials)]
        random.Random(seed).shuffle(schedule)
        for label, i in schedule:
            factor = 0.0 if label == "unchanged" else slowdown
            out = store / f"{'unchanged' if not factor else 'slowdown'}-{i:02d}.json"
            runtime = _trial(args, out, factor, case)
            failed = _judge(label, i, trials, baseline, load_results(out), thresholds, f"{runtime:.0f} s, ")
            tally[label] = (tally[label][0] + failed, tally[label][1] + [runtime])
        _summary(thresholds, tier, baseline, tally, trials)
        if not keep:
            shutil.rmtree(store, ignore_errors=True)
    return 0


def _thresholds(normalise: str | None, multiple: str | None = None) -> Thresholds:
    """[tool.perf], with the experiment's command-line overrides."""
    overrides = {k: v for k, v in (("normalise", normalise), ("multiple", multiple)) if v}
    return dataclasses.replace(Thresholds.from_pyproject(), **overrides)


def replay(directory: str, normalise: str | None = None, multiple: str | None = None) -> int:
    """Judge the runs a `gate-check --keep DIR` stored, with today's gate and [tool.perf]."""
    root = Path(directory)
    baseline = load_results(root / "baseline.json")
    thresholds = _thresholds(normalise, multiple)
    tally = {}
    trials = 0
    for label in ("unchanged", "slowdown"):
        files = sorted(root.glob(f"{label}-*.json"))
        if not files:
            raise BaselineError(f"{root}: no {label}-NN.json runs (was it written by gate-check --keep?)")
        trials = len(files)
        failed = sum(
            _judge(label, i, len(files), baseline, load_results(f), thresholds, "") for i, f in enumerate(files)
        )
        tally[label] = (failed, [])
    _summary(thresholds, f"as stored in {root}", baseline, tally, trials)
    return 0
