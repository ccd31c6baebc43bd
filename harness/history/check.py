"""Change points in each series of the history: Apache Otava's implementation of the E-divisive means
method with a t-test (Fleming et al. 2023, "Hunter: Using change point detection to hunt for
performance regressions", after Matteson & James 2014). A change point splits a series where the
means before and after differ beyond what the points' own spread explains; each is reported with the
commits it falls between, its size and its confidence (1 - p).

Parameters, fixed: a sliding window of WINDOW points, p < MAX_P. A regression whose change point
lies among the newest RECENT points fails the check (exit 10): it started in the last nights.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import PerfSuiteError
from harness.history.store import METRICS, Point

WINDOW = 30
MAX_P = 0.001
RECENT = 5
INSTALL = "pip install --no-deps apache-otava==0.8.0"  # its pinned dependencies are not needed by the analysis


@dataclass(frozen=True)
class Change:
    name: str
    metric: str
    slug: str
    index: int  # the first point after the change
    before: Point
    after: Point
    change: float  # the mean after / the mean before - 1
    confidence: float  # 1 - p
    regression: bool
    recent: bool  # among the series' newest RECENT points

    def line(self) -> str:
        kind = "REGRESSION" if self.regression else "improvement" if self.change else "change"
        commits = f"{self.before.commit or '?'}..{self.after.commit or '?'}"
        return (
            f"{self.name} {self.metric} [{self.slug}]: {kind} {self.change:+.1%} at point {self.index + 1} "
            f"({self.after.date}; commits {commits}), confidence {self.confidence:.4f}"
            + (" (recent)" if self.recent else "")
        )


def changes(values: list[float]) -> list[tuple[int, float, float]]:
    """(index of the first point after, relative change of the means, p) of each change point found."""
    try:
        from otava.analysis import compute_change_points
    except ImportError:
        raise PerfSuiteError(f"history check needs Apache Otava: {INSTALL}") from None
    found, _ = compute_change_points(values, window_len=WINDOW, max_pvalue=MAX_P)
    return [(cp.index, cp.stats.mean_2 / cp.stats.mean_1 - 1, float(cp.stats.pvalue)) for cp in found]


def check(series: dict[tuple[str, str, str], list[Point]], recent: int = RECENT) -> list[Change]:
    out = []
    for (name, metric, slug), points in sorted(series.items()):
        if len(points) < 3:
            continue
        for index, change, p in changes([pt.value for pt in points]):
            worse = change > 0 if METRICS[metric] else change < 0
            out.append(
                Change(
                    name,
                    metric,
                    slug,
                    index,
                    points[index - 1],
                    points[index],
                    change,
                    1 - p,
                    worse,
                    index >= len(points) - recent,
                )  # fmt: skip
            )
    return out
