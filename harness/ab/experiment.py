"""`python -m harness ab-check`: does the interleaved A/B comparison pass A/A and catch a small slowdown
of one case? Runs `trials` A/A comparisons (the working tree against itself) and `trials` with HEAD's
matching case slowed, in a seeded random order, and tallies the verdicts. An experiment to run and
report, not a test."""

from __future__ import annotations

import random
import time
from pathlib import Path

from harness.ab.rounds import Budget
from harness.ab.runner import ab
from harness.errors import EXIT_REGRESSION


def ab_check(
    trials: int,
    slowdown: float,
    case: str,
    pytest_args: list[str],
    keep: str | None,
    seed: int,
    budget: Budget | None = None,
) -> int:
    budget = budget or Budget()
    root = str(Path.cwd())
    schedule = [(label, i) for label in ("A/A", "slowed") for i in range(trials)]
    random.Random(seed).shuffle(schedule)
    tally = {"A/A": [0, []], "slowed": [0, []]}
    for n, (label, i) in enumerate(schedule):
        inject = (slowdown, case) if label == "slowed" else (0.0, "")
        out = str(Path(keep) / f"{'aa' if label == 'A/A' else 'slowed'}-{i:02d}.json") if keep else None
        start = time.perf_counter()
        result = ab(root, None, pytest_args, inject, budget, out=out, seed=seed * 1000 + n)
        runtime = time.perf_counter() - start
        failed = result.exit_code == EXIT_REGRESSION
        regressions = [v["name"] for v in result.doc["verdicts"] if v["status"] == "regression"]
        target = next((v for v in result.doc["verdicts"] if case in v["name"]), None)
        seen = f"{case}: {target['change']:+.2%}" if target and target["change"] is not None else ""
        print(
            f"{label} trial {i + 1}/{trials}: {'FAIL' if failed else 'pass'} ({runtime:.0f} s; {seen})"
            f"{': ' + ', '.join(regressions) if regressions else ''}",
            flush=True,
        )
        tally[label][0] += failed
        tally[label][1].append(runtime)
    print(f"\nslowdown {slowdown:.0%} of cases matching {case!r}; trials in random order (seed {seed})")
    for label, (failed, runtimes) in tally.items():
        print(
            f"{label:>8}: {trials - failed} passed, {failed} failed of {trials} "
            f"(mean {sum(runtimes) / len(runtimes):.0f} s, longest {max(runtimes):.0f} s)"
        )
    return 0
