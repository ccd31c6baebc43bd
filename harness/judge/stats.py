"""The tests behind every verdict. Pure functions on numbers: no torch, nothing from the rest of the suite.

Every test works on the log of a ratio (now / base for a results file, head / base for an A/B), so a
change and its interval are symmetric in log space and read as fractions: exp(x) - 1.

- `units_test`: Student's one-sample t on independent units; Student (1908). The units' own spread
  gives the error, with n - 1 degrees of freedom.
- `nested_test` with `pooled_lean`: the A/B's test. Observations (pairs of rounds) nest in visits
  (each a fresh pair of processes): log ratio = change + the visit's lean + the order of its rounds
  + the pair's noise. The pair noise is the case's own, from the spread of pairs within its visits
  once the order's effect is removed (it cancels in a visit's mean); the lean's variance is
  pooled over the cases of the stage (a process pair's lean is the machine's, not the case's); the
  variance of the case's mean is their sum over the visits, with Satterthwaite's degrees of freedom
  (one-way random-effects model by the method of moments: Searle, Casella & McCulloch 1992, ch. 3;
  Satterthwaite 1946, for the lean's own df too). Where visits lean, the lean term carries it;
  where they do not, the pairs count, and a case needs far fewer visits than Student's t over
  visits alone.
- `runs_test` with `moderated_prior`: one new run against a baseline of n earlier runs: the new
  run's deviation from their mean has variance s^2 (1 + 1/n) (a prediction interval). A baseline
  holds few runs of many cases, so s^2 is each case's own spread of runs moderated toward the cases'
  common one, empirical Bayes as limma does for many genes of few replicates (Smyth 2004): the prior
  (s0^2, d0) is fitted to the cases' spreads by moments of their logs, a case's s^2 is
  (d0 s0^2 + d s_own^2) / (d0 + d) on d0 + d degrees of freedom (at most the pooled df). Cases whose
  spreads differ no more than sampling explains share s0^2; a case that really is noisier keeps
  part of its own spread.
- `rounds_test`: a single-run baseline has no run-to-run spread: Mann-Whitney U on the rounds
  (Mann & Whitney 1947) and a Welch interval. Rounds of one run agree better than runs do, so this
  test is too sure on a shared machine; the method line says so.
- `holm`: Holm's step-down adjustment (Holm 1979), weighted where some rows should get more of alpha
  than others (Benjamini & Hochberg 1997, "Multiple hypotheses testing with weights"): family-wise
  error at most alpha under any dependence between the rows.
- `two_stage_p`: the A/B's two-stage design, an adaptive combination test with early rejection
  (Bauer & Koehne 1994; Lehmacher & Wassmer 1999, inverse normal method), inside a closed test with
  Bonferroni intersection tests (Bauer & Kieser 1999; Posch et al. 2005), which keeps the
  family-wise error at alpha whatever rule picked the second stage's cases.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import integrate, optimize, special, stats

CONFIDENCE = 0.95  # every interval the judge shows


@dataclass(frozen=True)
class LogTest:
    """A test of a log ratio: its estimate, the one-sided p-values of a decrease and of an increase, and
    how many independent observations it rests on. Subclasses give its interval and critical value."""

    mean: float
    p_lower: float
    p_higher: float
    units: int

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        raise NotImplementedError

    def critical(self, level: float) -> float:
        """About the smallest |change| (log) a one-sided test at `level` calls significant (inf: none)."""
        raise NotImplementedError


@dataclass(frozen=True)
class TTest(LogTest):
    se: float = math.inf
    df: float = 0

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        half = self.critical((1 - confidence) / 2)
        return self.mean - half, self.mean + half

    def critical(self, level: float) -> float:
        if self.df < 1 or not math.isfinite(self.se):
            return math.inf
        return float(stats.t.isf(level, self.df)) * self.se if self.se else 0.0


def _t_test(mean: float, se: float, df: float, units: int) -> TTest:
    if df < 1 or not math.isfinite(se):
        return TTest(mean, 1.0, 1.0, units, math.inf, df)
    if se == 0:
        return TTest(mean, float(mean >= 0), float(mean <= 0), units, 0.0, df)  # certain of any nonzero change
    score = mean / se
    return TTest(mean, float(stats.t.cdf(score, df)), float(stats.t.sf(score, df)), units, se, df)


def units_test(logs: list[float]) -> TTest:
    """Student's one-sample t on independent units (fewer than 2: no test, p = 1 both ways)."""
    n = len(logs)
    if n < 2:
        return TTest(logs[0] if logs else 0.0, 1.0, 1.0, n)
    return _t_test(statistics.fmean(logs), statistics.stdev(logs) / math.sqrt(n), n - 1, n)


