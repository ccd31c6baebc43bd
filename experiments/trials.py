"""The one trial loop every validation shares: labelled trials in a seeded random order, each scored
pass or fail, timed, and tallied per label. A trial is any callable returning (failed, detail)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Tally:
    failed: int = 0
    runs: int = 0
    seconds: list[float] = field(default_factory=list)
    details: list[str] = field(default_factory=list)


def schedule(counts: dict[str, int], seed: int) -> list[tuple[str, int]]:
    """(label, index) for every trial, shuffled with the seed: no label runs in a block of its own."""
    order = [(label, i) for label, n in counts.items() for i in range(n)]
    random.Random(seed).shuffle(order)
    return order


def run_trials(
    counts: dict[str, int],
    trial: Callable[[str, int, int], tuple[bool, str]],
    seed: int,
    log=print,
    only: set[str] | None = None,
) -> dict[str, Tally]:
    """Run every trial of `counts` in a seeded random order; trial(label, index, n) -> (failed, detail).
    `only`: run just these labels' trials; the order (and so each trial's n, which seeds it) is still
    that of every label in `counts`, so a tally split over several sittings runs the same trials."""
    tallies = {label: Tally() for label in counts if only is None or label in only}
    for n, (label, i) in enumerate(schedule(counts, seed)):
        if label not in tallies:
            continue
        start = time.perf_counter()
        failed, detail = trial(label, i, n)
        seconds = time.perf_counter() - start
        t = tallies[label]
        t.failed, t.runs = t.failed + failed, t.runs + 1
        t.seconds.append(seconds)
        t.details.append(detail)
        log(f"{label} trial {i + 1}/{counts[label]}: {'FAIL' if failed else 'pass'} ({seconds:.0f} s) {detail}")
    return tallies


def summary(tallies: dict[str, Tally], what_fails: dict[str, str]) -> list[str]:
    """One line per label: how many failed (what failing means for that label), and the times."""
    lines = []
    for label, t in tallies.items():
        times = f"mean {sum(t.seconds) / len(t.seconds):.0f} s, longest {max(t.seconds):.0f} s" if t.seconds else ""
        lines.append(f"{label:>24}: {t.failed} of {t.runs} {what_fails.get(label, 'failed')} ({times})")
    return lines
