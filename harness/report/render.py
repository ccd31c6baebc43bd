"""`python -m harness report RESULTS.json [--compare BASELINE.json] --out DIR`: report.md + figures.

Every figure is drawn from the results file alone (extra_info of each case), as PNG and SVG.
A figure with no data in the results (say, no serving cases) is left out and report.md says so; the rate
sweep section (harness/report/sweep.py) appears only when the results hold a sweep.
"""

from __future__ import annotations

from pathlib import Path

from harness.baseline.gate import compare
from harness.baseline.storage import load_results
from harness.cases import SERVING
from harness.files import read_json
from harness.judge import Thresholds, Verdict
from harness.judge.table import HEADER, format_markdown, table_row
from harness.report.figures import (
    by_kind,
    fig_batching,
    fig_compare,
    fig_decode_steps,
    fig_engines,
    fig_prefill_vs_decode,
    fig_roofline,
    load_label,
)
from harness.report.sweep import fig_sweep, find_sweeps, sweep_tables
from harness.report.tables import md_table, text_table
from harness.report.timeline import fig_timeline
from harness.results import CaseResult, ResultsFile


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _summary_rows(doc: ResultsFile) -> list[list[str]]:
    return [
        [
            b.name,
            f"{b.result.tokens_per_s:,.1f}",
            f"{b.result.pct_of_roofline:.1%}" + (" *" if b.result.roofline_note else ""),
            str(b.result.bound),
            f"{b.result.mbu or 0:.1%}",
            f"{b.result.mfu or 0:.1%}",
            _mb(b.result.peak_rss_mb if b.result.peak_rss_mb is not None else b.result.peak_gpu_mem_mb),
            _mb(b.result.kv_pool_mb),
            _mb(b.result.working_set_mb) + (" (fits LLC)" if b.result.fits_llc else ""),
        ]
        for b in doc.benches
    ]


SUMMARY_HEADER = [
    "case",
    "tokens/s",
    "% of roofline",
    "bound",
    "MBU",
    "MFU",
    "peak memory MiB",
    "KV pool MiB",
    "working set MiB",
]


def _notes(doc: ResultsFile) -> list[str]:
    """Every case above 100% of its roofline, with why: such a case is never shown silently."""
    notes = [f"- `{b.name}`: {b.result.roofline_note}" for b in doc.benches if b.result.roofline_note]
    return ["", "\\* above 100% of roofline:", "", *notes] if notes else []


def _engine_rows(kinds: dict) -> list[list[str]]:
    def g(e: CaseResult, k: str, fmt: str) -> str:
        value = getattr(e, k)
        return "-" if value is None else format(value, fmt)

    return [
        [
            e.engine,
            e.workload + (f" @ {load_label(e)}" if load_label(e) else ""),
            g(e, "tokens_per_s", ",.1f"),
            g(e, "ttft_ms_p50", ",.0f"),
            g(e, "ttft_ms_p99", ",.0f"),
            g(e, "tpot_ms_p50", ",.1f"),
            g(e, "tpot_ms_p99", ",.1f"),
            g(e, "kv_utilisation", ".1%"),
            g(e, "preemptions", ".0f"),
            g(e, "kv_pool_mb", ",.0f"),
            g(e, "max_running_seqs", ".0f"),
        ]
        for e in (b.result for b in kinds.get(SERVING.name, []))
    ]


ENGINE_HEADER = [
    "engine",
    "workload",
    "tok/s",
    "TTFT p50 ms",
    "TTFT p99 ms",
    "TPOT p50 ms",
    "TPOT p99 ms",
    "KV util",
    "preemptions",
    "KV pool MiB",
    "most sequences at once",
]


def _compare_rows(verdicts: list[Verdict]) -> list[list[str]]:
    rows = []
    for v in verdicts:
        name, *cells = table_row(v)
        rows.append([f"`{name}`", *cells, f"**{v.status}**" if v.status == "regression" else v.status])
    return rows


def _checked(e: CaseResult) -> str:
    """The output check in a word or two: 'equal HF' (with its near-ties), or what it said."""
    text = e.output_check or "-"
    if "equal HF greedy" not in text:
        return text
    ties = text.split("; ", 1)[1].split(" near-tie", 1)[0] if "near-tie" in text else ""
    return "equal HF" + (f" ({ties} near-tie)" if ties else "")


