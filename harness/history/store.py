"""The history store: every run added, with its commit, date, machine slug and dtype, and each case's
metrics. SQLite by default (a file, `results/history.sqlite`, or `--history`); the two tables are
plain enough for a team to keep them in a shared database later (HistoryStore is the one place that
speaks SQL)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from harness.errors import BaselineError
from harness.results import ResultsFile

DEFAULT_PATH = Path("results") / "history.sqlite"
# what a series is made of: higher is better for the first, lower for the latency rows
METRICS = {"tokens_per_s": False, "ttft_ms_p99": True, "tpot_ms_p99": True}
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, commit_id TEXT, date TEXT NOT NULL, slug TEXT NOT NULL, dtype TEXT, source TEXT
);
CREATE TABLE IF NOT EXISTS points (
    run_id INTEGER NOT NULL REFERENCES runs(id), name TEXT NOT NULL, metric TEXT NOT NULL, value REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS points_by_series ON points (name, metric);
"""


@dataclass(frozen=True)
class Point:
    commit: str | None
    date: str
    slug: str
    value: float


class HistoryStore:
    def __init__(self, path: str | Path = DEFAULT_PATH) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path)
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise BaselineError(f"{self.path}: not a history store ({exc})") from None

    def add(self, results: ResultsFile, commit: str | None, date: str, source: str = "") -> int:
        """One run, all its cases' metrics, in one transaction; returns the run's id."""
        dtype = results.machine_info.get("dtype")
        with self.db:
            run_id = self.db.execute(
                "INSERT INTO runs (commit_id, date, slug, dtype, source) VALUES (?, ?, ?, ?, ?)",
                (commit, date, results.slug or "unknown", dtype, source),
            ).lastrowid
            rows = [
                (run_id, b.name, metric, float(value))
                for b in results.benches
                for metric in METRICS
                if (value := getattr(b.result, metric, None)) is not None
            ]
            self.db.executemany("INSERT INTO points (run_id, name, metric, value) VALUES (?, ?, ?, ?)", rows)
        return run_id

    def series(self) -> dict[tuple[str, str, str], list[Point]]:
        """(case, metric, slug) -> its points in the order the runs were added."""
        out: dict[tuple[str, str, str], list[Point]] = {}
        query = (
            "SELECT p.name, p.metric, r.slug, r.commit_id, r.date, p.value "
            "FROM points p JOIN runs r ON r.id = p.run_id ORDER BY r.id"
        )
        for name, metric, slug, commit, date, value in self.db.execute(query):
            out.setdefault((name, metric, slug), []).append(Point(commit, date, slug, value))
        return out

    def runs(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
