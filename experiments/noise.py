"""Where an A/B comparison's noise lives, read from kept `llm-perf ab --out` files (no new runs).

    python -m experiments.noise A.json [B.json ...] [--exclude PATTERN]

Per case, over the files: a pair's log ratio spreads within its visit once the order of its rounds is
removed (pair sd, as the nested test measures it: harness/judge/stats.py), a visit's statistic (the
mean of its pairs) spreads across visits (visit sd, robust: 1.4826 x the median absolute deviation),
and the order effect (half the gap between the two orders of a block's pairs). Also each file's lean
pooled over its stage-1 cases, and its time by activity. An exploration tool: what it shows may
choose a plan's parameters, which are then frozen before any validation.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys

from harness.ab.rounds import CaseRecord, stage_lean
from harness.judge.stats import visit_moments


def _mad_sd(values: list[float]) -> float:
    centre = statistics.median(values)
    return 1.4826 * statistics.median(abs(v - centre) for v in values) if len(values) > 1 else math.nan


def pooled_sd(groups: list[list[float]]) -> tuple[float, int]:
    """The pooled within-group standard deviation and its degrees of freedom (a lone value adds none)."""
    ss = sum(sum((x - statistics.fmean(g)) ** 2 for x in g) for g in groups if len(g) > 1)
    df = sum(len(g) - 1 for g in groups if len(g) > 1)
    return (math.sqrt(ss / df) if df else math.nan), df


def case_noise(records: list[CaseRecord]) -> dict:
    """Pair sd within visits (order removed), visit sd (robust), order effect, blocks per visit, s per block."""
    visits = [v for r in records for v in r.visits if v.blocks]
    pairs = [v.pair_logs() for v in visits]
    _, _, within, df = visit_moments(pairs) if len(pairs) > 1 else (0, 0, math.nan, 0)
    per_pair = math.sqrt(within / statistics.fmean(1 / len(p) for p in pairs)) if df else math.nan
    stats = [v.statistic() for v in visits]
    later = [x for p in pairs for x, o in p if o > 0]
    sooner = [x for p in pairs for x, o in p if o < 0]
    blocks = statistics.fmean(v.blocks for v in visits) if visits else 0
    seconds = sum(r.seconds for r in records) / max(sum(v.blocks for v in visits), 1)
    return {
        "visits": len(visits),
        "blocks_per_visit": blocks,
        "pair_sd": per_pair,
        "visit_sd": _mad_sd(stats),
        "visit_mean": statistics.fmean(stats) if stats else math.nan,
        "order": (statistics.fmean(later) - statistics.fmean(sooner)) / 2 if later and sooner else math.nan,
        "block_s": seconds,
    }


def table(docs: list[dict], exclude: str = "") -> list[str]:
    names = sorted({n for d in docs for n in d["cases"] if not (exclude and exclude in n)})
    head = ("case", "visits", "blocks", "pair sd", "visit sd", "mean", "order", "block s")
    lines = [f"{head[0]:58} " + " ".join(f"{h:>8}" for h in head[1:])]
    for name in names:
        n = case_noise([CaseRecord.from_dict(d["cases"][name]) for d in docs if name in d["cases"]])
        lines.append(
            f"{name:58} {n['visits']:>8} {n['blocks_per_visit']:>8.1f} {n['pair_sd']:>8.2%} {n['visit_sd']:>8.2%} "
            f"{n['visit_mean']:>+8.2%} {n['order']:>+8.2%} {n['block_s']:>8.2f}"
        )
    for d in docs:
        lean = stage_lean([CaseRecord.from_dict(c) for c in d["cases"].values()], 1)
        spent = ", ".join(f"{k} {v:.0f} s" for k, v in d.get("spent_s", {}).items())
        lines.append(f"lean sd {math.sqrt(lean.variance):.2%} ({lean.df:.0f} df); spent: {spent}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.noise", description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", help="`llm-perf ab --out` files")
    parser.add_argument("--exclude", default="", help="leave out the cases whose name contains this")
    args = parser.parse_args(argv)
    docs = [json.loads(open(f).read()) for f in args.files]
    print("\n".join(table(docs, args.exclude)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