@dataclass(frozen=True)
class Lean:
    """The pooled variance of a visit's lean beyond its pairs' noise, and its degrees of freedom."""

    variance: float
    df: float


def visit_moments(visits: list[list[tuple[float, int]]]) -> tuple[float, float, float, float]:
    """(spread of the visit means, its df, the within-visit variance of pairs scaled to a visit mean, its
    df) of one case. Each visit is a list of (pair log, order) with order +-1: which side ran right after
    the other side's process. Within a block the two pairs have opposite orders, so a visit's mean is
    free of that effect; the within spread is taken after removing it (one coefficient per case,
    least squares), or it would count a systematic effect as noise."""
    means = [statistics.fmean(x for x, _ in v) for v in visits]
    orders = [statistics.fmean(o for _, o in v) for v in visits]
    between = statistics.variance(means) if len(means) > 1 else 0.0
    sxy = sum((x - m) * (o - om) for v, m, om in zip(visits, means, orders, strict=True) for x, o in v)
    sxx = sum((o - om) ** 2 for v, om in zip(visits, orders, strict=True) for _, o in v)
    effect = sxy / sxx if sxx else 0.0
    df_w = sum(len(v) - 1 for v in visits) - (1 if sxx else 0)
    ss = sum((x - m - effect * (o - om)) ** 2 for v, m, om in zip(visits, means, orders, strict=True) for x, o in v)
    scale = statistics.fmean(1 / len(v) for v in visits)
    return between, len(visits) - 1, (ss / df_w * scale if df_w > 0 else math.nan), max(df_w, 0)


def pooled_lean(cases: list[list[list[tuple[float, int]]]]) -> Lean:
    """The lean's variance, by the method of moments: each case's spread of visit means less what its
    pairs' noise explains (visit_moments), pooled over the cases with at least two visits and some
    within-visit df, weighted by their df and clipped at zero (Searle, Casella & McCulloch 1992, 3.5).
    Its degrees of freedom are Satterthwaite's (1946) for that difference of mean squares: fewer than
    the visits' where the pairs' noise is a large part of the spread."""
    terms, weight = [], 0.0  # (df_b x between, df_b, df_b x within, df_w) of each case
    for visits in cases:
        if len(visits) < 2:
            continue
        between, df_b, within, df_w = visit_moments(visits)
        if df_b >= 1 and df_w >= 1:
            terms.append((df_b * between, df_b, df_b * within, df_w))
            weight += df_b
    if not weight:
        return Lean(math.nan, 0.0)
    estimate = sum(b - w for b, _, w, _ in terms) / weight
    if estimate <= 0:
        return Lean(0.0, weight)  # no lean: its df do not enter the test
    spread = sum(b * b / df_b + w * w / df_w for b, df_b, w, df_w in terms) / weight**2
    return Lean(estimate, estimate**2 / spread)


def nested_test(visits: list[list[tuple[float, int]]], lean: Lean) -> TTest:
    """The change is the mean of the visit means; its variance, (lean + the case's own pair noise per
    visit) / visits, with Satterthwaite's df (1946). No pooled lean (nan) or no within-visit df: Student's
    t over the visit means."""
    visits = [v for v in visits if v]
    means = [statistics.fmean(x for x, _ in v) for v in visits]
    n = len(visits)
    _, _, within, df_w = visit_moments(visits) if visits else (0, 0, math.nan, 0)
    if not n or not df_w or not math.isfinite(lean.variance) or lean.df < 1:
        return units_test(means)
    lean_part, noise_part = lean.variance / n, within / n
    se2 = lean_part + noise_part
    df = se2**2 / ((lean_part**2 / lean.df) + (noise_part**2 / df_w)) if se2 else df_w
    return _t_test(statistics.fmean(means), math.sqrt(se2), df, n)


