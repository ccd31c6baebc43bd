"""The A/B comparison's plan, fixed before any round is timed. Torch-free; tested on its own.

Stage 1 visits every case in `sweeps` sweeps, each sweep a fresh pair of processes, each started by
exec (harness/ab/worker.py). A case's share is `case_s` seconds of rounds, both sides, split into visits of
equal size: as many visits as blocks fit, up to one per sweep (two at least), spread evenly over the sweeps. The
allocation rests on the case's warm-up units, taken before any timed round, never on a result.

Stage 2 is decided when stage 1 ends, on stage 1's data only: the suspects are the cases that lean
slower with a 95% interval reaching below -threshold, at most `suspects` of them, the smallest p
first; `stage2_s` seconds of rounds are split evenly between them, in visits of `stage2_sweeps`
fresh pairs. Stage 2 is judged on its own visits and combined with stage 1 by fixed weights
(harness/judge/stats.py, two_stage_p), which keeps the family-wise error at alpha whatever the rule
that chose the suspects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.judge.stats import CONFIDENCE, LogTest


@dataclass(frozen=True)
class Plan:
    sweeps: int = 6  # stage 1: fresh pairs of processes; a case's visits are spread over them
    case_s: float = 9.0  # stage 1: seconds of rounds (both sides) per case
    suspects: int = 2  # stage 2: at most this many cases
    stage2_s: float = 30.0  # stage 2: seconds of rounds (both sides), split among its suspects
    stage2_sweeps: int = 4  # stage 2: fresh pairs of processes
    round_s: float = 0.1  # a round repeats the case's unit of work until it lasts about this long

    def __post_init__(self) -> None:
        if self.sweeps < 1 or self.stage2_sweeps < 1 or self.suspects < 0:
            raise ValueError("sweeps and stage2_sweeps must be at least 1, suspects at least 0")
        if self.case_s <= 0 or self.stage2_s < 0 or self.round_s < 0:
            raise ValueError("case_s must be > 0, stage2_s and round_s >= 0")


def reps_for(warm_s: list[float], round_s: float) -> int:
    """Units of work per round, the same on both sides: enough that a round lasts round_s, from the
    faster side's warm-up. A millisecond decode step alone is mostly the cost of waking up after the
    other process ran."""
    if round_s <= 0:
        return 1
    return max(1, min(1000, math.ceil(round_s / max(min(warm_s), 1e-6))))


MIN_VISITS = 2  # a case's visits at least (sweeps allowing): one visit has no spread of its own to test


def allocate(block_s: float, seconds: float, sweeps: int) -> tuple[int, int]:
    """(visits, blocks per visit) for `seconds` of rounds in blocks of block_s: one visit per sweep
    where enough blocks fit, fewer for a case whose blocks are long, but MIN_VISITS of one block at
    least, even where that takes longer than `seconds` (a serving case's block can be longer)."""
    blocks = max(1, round(seconds / max(block_s, 1e-9)))
    visits = min(sweeps, max(blocks, MIN_VISITS))
    return visits, max(1, round(blocks / visits))


def sweeps_of(visits: int, sweeps: int) -> set[int]:
    """The sweeps a case with `visits` visits is visited in, spread evenly from the first."""
    return {math.floor(i * sweeps / visits) for i in range(visits)}


def suspects(tests: dict[str, LogTest], threshold: float, most: int) -> list[str]:
    """Stage 2's cases, from stage 1's tests alone: those leaning slower whose interval reaches below a
    drop of `threshold`, the smallest p (slower) first, at most `most`."""
    limit = math.log1p(-threshold)
    leaning = [n for n, t in tests.items() if t.units >= 2 and t.mean < 0 and t.interval(CONFIDENCE)[0] < limit]
    return sorted(leaning, key=lambda n: tests[n].p_lower)[:most]
