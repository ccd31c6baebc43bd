"""The stored-baseline gate: this run's results against a baseline's, through the judge.

`pytest perf_tests --benchmark-compare` and `llm-perf compare A.json B.json` both come here. The
rows are built in rows.py (throughput per case, the suite's geometric mean) and latency.py (serving
at a fixed rate), on numbers corrected for machine speed (speed.py); harness/judge decides them all
at once (Holm over the rows, each direction at alpha, the suite row weighted as all the others
together) into four verdicts. Cases on one side only are listed as missing. A row states the
smallest change it could have called: on a shared machine with a few baseline runs that is often far
above the threshold, and the row is then "inconclusive".
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace

from harness.baseline.latency import latency_estimates, latency_method
from harness.baseline.rows import SUITE_ROW, case_row, suite_row
from harness.baseline.speed import CaseData, Speed, run_noise
from harness.engines.work import FLOPS
from harness.judge import SINGLE, Thresholds, Verdict, decide, missing
from harness.judge.stats import Prior
from harness.judge.work import work_line, work_verdicts
from harness.results import BenchRecord, ResultsFile

# what the flops count depends on besides the code: the machine_info keys both runs must share
COUNTED_WITH = ("torch", "cpu_products", "cpu_attention")

__all__ = ["SUITE_ROW", "Thresholds", "compare", "method_line"]


@dataclass(frozen=True)
class Prepared:
    """What compare and method_line both read: the cases by name, machine speed, corrected data, noise."""

    base: dict[str, BenchRecord]
    now: dict[str, BenchRecord]
    speed: Speed
    data: dict[str, CaseData]  # the cases on both sides, sorted by name
    noise: Prior | None
    # flops are counted by torch's formulas, over the kernels the run had: another torch, another
    # product library or attention kernel (a host without a C compiler) may count otherwise
    same_counter: bool = True

    @classmethod
    def of(cls, baseline: ResultsFile | dict, current: ResultsFile | dict, thresholds: Thresholds) -> Prepared:
        baseline, current = ResultsFile.coerce(baseline), ResultsFile.coerce(current)
        base, now = baseline.by_name(), current.by_name()
        speed = Speed.of(baseline, current, thresholds.normalise)
        data = {name: CaseData.of(name, base[name], now[name], speed) for name in sorted(base.keys() & now.keys())}
        same = all(baseline.machine_info.get(k) == current.machine_info.get(k) for k in COUNTED_WITH)
        return cls(base, now, speed, data, run_noise(list(data.values())), same)


def compare(baseline: ResultsFile | dict, current: ResultsFile | dict, thresholds: Thresholds) -> list[Verdict]:
    """One verdict per case and latency row (sorted by name), the missing cases, then the suite row."""
    return judged(baseline, current, thresholds)[0]


def method_line(baseline: ResultsFile | dict, current: ResultsFile | dict, thresholds: Thresholds | None = None) -> str:
    """How the verdicts were reached, for the line under the table."""
    return judged(baseline, current, thresholds or Thresholds())[1]


def judged(
    baseline: ResultsFile | dict, current: ResultsFile | dict, thresholds: Thresholds
) -> tuple[list[Verdict], str]:
    """(compare's verdicts, method_line's text), from one reading of the two files."""
    prep = Prepared.of(baseline, current, thresholds)
    rows = case_rows(prep, thresholds)
    suite = suite_row(prep.data, rows, thresholds)
    rows += latency_estimates(prep.base, prep.now, thresholds)
    if suite:  # half of alpha for "everything slowed a little", the other half shared by the rows
        suite = replace(suite, weight=max(1, sum(not r.why_not for r in rows)))
    decided = decide(rows + ([suite] if suite else []), thresholds.alpha, SINGLE, thresholds.large_drop)
    work, compared, skipped = work_rows(prep)
    verdicts = sorted([*(v for v in decided if v.name != SUITE_ROW), *work], key=lambda v: v.name)
    verdicts += [missing(n, "in the baseline, not in this run") for n in sorted(prep.base.keys() - prep.now.keys())]
    verdicts += [missing(n, "new case: no baseline yet") for n in sorted(prep.now.keys() - prep.base.keys())]
    verdicts += [v for v in decided if v.name == SUITE_ROW]
    return verdicts, describe(prep, thresholds, suite is not None, work_line(compared, len(work), skipped))


def case_rows(prep: Prepared, thresholds: Thresholds) -> list:
    """Each case's throughput row (an Estimate), sorted by name."""
    return [case_row(n, prep.base[n], prep.now[n], d, prep.noise, thresholds) for n, d in prep.data.items()]


def work_rows(prep: Prepared) -> tuple[list[Verdict], int, str]:
    """(the work rows, how many cases' counters were compared, why some were not)."""
    rows, compared, other_seed, dropped = [], 0, 0, False
    for name in prep.data:
        b, n = prep.base[name].result, prep.now[name].result
        base, now = dict(b.work or {}), dict(n.work or {})
        if not prep.same_counter:
            dropped |= base.pop(FLOPS, None) is not None
            now.pop(FLOPS, None)
        if not base:
            continue
        if b.seed != n.seed:
            other_seed += 1
            continue
        compared += 1
        rows += work_verdicts(name, base, now, bool(b.work_unsteady or n.work_unsteady))
    why = [f"{other_seed} case(s) with another seed on each side: work not compared"] if other_seed else []
    why += ["flops not compared: torch or the CPU kernels differ between the runs"] if dropped else []
    return rows, compared, "; ".join(why)


def describe(prep: Prepared, thresholds: Thresholds, has_suite_row: bool, work: str) -> str:
    """The method line, with `work` (the work gate's part) in its place."""
    speed, noise = prep.speed, prep.noise
    if noise is None:
        test = (
            "per case: Mann-Whitney U on the rounds (a single-run baseline: the machine's run-to-run spread is "
            "unknown, so this is too sure; record 5 runs with `llm-perf baseline update --runs 5`)"
        )
    else:
        if noise.df == float("inf"):
            spread = f"every case on the cases' common sd {noise.sd:.1%}, {noise.total_df} df"
        elif noise.df == 0:  # fewer than 3 cases with a spread: nothing to moderate toward
            spread = f"each case's own ({max(len(d.base_runs) for d in prep.data.values()) - 1} df a case at most)"
        else:
            spread = f"each case's own moderated toward the cases' {noise.sd:.1%}, worth {noise.df:.1f} df"
        test = f"per case: this run's median against the baseline runs (run-to-run spread: {spread}; Smyth 2004); "
        test += (
            "the suite's mean against the runs' means"
            if has_suite_row
            else "no suite row (it needs 3 cases judged, each with the same number of baseline runs)"
        )
    test += (
        f"; Holm over the rows{' (the suite row weighted as the rest together)' if has_suite_row else ''}, "
        f"alpha {thresholds.alpha} each way; a regression needs a drop beyond the threshold "
        f"and adjusted p < alpha, or a drop beyond {thresholds.large_drop:.0%} with p < alpha alone; unchanged: the "
        "95% interval inside +-threshold"
    )
    test += latency_method(prep.base, prep.now, thresholds) + work
    if speed.mode == "off":
        return f"{test}; {speed.why_off}"
    machine = statistics.median(speed.now.values()) / statistics.median(speed.base.values()) - 1
    raw = f"; {len(speed.raw_cases)} case(s) compared raw (their engine runs the reference forward's code)"
    return (
        f"{test}; changes corrected for machine speed (the reference forward took {machine:+.1%} time vs the "
        f"baseline, per {speed.mode}; raw changes in the notes){raw if speed.raw_cases else ''}"
    )
