"""The A/B runner against one parametric fake worker (tests/fake_ab.py): what it visits, in which
processes, and what it concludes from planted effects."""

import random
from collections import Counter

import pytest

from harness.ab.plan import Plan
from harness.ab.rounds import FLOPS_NOT_RECOUNTED, FLOPS_UNSTEADY
from harness.ab.runner import ABResult, Sweeps, ab_exit_code, run_comparison, verdicts_of
from harness.errors import EXIT_CHECK_FAILED, EXIT_GATE_ERROR, EXIT_REGRESSION, PerfSuiteError
from harness.judge import Thresholds
from tests.fake_ab import FakeLauncher, FakeSide

CASES = {f"test_decode[c{i}]": 0.004 for i in range(6)} | {"test_serving[s]": 3.0}
PLAN = Plan(sweeps=8, case_s=12.0, suspects=2, stage2_s=40.0, stage2_sweeps=8)


def compare(launcher, plan=PLAN, seed=0):
    run = Sweeps([FakeSide("base"), FakeSide("head")], [], plan, random.Random(seed), launch=launcher)
    chosen = run_comparison(run, Thresholds())
    return run, chosen, {v.name: v for v in verdicts_of(run, Thresholds())}


def test_each_sweep_is_a_fresh_pair_and_stage_1_follows_its_plan():
    launcher = FakeLauncher(CASES)
    run, _, _ = compare(launcher, Plan(sweeps=8, case_s=12.0, stage2_s=0))
    assert len(launcher.pairs) == 8
    for record in run.records.values():
        sweeps = [v.sweep for v in record.visits]
        assert len(sweeps) == record.visits_planned == len(set(sweeps))  # never twice in one pair
        assert all(v.blocks == record.blocks_per_visit for v in record.visits)
    assert run.records["test_decode[c0]"].visits_planned == 8
    assert run.records["test_serving[s]"].visits_planned == 2  # 12 s blocks: two visits, the least a case gets
    first, later = launcher.pairs[0][1].log, launcher.pairs[1][1].log
    assert ("prepare", {"check": True}) in first
    assert ("prepare", {"check": False}) in later
    assert [kw["check"] for c, kw in first if c == "open"] == [True] * len(CASES)  # outputs checked once
    assert not any(kw["check"] for c, kw in later if c == "open")


def test_blocks_are_led_by_the_side_opened_last():
    launcher = FakeLauncher({"test_decode[a]": 0.01})
    run, _, _ = compare(launcher, Plan(sweeps=6, case_s=6.0, stage2_s=0))
    leads = []
    for pair, visit in zip(launcher.pairs, run.records["test_decode[a]"].visits, strict=True):
        journal = pair[0].journal
        last_open = [side for side, cmd in journal if cmd == "open"][-1]
        warm = [side for side, cmd in journal if cmd == "round"][:2]  # each side's untimed round
        assert warm[-1] == last_open  # the side that leads the blocks ran last before them
        rounds = [side for side, cmd in journal if cmd == "round"][2:]
        assert rounds[:4] == (
            ["base", "head", "head", "base"] if visit.lead == "A" else ["head", "base", "base", "head"]
        )
        assert rounds[0] == last_open
        assert len(visit.base_s) == len(visit.head_s) == 2 * visit.blocks
        leads.append(visit.lead)
    assert set(leads) == {"A", "B"}  # drawn, not fixed


@pytest.mark.parametrize("seed", range(3))
def test_a_against_a_with_leaning_pairs_calls_nothing(seed):
    _, _, verdicts = compare(FakeLauncher(CASES, seed=seed, pair_sd=0.02, round_sd=0.03), seed=seed)
    statuses = Counter(v.status for v in verdicts.values())
    assert statuses["regression"] == statuses["improvement"] == 0


def test_a_planted_slowdown_of_one_case_is_found_there_and_nowhere_else():
    launcher = FakeLauncher(CASES, slower={"test_decode[c3]": 1.06}, seed=4, pair_sd=0.01, round_sd=0.03)
    run, chosen, verdicts = compare(launcher)
    assert "test_decode[c3]" in chosen
    assert verdicts["test_decode[c3]"].status == "regression"
    assert [n for n, v in verdicts.items() if v.status == "regression"] == ["test_decode[c3]"]
    assert any(v.stage == 2 for v in run.records["test_decode[c3]"].visits)


def test_a_quiet_machine_says_unchanged_a_noisy_one_says_it_cannot_tell():
    _, _, quiet = compare(FakeLauncher(CASES, seed=1, round_sd=0.002))
    _, _, noisy = compare(FakeLauncher(CASES, seed=1, pair_sd=0.08, round_sd=0.1))
    assert quiet["test_decode[c0]"].status == "unchanged"
    assert noisy["test_decode[c0]"].status == "inconclusive"
    assert noisy["test_decode[c0]"].detectable > 0.02
    assert quiet["test_serving[s]"].status == "unchanged"  # two visits of one block: judged, on a quiet machine
    assert noisy["test_serving[s]"].status == "inconclusive"


