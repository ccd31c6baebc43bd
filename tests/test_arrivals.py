"""Requests arriving over time: the seeded schedule, the admission queue, the engines that take it,
and vLLM's serving metrics worked by hand."""

import math
import time

import pytest
from arrival_check import arrival_problems

from harness.arrivals import AT_ONCE, ArrivalQueue, Load
from harness.engines.base import GenerateResult, RequestOutput
from harness.errors import ConfigError
from harness.option_values import slos as _slos
from harness.settings import PerfOptions
from harness.workloads import Request


def test_the_default_load_is_everything_at_once_and_changes_no_case_id():
    assert AT_ONCE.at_once
    assert AT_ONCE.suffix() == ""
    assert AT_ONCE.offsets(3, seed=0) == [0.0, 0.0, 0.0]
    assert Load(2.0, 0.5, 8).suffix() == "-rate2-burst0.5-conc8"
    assert Load(max_concurrency=4).suffix() == "-conc4"


def test_the_schedule_is_seeded_and_has_the_asked_mean_rate():
    load = Load(request_rate=4.0)
    first = load.offsets(4000, seed=1)
    assert first == load.offsets(4000, seed=1)  # the same schedule every round: fixed work
    assert first[0] == 0.0
    assert first == sorted(first)
    assert (len(first) - 1) / first[-1] == pytest.approx(4.0, rel=0.05)
    gaps = [b - a for a, b in zip(first, first[1:], strict=False)]
    mean = sum(gaps) / len(gaps)
    cv = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps)) / mean
    assert cv == pytest.approx(1.0, abs=0.08)  # Poisson: exponential gaps, coefficient of variation 1
    bursty = Load(4.0, burstiness=0.25).offsets(4000, seed=1)
    gaps = [b - a for a, b in zip(bursty, bursty[1:], strict=False)]
    mean = sum(gaps) / len(gaps)
    assert mean == pytest.approx(0.25, rel=0.1)  # the same mean rate ...
    cv = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps)) / mean
    assert cv == pytest.approx(2.0, rel=0.15)  # ... burstier: gamma shape 1/4 has CV 1/sqrt(1/4) = 2


def test_bad_loads_and_slos_are_clear_errors():
    with pytest.raises(ConfigError, match="--request-rate must be > 0"):
        Load(request_rate=0)
    with pytest.raises(ConfigError, match="--burstiness"):
        Load(2.0, burstiness=-1)
    with pytest.raises(ConfigError, match="must be one of ttft, tpot, e2el"):
        _slos(["latency:100"])
    with pytest.raises(ConfigError, match="milliseconds"):
        _slos(["ttft:fast"])
    assert _slos(["ttft:2000", "tpot:200"]) == (("ttft", 2000.0), ("tpot", 200.0))
    assert PerfOptions(goodput=_slos(["e2el:5000"])).slo_ms == {"e2el": 5000.0}


def _requests(offsets):
    return [Request((1, 2), 1, request_id=i, arrival_offset_s=t) for i, t in enumerate(offsets)]


@pytest.fixture
def clock(monkeypatch):
    """The queue's clock, set by hand: `clock.now = t`."""
    import types

    from harness import arrivals

    fake = types.SimpleNamespace(now=0.0)
    monkeypatch.setattr(arrivals, "time", types.SimpleNamespace(perf_counter=lambda: fake.now, sleep=time.sleep))
    return fake


def _admitted(queue, in_flight, at, clock):
    clock.now = at
    return [(i, when) for i, _, when in queue.admit(in_flight)]


def test_the_queue_admits_what_has_arrived_up_to_the_cap(clock):
    queue = ArrivalQueue(_requests([0.0, 0.0, 0.0, 60.0]), max_concurrency=2, start=0.0)
    assert [i for i, _ in _admitted(queue, 0, 0.0, clock)] == [0, 1]  # the cap
    assert _admitted(queue, 2, 0.1, clock) == []  # full
    assert [i for i, _ in _admitted(queue, 1, 0.2, clock)] == [2]
    assert _admitted(queue, 0, 0.3, clock) == []  # request 3 has not arrived
    assert queue  # ... but is still to come


