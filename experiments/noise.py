"""Where an A/B comparison's noise lives, read from kept `llm-perf ab --out` files (no new runs).

    python -m experiments.noise A.json [B.json ...] [--exclude PATTERN]

Per case, over the files: a block's log ratio spreads within its visit (block sd, pooled), and a
visit's statistic (the median of its blocks) spreads across visits (visit sd, robust: 1.4826 x the
median absolute deviation); the lean of a visit beyond its blocks is what the visit sd holds beyond
block sd / sqrt(blocks). With those, the standard error a plan would give a case is
visit_sd / sqrt(visits). Also each file's time per case (rounds, both sides). An exploration tool:
what it shows may choose a plan's parameters, which are then frozen before any validation.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys

from harness.ab.rounds import CaseRecord


def _mad_sd(values: list[float]) -> float:
    centre = statistics.median(values)
    return 1.4826 * statistics.median(abs(v - centre) for v in values) if len(values) > 1 else math.nan


def pooled_sd(groups: list[list[float]]) -> tuple[float, int]:
    """The pooled within-group standard deviation and its degrees of freedom (a lone value adds none)."""
    ss = sum(sum((x - statistics.fmean(g)) ** 2 for x in g) for g in groups if len(g) > 1)
    df = sum(len(g) - 1 for g in groups if len(g) > 1)
    return (math.sqrt(ss / df) if df else math.nan), df


def case_noise(records: list[CaseRecord]) -> dict:
    """Block sd within visits (pooled), visit sd (robust), blocks per visit, seconds per block."""
    visits = [v for r in records for v in r.visits if v.blocks]
    block_sd, _ = pooled_sd([v.block_logs() for v in visits])
    stats = [v.statistic() for v in visits]
    blocks = statistics.fmean(v.blocks for v in visits) if visits else 0
    seconds = sum(r.seconds for r in records) / max(sum(v.blocks for v in visits), 1)
    return {
        "visits": len(visits),
        "blocks_per_visit": blocks,
        "block_sd": block_sd,
        "visit_sd": _mad_sd(stats),
        "visit_mean": statistics.fmean(stats) if stats else math.nan,
        "block_s": seconds,
    }


def table(docs: list[dict], exclude: str = "") -> list[str]:
    names = sorted({n for d in docs for n in d["cases"] if not (exclude and exclude in n)})
    lines = [f"{'case':58} {'visits':>6} {'blocks':>6} {'block sd':>8} {'visit sd':>8} {'mean':>7} {'block s':>7}"]
    for name in names:
        n = case_noise([CaseRecord.from_dict(d["cases"][name]) for d in docs if name in d["cases"]])
        lines.append(
            f"{name:58} {n['visits']:>6} {n['blocks_per_visit']:>6.1f} {n['block_sd']:>8.2%} {n['visit_sd']:>8.2%} "
            f"{n['visit_mean']:>+7.2%} {n['block_s']:>7.2f}"
        )
    for d in docs:
        lines.append(f"spent: {', '.join(f'{k} {v:.0f} s' for k, v in d.get('spent_s', {}).items())}")
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
