"""The throughput regression gate.

A case regresses when its median tokens/s dropped by more than its threshold AND the drop is
statistically significant (one-sided, p < alpha). Which test depends on what the baseline holds:

- a baseline pooled from several runs (`baseline update --runs N`, the default) keeps each run's
  median, so the test compares this run's median with the baseline runs' spread: a one-sided t-test
  on log throughput whose variance is the machine's run-to-run variance (pooled over all cases,
  never below the case's own). On a shared machine the rounds of one run agree with each other far
  better than two runs do, so a test on rounds alone calls a neighbour's busy minute a regression.
- a single-run baseline has no run-to-run spread: a Mann-Whitney U test on the per-round
  throughputs, as pytest-benchmark's data allow.

On top of the cases, the suite's geometric-mean change over all compared cases is one more row: it
regresses when it drops by more than the default threshold and a one-sided t-test across the cases'
log ratios gives p < alpha. A slowdown that touches every case a little (a slower kernel, an extra
copy per step) moves the mean of many cases far beyond their shared noise, even where each case on
its own is too noisy to tell.

A case recorded on an unhealthy GPU is unreliable, never a regression. Cases missing from either
side are listed.
"""

from __future__ import annotations

import math
import statistics
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from scipy import stats

REGRESSION_EXIT_CODE = 10  # distinct from pytest's 0-5
SUITE_ROW = "suite geometric mean"


@dataclass(frozen=True)
class Thresholds:
    default: float = 0.05
    alpha: float = 0.01
    groups: dict[str, float] = field(default_factory=dict)  # by case kind: prefill, decode, ...
    cases: dict[str, float] = field(default_factory=dict)  # by full case name

    def for_case(self, name: str, group: str) -> float:
        return self.cases.get(name, self.groups.get(group, self.default))

    @classmethod
    def from_pyproject(cls, path: str | Path = "pyproject.toml") -> Thresholds:
        path = Path(path)
        if not path.exists():
            return cls()
        perf = tomllib.loads(path.read_text()).get("tool", {}).get("perf", {})
        return cls(
            default=float(perf.get("threshold", 0.05)),
            alpha=float(perf.get("alpha", 0.01)),
            groups={k: float(v) for k, v in perf.get("groups", {}).items()},
            cases={k: float(v) for k, v in perf.get("cases", {}).items()},
        )


@dataclass(frozen=True)
class Verdict:
    name: str
    status: str  # regression, improvement, ok, unreliable, missing-in-baseline, missing-now
    base_tok_s: float | None = None
    now_tok_s: float | None = None
    change: float | None = None
    p_value: float | None = None
    threshold: float | None = None
    note: str = ""


def round_throughputs(bench: dict) -> list[float]:
    """tokens / seconds for every timed round: each round does the same fixed work."""
    tokens = bench["extra_info"]["tokens"]
    return [tokens / secs for secs in bench["stats"]["data"]]


def run_medians(bench: dict) -> list[float]:
    """The median tokens/s of each run pooled into a baseline ([] for a single run)."""
    runs = bench["extra_info"].get("run_tok_s") or []
    return [float(x) for x in runs] if len(runs) >= 2 else []


def _unhealthy(bench: dict) -> bool:
    return bench["extra_info"].get("gpu_healthy") is False


@dataclass(frozen=True)
class RunNoise:
    """The machine's run-to-run spread of log throughput, pooled over every case of a baseline."""

    sd: float
    df: int

    @classmethod
    def of(cls, baseline: dict) -> RunNoise | None:
        squares, df = 0.0, 0
        for bench in baseline["benchmarks"]:
            logs = [math.log(x) for x in run_medians(bench)]
            if logs:
                mean = sum(logs) / len(logs)
                squares += sum((x - mean) ** 2 for x in logs)
                df += len(logs) - 1
        return cls(math.sqrt(squares / df), df) if df else None


def _run_to_run_p(runs: list[float], now_med: float, noise: RunNoise) -> tuple[float, float, float]:
    """(baseline centre, p slower, p faster): this run's median against the baseline runs' spread."""
    logs = [math.log(x) for x in runs]
    centre = sum(logs) / len(logs)
    own = statistics.stdev(logs)
    sd = max(own, noise.sd) * math.sqrt(1 + 1 / len(logs))  # a new run's deviation from the runs' mean
    if sd == 0:
        delta = math.log(now_med) - centre
        return math.exp(centre), float(delta >= 0), float(delta <= 0)
    score = (math.log(now_med) - centre) / sd
    return math.exp(centre), float(stats.t.cdf(score, noise.df)), float(stats.t.sf(score, noise.df))


def judge(name: str, base: dict, now: dict, thresholds: Thresholds, noise: RunNoise | None = None) -> Verdict:
    group = now["extra_info"].get("kind") or name.split("[")[0].removeprefix("test_")
    threshold = thresholds.for_case(name, group)
    b, n = round_throughputs(base), round_throughputs(now)
    now_med = statistics.median(n)
    runs = run_medians(base)
    if runs and noise is not None:
        base_med, p_slower, p_faster = _run_to_run_p(runs, now_med, noise)
    else:
        base_med = statistics.median(b)
        p_slower = float(stats.mannwhitneyu(b, n, alternative="greater").pvalue)
        p_faster = float(stats.mannwhitneyu(b, n, alternative="less").pvalue)
    change = now_med / base_med - 1
    fields = {"base_tok_s": base_med, "now_tok_s": now_med, "change": change, "threshold": threshold}
    if _unhealthy(base) or _unhealthy(now):
        return Verdict(name, "unreliable", note="recorded on an unhealthy GPU", **fields)
    return _decide(name, change, threshold, p_slower, p_faster, thresholds.alpha, fields)


