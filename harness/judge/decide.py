"""One decision rule for every comparison the suite makes: `decide()`.

Each row (a case's throughput, a serving case's latency metric, the suite's geometric mean) arrives
as an Estimate: the relative change of its metric and a test of it (harness/judge/stats.py). decide()
adjusts the rows' p-values for their number, one direction at a time, and gives each row one of four
verdicts:

- regression: the change for the worse is beyond the row's threshold and its adjusted p < alpha;
- improvement: the same for the better;
- unchanged: the row's 95% interval lies inside +-threshold;
- inconclusive: anything else: the interval is too wide to tell. The row says the smallest change
  its test could have called (`detectable`), so a reader knows what more data would buy.

Adjustment: a single-stage comparison (a results file against a baseline) uses Holm over the rows
judged, each row carrying its Estimate's `weight` (the stored gate gives its suite row as much as
all the cases together: harness/baseline/gate.py); the A/B's two-stage plan uses stats.two_stage_p,
whose stage 1 alone spends half of alpha. Either way the chance that any row is called a regression
when nothing changed is at most alpha, and likewise for improvements. One guard sits beside it: a
change for the worse larger than `large_drop` (and than the row's threshold) whose own test gives p
< alpha is a regression whatever the adjustment asks: a row that lost a fifth of its speed must not
pass because twenty others were compared with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from harness.judge.stats import CONFIDENCE, STAGE1_SHARE, LogTest, holm, two_stage_p

VERDICTS = ("regression", "improvement", "unchanged", "inconclusive")
MISSING = "missing"  # a row only one side has: listed, never judged


@dataclass(frozen=True)
class Estimate:
    """One row's evidence. `test` is the single stage's (or the A/B's stage 1's) test of log(now/base);
    `stage2`, the A/B's second stage on its own data; `pooled`, all the row's data together, which gives
    the change and the interval shown (the test where absent). `why_not`: a reason the row cannot be
    judged at all (an unhealthy GPU); it is then inconclusive."""

    name: str
    test: LogTest
    threshold: float
    unit: str = "tok/s"
    lower_is_better: bool = False
    base: float | None = None
    now: float | None = None
    stage2: LogTest | None = None
    pooled: LogTest | None = None
    note: str = ""
    why_not: str = ""
    weight: float = 1.0  # its share of alpha beside the other rows' (single-stage design only)

    @property
    def shown(self) -> LogTest:
        return self.pooled or self.test

    def p_worse(self, test: LogTest) -> float:
        return test.p_higher if self.lower_is_better else test.p_lower

    def p_better(self, test: LogTest) -> float:
        return test.p_lower if self.lower_is_better else test.p_higher


@dataclass(frozen=True)
class Verdict:
    """A row's verdict, in its own unit: tokens/s for a case, ms or requests/s for a latency row."""

    name: str
    status: str  # one of VERDICTS, or MISSING
    unit: str = "tok/s"
    base: float | None = None
    now: float | None = None
    change: float | None = None  # now / base - 1
    low: float | None = None  # the 95% interval of the change
    high: float | None = None
    p_value: float | None = None  # adjusted, of the direction the change went
    threshold: float | None = None
    detectable: float | None = None  # the smallest change (either way) the row's test could call
    lower_is_better: bool = False
    note: str = ""
    extra: dict = field(default_factory=dict)


SINGLE, TWO_STAGE = "single", "two-stage"


def adjusted(estimates: list[Estimate], design: str) -> dict[str, tuple[float, float]]:
    """(worse, better) adjusted p-values of the rows that can be judged, by name."""
    judged = [e for e in estimates if not e.why_not]
    if design == SINGLE:
        weights = [e.weight for e in judged]
        worse = holm([e.p_worse(e.test) for e in judged], weights)
        better = holm([e.p_better(e.test) for e in judged], weights)
        return {e.name: (w, b) for e, w, b in zip(judged, worse, better, strict=True)}
    m, k = len(judged), sum(e.stage2 is not None for e in judged)
    out = {}
    for e in judged:
        q2 = min(1.0, k * e.p_worse(e.stage2)) if e.stage2 is not None else None
        worse = two_stage_p(min(1.0, m * e.p_worse(e.test)), q2)
        out[e.name] = (worse, two_stage_p(min(1.0, m * e.p_better(e.test)), None))
    return out


