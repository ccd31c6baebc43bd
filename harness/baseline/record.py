"""`llm-perf baseline update`: record this machine's baseline, atomically; with --append, grow it into a
rolling history of accepted runs (the last --keep of them).

A baseline pools several runs of the same cases. A single run carries its own luck (a neighbour busy
during one case's window), so each run's median tokens/s is kept (run_tok_s): the gate measures the
machine's run-to-run spread from them, which the rounds of one run do not show. So is each run's
reference time (run_reference_ms), which the machine-speed correction needs run by run, and a serving
case's per-round latency metrics, with each run's median (run_latency). A history appended to night
after night makes that spread include the drift between days, with as many degrees of freedom as runs.
"""

from __future__ import annotations

import dataclasses
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.baseline.storage import baseline_path, load_results
from harness.engines.work import counts_differ
from harness.errors import BaselineError
from harness.results import ROUND_LATENCY, BenchRecord, ResultsFile

DEFAULT_KEEP = 20  # runs a history keeps with --append (the oldest go first)


def run_suite(pytest_args: list[str], json_path: Path, env: dict | None = None) -> int:
    cmd = [sys.executable, "-m", "pytest", *suite_target(Path.cwd()), "-q", "--benchmark-json", str(json_path)]
    return subprocess.run([*cmd, *pytest_args], env=env).returncode


def suite_target(folder: Path) -> list[str]:
    """The cases: this repository's folder where it is there, else the installed package."""
    return ["perf_tests"] if (folder / "perf_tests" / "__init__.py").is_file() else ["--pyargs", "perf_tests"]


@dataclass
class Run:
    """One run of one case, as a baseline keeps it."""

    tok_s: float
    rounds_s: list[float]
    reference_ms: list[float] = field(default_factory=list)
    latency: dict[str, float] = field(default_factory=dict)  # each gated metric's median over the run's rounds
    round_latency: dict[str, list[float]] = field(default_factory=dict)
    work: dict[str, int] | None = None  # the run's work counters (the last run's are the baseline's)
    work_unsteady: bool = False  # its counters differed between its own identical rounds


def runs_of(bench: BenchRecord) -> list[Run]:
    """The runs a case's record holds: one for a plain results file, several for a pooled baseline (its
    rounds split by run_round_counts, or evenly where an older file did not record them)."""
    r = bench.result
    if not r.run_tok_s or len(r.run_tok_s) < 2:
        latency = {m: statistics.median(v) for m, v in (r.round_latency or {}).items() if v}
        return [
            Run(
                bench.median_tok_s,
                list(bench.rounds_s),
                list(r.reference_ms or []),
                latency,
                r.round_latency or {},
                r.work,
                bool(r.work_unsteady),
            )
        ]
    n = len(r.run_tok_s)
    counts = r.run_round_counts or [len(bench.rounds_s) // n] * (n - 1) + [
        len(bench.rounds_s) - len(bench.rounds_s) // n * (n - 1)
    ]
    starts = [sum(counts[:i]) for i in range(n + 1)]
    refs = r.run_reference_ms or []
    per_round = {m: v for m, v in (r.round_latency or {}).items() if len(v) == starts[-1]}  # one value a round
    return [
        Run(
            r.run_tok_s[i],
            bench.rounds_s[starts[i] : starts[i + 1]],
            [refs[i]] if len(refs) == n else [],
            {m: v[i] for m, v in (r.run_latency or {}).items() if len(v) == n},
            {m: v[starts[i] : starts[i + 1]] for m, v in per_round.items()},
            work=r.work,
            work_unsteady=bool(r.work_unsteady),
        )
        for i in range(n)
    ]


def pooled(bench: BenchRecord, runs: list[Run]) -> BenchRecord:
    """The case's record pooled over `runs`: rounds and references concatenated, each run's figures kept."""
    metrics = [m for m in ROUND_LATENCY if all(m in run.latency for run in runs)]
    result = dataclasses.replace(
        bench.result,
        baseline_runs=len(runs),
        run_tok_s=[run.tok_s for run in runs],
        run_round_counts=[len(run.rounds_s) for run in runs],
        extra=dict(bench.result.extra),
        run_latency={m: [run.latency[m] for run in runs] for m in metrics} or None,
        work=runs[-1].work,
        work_unsteady=any(run.work_unsteady or counts_differ(run.work, runs[-1].work) for run in runs) or None,
        round_latency={m: [x for run in runs for x in run.round_latency.get(m, [])] for m in metrics} or None,
    )
    if all(run.reference_ms for run in runs):
        result.run_reference_ms = [statistics.median(run.reference_ms) for run in runs]
        result.reference_ms = [x for run in runs for x in run.reference_ms]
    return BenchRecord(bench.name, [t for run in runs for t in run.rounds_s], result, bench.raw)


def merge_runs(docs: list[ResultsFile | dict]) -> ResultsFile:
    """One baseline from several runs of the same cases (the first run's cases, each with every run that has it)."""
    docs = [ResultsFile.coerce(d) for d in docs]
    by_name = [d.by_name() for d in docs]
    merged = [
        pooled(b, [r for names in by_name if b.name in names for r in runs_of(names[b.name])]) for b in docs[0].benches
    ]
    return ResultsFile(docs[0].machine_info, merged, docs[0].raw)


def append_runs(history: ResultsFile, new: ResultsFile, keep: int = DEFAULT_KEEP) -> ResultsFile:
    """The history with the new runs after its own, the last `keep` kept per case. A case new to the
    history starts its own; a case the new runs lack keeps its history unchanged."""
    if history.slug and new.slug and history.slug != new.slug:
        raise BaselineError(f"the history is of {history.slug}, the new run of {new.slug}: not appended")
    old, now = history.by_name(), new.by_name()
    benches = [pooled(b, (runs_of(b) + runs_of(now[b.name]))[-keep:]) if b.name in now else b for b in history.benches]
    benches += [pooled(b, runs_of(b)[-keep:]) for b in new.benches if b.name not in old]
    return ResultsFile(new.machine_info or history.machine_info, benches, history.raw)


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


def update_baseline(
    pytest_args: list[str],
    from_file: str | None = None,
    runs: int = 5,
    append: bool = False,
    keep: int = DEFAULT_KEEP,
    root: str | Path = "baselines",
) -> Path:
    """Run the suite `runs` times (or take a results file) and write baselines/<slug>/baseline.json; with
    `append`, add those runs to the baseline already there (a rolling history of the last `keep`). A
    failed run or a bad file writes nothing."""
    doc = load_results(from_file) if from_file else record_runs(pytest_args, runs)
    slug = doc.slug
    if not slug:
        raise BaselineError(
            f"{from_file or 'the run'}: machine_info has no slug: it was not recorded by llm-perf-suite"
        )
    path = baseline_path(slug, Path(root))
    if append and path.exists():
        doc = append_runs(load_results(path), doc, keep)
    elif from_file:
        doc = merge_runs([doc])
    doc.save(path)
    return path
