"""Statistics of an interleaved A/B comparison. Pure functions on round times; no torch.

Base and head run alternately on the same machine in ABBA blocks (harness/ab/runner.py), so a
block's base rounds and head rounds saw the same moment of the machine: a neighbour's burst, a clock
change or a thermal phase slows both alike and cancels in their ratio. Each block gives one log
ratio r = log(head tok/s / base tok/s) = log(base seconds / head seconds), of its summed rounds.

The estimate is the median of the pairs' log ratios and its interval a bootstrap of that median:
a burst that hits one round moves one pair, and the median does not follow it. The test is
Wilcoxon's signed-rank test on the log ratios (one-sided each way), which assumes no distribution,
only that an unchanged pair is as likely to lean either way.

Blocks are not independent: those of one visit (one opening of the case in one pair of processes)
lean together. In the kept rounds of a CPU A/A tally, the visits' spread in ranks gave intraclass
correlations of 0 to 0.6 (visits of 2-6 blocks); on an H200 the launch-bound decode cases' visits
leaned by 15-20% against 10-20% for single blocks. Counted as independent, such blocks make a test
far surer than it is (an A/A on the H200 read -7.5%, p < 0.0001). design_effect measures the lean
from the visits themselves and the test and interval are widened by it.
"""

from __future__ import annotations

import collections
import math
import random
import statistics
from dataclasses import dataclass

from scipy import stats


def log_ratios(base_s: list[float], head_s: list[float]) -> list[float]:
    """log(head throughput / base throughput) per pair of rounds doing the same work."""
    return [math.log(b / h) for b, h in zip(base_s, head_s, strict=True)]


