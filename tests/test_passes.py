"""--perf-passes: each case's rounds spread over the run (harness/passes.py, CaseTimer's share)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pytest_benchmark.stats import Stats

from harness.passes import LaterPasses, run_later_passes
from harness.timer import CaseTimer

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def fake_case(name: str, log: list, first_s=(1.0,), rounds=2, fail_on_pass=None, raise_on_pass=None):
    """A case whose passes write (name, event) to `log`; it fails its check on pass `fail_on_pass`
    (2 = the first later pass) or raises inside its round on pass `raise_on_pass`."""
    stats = Stats()
    for s in first_s:
        stats.update(s)
    benchmark = SimpleNamespace(stats=SimpleNamespace(stats=stats), has_error=False)
    state = {"pass": 1}
    finished = []

    def make():
        state["pass"] += 1

        def run():
            if state["pass"] == raise_on_pass:
                raise RuntimeError("engine broke")
            log.append((name, "round", state["pass"]))

        return run, (lambda: log.append((name, "setup", state["pass"]))), (lambda: log.append((name, "after")))

    case = LaterPasses(
        name,
        benchmark,
        rounds,
        make,
        lambda: [5.0],
        lambda: "wrong tokens" if state["pass"] == fail_on_pass else None,
        lambda s, ref: finished.append((list(s), list(ref))),
    )
    return case, finished


def time_pass(run, setup, rounds):
    out = []
    for _ in range(rounds):
        setup()
        run()
        out.append(2.0)
    return out


def test_later_passes_alternate_their_order_and_pool_every_round_into_the_case():
    log = []
    a, fin_a = fake_case("a", log)
    b, fin_b = fake_case("b", log)
    assert run_later_passes([a, b], 4, time_pass) == []
    rounds = [(n, p) for n, e, *p in log if e == "round"]
    passes = [n for n, p in rounds[::2]]  # two rounds a pass
    assert passes == ["b", "a", "a", "b", "b", "a"]  # pass 2 reversed, pass 3 forward, pass 4 reversed
    assert log.count(("a", "after")) == 3
    assert fin_a == [([2.0] * 6, [5.0] * 3)]
    assert list(a.benchmark.stats.stats.data) == [1.0] + [2.0] * 6
    assert a.benchmark.stats.stats.median == 2.0  # the statistics are computed again from all rounds
    assert fin_b
    assert not a.benchmark.has_error


@pytest.mark.parametrize("how", ["check", "raise"])
def test_a_case_that_fails_in_a_later_pass_is_left_out_and_named(how):
    log = []
    good, fin_good = fake_case("good", log)
    bad, fin_bad = fake_case("bad", log, **({"fail_on_pass": 2} if how == "check" else {"raise_on_pass": 3}))
    problems = run_later_passes([good, bad], 4, time_pass)
    assert len(problems) == 1
    assert problems[0].startswith("bad: ")
    assert ("wrong tokens" if how == "check" else "RuntimeError in a later pass: engine broke") in problems[0]
    assert bad.benchmark.has_error
    assert not fin_bad
    assert list(bad.benchmark.stats.stats.data) == [1.0]
    assert fin_good
    assert not good.benchmark.has_error
    assert log.count(("bad", "after")) == (1 if how == "check" else 2)  # cleaned up, then no more passes


@pytest.mark.parametrize(("planned", "passes", "share"), [(5, 1, 5), (5, 4, 2), (8, 4, 2), (3, 4, 1)])
def test_the_first_pass_times_its_share_of_the_planned_rounds(planned, passes, share):
    timer = CaseTimer(torch.device("cpu"), rounds=planned, warmup_rounds=1, min_time_s=0, passes=passes)
    seen = {}
    benchmark = SimpleNamespace(pedantic=lambda fn, **kw: seen.update(kw))
    assert timer._pedantic(benchmark, lambda: None, None) == (share + 1, share)
    assert seen["rounds"] == share


def test_a_later_pass_warms_up_once_then_times_its_rounds_each_after_its_setup():
    calls = []
    timer = CaseTimer(torch.device("cpu"), warmup_rounds=2, passes=3)
    seconds = timer.time_pass(lambda: calls.append("run"), lambda: calls.append("setup"), 3)
    assert len(seconds) == 3
    assert all(s >= 0 for s in seconds)
    assert calls == ["setup", "run"] * 4  # one warm-up round, then three timed


def run_suite(tmp_path, *args):
    out = tmp_path / "out.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)])}
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "perf_tests"), "-p", "no:cacheprovider", "--perf-models"]
    cmd += ["tiny", "--perf-rounds", "2", "--perf-min-time", "0", "--benchmark-json", str(out), *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    return proc, (json.loads(out.read_text()) if out.exists() and out.read_text().strip() else None)


@pytest.mark.slow
def test_passes_through_pytest_record_every_pass_and_leave_out_a_case_wrong_only_later(tmp_path):
    """Three passes: each case times 1 round a pass (2 planned, split), checked and recorded from all
    three; an engine right in pytest's pass and wrong in a later one fails the run and is not saved."""
    args = ["-k", "generate and bs1 and prompt32-new32", "--perf-passes", "3"]
    args += ["--perf-engines", "manual,late-wrong-toy", "--perf-engine-module", "toy_engines:LateWrongToyEngine"]
    proc, doc = run_suite(tmp_path, *args)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "FAILED in a later pass (left out of the results): test_generate[tiny-late-wrong-toy-" in proc.stdout
    assert "differs from HF greedy" in proc.stdout
    (manual,) = doc["benchmarks"]
    assert manual["name"] == "test_generate[tiny-manual-bs1-prompt32-new32]"
    assert len(manual["stats"]["data"]) == 3
    assert manual["extra_info"]["output_check"].startswith("6 rounds x 1 requests equal HF greedy")


def test_passes_below_one_are_refused():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "perf_tests"), "--perf-passes", "0", "--collect-only", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "--perf-passes wants an integer of 1 or more, got '0'" in proc.stdout + proc.stderr
