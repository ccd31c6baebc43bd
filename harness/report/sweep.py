"""Rate sweeps: the serving cases of one `--request-rate 0.5,1,2,4,inf` run, read as latency against load.

A sweep is the serving cases of one model, engine, workload, burstiness and concurrency cap at two or
more offered rates, ordered by offered rate (inf, every request at once, last). The report draws
sweep.png (TTFT and TPOT p50/p99 against the achieved request rate, the SLOs as dashed lines) and, per
sweep, a table and the highest offered rate whose requests met the --goodput SLOs (MEETS_ATTAINMENT).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from harness.report.figures import DPI, _save
from harness.report.tables import md_table
from harness.results import BenchRecord, CaseResult

MEETS_ATTAINMENT = 0.9
"""A rate "meets the SLO" when at least this fraction of its requests met every --goodput SLO
(slo_attainment >= 0.9): DistServe's 90% SLO-attainment target (Zhong et al., "DistServe:
Disaggregating Prefill and Decoding for Goodput-optimized Large Language Model Serving", OSDI 2024,
which measures goodput as the highest request rate at which 90% of requests meet their SLOs)."""


def offered(e: CaseResult) -> float:
    """The offered rate in requests/s (inf: every request at once; recorded as None, JSON has no inf)."""
    return math.inf if e.request_rate is None else e.request_rate


def _rate(rate: float) -> str:
    return "inf" if math.isinf(rate) else f"{rate:g}"


@dataclass
class Sweep:
    """One engine's serving cases at several offered rates, lowest first, inf last."""

    model: str
    engine: str
    workload: str
    burstiness: float
    max_concurrency: int
    points: list[CaseResult] = field(default_factory=list)

    @property
    def rates(self) -> list[float]:
        return [offered(p) for p in self.points]

    @property
    def slo_ms(self) -> dict[str, float] | None:
        """The --goodput SLOs its cases recorded (None: not recorded)."""
        return next((p.slo_ms for p in self.points if p.slo_ms), None)

    @property
    def has_attainment(self) -> bool:
        return any(p.slo_attainment is not None for p in self.points)

    def meets(self, p: CaseResult) -> bool:
        return p.slo_attainment is not None and p.slo_attainment >= MEETS_ATTAINMENT

    def highest_meeting(self) -> CaseResult | None:
        """The case of the highest offered rate (inf included) meeting MEETS_ATTAINMENT; None if none does."""
        return next((p for p in reversed(self.points) if self.meets(p)), None)

    def load_words(self) -> str:
        """The load shape where it is not the default: 'burstiness 0.5, at most 8 in flight'."""
        words = [f"burstiness {self.burstiness:g}"] if self.burstiness != 1 else []
        return ", ".join(words + ([f"at most {self.max_concurrency} in flight"] if self.max_concurrency else []))


def _identity(e: CaseResult) -> tuple:
    """What cases of one sweep share, the burstiness aside (it does not shape an all-at-once load)."""
    return (e.model, e.engine, e.workload, e.max_concurrency or 0)


def find_sweeps(serving: list[BenchRecord]) -> list[Sweep]:
    """The rate sweeps among serving cases. An inf case records no burstiness (or the option's, with a
    concurrency cap), so it joins every finite-rate group of its model, engine, workload and cap."""
    finite: dict[tuple, list[CaseResult]] = defaultdict(list)
    at_once: dict[tuple, list[CaseResult]] = defaultdict(list)
    for e in (b.result for b in serving):
        if math.isinf(offered(e)):
            at_once[_identity(e)].append(e)
        else:
            finite[(*_identity(e), 1.0 if e.burstiness is None else e.burstiness)].append(e)
    sweeps = []
    for (model, engine, workload, cap, burst), points in finite.items():
        points = sorted(points + at_once.get((model, engine, workload, cap), []), key=offered)
        if len({offered(p) for p in points}) >= 2:
            sweeps.append(Sweep(model, engine, workload, burst, cap, points))
    return sweeps


def slo_words(sweep: Sweep) -> str:
    """'ttft:2000 tpot:200, >= 90% of requests' (the --goodput spelling)."""
    slo = " ".join(f"{k}:{v:g}" for k, v in (sweep.slo_ms or {}).items()) or "SLOs not recorded in this file"
    return f"{slo}, >= {MEETS_ATTAINMENT:.0%} of requests"


def verdict(sweep: Sweep) -> str:
    """The highest offered rate meeting the SLO, in words, for the line under the sweep's table."""
    head = "highest rate meeting the SLO"
    if not sweep.has_attainment:
        return f"{head}: not known, goodput/SLO was not given (run with --goodput, e.g. --goodput ttft:2000 tpot:200)"
    best = sweep.highest_meeting()
    if best is None:
        return f"{head} ({slo_words(sweep)}): none of the rates"
    missed = [_rate(offered(p)) for p in sweep.points if not sweep.meets(p)]
    if math.isinf(offered(best)):
        what = "every rate, including all at once" if not missed else f"all at once, but not {', '.join(missed)} req/s"
    else:
        notes = [f"{best.request_throughput:.2f} achieved"] if best.request_throughput is not None else []
        notes += ["the highest rate tried"] if best is sweep.points[-1] else []
        what = f"{_rate(offered(best))} req/s" + (f" ({'; '.join(notes)})" if notes else "")
    return f"{head} ({slo_words(sweep)}): {what}"


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


