"""Does `llm-perf history check` find a step in a nightly series, and stay quiet without one?

    python -m experiments.history_check [--seeds 10]

Synthetic histories of 30 nights of one case's tokens/s, log-normal noise of a given sd, and a step
down at night 20 (or none), one per seed. For a step: the check is run each night from 21 on, as the
nightly job would; found when a regression change point at night 20 (+-1) is reported within 5
nights. Without a step: a false alarm is any night from 10 to 30 on which the check would fail the
job (a regression among the newest runs), and any change point at all in the 30 nights.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from harness.history.check import RECENT, check
from harness.history.store import Point

SCENARIOS = [("CPU-like noise, 20% step", 0.07, 0.20), ("GPU-like noise, 5% step", 0.015, 0.05)]
QUIET = [("CPU-like noise, no step", 0.07, 0.0), ("GPU-like noise, no step", 0.015, 0.0)]
NIGHTS, STEP_AT, WITHIN = 30, 20, 5


def history(sd: float, step: float, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    level = [0.0 if n < STEP_AT else np.log1p(-step) for n in range(NIGHTS)]
    return [float(100 * np.exp(mu + rng.normal(0, sd))) for mu in level]


def series_of(values: list[float]) -> dict:
    return {("case", "tokens_per_s", "m"): [Point(f"c{i}", f"night {i + 1}", "m", v) for i, v in enumerate(values)]}


def found_within(values: list[float]) -> int | None:
    """The night (1-based) whose check first reports the step, or None within WITHIN nights."""
    for night in range(STEP_AT + 1, STEP_AT + WITHIN + 1):
        hits = [c for c in check(series_of(values[:night])) if c.regression and abs(c.index - STEP_AT) <= 1]
        if hits:
            return night
    return None


def false_alarms(values: list[float]) -> tuple[bool, bool]:
    """(a nightly check from night 10 on would have failed, any change point in the whole series)."""
    failing = any(any(c.regression and c.recent for c in check(series_of(values[:n]))) for n in range(10, NIGHTS + 1))
    return failing, bool(check(series_of(values)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.history_check", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args(argv)
    print(f"{NIGHTS} nights, step at night {STEP_AT + 1}, found within {WITHIN} nights; check recent = {RECENT}")
    for label, sd, step in SCENARIOS:
        nights = [found_within(history(sd, step, seed)) for seed in range(args.seeds)]
        got = [n for n in nights if n is not None]
        print(f"{label}: found in {len(got)} of {args.seeds} seeds (nights found: {nights})")
    for label, sd, _ in QUIET:
        alarms = [false_alarms(history(sd, 0.0, seed)) for seed in range(args.seeds)]
        print(
            f"{label}: a nightly check failed in {sum(a for a, _ in alarms)} of {args.seeds} seeds; "
            f"any change point in {sum(b for _, b in alarms)} of {args.seeds}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
