"""`python -m harness baseline update`: record this machine's baseline, atomically."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from harness.baseline.storage import baseline_path, load_results, write_json_atomic
from harness.errors import BaselineError


def run_suite(pytest_args: list[str], json_path: Path, env: dict | None = None) -> int:
    cmd = [sys.executable, "-m", "pytest", "perf_tests", "-q", "--benchmark-json", str(json_path), *pytest_args]
    return subprocess.run(cmd, env=env).returncode


def update_baseline(pytest_args: list[str], from_file: str | None = None) -> Path:
    """Run the suite (or take a results file) and write baselines/<slug>/baseline.json. A failed
    run or a bad file writes nothing."""
    if from_file is None:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "results.json"
            rc = run_suite([a for a in pytest_args if a != "--"], out)
            if rc != 0:
                raise BaselineError(f"pytest perf_tests exited with {rc}: no baseline written")
            doc = load_results(out)
    else:
        doc = load_results(from_file)
    slug = (doc.get("machine_info") or {}).get("slug")
    if not slug:
        raise BaselineError(
            f"{from_file or 'the run'}: machine_info has no slug: it was not recorded by llm-perf-suite"
        )
    path = baseline_path(slug)
    write_json_atomic(path, doc)
    return path