def is_ab(raw) -> bool:
    return isinstance(raw, dict) and raw.get("kind") == "llm-perf-suite ab"  # harness/ab/runner.py, AB_KIND


def serving_table(results: str) -> list[str]:
    """The engines side by side on each serving workload, as a terminal table (make bench-vllm prints it)."""
    if is_ab(read_json(results)):
        return []
    kinds = by_kind(load_results(results))
    rows = [[*row, _checked(b.result)] for row, b in zip(_engine_rows(kinds), kinds.get(SERVING.name, []), strict=True)]
    return text_table([*ENGINE_HEADER, "tokens"], rows) if rows else []


def _head(results: str, doc: ResultsFile) -> list[str]:
    mi = doc.machine_info
    return [
        f"# llm-perf-suite report: {Path(results).name}",
        "",
        f"Machine: `{mi.get('slug', '?')}`, torch {mi.get('torch', '?')}, transformers "
        f"{mi.get('transformers', '?')}, dtype {mi.get('dtype', '?')}.",
        "",
        "## Cases",
        "",
        *md_table(SUMMARY_HEADER, _summary_rows(doc)),
        *_notes(doc),
        "",
        "Peak memory: the process's peak resident set during the case's rounds (CPU) or torch's peak "
        "allocated GPU memory; KV pool: what the engine reserved for KV; working set: weights plus the KV of "
        "every token the case holds at its largest.",
        "",
    ]


def write_ab_report(path: str, doc: dict, out: Path) -> Path:
    """report.md for an `llm-perf ab --out` file: the verdicts, their figure and the method."""
    verdicts = [Verdict(**v) for v in doc["verdicts"]]
    png = fig_compare(verdicts, out)
    lines = [f"# llm-perf-suite A/B: {Path(path).name}", "", f"Base {doc['base']}, head {doc['head']}.", ""]
    lines += [f"![changes]({png})", ""] if png else []
    lines += [format_markdown(verdicts, doc["method"], "Verdicts"), ""]
    spent = ", ".join(f"{k} {v:.0f} s" for k, v in doc.get("spent_s", {}).items())
    lines += [f"Where the time went: {spent}.", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report


def write_report(results: str, out_dir: str, baseline: str | None = None, pyproject: str = "pyproject.toml") -> Path:
    """report.md in out_dir: the cases table, then each figure with the table that goes with it (for an
    `ab --out` file: its verdicts)."""
    raw = read_json(results)
    if is_ab(raw):
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        return write_ab_report(results, raw, out)
    doc = load_results(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kinds = by_kind(doc)
    # (title, draw, the table under the figure)
    sections = [
        ("Prefill vs decode", lambda: fig_prefill_vs_decode(kinds, out), None),
        ("Per-step decode latency", lambda: fig_decode_steps(kinds, out), None),
        ("Batch size vs throughput and latency", lambda: fig_batching(kinds, out), None),
        ("Roofline", lambda: fig_roofline(doc, out), None),
        ("Engine comparison", lambda: fig_engines(kinds, out), lambda: md_table(ENGINE_HEADER, _engine_rows(kinds))),
    ]
    sections.append(("Serving timeline", lambda: fig_timeline(kinds.get(SERVING.name, []), out), None))
    sweeps = find_sweeps(kinds.get(SERVING.name, []))
    if sweeps:  # a --request-rate ladder; no section at all otherwise
        sections.append(("Rate sweep", lambda: fig_sweep(sweeps, out), lambda: sweep_tables(sweeps)))
    if baseline:
        thresholds = Thresholds.from_pyproject(pyproject)  # the gate's own thresholds, serving's 8% included
        verdicts = compare(load_results(baseline), doc, thresholds)
        header = [*HEADER, "verdict"]
        sections.append(
            ("Baseline vs now", lambda: fig_compare(verdicts, out), lambda: md_table(header, _compare_rows(verdicts)))
        )
    lines = _head(results, doc)
    for title, draw, table in sections:
        png = draw()
        lines += [f"## {title}", ""]
        lines += [f"![{title}]({png})", ""] if png else ["(no cases of this kind in the results)", ""]
        if png and table is not None:
            lines += [*table(), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
