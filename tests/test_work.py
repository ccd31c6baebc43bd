"""Work counters (harness/engines/work.py) and their exact gate (harness/judge/work.py)."""

import pytest
import torch

from harness.baseline.gate import compare
from harness.engines import EngineConfig
from harness.engines.paged.engine import PagedEngine
from harness.engines.static_batch import StaticBatchEngine
from harness.engines.work import COUNTERS, round_work, sequential_work
from harness.errors import EXIT_REGRESSION
from harness.judge import Thresholds, exit_code
from harness.judge.work import NOT_DETERMINISTIC, work_verdicts
from harness.models import build_model
from harness.specs import get_spec
from harness.workloads import WORKLOADS, Request
from tests.mutants import RecomputesMorePaged, UnsteadyWorkPaged


@pytest.fixture(scope="module")
def tiny():
    return build_model(get_spec("tiny"), seed=0)


def reqs(lengths, new):
    gen = torch.Generator().manual_seed(0)
    prompts = [tuple(torch.randint(1, 500, (n,), generator=gen).tolist()) for n in lengths]
    return [Request(p, k, request_id=i) for i, (p, k) in enumerate(zip(prompts, new, strict=True))]


def test_paged_counts_its_steps_and_tokens_exactly(tiny):
    engine = PagedEngine(tiny, EngineConfig(), num_blocks=64)
    work = engine.generate(reqs([5, 7, 9], [3, 3, 3])).work
    assert work["steps"] == 3  # one prefill of all three, then two decode steps
    assert (work["prefill_tokens"], work["decode_tokens"]) == (21, 6)
    assert (work["preemptions"], work["swapped_blocks"], work["prefix_hit_tokens"]) == (0, 0, 0)
    assert work["peak_kv_blocks"] == 3


def test_static_batching_counts_what_its_padding_costs(tiny):
    engine = StaticBatchEngine(tiny, EngineConfig())
    work = engine.generate(reqs([4, 8], [2, 3])).work
    assert work == {"steps": 3, "prefill_tokens": 16, "decode_tokens": 4, "padded_tokens": 4 + 0 + 1 + 0}


def test_one_request_at_a_time_counts_a_prefill_and_a_forward_per_later_token():
    class Out:
        def __init__(self, prompt_len, n):
            self.prompt_len, self.token_ids = prompt_len, [0] * n

    assert sequential_work([Out(5, 3), Out(7, 1)]) == {"steps": 4, "prefill_tokens": 12, "decode_tokens": 2}
    assert set(sequential_work([])) <= set(COUNTERS)


def _under_pressure(engine_class, tiny):
    """prefix16 in a pool too small for it: preemptions, and prefixes other sequences still hold."""
    engine = engine_class(tiny, EngineConfig(max_num_seqs=16), num_blocks=28)
    return engine.generate(WORKLOADS["prefix16"].requests(tiny.spec.vocab_size))


def test_identical_runs_count_identical_work_and_the_recompute_mutant_is_caught(tiny):
    first, second = _under_pressure(PagedEngine, tiny), _under_pressure(PagedEngine, tiny)
    assert first.work == second.work
    assert first.work["preemptions"] > 0
    mutant = _under_pressure(RecomputesMorePaged, tiny)
    assert [o.token_ids for o in mutant.outputs] == [o.token_ids for o in first.outputs]  # right tokens
    rows = work_verdicts("case", first.work, mutant.work)
    assert "case work:prefill_tokens" in {v.name for v in rows if v.status == "regression"}
    assert exit_code(rows) == EXIT_REGRESSION
    assert work_verdicts("case", mutant.work, first.work)[0].status == "improvement"


def test_counters_that_differ_between_identical_rounds_are_refused(tiny):
    engine = UnsteadyWorkPaged(tiny, EngineConfig(), num_blocks=64)
    recorded = round_work([engine.generate(reqs([5], [3])).work for _ in range(3)])
    assert recorded["work_unsteady"] is True
    (row,) = work_verdicts("case", recorded["work"], recorded["work"], unsteady=True)
    assert row.status == "inconclusive"
    assert row.note == NOT_DETERMINISTIC
    steady = PagedEngine(tiny, EngineConfig(), num_blocks=64)
    assert "work_unsteady" not in round_work([steady.generate(reqs([5], [3])).work for _ in range(3)])


def _doc(work, seed=0, unsteady=None, torch="2.13.0", attention="c"):
    info = {"tokens": 10, "kind": "serving", "work": work, "seed": seed, "work_unsteady": unsteady}
    return {
        "machine_info": {"slug": "m", "torch": torch, "cpu_attention": attention},
        "benchmarks": [{"name": "c", "stats": {"data": [1.0] * 5}, "extra_info": info}],
    }


