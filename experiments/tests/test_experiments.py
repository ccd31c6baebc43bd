"""The validation tools' own rules: patches that still apply, trials scored as the tools say."""

import subprocess

import pytest

from experiments.ab_check import AA, REGRESSIONS, score
from experiments.gate_check import ONE_CASE
from experiments.trees import PATCHES, ROOT
from experiments.trials import run_trials, schedule


@pytest.mark.parametrize("patch", sorted(p.stem for p in PATCHES.glob("*.patch")))
def test_every_regression_patch_applies_to_this_tree(patch):
    proc = subprocess.run(["git", "apply", "--check", str(PATCHES / f"{patch}.patch")], cwd=ROOT, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()


def test_every_scenario_has_its_patch():
    names = {p.stem for p in PATCHES.glob("*.patch")}
    assert {AA, ONE_CASE[0], *REGRESSIONS} <= names


def doc(*rows):
    return {"verdicts": [{"name": n, "status": s, "change": c} for n, s, c in rows]}


def test_an_a_a_trial_fails_on_any_false_regression():
    assert score(AA, 0, doc(("x", "unchanged", 0.0), ("y", "inconclusive", -0.01)))[0] is False
    assert score(AA, 10, doc(("x", "regression", -0.03)))[0] is True


def test_a_regression_trial_passes_only_with_exit_10_and_the_flag_on_its_case():
    patch, case = next(iter(REGRESSIONS.items()))
    assert score(patch, 10, doc((case, "regression", -0.05)))[0] is False
    assert score(patch, 10, doc((case, "inconclusive", -0.05), ("other", "regression", -0.03)))[0] is True
    assert score(patch, 0, doc((case, "inconclusive", -0.04)))[0] is True
    failed, detail = score(patch, 10, doc((case, "regression", -0.05), ("z", "inconclusive", 0.0)))
    assert "1/2 inconclusive" in detail


def test_the_work_gate_counts_only_a_work_row_of_the_patched_case():
    from experiments.ab_check import work_flagged

    patch, case = next(iter(REGRESSIONS.items()))
    assert work_flagged(doc((f"{case} work:steps", "regression", 0.1)), patch)
    assert not work_flagged(doc((f"{case} work:steps", "unchanged", 0.0), ("other work:steps", "regression", 1)), patch)
    assert not work_flagged(doc((case, "regression", -0.05)), patch)  # the time verdict is the score's


def test_trials_run_in_a_seeded_shuffled_order_and_are_tallied():
    order = schedule({"a": 3, "b": 3}, seed=1)
    assert sorted(order) == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2)]
    assert order != sorted(order)
    assert schedule({"a": 3, "b": 3}, seed=1) == order
    tallies = run_trials({"a": 2, "b": 2}, lambda label, i, n: (label == "b" and i == 0, ""), 0, log=lambda _: None)
    assert (tallies["a"].failed, tallies["b"].failed, tallies["b"].runs) == (0, 1, 2)


def test_a_tally_run_for_some_labels_keeps_every_trials_place_in_the_full_order():
    ran = []
    tallies = run_trials(
        {"a": 3, "b": 3},
        lambda label, i, n: ran.append((label, i, n)) or (False, ""),
        1,
        log=lambda _: None,
        only={"b"},
    )
    full = schedule({"a": 3, "b": 3}, seed=1)
    assert ran == [(label, i, n) for n, (label, i) in enumerate(full) if label == "b"]
    assert set(tallies) == {"b"}
    assert tallies["b"].runs == 3


def test_synthetic_histories_have_their_planted_step_and_noise():
    import numpy as np

    from experiments.history_check import STEP_AT, history

    runs = np.log([history(0.015, 0.05, seed=seed) for seed in range(40)])
    step = runs[:, :STEP_AT].mean(axis=1) - runs[:, STEP_AT:].mean(axis=1)
    assert np.mean(step) == pytest.approx(-np.log(0.95), abs=0.005)
    assert np.std(runs[:, :STEP_AT] - runs[:, :STEP_AT].mean(axis=1, keepdims=True)) == pytest.approx(0.015, rel=0.1)


def test_real_nights_are_filed_a_day_apart_in_order():
    import datetime
    import itertools

    from experiments.history_real import night_date

    dates = [datetime.datetime.fromisoformat(night_date(n)) for n in range(1, 11)]
    assert all(b - a == datetime.timedelta(days=1) for a, b in itertools.pairwise(dates))


