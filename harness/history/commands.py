"""`llm-perf history add|show|check`."""

from __future__ import annotations

import argparse
import datetime
from collections import defaultdict
from pathlib import Path

from harness.errors import EXIT_OK, EXIT_REGRESSION
from harness.files import read_json
from harness.history.check import RECENT
from harness.history.check import check as find_changes
from harness.history.store import HistoryStore
from harness.results import ResultsFile


def add(args: argparse.Namespace) -> int:
    raw = read_json(args.results)
    results = ResultsFile.load(args.results)
    commit = args.commit or (raw.get("commit_info") or {}).get("id")
    date = args.date or raw.get("datetime") or datetime.datetime.now(datetime.UTC).isoformat()
    store = HistoryStore(args.history)
    store.add(results, commit, date, source=str(args.results))
    print(
        f"added {args.results} ({results.slug}, commit {commit or '?'}, {date}) to {store.path}: {store.runs()} run(s)"
    )
    return EXIT_OK


def check(args: argparse.Namespace) -> int:
    changes = find_changes(HistoryStore(args.history).series(), args.recent)
    for c in changes:
        print(c.line())
    recent = [c for c in changes if c.regression and c.recent]
    print(
        f"{len(changes)} change point(s); {len(recent)} regression(s) starting in the newest {args.recent} runs"
        + (": the check fails" if recent else "")
    )
    return EXIT_REGRESSION if recent else EXIT_OK


def show(args: argparse.Namespace) -> int:
    from harness.history.plot import draw

    series = HistoryStore(args.history).series()
    changes = find_changes(series, args.recent) if args.changes else []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grouped: dict[tuple[str, str], dict] = defaultdict(dict)
    for (name, metric, slug), points in series.items():
        grouped[(name, metric)][slug] = points
    lines = ["# llm-perf-suite history", ""]
    for (name, metric), by_slug in sorted(grouped.items()):
        found = [c for c in changes if (c.name, c.metric) == (name, metric)]
        png = draw(name, metric, by_slug, found, out)
        lines += [f"## `{name}` {metric}", "", f"![{metric}]({png.name})", "", *(f"- {c.line()}" for c in found), ""]
    (out / "history.md").write_text("\n".join(lines))
    print(f"history written: {out / 'history.md'} ({len(grouped)} series)")
    return EXIT_OK


def add_parser(sub, make) -> None:
    """The `history` subcommand and its actions (make(sub, name, help, fn) builds a subparser)."""
    from harness.commands import cmd_history
    from harness.history.store import DEFAULT_PATH

    hist = make(sub, "history", "a nightly's runs as a series: add runs, draw them, find change points", None)
    actions = hist.add_subparsers(dest="action", required=True, parser_class=type(hist))
    a = make(actions, "add", "add a results file's run to the history", cmd_history)
    a.add_argument("results", help="a results JSON (pytest --benchmark-json)")
    a.add_argument("--commit", default=None, help="the run's commit (default: the file's commit_info)")
    a.add_argument("--date", default=None, help="the run's date, ISO 8601 (default: the file's datetime)")
    s = make(actions, "show", "draw every series (PNG) and history.md", cmd_history)
    s.add_argument("--out", default="report/history", help="the folder to write")
    s.add_argument("--no-changes", dest="changes", action="store_false", help="do not mark change points")
    c = make(actions, "check", "find change points; exit 10 when a regression started in the newest runs", cmd_history)
    for p in (a, s, c):
        p.add_argument("--history", default=str(DEFAULT_PATH), help="the history store (SQLite file)")
    for p in (s, c):
        p.add_argument("--recent", type=int, default=RECENT, help="how many of the newest runs count as recent")
