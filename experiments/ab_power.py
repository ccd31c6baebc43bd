"""How long the A/B would need, on the machine its trials ran on, to catch a given slowdown.

Reads kept trial files (`llm-perf ab --out`, e.g. the validation tally's), takes each case's spread
of visit statistics (the standard deviation of its stage-1 visits within a trial, pooled over the
trials: a slowdown shifts a trial's visits, not their spread, so every trial counts) and asks: how
many visits would stage 1 alone need for a one-sided Student's t at the plan's per-case level
(alpha / 2 over the m cases, Bonferroni) to reach the given power against the given slowdown? From
the trials' own visit lengths and sweep overheads, what would that cost in minutes?

    python -m experiments.ab_power DIR [--slowdown 0.05] [--power 0.9]

An analysis of trials already run, not a validation. It models Student's t over visits, the A/B's test
before the nested one (harness/judge/stats.py, nested_test): what that test would need on that
machine, and so why it was replaced.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from scipy import stats

from experiments.noise import pooled_sd
from harness.ab.rounds import CaseRecord


def visits_needed(sd: float, shift: float, level: float, power: float, most: int = 10_000) -> int | None:
    """The fewest visits n for which a one-sided t-test at `level` rejects with probability `power`
    when the visits' mean is shifted by `shift` (log) and their spread is `sd` (noncentral t)."""
    for n in range(2, most + 1):
        df = n - 1
        crit = stats.t.isf(level, df)
        if stats.nct.sf(crit, df, shift * math.sqrt(n) / sd) >= power:
            return n
    return None


def read_trials(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def table(trials: list[dict], slowdown: float, power: float) -> list[str]:
    """One line per case: its visit spread, the visits and the seconds of rounds stage 1 would need."""
    shift, by_case = -math.log1p(-slowdown), {}
    overheads = []
    for trial in trials:
        records = [CaseRecord.from_dict(c) for c in trial["cases"].values()]
        sweeps = trial["plan"]["sweeps"] + (trial["plan"]["stage2_sweeps"] if trial.get("stage2") else 0)
        spent = trial["spent_s"]  # seconds by activity: start, prepare, open, rounds, close
        overheads.append((sum(spent.values()) - spent["rounds"]) / sweeps)
        for r in records:
            stage1 = [v for v in r.visits if v.stage == 1 and v.blocks]
            entry = by_case.setdefault(r.name, {"groups": [], "visit_s": []})
            entry["groups"].append([v.statistic() for v in stage1])
            entry["visit_s"] += [sum(v.base_s) + sum(v.head_s) for v in stage1]
    level = trials[0]["alpha"] / 2 / len(by_case)
    head = f"{len(trials)} trials, {len(by_case)} cases; per-case level {level:.2g}"
    lines = [f"{head}; {slowdown:.0%} slowdown, power {power:.0%}"]
    most_visits, rounds_s = 0, 0.0
    for name, entry in sorted(by_case.items()):
        sd, df = pooled_sd(entry["groups"])
        visit_s = statistics.fmean(entry["visit_s"])
        if not df:
            lines.append(f"{name}: one visit a trial, its spread unknown: no test (visits of {visit_s:.1f} s)")
            continue
        n = visits_needed(sd, shift, level, power)
        most_visits, rounds_s = max(most_visits, n or 0), rounds_s + (n or 0) * visit_s
        lines.append(f"{name}: visit sd {sd:.1%} ({df} df), {n} visits of {visit_s:.1f} s = {(n or 0) * visit_s:.0f} s")
    sweep_s = statistics.median(overheads)
    total = most_visits * sweep_s + rounds_s
    lines.append(f"sweep overhead {sweep_s:.1f} s; stage 1 alone: {most_visits} sweeps, about {total / 60:.0f} minutes")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.ab_power", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--slowdown", type=float, default=0.05)
    parser.add_argument("--power", type=float, default=0.9)
    args = parser.parse_args(argv)
    trials = read_trials(args.folder)
    if not trials:
        parser.error(f"{args.folder}: no trial files (*.json from `llm-perf ab --out`)")
    print("\n".join(table(trials, args.slowdown, args.power)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
