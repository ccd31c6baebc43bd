"""The report's figures, each drawn from a results file alone (extra_info of each case), as PNG and SVG.

Each fig_* returns the PNG's file name, or None when the results hold no case it could draw.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from harness.cases import BATCHING, GENERATE, KINDS, SERVING  # noqa: E402
from harness.results import BenchRecord, CaseResult, ResultsFile  # noqa: E402

FIG_SIZE = (10, 6)  # inches; at DPI below: 1000 x 600 px
DPI = 100


def by_kind(doc: ResultsFile) -> dict[str, list[BenchRecord]]:
    out: dict[str, list[BenchRecord]] = defaultdict(list)
    for b in doc.benches:
        out[b.group].append(b)
    return out


def _short(name: str) -> str:
    return name.split("[", 1)[-1].rstrip("]")


def load_label(e: CaseResult) -> str:
    """A serving case's offered load in a few words ('' for the default, every request at once)."""
    if e.request_rate is None and not e.max_concurrency:
        return ""
    rate = "all at once" if e.request_rate is None else f"{e.request_rate:g} req/s"
    return rate + (f", <= {e.max_concurrency} in flight" if e.max_concurrency else "")


def _save(fig, out: Path, stem: str) -> str:
    if fig.get_layout_engine() is None:  # a figure made with layout="constrained" keeps its own
        fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(out / f"{stem}.{ext}", dpi=DPI)
    plt.close(fig)
    return f"{stem}.png"


def fig_prefill_vs_decode(kinds: dict, out: Path) -> str | None:
    cases = [b for b in kinds.get(GENERATE.name, []) if b.result.prefill_ms is not None]
    if not cases:
        return None
    fig, ax = plt.subplots(figsize=FIG_SIZE)
    labels = [_short(b.name) for b in cases]
    prefill = [b.result.prefill_ms for b in cases]
    decode = [(b.result.decode_ms_per_token or 0.0) * (b.result.new_tokens - 1) for b in cases]
    height = min(0.6, 0.8 * len(cases) / 3)
    ax.barh(labels, prefill, height=height, label="prefill (one forward over the prompt)", color="#4c72b0")
    ax.barh(labels, decode, height=height, left=prefill, label="decode (one forward per new token)", color="#dd8452")
    for y, (p, d, b) in enumerate(zip(prefill, decode, cases, strict=True)):
        steps = b.result.new_tokens - 1
        ax.text(p + d, y, f"  prefill {p:,.1f} ms + decode {d:,.0f} ms ({steps} steps)", va="center", fontsize="small")
    ax.set_xlim(0, max(p + d for p, d in zip(prefill, decode, strict=True)) * 1.6)
    ax.set_xlabel("time per request (ms)")
    ax.set_title("Where a generation's time goes: prefill vs decode")
    ax.legend(loc="lower right")
    return _save(fig, out, "prefill_vs_decode")


def fig_decode_steps(kinds: dict, out: Path) -> str | None:
    cases = [b for b in kinds.get(GENERATE.name, []) if b.result.decode_step_ms]
    if not cases:
        return None
    fig, ax = plt.subplots(figsize=FIG_SIZE)
    for b in cases:
        # engines that run requests one after another clock all of them: show one generation
        steps = b.result.decode_step_ms[: max(b.result.new_tokens - 1, 1)]
        ax.plot(range(1, len(steps) + 1), steps, marker=".", label=f"{_short(b.name)} (first request)")
    ax.set_xlabel("decode step (token index after the first)")
    ax.set_ylabel("step latency (ms)")
    ax.set_ylim(bottom=0)
    ax.set_title("Per-step decode latency across a generation")
    ax.legend()
    return _save(fig, out, "decode_steps")


