"""Verdicts as a person reads them: a terminal table, or a markdown summary for a pull request."""

from __future__ import annotations

from harness.judge.decide import MISSING, VERDICTS, Verdict, counts

MARKS = {"regression": "REGRESSION", "improvement": "improved", "unchanged": "unchanged"}
MARKS |= {"inconclusive": "inconclusive", MISSING: "missing"}


def value(x: float | None) -> str:
    """A cell: a count whole; 3 significant digits below 100, else to 0.1; thousands separated."""
    if x is None:
        return ""
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:#.3g}" if abs(x) < 100 else f"{x:,.1f}"


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:+.1%}"


def _interval(v: Verdict) -> str:
    if v.change is None:
        return ""
    return f"{_pct(v.low) or '-inf'}..{_pct(v.high) or '+inf'}"


def table_row(v: Verdict) -> list[str]:
    p = "" if v.p_value is None else (f"{v.p_value:.4f}" if v.p_value >= 1e-4 else "<0.0001")
    return [
        v.name,
        value(v.base),
        value(v.now),
        v.unit if v.change is not None else "",
        _pct(v.change),
        _interval(v),
        p,
    ]


HEADER = ["case", "base", "now", "unit", "change", "95% CI", "p"]


def summary_line(verdicts: list[Verdict]) -> str:
    c = counts(verdicts)
    return ", ".join(f"{c[s]} {s}" for s in (*VERDICTS, MISSING))


def _why(v: Verdict) -> str:
    if v.status != "inconclusive":
        return ""
    own = (v.low, v.high, v.threshold)  # the row's own interval; the verdict is adjusted
    if None not in own and (v.high < -v.threshold or v.low > v.threshold):
        return (
            f"its own 95% interval lies beyond +-{v.threshold:.0%}, but its p adjusted for every row "
            "judged with it is not below alpha"
        )
    if v.detectable is not None:
        seen = f"a change beyond +-{v.detectable:.1%}"
        if v.detectable >= 1:  # a ratio of 2 or more: its digits would only dress up "far too little data"
            seen = "no change under 2x" if v.detectable < float("inf") else "no change"
        return f"could tell {seen}, the threshold is {v.threshold:.0%}"
    return ""


def format_table(verdicts: list[Verdict], method: str) -> list[str]:
    """A fixed-width table, a line of counts and the method line."""
    rows = [HEADER + ["verdict"]] + [table_row(v) + [_mark(v)] for v in verdicts]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:-1], widths[1:], strict=True)]
        lines.append("  ".join([*cells, r[-1]]).rstrip())
    return [*lines, f"verdicts: {summary_line(verdicts)}", f"method: {method}"]


def _mark(v: Verdict) -> str:
    note = "; ".join(x for x in (_why(v), v.note) if x)
    return MARKS[v.status] + (f" ({note})" if note else "")


def format_markdown(verdicts: list[Verdict], method: str, title: str, lead: str = "") -> str:
    """The summary a pull request shows: the title, `lead` (what outranks the verdicts, e.g. a failed
    output check) when given, the counts, every row, the method."""
    c = counts(verdicts)
    head = "**regression**" if c["regression"] else "no regression"
    lines = [f"### {title}", "", *([lead, ""] if lead else []), f"{head}: {summary_line(verdicts)}", ""]
    lines += ["| " + " | ".join(HEADER + ["verdict"]) + " |", "|" + "---|" * (len(HEADER) + 1)]
    for v in verdicts:
        mark = f"**{MARKS[v.status]}**" if v.status == "regression" else MARKS[v.status]
        note = "; ".join(x for x in (_why(v), v.note) if x)
        cells = [f"`{v.name}`", *table_row(v)[1:], mark + (f" ({note})" if note else "")]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join([*lines, "", f"Method: {method}", ""])
