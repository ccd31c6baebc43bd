"""The flops work counter (harness/engines/flops.py): exact, the same across engines that do the same
arithmetic, never zero-filled, and a variant that multiplies more is a work regression."""

import dataclasses
import threading

import pytest
import torch
from torch.utils.flop_counter import sdpa_flop_count

from harness.ab.rounds import FLOPS_UNSTEADY, CaseRecord
from harness.engines import EngineConfig
from harness.engines.flops import attention_flops, count_flops, unit_flops
from harness.engines.manual import ManualEngine
from harness.engines.paged.engine import PagedEngine
from harness.engines.work import FLOPS as COUNTER
from harness.engines.work import round_work
from harness.errors import EXIT_REGRESSION
from harness.judge import exit_code
from harness.judge.work import work_verdicts
from harness.models import build_model
from harness.specs import get_spec
from harness.workloads import Request
from tests.mutants import ProjectsTwicePaged, UnsteadyFlopsPaged


@pytest.fixture(scope="module")
def tiny():
    return build_model(get_spec("tiny"), seed=0)


def step_flops(engine, kind: str, batch: int, length: int) -> dict:
    step = getattr(engine, f"{kind}_case")(batch, length, seed=0)
    try:
        return unit_flops(engine, step.run, step.setup)
    finally:
        if step.teardown is not None:
            step.teardown()


def expected_flops(spec, tokens: int, attention_pairs: int, logits: int) -> int:
    """2 per multiply-add: every layer's weight matrices times every token, the LM head times the `logits`
    positions whose logits are computed, then Q K^T and P V over the (query, key) pairs of every layer and
    head."""
    q, kv, d, hidden = spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.hidden_size
    layer = hidden * (q * d + 2 * kv * d) + q * d * hidden + 3 * hidden * spec.intermediate_size
    products = 2 * (tokens * spec.num_layers * layer + logits * hidden * spec.vocab_size)
    return products + spec.num_layers * q * attention_pairs * 4 * d


def test_attention_is_counted_as_torch_counts_it_and_with_fewer_key_heads():
    shapes = ((2, 4, 8, 16), (2, 4, 20, 16), (2, 4, 20, 16))
    assert attention_flops(*shapes) == sdpa_flop_count(*shapes)
    assert attention_flops((1, 8, 1, 64), (1, 2, 129, 64), (1, 2, 129, 64)) == 2 * 8 * 129 * 128


@pytest.mark.parametrize("engine_class", [PagedEngine, ManualEngine])
def test_a_decode_step_and_a_prefill_count_every_product_and_attention_exactly(tiny, engine_class):
    """Batch 8 goes through oneDNN on a float32 CPU: a counter that saw only torch's BLAS would miss it."""
    engine = engine_class(tiny, EngineConfig())
    decode = step_flops(engine, "decode", 8, 32)[COUNTER]
    assert decode == expected_flops(tiny.spec, 8, attention_pairs=8 * 33, logits=8)
    prefill = step_flops(engine, "prefill", 1, 16)[COUNTER]
    assert prefill == expected_flops(tiny.spec, 16, attention_pairs=16 * 16, logits=1)  # causal: not discounted


def test_a_variant_that_projects_twice_is_a_work_regression_with_the_same_tokens(tiny):
    right, twice = PagedEngine(tiny, EngineConfig()), ProjectsTwicePaged(tiny, EngineConfig())
    requests = [Request(tuple(range(1, 12)), 6, request_id=0)]
    assert [o.token_ids for o in twice.generate(requests).outputs] == [
        o.token_ids for o in right.generate(requests).outputs
    ]
    base, now = (unit_flops(e, lambda e=e: e.generate(requests), requests=requests) for e in (right, twice))
    rows = work_verdicts("case", {**right.generate(requests).work, **base}, {**twice.generate(requests).work, **now})
    assert [(v.name, v.status) for v in rows] == [("case work:flops", "regression")]
    assert exit_code(rows) == EXIT_REGRESSION
    assert step_flops(twice, "decode", 2, 32)[COUNTER] > step_flops(right, "decode", 2, 32)[COUNTER]