def fig_batching(kinds: dict, out: Path) -> str | None:
    cases = kinds.get(BATCHING.name, [])
    if not cases:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=FIG_SIZE)
    series: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for b in cases:
        e = b.result
        series[f"{e.model} {e.engine}"].append((e.batch_size, e.tokens_per_s, e.latency_ms_p50 or 0))
    for label, points in sorted(series.items()):
        points.sort()
        left.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        right.plot([p[0] for p in points], [p[2] for p in points], marker="o", label=label)
    for ax, ylabel, title in (
        (left, "throughput (generated tokens/s)", "Throughput vs batch size"),
        (right, "per-request latency p50 (ms)", "Latency vs batch size"),
    ):
        ax.set_xscale("log", base=2)
        sizes = sorted({p[0] for points in series.values() for p in points})
        ax.set_xticks(sizes, [str(x) for x in sizes])
        ax.set_xlabel("batch size (requests)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize="small")
        ax.legend(fontsize="small")
    return _save(fig, out, "batching")


def fig_roofline(doc: ResultsFile, out: Path) -> str | None:
    cases = [b for b in doc.benches if b.result.arith_intensity is not None]
    if not cases:
        return None
    info = cases[0].result
    bw, peak = info.peak_bw_gbps * 1e9, info.peak_tflops * 1e12
    fig, ax = plt.subplots(figsize=FIG_SIZE)
    xs = [b.result.arith_intensity for b in cases]
    lo, hi = min(xs + [peak / bw]) / 4, max(xs + [peak / bw]) * 4
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(
        grid,
        [min(peak, x * bw) for x in grid],
        color="black",
        linewidth=2,
        label=f"roofline: {info.peak_bw_gbps:,.0f} GB/s ({info.peak_bw_source}), "
        f"{info.peak_tflops:,.2f} TFLOP/s ({info.peak_flops_source})",
    )
    ridge = peak / bw
    ax.axvline(ridge, color="gray", linestyle=":", linewidth=1)
    ax.annotate(
        f"ridge point: {ridge:.1f} FLOPs/byte",
        (ridge, peak),
        textcoords="offset points",
        xytext=(5, -15),
        fontsize="small",
        color="gray",
    )
    ax.text(ridge / 10, ridge / 10 * bw * 1.8, "memory-bound: bandwidth ceiling ", ha="right", fontsize="small")
    ax.text(ridge * 1.5, peak * 1.1, "compute-bound: FLOP/s ceiling", fontsize="small", color="black")
    for kind in KINDS.values():
        pts = [b.result for b in cases if b.group == kind.name]
        if pts:
            ax.scatter(
                [p.arith_intensity for p in pts],
                [p.achieved_tflops * 1e12 for p in pts],
                marker=kind.marker,
                s=60,
                label=f"{kind.name} cases",
                zorder=3,
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOPs per byte moved)")
    ax.set_ylabel("achieved FLOP/s")
    ax.set_title(f"Every case against the roofline of {info.device} ({info.dtype})")
    ax.legend(fontsize="small", loc="lower right")
    return _save(fig, out, "roofline")


ENGINE_METRICS = (
    ("tokens_per_s", "output tokens/s"),
    ("ttft_ms", "TTFT (ms)"),
    ("tpot_ms", "TPOT (ms)"),
    ("kv_utilisation", "KV utilisation"),
    ("max_running_seqs", "sequences at once\n(equal KV memory)"),
)


def fig_engines(kinds: dict, out: Path) -> str | None:
    cases = kinds.get(SERVING.name, [])
    if not cases:
        return None
    fig, axes = plt.subplots(1, len(ENGINE_METRICS), figsize=FIG_SIZE)
    workloads = sorted({b.result.workload for b in cases})
    one = len(workloads) == 1  # the usual case: the workload goes in the title, the engine under its bar
    labels = [b.result.engine if one else f"{b.result.engine}\n{b.result.workload}" for b in cases]
    if any(load_label(b.result) for b in cases):  # a rate sweep: one bar per engine and rate, each named
        labels = [f"{label} {load_label(b.result) or 'all at once'}" for label, b in zip(labels, cases, strict=True)]
    colors = [f"C{i}" for i in range(len(cases))]
    width = 0.6
    for ax, (key, title) in zip(axes, ENGINE_METRICS, strict=True):
        if key in ("ttft_ms", "tpot_ms"):  # p99 as a pale bar, p50 as a solid one in front of it
            p50 = [getattr(b.result, f"{key}_p50") or 0 for b in cases]
            p99 = [getattr(b.result, f"{key}_p99") or 0 for b in cases]
            ax.bar(labels, p99, width=width, color=colors, alpha=0.35)
            ax.bar(labels, p50, width=width, color=colors)
            ax.set_ylabel("ms (solid p50, pale p99)")
        else:
            values = [getattr(b.result, key) for b in cases]  # None: the engine does not report it
            ax.bar(labels, [v or 0 for v in values], width=width, color=colors)
            fmt = "{:.0%}" if key == "kv_utilisation" else "{:,.0f}"
            for x, v in enumerate(values):
                ax.text(x, v or 0, "n/a" if v is None else fmt.format(v), ha="center", va="bottom", fontsize="small")
        if key == "kv_utilisation":
            ax.set_ylim(0, 1.1)
        ax.set_xlim(-0.75, len(cases) - 0.25)
        ax.set_title(title, fontsize="small")
        ax.tick_params(axis="x", labelsize="small", rotation=45 if len(cases) <= 4 else 90)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
    fig.suptitle("Engines side by side on " + (f"the serving workload {workloads[0]}" if one else "serving workloads"))
    return _save(fig, out, "engines")


def fig_compare(verdicts: list, out: Path) -> str | None:
    """Each throughput row's change and 95% interval, coloured by its verdict (latency rows: the table)."""
    rows = [v for v in verdicts if v.change is not None and v.unit == "tok/s"]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(FIG_SIZE[0], max(FIG_SIZE[1], 0.3 * len(rows) + 1.5)))
    color = {"regression": "#c44e52", "improvement": "#55a868", "unchanged": "#8c8c8c", "inconclusive": "#ccb974"}
    names = [_short(v.name) for v in rows]
    changes = [v.change * 100 for v in rows]
    low = [max(0.0, (v.change - v.low) * 100) if v.low is not None else 0.0 for v in rows]
    high = [max(0.0, (v.high - v.change) * 100) if v.high is not None else 0.0 for v in rows]
    ax.barh(names, changes, xerr=[low, high], color=[color[v.status] for v in rows], ecolor="black", capsize=2)
    for v in rows[:1]:
        ax.axvspan(-v.threshold * 100, v.threshold * 100, color="#dddddd", zorder=0, label="+-threshold")
    ax.axvline(0, color="black", linewidth=0.8)
    for status, c in color.items():
        ax.bar(0, 0, color=c, label=status)
    ax.set_xlabel("tokens/s change (%), with its 95% interval")
    ax.set_title("Each case's change and 95% interval (grey: +-threshold)")
    ax.legend(fontsize="small")
    ax.tick_params(axis="y", labelsize="small")
    return _save(fig, out, "compare")
