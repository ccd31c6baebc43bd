"""How do unchanged runs of the suite differ, case by case and as a whole? (an exploration of null data)

    python -m experiments.gate_noise RUN.json RUN.json ... [--normalise case|run|off]

Reads single-run results files of the same cases (unchanged code) and splits each case's log median
throughput, run by run, two ways (a two-way layout, runs x cases, one observation per cell):
log y[r, c] = case c's level + run r's shift + residual. It prints the run-to-run sd of each case as
the gate tests it today, the sd of each run's shift (the mean over cases), and the residuals' sd
(pooled, with (R - 1)(C - 1) degrees of freedom, and per case): what a test of each case against the
rest of its own run would face. No regression is planted: this is the noise only.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys

from harness.results import ResultsFile


def log_levels(paths: list[str], normalise: str) -> tuple[list[str], list[list[float]]]:
    """(case names, log median tok/s per run per case), corrected for machine speed as the gate does."""
    docs = [ResultsFile.load(p).by_name() for p in paths]
    names = sorted(set.intersection(*(set(d) for d in docs)))
    rows = []
    for doc in docs:
        refs = {n: doc[n].result.reference_median_ms for n in names}
        run_ref = statistics.median(r for r in refs.values() if r)
        row = []
        for n in names:
            y = math.log(doc[n].median_tok_s)
            if normalise == "case" and refs[n] and doc[n].result.own_forward:
                y += math.log(refs[n])
            elif normalise == "run" and doc[n].result.own_forward:
                y += math.log(run_ref)
            row.append(y)
        rows.append(row)
    return names, rows


def two_way(rows: list[list[float]]) -> tuple[list[float], list[list[float]]]:
    """(each run's shift: its mean over cases less the grand mean, the residuals)."""
    n_runs, n_cases = len(rows), len(rows[0])
    case_mean = [statistics.fmean(r[c] for r in rows) for c in range(n_cases)]
    grand = statistics.fmean(case_mean)
    shift = [statistics.fmean(r) - grand for r in rows]
    resid = [[rows[i][c] - case_mean[c] - shift[i] for c in range(n_cases)] for i in range(n_runs)]
    return shift, resid


def report(names: list[str], rows: list[list[float]]) -> list[str]:
    n_runs, n_cases = len(rows), len(names)
    shift, resid = two_way(rows)
    df = (n_runs - 1) * (n_cases - 1)
    pooled = math.sqrt(sum(x * x for r in resid for x in r) / df)
    lines = [f"{n_runs} runs x {n_cases} cases"]
    lines.append(f"sd of the run's shift (mean over cases): {statistics.stdev(shift):.2%}")
    lines.append(f"residual sd, pooled ({df} df): {pooled:.2%}")
    lines.append(f"{'case':70s} {'run sd':>7s} {'resid sd':>8s}")
    for c, name in enumerate(names):
        own = statistics.stdev(r[c] for r in rows)
        res = math.sqrt(sum(r[c] ** 2 for r in resid) * n_cases / df)
        lines.append(f"{name:70s} {own:7.2%} {res:8.2%}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.gate_noise", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="single-run results files of unchanged code")
    parser.add_argument("--normalise", choices=("case", "run", "off"), default="case")
    args = parser.parse_args(argv)
    if len(args.runs) < 3:
        parser.error("needs 3 runs or more")
    names, rows = log_levels(args.runs, args.normalise)
    print("\n".join(report(names, rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
