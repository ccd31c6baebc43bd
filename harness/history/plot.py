"""Each series of the history drawn: a case's metric over its runs, one line per machine, with the
change points marked."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness.history.check import Change  # noqa: E402
from harness.history.store import Point  # noqa: E402


def draw(name: str, metric: str, by_slug: dict[str, list[Point]], found: list[Change], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for slug, points in sorted(by_slug.items()):
        ax.plot(range(1, len(points) + 1), [p.value for p in points], marker="o", markersize=3, label=slug)
    for c in found:
        ax.axvline(c.index + 0.5, color="#c44e52" if c.regression else "#55a868", linestyle="--", linewidth=1)
        ax.annotate(f"{c.change:+.0%}", (c.index + 0.6, ax.get_ylim()[1]), fontsize="small", va="top")
    ax.set_xlabel("run (in the order added)")
    ax.set_ylabel(metric)
    ax.set_title(name, fontsize="small")
    ax.legend(fontsize="small")
    fig.tight_layout()
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in f"{name}-{metric}")
    path = out / f"history-{safe}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