def test_cases_it_cannot_count_leave_the_counter_out_never_zero(tiny):
    engine = PagedEngine(tiny, EngineConfig())
    requests = [Request(tuple(range(1, 9)), 2, request_id=0)]
    unit = lambda: engine.generate(requests)  # noqa: E731
    assert COUNTER in unit_flops(engine, unit, requests=requests)
    arriving = [dataclasses.replace(requests[0], arrival_offset_s=0.5)]
    assert unit_flops(engine, unit, requests=arriving) == {}  # its batches depend on timing
    for replayed in (EngineConfig(compile=True), EngineConfig(cuda_graphs=True)):
        engine.config = replayed
        assert unit_flops(engine, unit, requests=requests) == {}  # not dispatched op by op

    class Elsewhere:  # an engine whose work runs in another process or thread
        config = EngineConfig()

    assert unit_flops(Elsewhere(), unit) == {}
    assert count_flops(lambda: torch.zeros(3).tolist()) is None

    def on_another_thread():
        worker = threading.Thread(target=lambda: torch.ones(8, 8) @ torch.ones(8, 8))
        worker.start()
        worker.join()

    assert count_flops(on_another_thread) is None  # the counter sees this thread only: left out, not 0


def test_flops_join_the_engine_counters_and_a_later_open_without_them_is_not_unsteady():
    assert round_work([{"steps": 2}, {"steps": 2}], {COUNTER: 10}) == {"work": {"steps": 2, COUNTER: 10}}
    assert round_work([None], {COUNTER: 10}) == {"work": {COUNTER: 10}}
    assert round_work([None]) == {}
    record = CaseRecord("case")
    record.count_work([{"work": {"steps": 2}}, {"work": {"steps": 2}}])  # the first open: the engine's counters
    record.add_flops([{COUNTER: 10}, {COUNTER: 12}])  # the first close: flops, once a side
    record.count_work([{"work": {"steps": 2}}, {"work": {"steps": 2}}])  # later opens do not count flops
    record.add_flops([{COUNTER: 10}, {COUNTER: 12}])  # the second close counts again: they differed
    assert not record.work_unsteady
    assert {v.name: v.status for v in record.work_rows()} == {"case work:flops": "regression"}
    record.count_work([{"work": {"steps": 3}}, {"work": {"steps": 2}}])
    assert record.work_unsteady


def test_flops_that_differ_between_identical_units_are_refused_as_not_deterministic(tiny):
    """Where the sides' flops differ, each counts again (an A/B's second visit; here the same engine
    counted twice stands in for it): a variant that projects twice does so every time (a regression),
    one that does so every other round is refused, and the scheduler's counters are still judged."""
    requests = [Request(tuple(range(1, 12)), 6, request_id=0)]

    def count(engine) -> dict:
        return unit_flops(engine, lambda: engine.generate(requests), requests=requests)

    right = PagedEngine(tiny, EngineConfig())
    for variant, row in ((ProjectsTwicePaged, "regression"), (UnsteadyFlopsPaged, "inconclusive")):
        record, head = CaseRecord("case"), variant(tiny, EngineConfig())
        record.count_work([{"work": {"steps": 2}}, {"work": {"steps": 3}}])
        record.add_flops([count(right), count(head)])
        assert record.flops_differ()
        record.add_flops([count(right), count(head)])
        rows = {v.name: v for v in record.work_rows()}
        assert rows["case work:steps"].status == "regression"
        assert rows["case work:flops"].status == row
    assert rows["case work:flops"].note == FLOPS_UNSTEADY
    same = CaseRecord("case")
    same.add_flops([count(right), count(PagedEngine(tiny, EngineConfig()))])
    assert not same.flops_differ()


def test_flops_counted_with_another_torch_on_each_side_are_not_compared():
    apart = CaseRecord("case")
    apart.add_flops([{COUNTER: 10, "counter": "torch 2.13.0"}, {COUNTER: 12, "counter": "torch 2.14.0"}])
    (row,) = apart.work_rows()
    assert row.status == "inconclusive"
    assert "another torch" in row.note
    for other in ({COUNTER: 12, "counter": "torch 2.13.0"}, {COUNTER: 12}):  # the same torch; an older suite's side
        same = CaseRecord("case")
        same.add_flops([{COUNTER: 10, "counter": "torch 2.13.0"}, other])
        assert not apart.flops_differ()  # nothing to count again: not compared anyway
        assert same.flops_differ()
        same.add_flops([{COUNTER: 10, "counter": "torch 2.13.0"}, other])  # the recount agrees
        assert [v.status for v in same.work_rows()] == ["regression"]


def test_a_count_that_fails_warns_and_leaves_the_counter_out():
    def unit():
        raise RuntimeError("an op the counter cannot take")

    with pytest.warns(RuntimeWarning, match="flops not counted"):
        assert count_flops(unit) is None