def test_the_stored_gate_judges_work_exactly_and_only_on_the_same_seed():
    base = _doc({"steps": 10, "prefill_tokens": 100})
    grown = {v.name: v for v in compare(base, _doc({"steps": 10, "prefill_tokens": 116}), Thresholds())}
    assert grown["c work:prefill_tokens"].status == "regression"
    assert "c work:steps" not in grown  # equal counters make no row
    assert compare(base, _doc({"steps": 10, "prefill_tokens": 100}), Thresholds())[0].status != "regression"
    other_seed = {v.name for v in compare(base, _doc({"steps": 10, "prefill_tokens": 116}, seed=1), Thresholds())}
    assert "c work:prefill_tokens" not in other_seed
    refused = {
        v.name: v for v in compare(base, _doc({"steps": 11, "prefill_tokens": 100}, unsteady=True), Thresholds())
    }
    assert refused["c work"].status == "inconclusive"


def test_a_baseline_pooled_from_runs_keeps_the_counters_the_gate_compares():
    from harness.baseline.record import merge_runs

    baseline = merge_runs([_doc({"steps": 10, "prefill_tokens": 100}) for _ in range(3)]).to_dict()
    assert baseline["benchmarks"][0]["extra_info"]["work"] == {"steps": 10, "prefill_tokens": 100}
    rows = {v.name: v for v in compare(baseline, _doc({"steps": 10, "prefill_tokens": 116}), Thresholds())}
    assert rows["c work:prefill_tokens"].status == "regression"


def test_fewer_prefix_cache_hits_is_a_regression_and_more_an_improvement():
    base = {"prefill_tokens": 100, "prefix_hit_tokens": 64}
    worse = {v.name: v.status for v in work_verdicts("c", base, {"prefill_tokens": 100, "prefix_hit_tokens": 48})}
    assert worse == {"c work:prefix_hit_tokens": "regression"}
    better = {v.name: v.status for v in work_verdicts("c", base, {"prefill_tokens": 100, "prefix_hit_tokens": 80})}
    assert better == {"c work:prefix_hit_tokens": "improvement"}


def test_a_baseline_of_runs_that_counted_differently_is_unsteady():
    from harness.baseline.record import merge_runs

    pooled = merge_runs([_doc({"steps": 10}), _doc({"steps": 11})]).to_dict()
    assert pooled["benchmarks"][0]["extra_info"]["work_unsteady"] is True
    rows = {v.name: v for v in compare(pooled, _doc({"steps": 11}), Thresholds())}
    assert rows["c work"].status == "inconclusive"
    assert rows["c work"].note == NOT_DETERMINISTIC
    steady = merge_runs([_doc({"steps": 10}), _doc({"steps": 10})]).to_dict()
    assert not steady["benchmarks"][0]["extra_info"].get("work_unsteady")


def test_a_work_row_shows_whole_counts():
    from harness.judge.table import table_row

    (row,) = work_verdicts("c", {"flops": 3_457_613_824}, {"flops": 3_658_940_416})
    assert table_row(row)[1:4] == ["3,457,613,824", "3,658,940,416", "count"]


def test_a_counter_the_base_counted_and_this_run_did_not_is_never_passed_as_unchanged():
    from harness.judge.table import format_table

    rows = {v.name: v for v in compare(_doc({"steps": 10, "flops": 500}), _doc({"steps": 10}), Thresholds())}
    assert rows["c work:flops"].status == "inconclusive"
    assert "c work:steps" not in rows
    (line,) = [x for x in format_table(list(rows.values()), "m") if x.startswith("c work:flops")]
    assert "not compared" in line
    assert [v.status for v in work_verdicts("c", {"steps": 10}, None)] == ["inconclusive"]  # nothing counted
    assert work_verdicts("c", None, {"flops": 5}) == []  # a base older than the counter: nothing to compare
    assert work_verdicts("c", {"steps": 10}, {"steps": 10, "flops": 5}) == []


@pytest.mark.parametrize("other", [{"torch": "2.14.0"}, {"attention": "torch"}], ids=["torch", "attention-kernel"])
def test_flops_are_compared_only_when_both_runs_counted_them_with_the_same_torch_and_kernels(other):
    """A host without a C compiler runs paged's decode attention in torch, over padded groups: more
    flops from the host, not the code."""
    from harness.baseline.gate import method_line

    base, grown = _doc({"steps": 10, "flops": 500}), {"steps": 11, "flops": 600}
    same = {v.name: v.status for v in compare(base, _doc(grown), Thresholds())}
    assert same["c work:flops"] == same["c work:steps"] == "regression"
    elsewhere = {v.name: v.status for v in compare(base, _doc(grown, **other), Thresholds())}
    assert "c work:flops" not in elsewhere
    assert elsewhere["c work:steps"] == "regression"
    assert "flops not compared: torch or the CPU kernels differ" in method_line(base, _doc(grown, **other))
