"""`python -m harness baseline update`: record this machine's baseline, atomically."""

from __future__ import annotations

import dataclasses
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.baseline.storage import baseline_path, load_results
from harness.errors import BaselineError
from harness.results import ROUND_LATENCY, BenchRecord, ResultsFile


def run_suite(pytest_args: list[str], json_path: Path, env: dict | None = None) -> int:
    cmd = [sys.executable, "-m", "pytest", "perf_tests", "-q", "--benchmark-json", str(json_path), *pytest_args]
    return subprocess.run(cmd, env=env).returncode


def merge_runs(docs: list[ResultsFile | dict]) -> ResultsFile:
    """One baseline from several runs of the same cases: each case's rounds pooled across runs.

    A single run carries its own luck (a neighbour busy during one case's window). Each run's median
    tokens/s is kept too (run_tok_s): the gate measures the machine's run-to-run spread from them,
    which the rounds of one run do not show. So is each run's reference time (run_reference_ms),
    which the gate's machine-speed correction needs run by run. A serving case's per-round latency
    metrics (round_latency) are pooled the same way, with each run's median of them (run_latency).
    """
    docs = [ResultsFile.coerce(d) for d in docs]
    by_name = [d.by_name() for d in docs]
    merged = []
    for bench in docs[0].benches:
        runs = [names[bench.name] for names in by_name if bench.name in names]
        result = dataclasses.replace(
            bench.result,
            baseline_runs=len(runs),
            run_tok_s=[r.median_tok_s for r in runs],
            extra=dict(bench.result.extra),
            **_pooled_latency(runs),
        )
        refs = [r.result.reference_median_ms for r in runs]
        if all(ref is not None for ref in refs):
            result.run_reference_ms = refs
            result.reference_ms = [x for r in runs for x in r.result.reference_ms]
        merged.append(BenchRecord(bench.name, [t for r in runs for t in r.rounds_s], result, bench.raw))
    return ResultsFile(docs[0].machine_info, merged, docs[0].raw)


def _pooled_latency(runs: list[BenchRecord]) -> dict:
    """round_latency pooled over the runs and each run's median (run_latency), for the metrics every run has."""
    per_run = [r.result.round_latency or {} for r in runs]
    metrics = [m for m in ROUND_LATENCY if all(d.get(m) for d in per_run)]
    if not metrics:
        return {"round_latency": None, "run_latency": None}
    return {
        "round_latency": {m: [x for d in per_run for x in d[m]] for m in metrics},
        "run_latency": {m: [statistics.median(d[m]) for d in per_run] for m in metrics},
    }


def record_runs(pytest_args: list[str], runs: int, env: dict | None = None) -> ResultsFile:
    """Run the suite `runs` times and pool the results; any failed run writes nothing."""
    docs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            out = Path(tmp) / f"run{i}.json"
            rc = run_suite([a for a in pytest_args if a != "--"], out, env)
            if rc != 0:
                raise BaselineError(f"pytest perf_tests exited with {rc} (run {i + 1} of {runs}): no baseline written")
            docs.append(load_results(out))
    return merge_runs(docs)


def update_baseline(pytest_args: list[str], from_file: str | None = None, runs: int = 3) -> Path:
    """Run the suite `runs` times (or take a results file) and write baselines/<slug>/baseline.json.
    A failed run or a bad file writes nothing."""
    doc = load_results(from_file) if from_file else record_runs(pytest_args, runs)
    slug = doc.slug
    if not slug:
        raise BaselineError(
            f"{from_file or 'the run'}: machine_info has no slug: it was not recorded by llm-perf-suite"
        )
    path = baseline_path(slug)
    doc.save(path)
    return path