def test_an_idle_engine_sleeps_until_the_next_arrival():
    begun = time.perf_counter()
    late = ArrivalQueue(_requests([0.05]), max_concurrency=0, start=begun)
    late.wait_for_next(in_flight=0)
    ((_, _, admitted),) = late.admit(in_flight=0)
    assert admitted >= begun + 0.05


def _out(i, arrival, stamps):
    return RequestOutput(
        i,
        4,
        token_ids=list(range(len(stamps))),
        arrival_s=arrival,
        first_token_s=stamps[0],
        finish_s=stamps[-1],
        token_times=list(stamps),
    )


def test_serving_metrics_follow_vllms_definitions_worked_by_hand():
    # request 0 arrives at 0: tokens at 0.1, 0.2, 0.4 -> TTFT 100 ms, TPOT (0.4-0.1)/2 = 150 ms, ITL 100, 200, E2EL 400
    # request 1 arrives at 1: tokens at 1.5, 1.6 -> TTFT 500, TPOT 100, ITL 100, E2EL 600
    result = GenerateResult([_out(0, 0.0, [0.1, 0.2, 0.4]), _out(1, 1.0, [1.5, 1.6])], elapsed_s=2.0)
    m = result.latency_summary({"ttft": 200, "tpot": 200})
    assert m["ttft_ms_mean"] == pytest.approx(300)
    assert m["ttft_ms_p50"] == pytest.approx(300)
    assert m["ttft_ms_p99"] == pytest.approx(100 + 0.99 * 400)
    assert m["tpot_ms_p50"] == pytest.approx(125)
    assert m["itl_ms_mean"] == pytest.approx(400 / 3)
    assert m["itl_ms_p50"] == pytest.approx(100)
    assert m["e2el_ms_p50"] == pytest.approx(500)
    assert m["latency_ms_p50"] == m["e2el_ms_p50"]  # its older name, kept for stored baselines
    assert m["request_throughput"] == pytest.approx(1.0)  # 2 requests in 2 s
    assert m["output_throughput"] == pytest.approx(2.5)  # 5 tokens in 2 s
    assert m["goodput"] == pytest.approx(0.5)  # only request 0 meets TTFT <= 200 ms (and TPOT <= 200)
    assert "goodput" not in result.latency_summary()  # no SLO, no goodput


@pytest.mark.parametrize("engine_name", ["paged", "static-batch"])
def test_engines_admit_requests_at_their_arrival_and_keep_hf_greedy_tokens(tiny, engine_name):
    from harness.engines import load_engine_class
    from harness.engines.base import EngineConfig

    engine = load_engine_class(engine_name)(tiny, EngineConfig(max_concurrency=2, max_batch_size=4))
    assert arrival_problems(engine, tiny) == []


def test_an_engine_that_ignores_arrivals_is_caught(tiny):
    """The mutant: paged admitting every request at t=0 with no cap (tests/mutants.py)."""
    from mutants import IgnoresArrivalsPaged

    from harness.engines.base import EngineConfig

    problems = arrival_problems(IgnoresArrivalsPaged(tiny, EngineConfig(max_concurrency=2, max_batch_size=4)), tiny)
    assert any("before it arrived" in p for p in problems)
    assert any("in flight at once" in p for p in problems)


def test_an_engine_that_takes_everything_at_once_is_skipped_under_a_load_with_the_reason():
    import torch

    from harness.cases import Case
    from harness.engine_cache import EngineCache
    from harness.engines.registry import engine_sources

    cache = EngineCache(PerfOptions(models=("tiny",)), engine_sources(), torch.device("cpu"), "float32")
    assert cache.load_problem(Case("serving", "tiny", "transformers-cb", workload="mixed16")) is None
    loaded = Case("serving", "tiny", "transformers-cb", workload="mixed16", load=Load(2.0))
    assert "takes every request at once" in cache.load_problem(loaded)
    assert cache.load_problem(Case("serving", "tiny", "paged", workload="mixed16", load=Load(2.0))) is None
    assert loaded.id == "tiny-transformers-cb-mixed16-rate2"


