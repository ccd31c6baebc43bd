"""One gate run, shared by `pytest perf_tests --benchmark-compare` and `python -m harness compare`:
find the baseline, refuse a comparison that would compare nothing, judge, and format the table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.baseline.gate import Thresholds, compare, format_table, has_regression, method_line
from harness.baseline.storage import baseline_path, load_results
from harness.errors import EXIT_OK, EXIT_REGRESSION, BaselineError
from harness.results import ResultsFile


@dataclass(frozen=True)
class GateOutcome:
    lines: list[str]
    exit_code: int


def judge(
    baseline: ResultsFile, current: ResultsFile, thresholds: Thresholds, base_name: str, any_machine: bool = False
) -> GateOutcome:
    """The table and exit code for two results files. Raises BaselineError (exit 11) when they come from
    different machines or share no case: a comparison that compares nothing never passes."""
    if baseline.slug and current.slug and baseline.slug != current.slug and not any_machine:
        raise BaselineError(
            f"{base_name} was recorded on {baseline.slug}, this run on {current.slug}: results from different "
            f"machines are not compared"
        )
    if not baseline.by_name().keys() & current.by_name().keys():
        raise BaselineError(
            f"{base_name} and this run have no case in common ({len(baseline.benches)} vs {len(current.benches)} "
            f"cases): nothing would be compared"
        )
    verdicts = compare(baseline, current, thresholds)
    lines = format_table(verdicts, thresholds.alpha, method_line(baseline, current, thresholds))
    return GateOutcome(lines, EXIT_REGRESSION if has_regression(verdicts) else EXIT_OK)


def gate_this_run(
    current: ResultsFile, thresholds: Thresholds, baselines_dir: Path, results_dir: Path, explicit: Path | None = None
) -> GateOutcome:
    """Save this run to results/<slug>/latest.json, then judge it against this machine's baseline (or an
    explicit file). No baseline yet for this machine: one line says so, and the gate passes."""
    saved = results_dir / str(current.slug) / "latest.json"
    current.save(saved)
    base_file = explicit or baseline_path(str(current.slug), baselines_dir)
    if not base_file.exists():
        if explicit:
            raise BaselineError(f"{base_file}: no such file")
        return GateOutcome(
            [
                f"no baseline for this machine ({current.slug}): {base_file} does not exist; this run was "
                f"saved to {saved}. Record one with `python -m harness baseline update --from {saved}`."
            ],
            EXIT_OK,
        )
    outcome = judge(load_results(base_file), current, thresholds, str(base_file))
    return GateOutcome([f"baseline {base_file} vs this run (saved to {saved})", *outcome.lines], outcome.exit_code)
