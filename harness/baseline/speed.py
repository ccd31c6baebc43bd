"""Machine speed and run-to-run noise: what the gate divides out and what it tests against.

A fixed reference forward timed beside every case (harness/timer.py) tells how fast the machine was
during each run; on a shared machine that is the largest single source of run-to-run change.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from harness.judge.stats import Prior, moderated_prior
from harness.results import BenchRecord, ResultsFile


def _reference_shape(bench: BenchRecord) -> list[int]:
    return list(bench.result.reference_shape or [1, 8])  # 1 x 8 before shapes were recorded


SAME_STACK_KEYS = ("torch", "transformers", "dtype", "gpu", "cuda", "cpu")


@dataclass(frozen=True)
class Speed:
    """Machine-speed factors: tokens/s x factor is throughput in units of the reference forward.

    The reference is a fixed forward of the case's model that no engine code runs (harness/bench.py),
    timed beside every case; PERF_INJECT_SLOWDOWN does not touch it. On a shared machine a neighbour
    or a clock change slows the reference and the cases alike, and dividing it out leaves what the
    engine itself changed. A regression inside torch or transformers would slow the reference as
    well, so the correction is applied only when both sides ran the same stack (SAME_STACK_KEYS).
    `mode`: "case" divides by each case's own reference (follows drift within a run), "run" by the
    run's median reference (steadier, misses drift within the run), "off" compares raw tokens/s.
    """

    mode: str
    now: dict[str, float] = field(default_factory=dict)  # case -> factor for the current run
    base: dict[str, float] = field(default_factory=dict)  # case -> factor for the pooled baseline
    base_runs: dict[str, list[float]] = field(default_factory=dict)  # case -> factor per baseline run
    why_off: str = ""
    # Cases compared raw: their engine runs the reference forward's own code (HF's model forward), so
    # a regression there would slow the reference too, and dividing it out would hide it.
    raw_cases: frozenset[str] = frozenset()

    @classmethod
    def of(cls, baseline: ResultsFile, current: ResultsFile, mode: str) -> Speed:
        if mode == "off":
            return cls("off", why_off="machine-speed correction switched off ([tool.perf] normalise)")
        differ = [k for k in SAME_STACK_KEYS if baseline.machine_info.get(k) != current.machine_info.get(k)]
        if differ:
            return cls("off", why_off=f"no machine-speed correction: {', '.join(differ)} differ between the runs")
        base, now = baseline.by_name(), current.by_name()
        if any(b.result.reference_median_ms is None for b in [*base.values(), *now.values()]):
            return cls("off", why_off="no machine-speed correction: a side has no reference timings")
        reshaped = [n for n in base.keys() & now.keys() if _reference_shape(base[n]) != _reference_shape(now[n])]
        if reshaped:
            return cls(
                "off",
                why_off=f"no machine-speed correction: the reference forward has another shape on each side "
                f"for {len(reshaped)} case(s) (a baseline from an older suite: record it again)",
            )
        runs = {name: b.result.run_reference_ms or [b.result.reference_median_ms] for name, b in base.items()}
        if mode == "run":
            width = min(len(r) for r in runs.values())
            per_run = [statistics.median(r[i] for r in runs.values()) for i in range(width)]
            runs = {name: per_run for name in base}
            whole = statistics.median(b.result.reference_median_ms for b in now.values())
            now_ref = dict.fromkeys(now, whole)
            base_ref = dict.fromkeys(base, statistics.median(b.result.reference_median_ms for b in base.values()))
        else:
            now_ref = {name: b.result.reference_median_ms for name, b in now.items()}
            base_ref = {name: b.result.reference_median_ms for name, b in base.items()}
        unit = statistics.median(base_ref.values())  # keeps corrected numbers near the baseline's own
        shares = [n for n in base.keys() & now.keys() if not (base[n].result.own_forward and now[n].result.own_forward)]
        return cls(
            mode,
            now={k: v / unit for k, v in now_ref.items()},
            base={k: v / unit for k, v in base_ref.items()},
            base_runs={k: [x / unit for x in v] for k, v in runs.items()},
            raw_cases=frozenset(shares),
        )

    def factors(self, name: str, runs: int) -> tuple[float, float, list[float]]:
        """(baseline factor, current factor, factor per baseline run) for one case."""
        if self.mode == "off" or name in self.raw_cases:
            return 1.0, 1.0, [1.0] * runs
        per_run = self.base_runs.get(name, [])
        return self.base[name], self.now[name], per_run if len(per_run) == runs else [self.base[name]] * runs


@dataclass(frozen=True)
class CaseData:
    """One case's throughputs on both sides, corrected for machine speed."""

    base_rounds: list[float]
    now_rounds: list[float]
    base_runs: list[float]  # each baseline run's median ([] for a single-run baseline)
    raw_change: float

    @classmethod
    def of(cls, name: str, base: BenchRecord, now: BenchRecord, speed: Speed) -> CaseData:
        runs = base.result.pooled_run_tok_s
        f_base, f_now, f_runs = speed.factors(name, len(runs))
        b, n = base.round_tok_s(), now.round_tok_s()
        raw = statistics.median(n) / statistics.median(b) - 1
        return cls(
            [x * f_base for x in b], [x * f_now for x in n], [m * f for m, f in zip(runs, f_runs, strict=True)], raw
        )


def run_noise(cases: list[CaseData]) -> Prior | None:
    """The machine's run-to-run spread of log values over a baseline's cases, as runs_test's prior: each
    case's variance of its runs, moderated toward the cases' common one (judge.stats.moderated_prior)."""
    variances, dfs = [], []
    for case in cases:
        if len(case.base_runs) > 1:
            variances.append(statistics.variance([math.log(x) for x in case.base_runs]))
            dfs.append(len(case.base_runs) - 1)
    return moderated_prior(variances, dfs)