@dataclass(frozen=True)
class PairedEstimate:
    change: float  # exp(median log ratio) - 1: the head's throughput change
    low: float  # the interval's ends, as changes
    high: float
    p_slower: float  # one-sided: the head is slower
    p_faster: float
    pairs: int
    design_effect: float = 1.0  # the variance of the blocks' statistic over what independent blocks give
    visits: int | None = None  # the openings the blocks came from, where known

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def median_interval(
    ratios: list[float], confidence: float = 0.95, boots: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the median (seeded: the same rounds give the same interval)."""
    rng = random.Random(seed)
    n = len(ratios)
    medians = sorted(statistics.median(rng.choices(ratios, k=n)) for _ in range(boots))
    tail = (1 - confidence) / 2
    return medians[int(tail * boots)], medians[min(boots - 1, int((1 - tail) * boots))]


def design_effect(ratios: list[float], clusters: list[int] | None) -> float:
    """How much the blocks' grouping into visits (clusters: each visit's block count, in order) widens
    the variance of their mean: 1 + icc * (sum(m_i^2) / n - 1), Kish's design effect for clusters of
    unequal size, with the intraclass correlation from a one-way random-effects analysis of variance
    of the ratios' ranks (ranks, so that one burst round cannot pass for a leaning visit). With fewer
    than 3 visits there is no spread of visits to read: the bound icc = 1 (each visit counts as one
    block, D = sum(m_i^2) / n). 1 without clusters, where no block has another beside it in a visit,
    or where the visits spread no more than their blocks do."""
    if not clusters:
        return 1.0
    n, k = len(ratios), len(clusters)
    if sum(clusters) != n:
        raise ValueError(f"visits of {sum(clusters)} blocks for {n} blocks")
    squares = sum(m * m for m in clusters)
    if k < 3:
        return squares / n
    if n - k < 2:
        return 1.0
    ranks = stats.rankdata(ratios)
    groups, start = [], 0
    for m in clusters:
        groups.append(ranks[start : start + m])
        start += m
    grand, means = statistics.fmean(ranks), [statistics.fmean(g) for g in groups]
    between = sum(len(g) * (mean - grand) ** 2 for g, mean in zip(groups, means, strict=True)) / (k - 1)
    within = sum(sum((x - mean) ** 2 for x in g) for g, mean in zip(groups, means, strict=True)) / (n - k)
    size = (n - squares / n) / (k - 1)  # the clusters' effective common size
    spread = max(0.0, (between - within) / size)
    if spread == 0.0:
        return 1.0
    return float(1.0 + spread / (spread + within) * (squares / n - 1.0))


def estimate(
    base_s: list[float],
    head_s: list[float],
    confidence: float = 0.95,
    clusters: list[int] | None = None,
    groups: list[int] | None = None,
) -> PairedEstimate:
    """The change, its interval and both one-sided p. With clusters (the blocks' visits) whose design
    effect D is above 1, the signed-rank statistic's z is divided by sqrt(D) (the p never smaller than
    the exact test's) and the interval's ends move sqrt(D) times as far from the median. Groups (the
    blocks' pairs of worker processes, each holding whole visits) add their own design effect's excess
    over 1 where there are 3 or more of them; with fewer it cannot be read and is left out (the passes'
    two pairs measured no lean beyond their visits on this host; a follow-up of 100 blocks from one
    pair read -4.2% in an A/A)."""
    r = log_ratios(base_s, head_s)
    low, high = median_interval(r, confidence)
    deff = design_effect(r, clusters)
    if groups and len(groups) >= 3:
        deff += design_effect(r, groups) - 1.0
    if all(x == 0 for x in r):
        p_slower = p_faster = 1.0
    else:
        p_slower = float(stats.wilcoxon(r, alternative="less").pvalue)
        p_faster = float(stats.wilcoxon(r, alternative="greater").pvalue)
        if deff > 1.0:
            z = signed_rank_z(r) / math.sqrt(deff)
            p_slower, p_faster = max(p_slower, float(stats.norm.cdf(z))), max(p_faster, float(stats.norm.sf(z)))
    mid = statistics.median(r)
    if deff > 1.0:
        low, high = mid - (mid - low) * math.sqrt(deff), mid + (high - mid) * math.sqrt(deff)
    visits = len(clusters) if clusters else None
    return PairedEstimate(math.expm1(mid), math.expm1(low), math.expm1(high), p_slower, p_faster, len(r), deff, visits)


def signed_rank_z(r: list[float]) -> float:
    """Wilcoxon's signed-rank statistic as a z (zeros dropped, tied ranks averaged, the variance
    corrected for ties, no continuity correction): positive when the ratios lean up (head faster)."""
    x = [v for v in r if v != 0]
    n = len(x)
    if n == 0:
        return 0.0
    ranks = stats.rankdata([abs(v) for v in x])
    plus = sum(rk for rk, v in zip(ranks, x, strict=True) if v > 0)
    ties = sum(t**3 - t for t in collections.Counter(ranks).values())
    var = n * (n + 1) * (2 * n + 1) / 24 - ties / 48
    return (plus - n * (n + 1) / 4) / math.sqrt(var) if var > 0 else 0.0


def smallest_p(pairs: int) -> float:
    """The smallest one-sided p Wilcoxon's signed-rank test can give on `pairs` pairs: 2^-pairs, when
    every pair leans the same way (scipy's exact distribution, used up to 50 pairs without ties). Above
    50 pairs scipy's normal approximation goes lower still: any such case can be significant."""
    return 0.5**pairs if pairs <= 50 else 0.0


def blocks_for(p: float) -> int:
    """The fewest pairs on which Wilcoxon's smallest p (2^-n) is at most p."""
    return max(1, math.ceil(-math.log2(p) - 1e-9))


def testable(pairs: list[int], alpha: float) -> list[bool]:
    """Which cases enter the multiple-testing family (Tarone 1990). A case of 4 blocks (a 3-second
    serving round) can never give p < 1/16, so counting it among the m of Holm's alpha/m only takes
    power from the cases that can: the family is the smallest K with at most K cases whose smallest p
    is <= alpha/K. The choice rests on block counts alone, not on which way any case leaned, so Holm
    over that family still keeps the chance of any false alarm below alpha."""
    smallest = [smallest_p(n) for n in pairs]
    for k in range(1, len(pairs) + 1):
        family = [p <= alpha / k for p in smallest]
        if sum(family) <= k:  # always true at k = len(pairs): the loop returns for any case list
            return family
    return []  # no cases


def run_medians_estimate(base_medians: list[float], head_medians: list[float]) -> PairedEstimate:
    """Whole runs interleaved ABAB (a side without the worker protocol): a paired t-test on the log
    ratios of run i's medians (tok/s), which needs at least two pairs."""
    r = [math.log(h / b) for b, h in zip(base_medians, head_medians, strict=True)]
    mean = statistics.fmean(r)
    if len(r) < 2 or statistics.stdev(r) == 0:
        p_slower, p_faster = float(mean >= 0), float(mean <= 0)
        half = 0.0
    else:
        p_slower = float(stats.ttest_1samp(r, 0.0, alternative="less").pvalue)
        p_faster = float(stats.ttest_1samp(r, 0.0, alternative="greater").pvalue)
        half = stats.t.ppf(0.975, len(r) - 1) * statistics.stdev(r) / math.sqrt(len(r))
    return PairedEstimate(
        math.expm1(mean), math.expm1(mean - half), math.expm1(mean + half), p_slower, p_faster, len(r)
    )
