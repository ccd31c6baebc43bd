"""The throughput regression gate.

A case regresses when its median tokens/s dropped by more than its threshold AND the drop is
statistically significant: a one-sided Mann-Whitney U test on the per-round throughputs of the two
runs, p < alpha. A case recorded on an unhealthy GPU is unreliable, never a regression. Cases
missing from either side are listed.
"""

from __future__ import annotations

import statistics
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from scipy.stats import mannwhitneyu

REGRESSION_EXIT_CODE = 10  # distinct from pytest's 0-5


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
    return [tokens / t for t in bench["stats"]["data"]]


def _unhealthy(bench: dict) -> bool:
    return bench["extra_info"].get("gpu_healthy") is False


def judge(name: str, base: dict, now: dict, thresholds: Thresholds) -> Verdict:
    group = now["extra_info"].get("kind") or name.split("[")[0].removeprefix("test_")
    threshold = thresholds.for_case(name, group)
    b, n = round_throughputs(base), round_throughputs(now)
    base_med, now_med = statistics.median(b), statistics.median(n)
    change = now_med / base_med - 1
    fields = {"base_tok_s": base_med, "now_tok_s": now_med, "change": change, "threshold": threshold}
    if _unhealthy(base) or _unhealthy(now):
        return Verdict(name, "unreliable", note="recorded on an unhealthy GPU", **fields)
    p_slower = mannwhitneyu(b, n, alternative="greater").pvalue
    p_faster = mannwhitneyu(b, n, alternative="less").pvalue
    if change < -threshold and p_slower < thresholds.alpha:
        return Verdict(name, "regression", p_value=p_slower, **fields)
    if change > threshold and p_faster < thresholds.alpha:
        return Verdict(name, "improvement", p_value=p_faster, **fields)
    return Verdict(name, "ok", p_value=min(p_slower, p_faster), **fields)


def compare(baseline: dict, current: dict, thresholds: Thresholds) -> list[Verdict]:
    base = {b["name"]: b for b in baseline["benchmarks"]}
    now = {b["name"]: b for b in current["benchmarks"]}
    verdicts = [judge(name, base[name], now[name], thresholds) for name in sorted(base.keys() & now.keys())]
    verdicts += [
        Verdict(name, "missing-now", note="in the baseline, not in this run")
        for name in sorted(base.keys() - now.keys())
    ]
    verdicts += [
        Verdict(name, "missing-in-baseline", note="new case: no baseline yet")
        for name in sorted(now.keys() - base.keys())
    ]
    return verdicts


MARKS = {
    "regression": "REGRESSION",
    "improvement": "improved",
    "ok": "",
    "unreliable": "unreliable",
    "missing-now": "missing now",
    "missing-in-baseline": "no baseline",
}


def format_table(verdicts: list[Verdict], alpha: float) -> list[str]:
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
    counts = {s: sum(v.status == s for v in verdicts) for s in MARKS}
    lines.append(
        f"gate: {counts['regression']} regression(s), {counts['improvement']} improvement(s), "
        f"{counts['ok']} unchanged, {counts['unreliable']} unreliable, "
        f"{counts['missing-now'] + counts['missing-in-baseline']} missing; a regression needs a drop above its "
        f"threshold with one-sided Mann-Whitney p < {alpha}"
    )
    return lines


def has_regression(verdicts: list[Verdict]) -> bool:
    return any(v.status == "regression" for v in verdicts)
