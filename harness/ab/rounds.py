"""What an A/B comparison records of each case: its visits, each a fresh pair of processes, and each
visit's rounds on both sides. Plain data; the statistics are harness/judge's.

A round repeats the case's unit of work `reps` times on one side. A block is four rounds, ABBA or
BAAB, led by the side that ran last, so each side has one round after its own process and one after
the other's. Each block holds two pairs of adjacent rounds, one of each side: a pair's log ratio is
log(base seconds / head seconds) = log(head tok/s / base tok/s), a visit's statistic the mean of its
pairs (ABBA's balance cancels a linear drift within the block), and the test (judge.stats.nested_test)
counts both the pairs within a visit and the visits, each a fresh pair of processes.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field

from harness.engines.work import FLOPS, counts_differ
from harness.judge.decide import Verdict
from harness.judge.stats import Lean, LogTest, nested_test, pooled_lean
from harness.judge.work import work_verdicts

FLOPS_APART = "each side counted with another torch, whose formulas may differ: not compared"
FLOPS_NOT_RECOUNTED = "the sides counted different flops and did not count again (one visit, or a recount failed)"
FLOPS_UNSTEADY = "a side counted other flops in a fresh process: not deterministic, not compared"


@dataclass
class Visit:
    stage: int  # 1 or 2
    sweep: int  # the pair of processes it ran in
    lead: str  # "A" (ABBA blocks) or "B" (BAAB)
    base_s: list[float] = field(default_factory=list)  # every round, in the order run
    head_s: list[float] = field(default_factory=list)

    def pair_logs(self) -> list[tuple[float, int]]:
        """(log ratio, order) per pair of rounds, the i-th of each side; order is +1 where base ran right
        after head's process (ABBA: the second pair of a block; BAAB: the first), else -1."""
        first = -1 if self.lead == "A" else 1
        return [
            (math.log(b / h), first if i % 2 == 0 else -first)
            for i, (b, h) in enumerate(zip(self.base_s, self.head_s, strict=False))
        ]

    def statistic(self) -> float:
        return statistics.fmean(x for x, _ in self.pair_logs())

    @property
    def blocks(self) -> int:
        return len(self.base_s) // 2


@dataclass
class CaseRecord:
    name: str
    tokens: float = 0.0  # produced by one round (all its reps)
    reps: int = 1
    visits_planned: int = 0  # stage 1's allocation (plan.allocate), fixed at the case's first open
    blocks_per_visit: int = 1
    visits: list[Visit] = field(default_factory=list)
    note: str = ""
    work: dict[str, dict] = field(default_factory=dict)  # side -> its engine's work counters at its first open
    work_unsteady: bool = False  # a later open of a side counted other work: not deterministic
    flops_counts: dict[str, list] = field(default_factory=dict)  # side -> its flops at each counting close
    flops_apart: bool = False  # the sides counted flops with another torch each: not compared

    def count_work(self, opened: list[dict]) -> None:
        """Keep each side's work counters from its first open; note when a later open counts otherwise."""
        for side, reply in zip(("base", "head"), opened, strict=True):
            if "work" in reply:
                first = self.work.setdefault(side, dict(reply["work"]))
                self.work_unsteady |= counts_differ(first, reply["work"])

    def add_flops(self, closed: list[dict]) -> None:
        """Each side's flops at a counting close: the case's first visit, and its second where the sides'
        counts differed (flops_differ), in fresh processes. A side whose code cannot count them says
        nothing, and the counter is then not compared. Sides that counted with another torch (two
        environments) are not compared either: its formulas may differ. A side of an older suite names
        no counter; it runs the same interpreter as the other (a git ref or folder)."""
        if len({reply["counter"] for reply in closed if "counter" in reply}) > 1:
            self.flops_apart = True
        for side, reply in zip(("base", "head"), closed, strict=True):
            self.flops_counts.setdefault(side, []).append(reply.get(FLOPS))

    def flops_differ(self) -> bool:
        """Whether the sides' first flops differ: before that is called a change, both count again."""
        firsts = [self.flops_counts.get(side, [None])[0] for side in ("base", "head")]
        return not self.flops_apart and None not in firsts and firsts[0] != firsts[1]

    def flops_problem(self) -> str:
        """Why the flops row cannot be called, or "": the sides differed and were not counted again, or
        a side's second count differed from its first."""
        if self.flops_apart:
            return FLOPS_APART
        if not self.flops_differ():
            return ""
        again = [counts[1] if len(counts) > 1 else None for counts in self.flops_counts.values()]
        if None in again:
            return FLOPS_NOT_RECOUNTED
        return FLOPS_UNSTEADY if again != [counts[0] for counts in self.flops_counts.values()] else ""

    def work_rows(self) -> list[Verdict]:
        """The case's exact work rows (harness/judge/work.py); flops in its own row where it cannot be
        called (flops_problem), the other counters judged as they are."""
        problem = self.flops_problem()
        base, head = (self._counters(side, with_flops=not problem) for side in ("base", "head"))
        rows = work_verdicts(self.name, base, head, self.work_unsteady)
        if problem:
            rows.append(Verdict(f"{self.name} work:{FLOPS}", "inconclusive", unit="count", note=problem))
        return rows

    def _counters(self, side: str, with_flops: bool) -> dict:
        """A side's engine counters from its first open, with its first flops count where it has one."""
        first = self.flops_counts.get(side, [None])[0]
        flops = {FLOPS: first} if with_flops and first is not None else {}
        return {**self.work.get(side, {}), **flops}

    def pairs(self, stage: int | None = None) -> list[list[tuple[float, int]]]:
        """The pair logs of each visit of a stage (all stages: None)."""
        return [v.pair_logs() for v in self.visits if v.blocks and stage in (None, v.stage)]

    def test(self, lean: Lean, stage: int | None = None) -> LogTest:
        """The nested test of a stage's visits (all stages: None), with the lean pooled over its cases."""
        return nested_test(self.pairs(stage), lean)

    def stages(self) -> set[int]:
        return {v.stage for v in self.visits if v.blocks}

    def block_s(self) -> float:
        """A block's length, both sides, measured over the case's visits."""
        blocks = sum(v.blocks for v in self.visits)
        return sum(sum(v.base_s) + sum(v.head_s) for v in self.visits) / max(blocks, 1)

    def tok_s(self, side: str) -> float | None:
        rounds = [s for v in self.visits for s in (v.base_s if side == "base" else v.head_s)]
        return self.tokens / statistics.median(rounds) if rounds else None

    @property
    def seconds(self) -> float:
        return sum(sum(v.base_s) + sum(v.head_s) for v in self.visits)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CaseRecord:
        return cls(**{**d, "visits": [Visit(**v) for v in d.get("visits", [])]})


def stage_lean(records: list[CaseRecord], stage: int | None = None) -> Lean:
    """The lean pooled over the cases' visits of one stage (all stages: None)."""
    return pooled_lean([r.pairs(stage) for r in records])