def test_every_way_of_reading_the_weights_is_timed_and_counts_their_bytes():
    import torch

    from experiments.gemv_bandwidth import rates
    from harness.engines import rowdot

    weights = [torch.randn(64, 32), torch.randn(32, 64)]
    got = rates(weights, reps=2, rows=4, compiled=False)  # the compiled way: tests/test_matvec.py
    ways = ["sum", "F.linear, 1 row", "x @ W transposed, 1 row", "F.linear, 4 rows"]
    if torch.backends.mkldnn.is_available():
        ways += ["oneDNN, 1 row", "oneDNN, 4 rows"]
    if rowdot.kernel() is not None:
        ways += ["C kernel (rowdot.py), 1 row", "C kernel, 4 rows a block (before), 1 row"]
    assert list(got) == ways
    assert all(v > 0 for v in got.values())


def test_the_kernel_with_four_rows_a_block_gives_the_same_bits_as_the_kernel():
    import pytest
    import torch

    from experiments.gemv_bandwidth import rows_a_block, rows_source
    from harness.engines import rowdot

    if rowdot.kernel() is None:
        pytest.skip(f"no C kernel here: {rowdot.problem()}")
    assert rows_source(4) != rowdot.SOURCE
    x, w = torch.randn(1, 48), torch.randn(29, 48)  # blocks of 4 and of 8, tails of both; rows of 3 x 16
    assert torch.equal(rows_a_block(4)(x, w), rowdot.row_times_weight(x, w))  # each output: one order


def test_every_eager_decode_bound_variant_runs_a_step_and_gives_hf_greedy_tokens():
    from experiments.decode_bound import VARIANTS, seconds
    from harness.correctness import OutputChecker
    from harness.models import build_model
    from harness.specs import get_spec
    from harness.workloads import fixed_requests

    loaded = build_model(get_spec("tiny"))
    requests = fixed_requests(2, 8, 6, loaded.spec.vocab_size)
    checker = OutputChecker(loaded)
    for name in [name for name in VARIANTS if "compiled" not in name]:
        assert seconds(VARIANTS[name](loaded).decode_case(1, 16, seed=0)) > 0
        outputs = VARIANTS[name](loaded).generate(requests[:1]).outputs
        assert checker.tokens_problem(name, requests[:1], outputs, "a variant") is None


def test_decode_bound_splits_paged_steps_into_products_and_the_rest():
    from experiments.decode_bound import split
    from harness.engines import EngineConfig
    from harness.engines.base import StepCase
    from harness.engines.paged.engine import PagedEngine
    from harness.models import build_model
    from harness.specs import get_spec

    engine = PagedEngine(build_model(get_spec("tiny")), EngineConfig())
    linear = engine.runner.linear
    lines = split(engine, engine.decode_case(1, 16, seed=0), 2, StepCase(run=lambda: None))
    assert len(lines) == 2
    assert all("products" in line and "GB/s" in line and "the rest" in line for line in lines)
    assert engine.runner.linear is linear  # put back


def test_decode_bound_splits_a_step_in_c_into_layers_lm_head_and_the_rest():
    from experiments.decode_bound import split_c_step
    from harness.engines import EngineConfig
    from harness.engines.base import StepCase
    from harness.engines.paged.engine import PagedEngine
    from harness.models import build_model
    from harness.specs import get_spec

    engine = PagedEngine(build_model(get_spec("tiny")), EngineConfig())
    if engine.runner.row_step is None:
        pytest.skip("a lone row's step is not in C here")
    case = engine.decode_case(1, 16, seed=0)
    kernel, before = engine.runner.row_step.kernel, case.run()
    lines = split_c_step(engine, case, 2, StepCase(run=lambda: None))
    assert len(lines) == 2
    assert all("layers" in line and "without their products" in line and "LM head" in line for line in lines)
    assert engine.runner.row_step.kernel == kernel  # put back
    assert "_logits" not in vars(engine.runner)
    assert case.run() == before  # and the step computes what it did


def test_decode_bound_reports_each_variant_against_the_interleaved_reads():
    from experiments.decode_bound import interleaved, report
    from harness.engines.base import StepCase

    calls: list[str] = []
    cases = {name: StepCase(run=lambda n=name: calls.append(n)) for name in ("read", "a", "b")}
    times = interleaved(cases, rounds=4, seed=1)
    assert {n: len(t) for n, t in times.items()} == {"read": 4, "a": 4, "b": 4}
    assert len(calls) == 15  # one untimed round, then 4 timed, every case once each
    lines = report({"read": [1.0, 2.0, 4.0], "a": [2.0, 2.0, 3.0]}, step_bytes=2e9, probe_bytes=int(4e9))
    assert lines[0].startswith("read (sum over")
    assert "best 4.0 GB/s, median 2.0 GB/s" in lines[0]
    assert lines[1] == "a: 2000.0 ms/step, 1.0 GB/s, 25.0% of bound, 50.0% of typical"


