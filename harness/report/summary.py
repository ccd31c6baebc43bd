"""Verdicts where a pull request shows them: a markdown summary, to a file or to GitHub's job summary."""

from __future__ import annotations

import os
from pathlib import Path

from harness.files import write_text_atomic

GITHUB_SUMMARY = "GITHUB_STEP_SUMMARY"


def summary_path(asked: str | None) -> Path | None:
    """The file asked for, else $GITHUB_STEP_SUMMARY when a GitHub Actions job sets it, else None."""
    chosen = asked or os.environ.get(GITHUB_SUMMARY)
    return Path(chosen) if chosen else None


def write_summary(markdown: str, asked: str | None) -> Path | None:
    """Write the summary where asked; GitHub's job summary is appended to (other steps write there too),
    any other file written whole, atomically. Returns where it went (None: nowhere asked)."""
    path = summary_path(asked)
    if path is None:
        return None
    if asked is None or str(path) == os.environ.get(GITHUB_SUMMARY):
        with open(path, "a") as f:
            f.write(markdown)
    else:
        write_text_atomic(path, markdown)
    return path
