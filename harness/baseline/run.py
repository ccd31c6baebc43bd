"""One gate run, shared by `pytest perf_tests --benchmark-compare` and `llm-perf compare`: find the
baseline, refuse a comparison that would compare nothing, judge, and format the verdicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.baseline.gate import judged
from harness.baseline.storage import baseline_path, load_results
from harness.errors import EXIT_GATE_ERROR, EXIT_OK, BaselineError
from harness.judge import Thresholds, Verdict, exit_code
from harness.judge.table import format_markdown, format_table
from harness.results import BenchRecord, ResultsFile


@dataclass(frozen=True)
class GateOutcome:
    lines: list[str]
    exit_code: int
    verdicts: list[Verdict] = field(default_factory=list)
    method: str = ""

    def markdown(self, title: str) -> str:
        if not self.verdicts:
            return f"### {title}\n\n" + "\n".join(self.lines) + "\n"
        return format_markdown(self.verdicts, self.method, title)


def judge(
    baseline: ResultsFile, current: ResultsFile, thresholds: Thresholds, base_name: str, any_machine: bool = False
) -> GateOutcome:
    """The table and exit code for two results files. Raises BaselineError (exit 11) when they come from
    different machines or share no case: a comparison that compares nothing never passes."""
    if baseline.slug and current.slug and baseline.slug != current.slug and not any_machine:
        raise BaselineError(
            f"{base_name} was recorded on {baseline.slug}, this run on {current.slug}: results from different "
            f"machines are not compared (--any-machine compares them anyway)"
        )
    options = [(f.machine_info or {}).get("engine_options") or "no engine flags" for f in (baseline, current)]
    if options[0] != options[1]:
        raise BaselineError(
            f"{base_name} was recorded with {options[0]}, this run with {options[1]}: the engines ran differently, "
            "so their speeds are not compared"
        )
    if not baseline.by_name().keys() & current.by_name().keys():
        raise BaselineError(
            f"{base_name} and this run have no case in common ({len(baseline.benches)} vs {len(current.benches)} "
            f"cases): nothing would be compared"
        )
    verdicts, method = judged(baseline, current, thresholds)
    return GateOutcome(format_table(verdicts, method), exit_code(verdicts, thresholds.strict), verdicts, method)


def gate_this_run(
    current: ResultsFile,
    thresholds: Thresholds,
    baselines_dir: Path,
    results_dir: Path,
    explicit: Path | None = None,
    require: bool = False,
) -> GateOutcome:
    """Save this run to results/<slug>/latest.json, then judge it against this machine's baseline (or an
    explicit file). No baseline for this machine: one line says how to record one; the gate passes,
    unless `require` (--perf-require-baseline), which makes it an error (exit 11)."""
    saved = results_dir / str(current.slug) / "latest.json"
    current.save(saved)
    base_file = explicit or baseline_path(str(current.slug), baselines_dir)
    if not base_file.exists():
        if explicit:
            raise BaselineError(f"{base_file}: no such file")
        where = "" if Path(baselines_dir) == Path("baselines") else f" --perf-baselines-dir {baselines_dir}"
        line = (
            f"no baseline for this machine ({current.slug}): {base_file} does not exist; this run was saved to "
            f"{saved}. Record one with `llm-perf baseline update --runs 5{where} -- <this run's pytest arguments>`, "
            f"or promote this run with `llm-perf baseline update{where} --from {saved}`."
        )
        return GateOutcome([line], EXIT_GATE_ERROR if require else EXIT_OK)
    outcome = judge(load_results(base_file), current, thresholds, str(base_file))
    head = f"baseline {base_file} vs this run (saved to {saved})"
    return GateOutcome([head, *outcome.lines], outcome.exit_code, outcome.verdicts, outcome.method)


def session_results(machine_info: dict, benchmarks) -> ResultsFile:
    """A pytest run as a results file: the cases pytest-benchmark timed without error."""
    done = []
    for bench in benchmarks:
        if bench.has_error or bench.stats is None:
            continue
        entry = bench.as_dict(include_data=True)
        # params hold Case objects: store their ids, as pytest-benchmark's JSON does
        entry["params"] = {k: str(v) for k, v in (entry.get("params") or {}).items()}
        entry["param"] = str(entry.get("param"))
        done.append(BenchRecord.from_dict(entry))
    return ResultsFile(machine_info, done)


def gate_session(perf, benchmarks) -> int:
    """`--benchmark-compare`: a pytest run (its PerfSession `perf`) against its baseline. Fills
    perf.gate_lines, writes the markdown summary where asked; returns the exit code (0, 10, 11 or 12)."""
    import dataclasses

    from harness.report.summary import write_summary

    requested, options = perf.gate_requested, perf.options
    explicit = requested if isinstance(requested, str) and requested.endswith(".json") else None
    thresholds = dataclasses.replace(perf.thresholds, strict=perf.thresholds.strict or options.strict)
    outcome = gate_this_run(
        session_results(perf.machine_info(), benchmarks),
        thresholds,
        Path(options.baselines_dir),
        Path(options.results_dir),
        Path(explicit) if explicit else None,
        require=options.require_baseline,
    )
    perf.gate_lines = outcome.lines
    written = write_summary(outcome.markdown("llm-perf-suite: the run against its baseline"), options.summary)
    if written is not None:
        perf.gate_lines.append(f"summary written: {written}")
    return outcome.exit_code