def test_the_power_analysis_counts_visits_as_the_noncentral_t_says():
    import math

    from scipy import stats

    from experiments.ab_power import visits_needed
    from experiments.noise import pooled_sd

    n = visits_needed(sd=0.05, shift=0.05, level=0.001, power=0.9)
    reach = lambda k: stats.nct.sf(stats.t.isf(0.001, k - 1), k - 1, 0.05 * math.sqrt(k) / 0.05)  # noqa: E731
    assert reach(n) >= 0.9 > reach(n - 1)
    assert visits_needed(sd=0.10, shift=0.05, level=0.001, power=0.9) > n  # twice the noise: more visits
    sd, df = pooled_sd([[1.0, 3.0], [10.0, 12.0, 14.0], [7.0]])  # a lone visit adds nothing
    assert df == 3
    assert sd == pytest.approx(math.sqrt((2 + 8) / 3))


def test_the_noise_table_finds_a_planted_order_effect_and_pair_spread():
    import random

    from experiments.noise import case_noise
    from harness.ab.rounds import CaseRecord, Visit

    rng, visits = random.Random(0), []
    for sweep in range(6):
        visit = Visit(1, sweep, "A" if sweep % 2 else "B")
        for _ in range(4):  # blocks: the side running right after the other's process is 6% slower
            base = [0.1 * (1.06 if o > 0 else 1.0) * (1 + rng.gauss(0, 0.01)) for o in (-1, 1)]
            if visit.lead == "B":
                base.reverse()
            visit.base_s += base
            visit.head_s += [0.1 * (1 + rng.gauss(0, 0.01)) for _ in range(2)]
        visits.append(visit)
    noise = case_noise([CaseRecord("c", visits=visits)])
    assert noise["order"] == pytest.approx(0.03, abs=0.005)  # half the 6% gap between the orders
    assert noise["pair_sd"] == pytest.approx(0.014, rel=0.4)  # both sides' 1%, the order removed


@pytest.mark.slow
def test_decode_attention_compares_both_ways_before_timing_them(monkeypatch):
    """Each row count reports both kinds of contexts; an attention that answers wrongly one way is
    refused before anything is timed."""
    from experiments import decode_attention
    from harness.engines.paged.flex_decode import FlexDecode

    lines = decode_attention.run("tiny", [2], rounds=1)
    assert [line.split(":")[0] for line in lines] == ["ragged 2 rows", "equal 2 rows"]
    assert all("gathered/tables" in line for line in lines)
    attend = FlexDecode.attend
    monkeypatch.setattr(FlexDecode, "attend", lambda *a: attend(*a) * 1.01)  # the tables' answer, 1% off
    with pytest.raises(AssertionError, match="not close"):
        decode_attention.run("tiny", [2], rounds=1)


def test_the_gate_noise_table_splits_a_planted_run_shift_from_the_residuals():
    import random

    from experiments.gate_noise import report, two_way

    rng = random.Random(0)
    shifts = [0.1, -0.1, 0.0, 0.05, -0.05]
    rows = [[c * 0.3 + s + rng.gauss(0, 0.02) for c in range(12)] for s in shifts]
    shift, resid = two_way(rows)
    assert all(abs(a - b) < 0.01 for a, b in zip(shift, shifts, strict=True))
    pooled = next(line for line in report([f"case{c}" for c in range(12)], rows) if line.startswith("residual sd"))
    assert 0.015 < float(pooled.split(": ")[1].rstrip("%")) / 100 < 0.025


def test_what_each_case_could_tell_is_the_median_over_the_a_a_trials_and_counts_untested_ones():
    from experiments.ab_check import detectable_lines

    docs = [
        {"verdicts": [{"name": "a", "status": "inconclusive", "detectable": d}, {"name": "b", "status": "x"}]}
        for d in (0.04, 0.06, 0.05)
    ]
    lines = detectable_lines(docs)
    assert "a: 5.0% (4.0%-6.0%)" in lines[1]
    assert lines[2].endswith("no test in 3")