@dataclass(frozen=True)
class Prior:
    """The cases' common run-to-run variance of log values and its weight: `df` is d0, math.inf where
    their spreads differ no more than sampling explains; `total_df`, the pooled degrees of freedom of
    every case, caps any one case's test."""

    var: float
    df: float
    total_df: int

    @property
    def sd(self) -> float:
        return math.sqrt(self.var)


def moderated_prior(variances: list[float], dfs: list[int]) -> Prior | None:
    """The prior of `runs_test` from each case's variance of log values on its degrees of freedom, by
    Smyth's (2004, section 6.2) moments of log variances; where the cases' spreads differ no more than
    sampling explains (d0 infinite), the common variance is the pooled one. Fewer than 3 cases with a
    spread: d0 = 0 (each case its own). None where no case has a spread to measure."""
    total = sum(dfs)
    if not total:
        return None
    pooled = sum(v * d for v, d in zip(variances, dfs, strict=True)) / total
    usable = [(v, d) for v, d in zip(variances, dfs, strict=True) if v > 0 and d > 0]
    if len(usable) < 3:
        return Prior(pooled, 0.0, total)
    logs = [math.log(v) - special.digamma(d / 2) + math.log(d / 2) for v, d in usable]
    excess = statistics.variance(logs) - statistics.fmean(special.polygamma(1, d / 2) for _, d in usable)
    if excess <= 1e-7:  # no spread beyond sampling's: one variance for every case, pooled
        return Prior(pooled, math.inf, total)
    half = optimize.brentq(lambda x: special.polygamma(1, x) - excess, 1e-8, 1e8)  # trigamma's inverse
    return Prior(math.exp(statistics.fmean(logs) + special.digamma(half) - math.log(half)), 2 * half, total)


def runs_test(base_runs: list[float], now: float, prior: Prior | None) -> TTest:
    """log(now) against the mean log of the n baseline runs (each a run's median), judged on the spread
    of a new run around that mean: s * sqrt(1 + 1/n), s the case's own spread of runs moderated by
    `prior` (moderated_prior), or its own alone on n - 1 degrees of freedom where there is none."""
    logs = [math.log(x) for x in base_runs]
    n = len(logs)
    own, d = (statistics.variance(logs), n - 1) if n > 1 else (0.0, 0)
    if prior is None or prior.df + d == 0:
        var, df = (own, d) if prior is None else (prior.var, prior.total_df)
    elif math.isinf(prior.df):
        var, df = prior.var, prior.total_df
    else:
        var, df = (prior.df * prior.var + d * own) / (prior.df + d), min(prior.df + d, prior.total_df)
    return _t_test(math.log(now) - statistics.fmean(logs), math.sqrt(var * (1 + 1 / n)), df, n)


def rounds_test(base_rounds: list[float], now_rounds: list[float]) -> TTest:
    """Mann-Whitney U's one-sided p-values on the rounds, a Welch t interval on their logs (Welch 1947).
    A side of fewer than two rounds: no test (p = 1 both ways, no interval)."""
    b, n = [math.log(x) for x in base_rounds], [math.log(x) for x in now_rounds]
    mean = statistics.fmean(n) - statistics.fmean(b)
    if min(len(b), len(n)) < 2:  # a side of one round has no spread of its own: no interval, no test
        return TTest(mean, 1.0, 1.0, min(len(b), len(n)))
    vb, vn = statistics.variance(b) / len(b), statistics.variance(n) / len(n)
    se = math.sqrt(vb + vn)
    df = (vb + vn) ** 2 / sum(v * v / (len(x) - 1) for v, x in ((vb, b), (vn, n)) if v > 0) if se else 1
    lower = float(stats.mannwhitneyu(n, b, alternative="less").pvalue)
    higher = float(stats.mannwhitneyu(n, b, alternative="greater").pvalue)
    return TTest(mean, lower, higher, min(len(b), len(n)), se, df)