def test_a_case_one_side_fails_to_check_fails_the_comparison_and_the_rest_is_compared():
    launcher = FakeLauncher(CASES, refuse={"head": {"test_decode[c1]": "parity check failed: token 3 differs"}})
    run, _, verdicts = compare(launcher, Plan(sweeps=3, case_s=3.0, stage2_s=0))
    row = verdicts["test_decode[c1]"]
    assert row.status == "missing"
    assert row.note == "FAILED: head: parity check failed: token 3 differs"
    assert "test_decode[c1]" not in run.records
    assert len(run.records) == len(CASES) - 1
    assert ab_exit_code(run, list(verdicts.values()), strict=False) == EXIT_CHECK_FAILED


def test_the_pull_request_summary_leads_with_a_failed_check():
    launcher = FakeLauncher(CASES, refuse={"head": {"test_decode[c1]": "output check failed: request 2"}})
    run, _, verdicts = compare(launcher, Plan(sweeps=2, case_s=2.0, stage2_s=0))
    doc = {"head": "h", "base": "b", "failed": dict(run.failed)}
    md = ABResult([], EXIT_CHECK_FAILED, doc, list(verdicts.values()), "m").markdown()
    failed = "**FAILED** (a side's output check): `test_decode[c1]`: head: output check failed: request 2"
    assert md.split("\n\n")[1] == failed


def test_an_engine_one_side_lacks_is_missing_and_a_comparison_of_nothing_does_not_pass():
    lacks = {"head": {"test_decode[d]": "vllm not installed"}}
    launcher = FakeLauncher({"test_decode[d]": 0.01}, refuse=lacks, skip=True)
    run, _, verdicts = compare(launcher, Plan(sweeps=2, case_s=1.0, stage2_s=0))
    assert verdicts["test_decode[d]"].note == "not compared: head: vllm not installed"
    assert not run.failed
    assert ab_exit_code(run, list(verdicts.values()), strict=False) == EXIT_GATE_ERROR


def test_sides_that_do_different_work_are_not_compared():
    launcher = FakeLauncher(
        {"test_generate[g]": 0.1, "test_decode[d]": 0.01}, tokens={"head": {"test_generate[g]": 12}}
    )
    run, _, verdicts = compare(launcher, Plan(sweeps=2, case_s=2.0, stage2_s=0))
    assert verdicts["test_generate[g]"].status == "missing"
    assert "different work" in verdicts["test_generate[g]"].note
    assert ab_exit_code(run, list(verdicts.values()), strict=False) == 0


def counting_closes(launcher: FakeLauncher) -> dict[str, list[int]]:
    """case -> the pairs (sweeps) whose head worker counted its flops at the case's close."""
    found: dict[str, list[int]] = {}
    for number, pair in enumerate(launcher.pairs):
        case = None
        for cmd, kw in pair[1].log:
            case = kw.get("case", case)
            if cmd == "close" and kw.get("count"):
                found.setdefault(case, []).append(number)
    return found


def test_flops_are_counted_at_a_first_visit_again_at_the_second_where_the_sides_differ():
    flops = {"more": (100, 101), "same": (100, 100), "old-base": (None, 100), "drifts": (100, [101, 102])}
    flops["recount-failed"] = (100, [101, None])
    cases = {f"test_decode[{c}]": 0.01 for c in flops}
    side = {label: {f"test_decode[{c}]": f[i] for c, f in flops.items() if f[i] is not None} for i, label in
            enumerate(("base", "head"))}  # fmt: skip
    launcher = FakeLauncher(cases, flops=side)
    run, _, verdicts = compare(launcher, Plan(sweeps=3, case_s=1.0, stage2_s=0))
    work = {n: (v.status, v.note) for n, v in verdicts.items() if "work" in n}
    assert work == {
        "test_decode[more] work:flops": ("regression", "exact: the same case on the same seed"),  # +1%, no noise
        "test_decode[drifts] work:flops": ("inconclusive", FLOPS_UNSTEADY),  # refused, not called
        "test_decode[recount-failed] work:flops": ("inconclusive", FLOPS_NOT_RECOUNTED),
    }
    assert ab_exit_code(run, list(verdicts.values()), strict=False) == EXIT_REGRESSION
    closes = counting_closes(launcher)
    assert {c: len(p) for c, p in closes.items()} == {c: 2 if c[12:-1] in ("more", "drifts", "recount-failed") else 1
                                                      for c in cases}  # fmt: skip
    assert all(len(set(p)) == len(p) for p in closes.values())  # the recount in a fresh pair of processes


def test_flops_that_differed_in_a_case_of_one_visit_are_not_called():
    launcher = FakeLauncher({"test_decode[more]": 0.01}, flops={"base": {"test_decode[more]": 100},
                                                               "head": {"test_decode[more]": 101}})  # fmt: skip
    _, _, verdicts = compare(launcher, Plan(sweeps=1, case_s=1.0, stage2_s=0))
    row = verdicts["test_decode[more] work:flops"]
    assert (row.status, row.note) == ("inconclusive", FLOPS_NOT_RECOUNTED)


def test_cases_only_one_side_has_are_listed_and_none_in_common_is_an_error():
    _, _, verdicts = compare(
        FakeLauncher({"a": 0.01, "b": 0.01}, head_cases=["a"]), Plan(sweeps=2, case_s=1.0, stage2_s=0)
    )
    assert verdicts["b"].status == "missing"
    assert verdicts["b"].note == "not compared: base only"
    with pytest.raises(PerfSuiteError, match="no case in common"):
        compare(FakeLauncher({"a": 0.01}, head_cases=["z"]))
