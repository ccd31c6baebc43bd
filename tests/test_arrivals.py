"""Requests arriving over time: the seeded schedule, the admission queue, the engines that take it,
and vLLM's serving metrics worked by hand."""

import math
import time

import pytest

from harness.arrivals import AT_ONCE, ArrivalQueue, Load
from harness.engines.base import GenerateResult, RequestOutput
from harness.errors import ConfigError
from harness.options import PerfOptions, _slos
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


def test_the_queue_admits_what_has_arrived_up_to_the_cap():
    start = time.perf_counter()
    queue = ArrivalQueue(_requests([0.0, 0.0, 0.0, 60.0]), max_concurrency=2, start=start)
    assert [i for i, _, _ in queue.admit(in_flight=0)] == [0, 1]  # the cap
    assert queue.admit(in_flight=2) == []  # full
    assert [i for i, _, _ in queue.admit(in_flight=1)] == [2]
    assert queue.admit(in_flight=0) == []  # request 3 has not arrived
    assert queue  # ... but is still to come
    begun = time.perf_counter()
    late = ArrivalQueue(_requests([0.05]), max_concurrency=0, start=begun)
    assert late.admit(in_flight=0) == []  # not yet
    late.wait_for_next(in_flight=0)  # an idle engine sleeps until the next arrival
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


def _arrival_problems(engine, tiny) -> list[str]:
    """Six requests, arriving over 0.2 s, with at most two in flight (the engine's config): what the
    engine got wrong. Each must start no earlier than it arrives, no more than two may run at once,
    and the tokens must still be HF greedy's."""
    from harness.correctness import OutputChecker
    from harness.workloads import mixed_requests

    offsets = [0.0, 0.0, 0.0, 0.1, 0.15, 0.2]
    base = mixed_requests(6, (4, 24), (3, 12), tiny.spec.vocab_size, seed=5)
    requests = [
        Request(r.prompt_ids, r.max_new_tokens, request_id=r.request_id, arrival_offset_s=t)
        for r, t in zip(base, offsets, strict=True)
    ]
    start = time.perf_counter()
    result = engine.generate(requests)
    problems = [OutputChecker(tiny).tokens_problem(engine.name, requests, result.outputs, "arrivals")]
    for req, out in zip(requests, result.outputs, strict=True):
        if out.arrival_s < start + req.arrival_offset_s:
            problems.append(f"request {req.request_id} admitted before it arrived")
        if not out.arrival_s <= out.first_token_s <= out.finish_s or len(out.token_times) != len(out.token_ids):
            problems.append(f"request {req.request_id}: timestamps out of order or missing")
    intervals = sorted((o.arrival_s, o.finish_s) for o in result.outputs)
    most = max(sum(a <= t < f for a, f in intervals) for t, _ in intervals)
    if most > 2 or result.metrics["max_running_seqs"] > 2:
        problems.append(f"{most} requests in flight at once, cap 2")
    return [p for p in problems if p]


@pytest.mark.parametrize("engine_name", ["paged", "static-batch"])
def test_engines_admit_requests_at_their_arrival_and_keep_hf_greedy_tokens(tiny, engine_name):
    from harness.engines import load_engine_class
    from harness.engines.base import EngineConfig

    engine = load_engine_class(engine_name)(tiny, EngineConfig(max_concurrency=2, max_batch_size=4))
    assert _arrival_problems(engine, tiny) == []


def test_an_engine_that_ignores_arrivals_is_caught(tiny):
    """The mutant: paged admitting every request at t=0 with no cap (tests/mutants.py)."""
    from mutants import IgnoresArrivalsPaged

    from harness.engines.base import EngineConfig

    problems = _arrival_problems(IgnoresArrivalsPaged(tiny, EngineConfig(max_concurrency=2, max_batch_size=4)), tiny)
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
