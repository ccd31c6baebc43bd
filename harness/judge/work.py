"""The exact gate on work (harness/engines/work.py). For the same case on the same seed a counter
that grew is a work regression and one that shrank an improvement: no threshold and no p-value, as
counts on a seeded workload do not vary between runs on any machine. Counters of work saved (prefix
cache hits) count the other way: fewer is a regression. A case whose counters differ
between its own identical rounds is not deterministic, and its counters are refused, not compared."""

from __future__ import annotations

import math

from harness.judge.decide import Verdict

FEWER_IS_WORSE = frozenset({"prefix_hit_tokens"})  # work saved (harness/engines/work.py); the rest is work done
NOT_COUNTED = "counted by the base, not by this side: not compared"
NOT_DETERMINISTIC = "its work counters differ between identical rounds: not deterministic, not compared"


def work_verdicts(case: str, base: dict | None, now: dict | None, unsteady: bool = False) -> list[Verdict]:
    """A row for each counter that changed (none where every counter both sides count is equal); one
    inconclusive row where a side's counters were not deterministic, and one for each counter the base
    counted and this run did not (a count that failed must not pass as "nothing changed"). A counter
    only this run counts (a base older than it) is not compared."""
    if not base:
        return []
    now = now or {}
    if unsteady and now:
        return [Verdict(f"{case} work", "inconclusive", unit="count", note=NOT_DETERMINISTIC)]
    rows = [
        Verdict(f"{case} work:{counter}", "inconclusive", unit="count", base=base[counter], note=NOT_COUNTED)
        for counter in sorted(base.keys() - now.keys())
    ]
    for counter in sorted(base.keys() & now.keys()):
        b, n = base[counter], now[counter]
        if b == n:
            continue
        change = n / b - 1 if b else math.inf
        status = "regression" if (n > b) != (counter in FEWER_IS_WORSE) else "improvement"
        exact = dict(unit="count", base=b, now=n, change=change, low=change, high=change, threshold=0.0)
        exact["lower_is_better"] = counter not in FEWER_IS_WORSE
        rows.append(Verdict(f"{case} work:{counter}", status, note="exact: the same case on the same seed", **exact))
    return rows


def work_line(compared: int, changed: int, skipped: str = "") -> str:
    """The method line's part on work."""
    if not compared:
        return "; no work counters to compare" + (f" ({skipped})" if skipped else "")
    return (
        f"; work counters of {compared} case(s) compared exactly (more work done, or fewer prefix-cache hits, "
        "is a regression), "
        f"{changed} row(s) changed" + (f"; {skipped}" if skipped else "")
    )
