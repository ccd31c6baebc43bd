"""The serving case's last round as a picture: one line per request, coloured by what it was doing
(waiting, running, preempted), from the case's `timeline` (harness/trace.py). The same round as a
trace file to open in Perfetto UI: `--perf-trace DIR`."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness.report.figures import FIG_SIZE, _save  # noqa: E402

COLOURS = {"waiting (arrival to first token)": "#bbbbbb", "running (first token to finish)": "#4c72b0",
           "preempted or swapped": "#c44e52"}  # fmt: skip


def fig_timeline(serving: list, out: Path) -> str | None:
    """The first serving case that has a timeline (a sweep: its highest finite rate shows queueing best)."""
    with_timeline = [b for b in serving if b.result.timeline and b.result.timeline.get("requests")]
    if not with_timeline:
        return None
    bench = max(with_timeline, key=lambda b: (b.result.request_rate or 0) if (b.result.request_rate or 0) < 1e9 else -1)
    tl = bench.result.timeline
    fig, ax = plt.subplots(figsize=FIG_SIZE)
    waiting, running, stopped = COLOURS.values()
    for rid, arrival, first, finish in tl["requests"]:
        if first is not None:
            ax.hlines(rid, arrival, first, colors=waiting, linewidth=4)
            ax.hlines(rid, first, finish if finish is not None else first, colors=running, linewidth=4)
    for rid, start, end in tl.get("preempted", []):
        ax.hlines(rid, start, end, colors=stopped, linewidth=4)
    for label, colour in COLOURS.items():
        ax.plot([], [], color=colour, linewidth=4, label=label)
    ax.set_xlabel("ms from the round's start")
    ax.set_ylabel("request")
    ax.invert_yaxis()
    ax.set_title(f"{bench.name}: the last round, request by request", fontsize="small")
    ax.legend(fontsize="small", loc="lower right")
    return _save(fig, out, "timeline")