def holm(p_values: list[float], weights: list[float] | None = None) -> list[float]:
    """Holm's adjusted p-values: rejecting where adjusted p < alpha keeps the chance of any false
    rejection among the rows below alpha, whatever their dependence (Holm 1979).

    `weights` (positive; all 1 when absent) share alpha unequally: the rows are taken in order of p / w,
    and a row's step multiplies its p by (the weight of the rows not yet rejected) / (its own weight).
    Equal weights give the plain procedure; a row of weight W beside m rows of weight 1 is first
    tested at alpha W / (W + m)."""
    weights = [1.0] * len(p_values) if weights is None else list(weights)
    if any(w <= 0 for w in weights) or len(weights) != len(p_values):
        raise ValueError(f"holm: one positive weight per p-value, got {weights} for {len(p_values)}")
    order = sorted(range(len(p_values)), key=lambda i: p_values[i] / weights[i])
    adjusted, running, left = [0.0] * len(p_values), 0.0, sum(weights)
    for i in order:
        running = max(running, min(1.0, p_values[i] * left / weights[i]))
        adjusted[i] = running
        left -= weights[i]
    return adjusted


# The two-stage design's fixed weights (inverse normal method: Z = W1 z1 + W2 z2, W1^2 + W2^2 = 1) and
# the share of alpha stage 1 may spend on its own (early rejection). Fixed before any data.
W1 = W2 = math.sqrt(0.5)
STAGE1_SHARE = 0.5
SQRT_2PI = math.sqrt(2 * math.pi)


def _z(p: float) -> float:
    return float(stats.norm.isf(min(max(p, 1e-300), 1.0)))


def _continue_tail(level: float, combined_z: float) -> float:
    """P(Z1 < b, W1 Z1 + W2 Z2 >= combined_z) for independent standard normals, b the stage-1 bound at
    `level`: the chance, with nothing changed, of going on to stage 2 and combining to at least this.
    = integral over z1 < b of phi(z1) * P(Z2 >= (combined_z - W1 z1) / W2)."""
    b = _z(STAGE1_SHARE * level)

    def density(z1: float) -> float:
        return math.exp(-z1 * z1 / 2) / SQRT_2PI * 0.5 * math.erfc((combined_z - W1 * z1) / W2 / math.sqrt(2))

    return float(integrate.quad(density, -math.inf, b, epsabs=1e-14, epsrel=1e-8)[0])


def two_stage_p(q1: float, q2: float | None) -> float:
    """The smallest family-wise level at which the two-stage rule rejects a row, given q1 = min(1, m p1)
    (stage 1's p over the m rows judged) and q2 = min(1, k p2) (stage 2's p, on stage 2's own data, over
    its k rows; None for a row stage 2 did not take).

    At level a the rule rejects when q1 <= STAGE1_SHARE * a (stage 1 alone), or, for a row stage 2
    took, when the inverse normal combination W1 z(q1) + W2 z(q2) reaches the bound s(a) that gives
    P(Z1 >= b) + P(Z1 < b, W1 Z1 + W2 Z2 >= s(a)) = a. q1 and q2 bound every Bonferroni intersection
    test that holds the row, and the combination is increasing in both, so each intersection is
    rejected too: a closed test, whose family-wise error is at most a (Posch et al. 2005)."""
    early = min(1.0, q1 / STAGE1_SHARE)
    if q2 is None or q1 >= 1 or q2 >= 1:
        return early
    combined = W1 * _z(q1) + W2 * _z(q2)

    def excess(log_a: float) -> float:
        a = math.exp(log_a)
        return _continue_tail(a, combined) - (1 - STAGE1_SHARE) * a

    if excess(0.0) > 0:  # not rejected even at level 1
        return early
    low = math.log(1e-15)
    if excess(low) <= 0:
        return min(early, 1e-15)
    return min(early, math.exp(optimize.brentq(excess, low, 0.0, xtol=1e-6)))