def first_level(alpha: float, row: Estimate, judged: list[Estimate], design: str) -> float:
    """The one-sided level `row`'s own test must reach when it is the likeliest row: Holm's first step
    (its weight's share of alpha), or the two-stage plan's stage-1 share split evenly."""
    if design == SINGLE:
        return alpha * row.weight / max(sum(e.weight for e in judged), row.weight)
    return STAGE1_SHARE * alpha / max(len(judged), 1)


def decide(estimates: list[Estimate], alpha: float, design: str = SINGLE, large_drop: float = 0.0) -> list[Verdict]:
    """The verdict of every row, in the order given (see the module docstring for the rule)."""
    p = adjusted(estimates, design)
    judged = [e for e in estimates if not e.why_not]
    return [_verdict(e, p.get(e.name), alpha, first_level(alpha, e, judged, design), large_drop) for e in estimates]


def limits(threshold: float) -> tuple[float, float]:
    """The log changes at which the metric has moved by `threshold` down and up: log(1 - t), log(1 + t).
    A threshold is a fraction of the metric either way (5%: below 0.95x or above 1.05x)."""
    return math.log1p(-threshold), math.log1p(threshold)


def _verdict(e: Estimate, p: tuple[float, float] | None, alpha: float, level: float, large_drop: float) -> Verdict:
    shown = e.shown
    low, high = shown.interval(CONFIDENCE)
    down, up = limits(e.threshold)
    fields = dict(
        unit=e.unit, base=e.base, now=e.now, change=math.expm1(shown.mean), low=_frac(low), high=_frac(high),
        threshold=e.threshold, lower_is_better=e.lower_is_better,
        detectable=max(e.threshold, math.expm1(e.test.critical(level))),
    )  # fmt: skip
    if p is None:
        return Verdict(e.name, "inconclusive", note=_join(e.note, e.why_not), **fields)
    p_worse, p_better = p
    worse, better = (shown.mean > up, shown.mean < down) if e.lower_is_better else (shown.mean < down, shown.mean > up)
    if worse and p_worse < alpha:
        return Verdict(e.name, "regression", p_value=p_worse, note=e.note, **fields)
    if large_drop and _beyond(e, shown.mean, max(large_drop, e.threshold)) and e.p_worse(e.test) < alpha:
        return Verdict(e.name, "regression", p_value=e.p_worse(e.test), note=_join(e.note, "a large drop"), **fields)
    if better and p_better < alpha:
        return Verdict(e.name, "improvement", p_value=p_better, note=e.note, **fields)
    status = "unchanged" if down < low and high < up else "inconclusive"
    return Verdict(e.name, status, p_value=min(p_worse, p_better), note=e.note, **fields)


def _beyond(e: Estimate, log_change: float, fraction: float) -> bool:
    """Has the metric moved for the worse by more than `fraction` of itself?"""
    down, up = limits(fraction)
    return log_change > up if e.lower_is_better else log_change < down


def _frac(log_value: float) -> float | None:
    return math.expm1(log_value) if math.isfinite(log_value) else None


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def missing(name: str, why: str) -> Verdict:
    return Verdict(name, MISSING, note=why)


def counts(verdicts: list[Verdict]) -> dict[str, int]:
    """How many rows got each verdict, and how many were missing."""
    return {s: sum(v.status == s for v in verdicts) for s in (*VERDICTS, MISSING)}


def exit_code(verdicts: list[Verdict], strict: bool = False) -> int:
    """10 on a regression; with strict, 12 where a row is inconclusive (and none regressed); else 0."""
    from harness.errors import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_REGRESSION

    if any(v.status == "regression" for v in verdicts):
        return EXIT_REGRESSION
    if strict and any(v.status == "inconclusive" for v in verdicts):
        return EXIT_INCONCLUSIVE
    return EXIT_OK