def test_waiting_for_the_engine_counts_in_ttft_and_waiting_for_the_cap_does_not(clock):
    queue = ArrivalQueue(_requests([0.0, 0.0, 0.0]), max_concurrency=1, start=0.0)
    assert _admitted(queue, 0, 0.0, clock) == [(0, 0.0)]  # counts from its arrival
    assert _admitted(queue, 1, 0.005, clock) == []  # the cap is full: the other two are held
    assert _admitted(queue, 0, 0.01, clock) == [(1, 0.01)]  # counts from when the cap let it in


def test_a_request_that_arrives_while_the_cap_is_full_counts_from_admission(clock):
    """The engine calls admit() only between steps: one arriving mid-step, with the cap full, waited for
    the step's end (vLLM's real engine was seen with three in flight under a cap of two without this)."""
    queue = ArrivalQueue(_requests([0.0, 0.01]), max_concurrency=1, start=0.0)
    assert _admitted(queue, 0, 0.0, clock) == [(0, 0.0)]  # the cap is now full
    assert _admitted(queue, 0, 0.05, clock) == [(1, 0.05)]  # the step finished request 0 and it came in


def test_of_several_arriving_in_one_step_only_as_many_as_slots_were_free_count_from_arrival(clock):
    queue = ArrivalQueue(_requests([0.0, 0.1, 0.15]), max_concurrency=2, start=0.0)
    assert _admitted(queue, 0, 0.0, clock) == [(0, 0.0)]  # one slot left free
    # one long step: requests 1 and 2 arrive, request 0 finishes at its end
    assert _admitted(queue, 0, 0.3, clock) == [(1, 0.1), (2, 0.3)]


def test_a_request_that_arrives_after_a_slot_opened_counts_from_its_arrival(clock):
    queue = ArrivalQueue(_requests([0.0, 0.03]), max_concurrency=1, start=0.0)
    assert _admitted(queue, 0, 0.0, clock) == [(0, 0.0)]  # the cap is now full
    assert _admitted(queue, 0, 0.02, clock) == []  # request 0 finished: a slot is free, request 1 not here yet
    assert _admitted(queue, 0, 0.05, clock) == [(1, 0.03)]  # it never waited for the cap


def test_a_request_the_engine_refused_at_once_leaves_its_slot_free(clock):
    queue = ArrivalQueue(_requests([0.0, 0.01]), max_concurrency=1, start=0.0)
    assert _admitted(queue, 0, 0.0, clock) == [(0, 0.0)]
    queue.refused()  # too long for the engine: it never ran
    assert _admitted(queue, 0, 0.03, clock) == [(1, 0.01)]


def test_without_a_cap_every_request_counts_from_its_arrival(clock):
    queue = ArrivalQueue(_requests([0.0, 0.01, 0.02, 0.5]), max_concurrency=0, start=0.0)
    assert _admitted(queue, 0, 0.0, clock) == [(0, 0.0)]
    assert _admitted(queue, 1, 0.3, clock) == [(1, 0.01), (2, 0.02)]
    assert _admitted(queue, 3, 0.4, clock) == []  # request 3 has not arrived
    assert queue


def test_static_batch_requests_that_wait_for_an_earlier_batch_count_that_wait(tiny):
    from harness.engines.base import EngineConfig
    from harness.engines.static_batch import StaticBatchEngine
    from harness.workloads import fixed_requests

    result = StaticBatchEngine(tiny, EngineConfig(max_batch_size=2)).generate(fixed_requests(4, 8, 6, 512))
    first, second = result.outputs[:2], result.outputs[2:]
    assert {o.arrival_s for o in result.outputs} == {first[0].arrival_s}  # all arrived at once
    assert min(o.ttft_s for o in second) > max(o.latency_s for o in first)  # queued behind the first batch
