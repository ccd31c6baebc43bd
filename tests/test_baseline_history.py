"""A baseline that grows into a rolling history of accepted runs (`baseline update --append`)."""

from pathlib import Path

import numpy as np
import pytest

from harness.__main__ import main
from harness.baseline.gate import compare, method_line
from harness.baseline.record import append_runs, merge_runs, runs_of
from harness.errors import EXIT_GATE_ERROR, BaselineError
from harness.files import write_json_atomic
from harness.judge import Thresholds
from harness.results import ResultsFile

TOKENS = 64


def run(median_s: float, seed: int, names=("test_decode[a]", "test_decode[b]"), slug="m", n=5, work=None):
    rng = np.random.default_rng(seed)
    benches = [
        {"name": name, "stats": {"data": rng.normal(median_s, 0.005 * median_s, n).tolist()},
         "extra_info": {"tokens": TOKENS, "kind": "decode", "reference_ms": [10.0, 10.1],
                        **({"work": work} if work else {})}}
        for name in names
    ]  # fmt: skip
    return ResultsFile.from_dict({"machine_info": {"slug": slug}, "benchmarks": benches})


def test_appending_keeps_the_last_runs_in_order():
    history = merge_runs([run(1.0 + 0.01 * i, i) for i in range(3)])
    for i in range(3, 6):
        history = append_runs(history, run(1.0 + 0.01 * i, i), keep=4)
    case = history.get("test_decode[a]")
    assert case.result.baseline_runs == 4
    assert case.result.run_tok_s == pytest.approx([TOKENS / (1.0 + 0.01 * i) for i in range(2, 6)], rel=0.01)
    assert case.result.run_round_counts == [5, 5, 5, 5]
    assert len(case.rounds_s) == 20
    assert [r.tok_s for r in runs_of(case)] == case.result.run_tok_s
    assert len(case.result.run_reference_ms) == 4


def test_a_longer_history_gives_the_spread_more_degrees_of_freedom():
    spread = np.random.default_rng(1).normal(1.0, 0.04, 12)
    short = merge_runs([run(s, i) for i, s in enumerate(spread[:3])])
    long = short
    for i, s in enumerate(spread[3:], start=3):
        long = append_runs(long, run(s, i))
    now = run(1.0, 99)
    assert "each case's own (2 df a case at most)" in method_line(short, now, Thresholds(normalise="off"))
    assert "each case's own (11 df a case at most)" in method_line(long, now, Thresholds(normalise="off"))
    assert (
        compare(long, now, Thresholds(normalise="off"))[0].detectable
        < compare(short, now, Thresholds(normalise="off"))[0].detectable
    )


def test_a_new_case_starts_its_own_history_and_a_missing_one_keeps_its_own():
    history = merge_runs([run(1.0, 0), run(1.0, 1)])
    later = append_runs(history, run(1.0, 2, names=("test_decode[a]", "test_decode[c]")))
    assert later.get("test_decode[a]").result.baseline_runs == 3
    assert later.get("test_decode[b]").result.baseline_runs == 2
    assert later.get("test_decode[c]").result.baseline_runs == 1


def test_a_counter_a_newer_run_adds_is_not_unsteady_work_and_the_old_ones_stay_gated():
    history = merge_runs([run(1.0, i, work={"steps": 10}) for i in range(3)])
    history = append_runs(history, run(1.0, 3, work={"steps": 10, "flops": 500}))  # a version that counts flops
    case = history.get("test_decode[a]")
    assert case.result.work == {"steps": 10, "flops": 500}
    assert not case.result.work_unsteady
    grown = compare(history, run(1.0, 4, work={"steps": 12, "flops": 500}), Thresholds())
    assert {v.name: v.status for v in grown if "work" in v.name} == {
        "test_decode[a] work:steps": "regression",
        "test_decode[b] work:steps": "regression",
    }
    unsteady = append_runs(history, run(1.0, 5, work={"steps": 11, "flops": 500})).get("test_decode[a]")
    assert unsteady.result.work_unsteady  # a counter both runs hold, counted otherwise


def test_another_machines_run_is_not_appended():
    with pytest.raises(BaselineError, match="the history is of m, the new run of other"):
        append_runs(merge_runs([run(1.0, 0)]), run(1.0, 1, slug="other"))


def test_the_command_appends_and_a_corrupt_history_is_named_and_kept(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for i in range(3):
        write_json_atomic(tmp_path / f"r{i}.json", run(1.0, i).to_dict())
        assert main(["baseline", "update", "--from", f"r{i}.json", "--append"]) == 0
    stored = ResultsFile.load(tmp_path / "baselines" / "m" / "baseline.json")
    assert stored.get("test_decode[a]").result.baseline_runs == 3
    (tmp_path / "baselines" / "m" / "baseline.json").write_text("{broken")
    assert main(["baseline", "update", "--from", "r0.json", "--append"]) == EXIT_GATE_ERROR
    assert "baselines/m/baseline.json" in capsys.readouterr().err
    assert (tmp_path / "baselines" / "m" / "baseline.json").read_text() == "{broken"


def test_baseline_update_runs_the_repositorys_cases_here_and_the_installed_ones_elsewhere(tmp_path):
    from harness.baseline.record import suite_target

    assert suite_target(Path(__file__).resolve().parent.parent) == ["perf_tests"]
    assert suite_target(tmp_path) == ["--pyargs", "perf_tests"]  # a project that installed the suite
