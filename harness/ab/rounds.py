"""A case's rounds on both sides, and how they are taken: ABBA blocks until the interval is narrow.

A round repeats the case's unit of work `reps` times on one side; a block is four rounds, ABBA or
BAAB, starting with the side that ran last; each block gives one paired observation (block_sums) for
harness/ab/stats.py.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

from harness.ab.sides import WorkerProcess
from harness.ab.stats import PairedEstimate, estimate


@dataclass
class CaseRounds:
    name: str
    tokens: float = 0.0  # generated per round (all reps)
    reps: int = 1
    base_s: list[float] = field(default_factory=list)
    head_s: list[float] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # "ABBA" or "BAAB" for each block, in the order run
    pass_changes: list[float] = field(default_factory=list)  # each pass's own estimate (fresh processes)
    pass_blocks: list[int] = field(default_factory=list)  # how many blocks each pass ran, in order
    visit_blocks: list[int] = field(default_factory=list)  # how many blocks each visit (one opening) ran
    note: str = ""

    def visits(self, first_block: int = 0) -> list[int]:
        """Each visit's block count from block first_block on, the visit under way included: the
        clusters stats.design_effect reads."""
        return self._clusters(self.visit_blocks, first_block)

    def pairs(self, first_block: int = 0) -> list[int]:
        """Each pass's block count (each pass a pair of worker processes of its own) from block
        first_block on, the pass under way included: the outer clusters of stats.estimate."""
        return self._clusters(self.pass_blocks, first_block)

    def _clusters(self, done_sizes: list[int], first_block: int) -> list[int]:
        sizes, done = list(done_sizes), sum(done_sizes)
        if len(self.order) > done:
            sizes.append(len(self.order) - done)
        out, seen = [], 0
        for m in sizes:
            kept = min(m, seen + m - first_block)
            if kept > 0:
                out.append(kept)
            seen += m
        return out

    @property
    def seconds(self) -> float:
        """Both sides' rounds, all passes: what the case has cost in timed work."""
        return sum(self.base_s) + sum(self.head_s)


@dataclass(frozen=True)
class Budget:
    target: float = 0.01  # stop when the change's interval half-width is below this
    min_blocks: int = 6
    max_case_s: float = 20.0  # both sides' rounds of one case, at most
    min_round_s: float = 0.1  # a round repeats the case's unit of work until it lasts about this long
    passes: int = 2  # fresh worker pairs per comparison; each pass gets max_case_s / passes of each case
    follow_up: int = 1  # extra passes, each with fresh workers, for the cases that lean to a regression
    follow_up_s: float | None = None  # seconds of rounds a follow-up pass spends on its suspects (4 x max_case_s)

    @property
    def follow_up_seconds(self) -> float:
        return 4 * self.max_case_s if self.follow_up_s is None else self.follow_up_s


# The interval may stop a case early only once it rests on this many blocks: a bootstrap of the median
# of two blocks is as narrow as those two happen to be (seen: "+4.5%, 2 blocks, +-0.3%").
MIN_INTERVAL_BLOCKS = 6


def reps_for(opened: list[dict], budget: Budget) -> int:
    """Units of work per round, the same on both sides: enough that a round lasts min_round_s, from the
    faster side's warm-up. A millisecond decode step alone is mostly the cost of waking up after the
    other process ran (seen: 3 ms and 7 ms rounds of one step, bimodal). A worker of protocol 1 (no
    warm_s) runs one unit per round, and then so does the other side."""
    warm = [o.get("warm_s") for o in opened]
    if any(w is None for w in warm) or budget.min_round_s <= 0:
        return 1
    return max(1, min(1000, math.ceil(budget.min_round_s / max(min(warm), 1e-6))))


def interleave(
    base: WorkerProcess,
    head: WorkerProcess,
    rounds: CaseRounds,
    budget: Budget,
    rng: random.Random,
    first_block: int = 0,
    last: bool = True,
    pass_min_blocks: int = 0,
    interval_min_blocks: int = MIN_INTERVAL_BLOCKS,
    lead: str | None = None,
) -> bool:
    """ABBA or BAAB blocks: at least budget.min_blocks of them, then until the interval is narrow enough
    (True) or budget.max_case_s is spent (False).

    A round that follows a round of the same process finds its caches warm; one that follows the other
    process finds them cold. A block starts with the side that ran last (`lead`: "A" or "B", the side
    that opened the case last; at random where not given) and so ends with it, so every block of a
    visit has the same order and gives each side one warm round and one cold one: a block's two sums
    compare like with like, and a linear drift of the machine cancels too. Blocks drawn ABBA or BAAB
    at random, each after whatever ran last, gave one side two cold rounds in half of them: in the kept
    rounds of a 40-trial A/A tally, BAAB after BAAB read head +0.4% and BAAB after ABBA +1.7%, ABBA
    after ABBA +0.8% and ABBA after BAAB -0.4% (4,206 blocks; examples/ab_noise.py --orders-of), a
    transition effect of about 1% that widened every interval. Blocks from
    first_block on are this pass's; the interval that stops early is the pass's own, or, in the last
    pass and a follow-up, that of all passes together, and only once it rests on interval_min_blocks
    and the pass has run pass_min_blocks (a visit is part of a pass: its own minimum is smaller). The
    interval is widened by the visits' design effect (stats.design_effect), so a case whose blocks
    span fewer than 3 visits does not stop on it."""
    start = time.perf_counter()
    visit_start = len(rounds.order)
    lead = lead or rng.choice("AB")
    while True:
        run_blocks(base, head, rounds, 1, lead)
        if len(rounds.order) - visit_start >= budget.min_blocks:
            considered = case_estimate(rounds, 0 if last else first_block)
            if (
                len(rounds.order) - first_block >= pass_min_blocks
                and considered.pairs >= interval_min_blocks
                and considered.half_width < budget.target
            ):
                return True
            if time.perf_counter() - start > budget.max_case_s:
                return False
            # The check took a pause (a bootstrap: 10-20 ms) that only the lead's next round would
            # follow, the same side in every block of the visit: one untimed unit on the lead first.
            (base if lead == "A" else head).ask("round", reps=1)


def run_blocks(base: WorkerProcess, head: WorkerProcess, rounds: CaseRounds, blocks: int, lead: str) -> None:
    """`blocks` blocks, each led by `lead` ("A": ABBA, "B": BAAB), their rounds added to `rounds`."""
    order = "ABBA" if lead == "A" else "BAAB"
    for _ in range(blocks):
        times = {"A": [], "B": []}
        for who in order:
            times[who].append((base if who == "A" else head).ask("round", reps=rounds.reps)["seconds"])
        rounds.base_s += times["A"]
        rounds.head_s += times["B"]
        rounds.order.append(order)


def case_estimate(rounds: CaseRounds, first_block: int = 0) -> PairedEstimate:
    """The estimate from the case's blocks from first_block on, widened by their visits' lean and, where
    they come from 3 pairs of processes or more, by the pairs' lean."""
    return estimate(
        *block_sums(rounds, first_block), clusters=rounds.visits(first_block), groups=rounds.pairs(first_block)
    )


def block_sums(rounds: CaseRounds, first_block: int = 0) -> tuple[list[float], list[float]]:
    """Each block's two base rounds and two head rounds, summed: one paired observation per block."""
    pair = range(2 * first_block, len(rounds.base_s), 2)
    return [rounds.base_s[i] + rounds.base_s[i + 1] for i in pair], [
        rounds.head_s[i] + rounds.head_s[i + 1] for i in pair
    ]