SWEEP_HEADER = [
    *("offered req/s", "achieved req/s", "output tok/s", "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms"),
    *("TPOT p99 ms", "ITL p50 ms", "E2EL p99 ms", "goodput req/s", "SLO attainment"),
]


def _row(e: CaseResult) -> list[str]:
    return [
        _rate(offered(e)),
        _cell(e.request_throughput, ",.2f"),
        _cell(e.output_throughput, ",.1f"),
        *(_cell(getattr(e, k), ",.0f") for k in ("ttft_ms_p50", "ttft_ms_p99")),
        *(_cell(getattr(e, k), ",.1f") for k in ("tpot_ms_p50", "tpot_ms_p99", "itl_ms_p50")),
        _cell(e.e2el_ms_p99, ",.0f"),
        _cell(e.goodput, ",.2f"),
        _cell(e.slo_attainment, ".0%"),
    ]


def sweep_tables(sweeps: list[Sweep]) -> list[str]:
    """Per sweep: a heading, one row per offered rate, and the highest rate meeting the SLO."""
    lines = [
        f"Each row is one serving case; achieved req/s is what the engine finished per second. A rate meets the "
        f"SLO when at least {MEETS_ATTAINMENT:.0%} of its requests met every --goodput SLO (DistServe's target).",
        "",
    ]
    for s in sweeps:
        load = f" ({s.load_words()})" if s.load_words() else ""
        lines += [f"### {s.engine} on {s.workload}, {s.model}{load}", ""]
        lines += [*md_table(SWEEP_HEADER, [_row(p) for p in s.points]), "", verdict(s), ""]
    return lines


PANELS = (
    ("ttft_ms_p50", "TTFT p50", "ttft"),
    ("ttft_ms_p99", "TTFT p99", "ttft"),
    ("tpot_ms_p50", "TPOT p50", "tpot"),
    ("tpot_ms_p99", "TPOT p99", "tpot"),
)
SWEEP_FIG_SIZE = (10, 8)  # inches: four panels and a legend under them


def _labels(sweeps: list[Sweep]) -> list[str]:
    """The engine, plus whatever else tells the sweeps apart (workload, model, load)."""
    parts = [{"workload": s.workload, "model": s.model, "load": s.load_words() or "default load"} for s in sweeps]
    varying = [k for k in ("workload", "model", "load") if len({p[k] for p in parts}) > 1]
    return [" ".join([s.engine, *(p[k] for k in varying)]) for s, p in zip(sweeps, parts, strict=True)]


def _title(sweeps: list[Sweep]) -> str:
    workloads = sorted({s.workload for s in sweeps})
    models = sorted({s.model for s in sweeps})
    what = f"workload{'s' if len(workloads) > 1 else ''} {', '.join(workloads)}, "
    what += f"model{'s' if len(models) > 1 else ''} {', '.join(models)}"
    return f"Rate sweep: latency against the achieved request rate ({what})"


def _plot_panel(ax, sweeps: list[Sweep], labels: list[str], key: str, title: str) -> None:
    for i, (s, label) in enumerate(zip(sweeps, labels, strict=True)):
        pts = [(p.request_throughput, getattr(p, key), offered(p)) for p in s.points]
        pts = [p for p in pts if p[0] is not None and p[1] is not None and p[1] > 0]
        color = f"C{i}"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=color, label=label)
        for x, y, rate in pts:  # which offered rate each point is
            ax.annotate(_rate(rate), (x, y), textcoords="offset points", xytext=(4, 4), fontsize="x-small", color=color)
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):  # 1, 2, 5, 10, ...: short log axes get labels, not one power of ten
        axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())
    ax.margins(0.08)  # room for the rate labels at the ends
    ax.set_title(title)
    ax.set_xlabel("achieved request rate (req/s)")
    ax.set_ylabel("ms")


def _slo_lines(ax, sweeps: list[Sweep], metric: str) -> None:
    """A dashed line at each distinct SLO of this metric (usually one)."""
    for limit in sorted({s.slo_ms[metric] for s in sweeps if s.slo_ms and metric in s.slo_ms}):
        ax.axhline(limit, color="black", linestyle="--", linewidth=1, label=f"SLO {metric}:{limit:g} ms")


def fig_sweep(sweeps: list[Sweep], out: Path) -> str | None:
    """sweep.png: TTFT and TPOT p50/p99 against the achieved request rate, one line per sweep."""
    if not sweeps:
        return None
    fig, axes = plt.subplots(2, 2, figsize=SWEEP_FIG_SIZE, dpi=DPI, layout="constrained")
    labels = _labels(sweeps)
    for ax, (key, title, metric) in zip(axes.flat, PANELS, strict=True):
        _plot_panel(ax, sweeps, labels, key, title)
        _slo_lines(ax, sweeps, metric)
    handles = {}
    for ax in axes.flat:  # every line once, the SLO lines of both metrics included
        handles.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=min(len(handles), 4))
    fig.suptitle(_title(sweeps) + "\nnumbers by the points: the offered rate (req/s)")
    return _save(fig, out, "sweep")
