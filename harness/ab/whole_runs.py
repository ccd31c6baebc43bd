"""The fallback for a side without the worker protocol: whole pytest runs, interleaved ABAB."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from harness.ab.rounds import CaseRounds
from harness.ab.sides import Side, worker_env
from harness.ab.stats import PairedEstimate, run_medians_estimate
from harness.errors import PerfSuiteError


def compare_whole_runs(
    base: Side, head: Side, args: list[str], runs: int
) -> tuple[dict[str, CaseRounds], dict[str, PairedEstimate], list[str]]:
    """ABAB whole pytest runs, for a side without the worker protocol: a paired test on run medians."""
    from harness.baseline.storage import load_results

    medians: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            pair = {}
            for side in (base, head):
                out = Path(tmp) / f"{side.label}-{i}.json"
                rc = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "pytest",
                        "perf_tests",
                        "-q",
                        "-p",
                        "no:cacheprovider",
                        "--benchmark-json",
                        str(out),
                        *args,
                    ],
                    cwd=side.path,
                    env=worker_env(side),
                ).returncode
                if rc != 0:
                    raise PerfSuiteError(f"pytest perf_tests in the {side.label} ({side.spec}) exited with {rc}")
                pair[side.label] = {b.name: b.median_tok_s for b in load_results(out).benches}
            for name in pair["base"].keys() & pair["head"].keys():
                medians.setdefault(name, []).append((pair["base"][name], pair["head"][name]))
    rounds = {n: CaseRounds(n, note="whole runs ABAB (a side lacks the worker protocol)") for n in medians}
    estimates = {n: run_medians_estimate([b for b, _ in m], [h for _, h in m]) for n, m in medians.items()}
    return rounds, estimates, []
