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
"""

from __future__ import annotations

import math
import statistics
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from scipy import stats

from harness.baseline import MULTIPLE_MODES, NORMALISE_MODES
from harness.errors import ConfigError
from harness.results import BenchRecord, ResultsFile

SUITE_ROW = "suite geometric mean"


@dataclass(frozen=True)
class Thresholds:
    default: float = 0.05
    alpha: float = 0.01
    groups: dict[str, float] = field(default_factory=dict)  # by case kind: prefill, decode, ...
    cases: dict[str, float] = field(default_factory=dict)  # by full case name
    normalise: str = "case"  # machine-speed correction: "case", "run" or "off" (see Speed)
    multiple: str = "holm"  # per-case p-values adjusted over the cases of a run: "holm" or "none"
    ab_threshold: float = 0.02  # `harness ab`: base and head interleaved on one machine resolve small changes

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


def _reference_shape(bench: BenchRecord) -> list[int]:
    return list(bench.result.reference_shape or [1, 8])  # 1 x 8 before shapes were recorded


# --- machine speed ------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class RunNoise:
    """The machine's run-to-run spread of log throughput, pooled over every case of a baseline."""

    sd: float
    df: int

    @classmethod
    def of(cls, cases: list[CaseData]) -> RunNoise | None:
        squares, df = 0.0, 0
        for case in cases:
            logs = [math.log(x) for x in case.base_runs]
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


@dataclass(frozen=True)
class CaseTest:
    """One case's change and its one-sided p-values, before the verdict."""

    name: str
    fields: dict
    p_slower: float
    p_faster: float
    note: str
    unreliable: bool


def case_test(
    name: str, base: BenchRecord, now: BenchRecord, thresholds: Thresholds, data: CaseData, noise: RunNoise | None
) -> CaseTest:
    group = now.group
    b, n = data.base_rounds, data.now_rounds
    now_med = statistics.median(n)
    if data.base_runs and noise is not None:
        base_med, p_slower, p_faster = _run_to_run_p(data.base_runs, now_med, noise)
    else:
        base_med = statistics.median(b)
        p_slower = float(stats.mannwhitneyu(b, n, alternative="greater").pvalue)
        p_faster = float(stats.mannwhitneyu(b, n, alternative="less").pvalue)
    fields = {
        "base_tok_s": base.median_tok_s,
        "now_tok_s": now.median_tok_s,
        "change": now_med / base_med - 1,
        "threshold": thresholds.for_case(name, group),
    }
    note = f"raw {data.raw_change:+.1%}" if abs(data.raw_change - fields["change"]) >= 0.0005 else ""
    unhealthy = base.result.gpu_healthy is False or now.result.gpu_healthy is False
    return CaseTest(name, fields, p_slower, p_faster, note, unhealthy)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: rejecting where the adjusted p < alpha keeps the chance of any false
    alarm among the m tests below alpha, whatever their dependence (Holm 1979)."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def judge_all(tests: list[CaseTest], thresholds: Thresholds) -> list[Verdict]:
    """Verdicts for the cases of one run, their p-values adjusted over the reliable cases."""
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
                t.fields["change"],
                t.fields["threshold"],
                p_slower,
                p_faster,
                thresholds.alpha,
                t.fields,
                t.note,
            )
        )
    return verdicts


def _decide(name, change, threshold, p_slower, p_faster, alpha, fields, note="") -> Verdict:
    if change < -threshold and p_slower < alpha:
        return Verdict(name, "regression", p_value=p_slower, note=note, **fields)
    if change > threshold and p_faster < alpha:
        return Verdict(name, "improvement", p_value=p_faster, note=note, **fields)
    return Verdict(name, "ok", p_value=min(p_slower, p_faster), note=note, **fields)


def suite_test(data: dict[str, CaseData], tests: list[CaseTest], thresholds: Thresholds) -> CaseTest | None:
    """The suite's geometric-mean change, tested against the suite means of the baseline runs.

    Baseline run i has a suite mean S_i (the mean log throughput of its cases); this run has S. A
    slow spell of the machine moves every case of a run together, so the cases of one run are not
    independent samples: the only honest spread of S is the spread of the S_i, with n - 1 degrees of
    freedom (t-test of S against the S_i, as for one case). Needs a baseline pooled from two or more
    runs with every compared case in every run; otherwise there is no suite row."""
    reliable = [t.name for t in tests if not t.unreliable]
    runs = {len(data[name].base_runs) for name in reliable}
    if len(reliable) < 3 or len(runs) != 1 or min(runs) < 2:
        return None
    n = runs.pop()
    base_means = [statistics.fmean(math.log(data[c].base_runs[i]) for c in reliable) for i in range(n)]
    now_mean = statistics.fmean(math.log(statistics.median(data[c].now_rounds)) for c in reliable)
    centre = statistics.fmean(base_means)
    sd = statistics.stdev(base_means) * math.sqrt(1 + 1 / n)
    delta = now_mean - centre
    if sd == 0:
        p_slower, p_faster = float(delta >= 0), float(delta <= 0)
    else:
        p_slower, p_faster = float(stats.t.cdf(delta / sd, n - 1)), float(stats.t.sf(delta / sd, n - 1))
    fields = {"change": math.expm1(delta), "threshold": thresholds.default}
    note = f"{len(reliable)} cases, against the suite means of {n} baseline runs ({n - 1} df)"
    return CaseTest(SUITE_ROW, fields, p_slower, p_faster, note, False)


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
    """One verdict per case (sorted), the missing cases, then the suite row when there are enough cases."""
    prep = Prepared.of(baseline, current, thresholds)
    base, now = prep.base, prep.now
    tests = [case_test(name, base[name], now[name], thresholds, d, prep.noise) for name, d in prep.data.items()]
    suite = suite_test(prep.data, tests, thresholds)
    judged = judge_all(tests + ([suite] if suite else []), thresholds)  # Holm over the cases and the suite row
    verdicts = [v for v in judged if v.name != SUITE_ROW]
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
    if speed.mode == "off":
        return f"{test}; {speed.why_off}"
    machine = statistics.median(speed.now.values()) / statistics.median(speed.base.values()) - 1
    raw = f"; {len(speed.raw_cases)} case(s) compared raw (their engine runs the reference forward's code)"
    return (
        f"{test}; changes corrected for machine speed (the reference forward took {machine:+.1%} time vs the "
        f"baseline, per {speed.mode}; raw changes in the notes){raw if speed.raw_cases else ''}"
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