def _decide(name, change, threshold, p_slower, p_faster, alpha, fields, note="") -> Verdict:
    if change < -threshold and p_slower < alpha:
        return Verdict(name, "regression", p_value=p_slower, note=note, **fields)
    if change > threshold and p_faster < alpha:
        return Verdict(name, "improvement", p_value=p_faster, note=note, **fields)
    return Verdict(name, "ok", p_value=min(p_slower, p_faster), note=note, **fields)


def suite_verdict(cases: list[Verdict], thresholds: Thresholds) -> Verdict | None:
    """The geometric-mean change over the compared cases, tested across cases (needs three)."""
    logs = [math.log1p(v.change) for v in cases if v.status != "unreliable" and v.change is not None]
    if len(logs) < 3:
        return None
    change = math.exp(sum(logs) / len(logs)) - 1
    if max(logs) == min(logs):
        p_slower, p_faster = float(change >= 0), float(change <= 0)
    else:
        p_slower = float(stats.ttest_1samp(logs, 0.0, alternative="less").pvalue)
        p_faster = float(stats.ttest_1samp(logs, 0.0, alternative="greater").pvalue)
    fields = {"change": change, "threshold": thresholds.default}
    note = f"{len(logs)} cases, t-test across cases"
    return _decide(SUITE_ROW, change, thresholds.default, p_slower, p_faster, thresholds.alpha, fields, note)


def compare(baseline: dict, current: dict, thresholds: Thresholds) -> list[Verdict]:
    """One verdict per case (sorted), the missing cases, then the suite row when there are enough cases."""
    base = {b["name"]: b for b in baseline["benchmarks"]}
    now = {b["name"]: b for b in current["benchmarks"]}
    noise = RunNoise.of(baseline)
    verdicts = [judge(name, base[name], now[name], thresholds, noise) for name in sorted(base.keys() & now.keys())]
    suite = suite_verdict(verdicts, thresholds)
    verdicts += [
        Verdict(name, "missing-now", note="in the baseline, not in this run")
        for name in sorted(base.keys() - now.keys())
    ]
    verdicts += [
        Verdict(name, "missing-in-baseline", note="new case: no baseline yet")
        for name in sorted(now.keys() - base.keys())
    ]
    return verdicts + ([suite] if suite else [])


def method_line(baseline: dict) -> str:
    noise = RunNoise.of(baseline)
    if noise is None:
        return (
            "per case: one-sided Mann-Whitney U on the rounds (single-run baseline: the machine's run-to-run "
            "spread is unknown; record with `baseline update --runs 3`)"
        )
    return (
        f"per case: one-sided t-test of this run's median against the baseline runs (run-to-run sd "
        f"{noise.sd:.1%} of tokens/s, {noise.df} df)"
    )


MARKS = {
    "regression": "REGRESSION",
    "improvement": "improved",
    "ok": "",
    "unreliable": "unreliable",
    "missing-now": "missing now",
    "missing-in-baseline": "no baseline",
}


def format_table(verdicts: list[Verdict], alpha: float, method: str = "") -> list[str]:
    width = max([len(v.name) for v in verdicts] + [4])
    lines = [
        f"{'case':<{width}}  {'baseline tok/s':>14}  {'now tok/s':>12}  {'change':>8}  {'p':>8}  {'thr':>5}  verdict"
    ]
    for v in verdicts:
        nums = (
            "" if v.base_tok_s is None else f"{v.base_tok_s:,.1f}",
            "" if v.now_tok_s is None else f"{v.now_tok_s:,.1f}",
            "" if v.change is None else f"{v.change:+.1%}",
            "" if v.p_value is None else f"{v.p_value:.4f}",
            "" if v.threshold is None else f"{v.threshold:.0%}",
        )
        lines.append(
            f"{v.name:<{width}}  {nums[0]:>14}  {nums[1]:>12}  {nums[2]:>8}  {nums[3]:>8}  {nums[4]:>5}  "
            f"{MARKS[v.status]}{(' (' + v.note + ')') if v.note else ''}".rstrip()
        )
    cases = [v for v in verdicts if v.name != SUITE_ROW]
    counts = {s: sum(v.status == s for v in cases) for s in MARKS}
    suite = next((v for v in verdicts if v.name == SUITE_ROW), None)
    lines.append(
        f"gate: {counts['regression']} regression(s), {counts['improvement']} improvement(s), "
        f"{counts['ok']} unchanged, {counts['unreliable']} unreliable, "
        f"{counts['missing-now'] + counts['missing-in-baseline']} missing"
        + (f"; suite {MARKS[suite.status] or 'unchanged'}" if suite else "")
    )
    lines.append(
        f"a regression needs a drop above its threshold AND p < {alpha}; "
        f"{method or 'per case: see harness/baseline/gate.py'}"
    )
    return lines


def has_regression(verdicts: list[Verdict]) -> bool:
    return any(v.status == "regression" for v in verdicts)
