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

A run tests many cases at once: at p < 0.01 each, eleven cases raise a false alarm in up to one run in
ten. The per-case p-values are therefore adjusted with Holm's step-down method over the cases of the
run (`[tool.perf] multiple = "holm"`, the default; "none" tests each case alone), which bounds the
chance of any false alarm in the run by alpha. A large drop of one case still fails on its own.

On top of the cases, the suite's geometric-mean change over all compared cases is one more row: it
regresses when it drops by more than the default threshold and a one-sided t-test across the cases'
log ratios gives p < alpha. A slowdown that touches every case a little (a slower kernel, an extra
copy per step) moves the mean of many cases far beyond their shared noise, even where each case on
its own is too noisy to tell.

Both tests compare throughput corrected for machine speed (Speed): a fixed reference forward timed
beside every case tells how fast the machine was during each run, on a shared machine the largest
single source of run-to-run change. A case recorded on an unhealthy GPU is unreliable, never a
regression. Cases missing from either side are listed.

Serving cases at a fixed request rate add latency rows (p99 TTFT and TPOT regress going up, goodput
going down; `[tool.perf] latency_threshold`), tested the same way, raw, and adjusted with the cases:
harness/baseline/latency.py.
"""

from __future__ import annotations

import statistics
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from harness.baseline import MULTIPLE_MODES, NORMALISE_MODES
from harness.baseline.latency import latency_method, latency_tests
from harness.baseline.significance import SUITE_ROW, CaseTest, case_test, holm, suite_test
from harness.baseline.speed import CaseData, RunNoise, Speed
from harness.errors import ConfigError
from harness.results import BenchRecord, ResultsFile

__all__ = [
    *("SUITE_ROW", "Thresholds", "Verdict", "cell_value", "compare", "format_table", "has_regression", "method_line"),
]


@dataclass(frozen=True)
class Thresholds:
    default: float = 0.05
    alpha: float = 0.01
    groups: dict[str, float] = field(default_factory=dict)  # by case kind: prefill, decode, ...
    cases: dict[str, float] = field(default_factory=dict)  # by full case name
    normalise: str = "case"  # machine-speed correction: "case", "run" or "off" (see Speed)
    multiple: str = "holm"  # per-case p-values adjusted over the cases of a run: "holm" or "none"
    ab_threshold: float = 0.02  # `harness ab`: base and head interleaved on one machine resolve small changes
    latency_threshold: float = 0.10  # serving at a fixed rate: p99 TTFT/TPOT up, goodput down (latency.py)

    def __post_init__(self) -> None:
        if self.normalise not in NORMALISE_MODES:
            raise ConfigError(
                f"[tool.perf] normalise must be one of {', '.join(NORMALISE_MODES)}, got {self.normalise!r}"
            )
        if self.multiple not in MULTIPLE_MODES:
            raise ConfigError(f"[tool.perf] multiple must be one of {', '.join(MULTIPLE_MODES)}, got {self.multiple!r}")
        for name, value in [
            ("threshold", self.default),
            ("ab_threshold", self.ab_threshold),
            ("latency_threshold", self.latency_threshold),
            *self.groups.items(),
            *self.cases.items(),
        ]:
            if not 0 <= value < 1:
                raise ConfigError(f"[tool.perf] threshold {name!r} must be a fraction in [0, 1), got {value}")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"[tool.perf] alpha must be in (0, 1), got {self.alpha}")

    def for_case(self, name: str, group: str) -> float:
        return self.cases.get(name, self.groups.get(group, self.default))

    @classmethod
    def from_pyproject(cls, path: str | Path = "pyproject.toml") -> Thresholds:
        """[tool.perf] of a pyproject.toml (defaults where the file or a key is missing); any bad value is a
        ConfigError naming the file."""
        path = Path(path)
        if not path.exists():
            return cls()
        try:
            perf = tomllib.loads(path.read_text()).get("tool", {}).get("perf", {})
            defaults = cls()
            return cls(
                default=float(perf.get("threshold", defaults.default)),
                alpha=float(perf.get("alpha", defaults.alpha)),
                groups={k: float(v) for k, v in perf.get("groups", {}).items()},
                cases={k: float(v) for k, v in perf.get("cases", {}).items()},
                normalise=str(perf.get("normalise", defaults.normalise)),
                multiple=str(perf.get("multiple", defaults.multiple)),
                ab_threshold=float(perf.get("ab_threshold", defaults.ab_threshold)),
                latency_threshold=float(perf.get("latency_threshold", defaults.latency_threshold)),
            )
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        except (tomllib.TOMLDecodeError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{path}: [tool.perf] cannot be read: {exc}") from None


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
    metric: str = ""  # a latency row's metric (ttft_ms_p99, tpot_ms_p99, goodput); "" for tokens/s


def judge_all(tests: list[CaseTest], thresholds: Thresholds) -> list[Verdict]:
    """Verdicts for the rows of one run, their p-values adjusted over the reliable rows. A row's gain is its
    change for the better: a latency row whose metric is lower-is-better gains when it goes down."""
    reliable = [t for t in tests if not t.unreliable]
    slower = [t.p_slower for t in reliable]
    faster = [t.p_faster for t in reliable]
    if thresholds.multiple == "holm":
        slower, faster = holm(slower), holm(faster)
    adjusted = {t.name: (s, f) for t, s, f in zip(reliable, slower, faster, strict=True)}
    verdicts = []
    for t in tests:
        if t.unreliable:
            verdicts.append(Verdict(t.name, "unreliable", note="recorded on an unhealthy GPU", **t.fields))
            continue
        p_slower, p_faster = adjusted[t.name]
        verdicts.append(
            _decide(
                t.name,
                -t.fields["change"] if t.lower_is_better else t.fields["change"],
                t.fields["threshold"],
                p_slower,
                p_faster,
                thresholds.alpha,
                t.fields,
                t.note,
            )
        )
    return verdicts


def _decide(name, gain, threshold, p_slower, p_faster, alpha, fields, note="") -> Verdict:
    if gain < -threshold and p_slower < alpha:
        return Verdict(name, "regression", p_value=p_slower, note=note, **fields)
    if gain > threshold and p_faster < alpha:
        return Verdict(name, "improvement", p_value=p_faster, note=note, **fields)
    return Verdict(name, "ok", p_value=min(p_slower, p_faster), note=note, **fields)


@dataclass(frozen=True)
class Prepared:
    """What compare and method_line both read: the cases by name, machine speed, corrected data, noise."""

    base: dict[str, BenchRecord]
    now: dict[str, BenchRecord]
    speed: Speed
    data: dict[str, CaseData]  # the cases on both sides, sorted by name
    noise: RunNoise | None

    @classmethod
    def of(cls, baseline: ResultsFile | dict, current: ResultsFile | dict, thresholds: Thresholds) -> Prepared:
        baseline, current = ResultsFile.coerce(baseline), ResultsFile.coerce(current)
        base, now = baseline.by_name(), current.by_name()
        speed = Speed.of(baseline, current, thresholds.normalise)
        data = {name: CaseData.of(name, base[name], now[name], speed) for name in sorted(base.keys() & now.keys())}
        return cls(base, now, speed, data, RunNoise.of(list(data.values())))


def compare(baseline: ResultsFile | dict, current: ResultsFile | dict, thresholds: Thresholds) -> list[Verdict]:
    """One verdict per case and per latency row (sorted: a case's latency rows follow it), the missing
    cases, then the suite row when there are enough cases."""
    prep = Prepared.of(baseline, current, thresholds)
    base, now = prep.base, prep.now
    tests = [case_test(name, base[name], now[name], thresholds, d, prep.noise) for name, d in prep.data.items()]
    suite = suite_test(prep.data, tests, thresholds)
    tests += latency_tests(base, now, thresholds)
    judged = judge_all(tests + ([suite] if suite else []), thresholds)  # Holm over every row and the suite row
    verdicts = sorted((v for v in judged if v.name != SUITE_ROW), key=lambda v: v.name)
    verdicts += [
        Verdict(name, "missing-now", note="in the baseline, not in this run")
        for name in sorted(base.keys() - now.keys())
    ]
    verdicts += [
        Verdict(name, "missing-in-baseline", note="new case: no baseline yet")
        for name in sorted(now.keys() - base.keys())
    ]
    return verdicts + [v for v in judged if v.name == SUITE_ROW]


def method_line(baseline: ResultsFile | dict, current: ResultsFile | dict, thresholds: Thresholds | None = None) -> str:
    """How the verdicts were reached, for the line under the table."""
    thresholds = thresholds or Thresholds()
    prep = Prepared.of(baseline, current, thresholds)
    speed, noise = prep.speed, prep.noise
    if noise is None:
        test = (
            "per case: one-sided Mann-Whitney U on the rounds (single-run baseline: the machine's run-to-run "
            "spread is unknown; record with `baseline update --runs 3`)"
        )
    else:
        test = (
            f"per case: one-sided t-test of this run's median against the baseline runs (run-to-run sd "
            f"{noise.sd:.1%}, {noise.df} df)"
        )
    if thresholds.multiple == "holm":
        test += ", p adjusted over the run's cases and the suite row (Holm)"
    if noise is None:
        test += "; no suite row (it needs a baseline pooled from several runs)"
    test += latency_method(prep.base, prep.now, thresholds)
    if speed.mode == "off":
        return f"{test}; {speed.why_off}"
    machine = statistics.median(speed.now.values()) / statistics.median(speed.base.values()) - 1
    raw = f"; {len(speed.raw_cases)} case(s) compared raw (their engine runs the reference forward's code)"
    return (
        f"{test}; changes corrected for machine speed (the reference forward took {machine:+.1%} time vs the "
        f"baseline, per {speed.mode}; raw changes in the notes){raw if speed.raw_cases else ''}"
    )


LATENCY_DROP = " (latency rows: a rise of p99 TTFT or TPOT, a drop of goodput)"
MARKS = {
    "regression": "REGRESSION",
    "improvement": "improved",
    "ok": "",
    "unreliable": "unreliable",
    "missing-now": "missing now",
    "missing-in-baseline": "no baseline",
}


def cell_value(x: float | None, metric: str) -> str:
    """A table cell: tokens/s to 0.1; a latency row's value (ms, requests/s) to 3 significant digits below 100."""
    if x is None:
        return ""
    return f"{x:#.3g}" if metric and abs(x) < 100 else f"{x:,.1f}"


def format_table(verdicts: list[Verdict], alpha: float, method: str = "") -> list[str]:
    width = max([len(v.name) for v in verdicts] + [4])
    lines = [
        f"{'case':<{width}}  {'baseline tok/s':>14}  {'now tok/s':>12}  {'change':>8}  {'p':>8}  {'thr':>5}  verdict"
    ]
    for v in verdicts:
        nums = (
            cell_value(v.base_tok_s, v.metric),
            cell_value(v.now_tok_s, v.metric),
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
        f"a regression needs a drop{LATENCY_DROP if any(v.metric for v in verdicts) else ''} above its threshold "
        f"AND p < {alpha}; "
        f"{method or 'per case: see harness/baseline/gate.py'}"
    )
    return lines


def has_regression(verdicts: list[Verdict]) -> bool:
    return any(v.status == "regression" for v in verdicts)
