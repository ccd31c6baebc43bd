"""The `openai` engine against a real `vllm serve` on 127.0.0.1, serving a model saved from a spec.

Runs where vLLM is installed (`make test-vllm` runs it in .venv-vllm); in the main venv it skips.
The server is started as `make bench-http` starts it (harness/served.py), with no graph compile."""

from __future__ import annotations

import pytest
import torch
from arrival_check import arrival_problems

from harness.correctness import OutputChecker
from harness.engines.base import EngineConfig
from harness.engines.openai_engine import OpenAIEngine
from harness.engines.vllm_engine import VLLMEngine, kv_plan
from harness.models import build_model
from harness.roofline import kv_bytes_per_token
from harness.served import VLLMServer, save_model
from harness.specs import get_spec
from harness.workloads import Request, mixed_requests

pytestmark = pytest.mark.skipif(
    VLLMEngine.unavailable_reason(torch.device("cpu")) is not None,
    reason=f"vllm cannot run here: {VLLMEngine.unavailable_reason(torch.device('cpu'))}",
)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`small` (seed 0) saved and served, as the suite builds it; a pool of 8 x 128 tokens."""
    loaded = build_model(get_spec("small"), seed=0)
    folder = save_model("small", tmp_path_factory.mktemp("small"))
    kv = kv_plan(loaded.spec, loaded.dtype, "cpu", 8 * 128 * kv_bytes_per_token(loaded.spec, loaded.dtype))
    with VLLMServer(str(folder), "small", kv_options=kv, eager=True) as server:
        yield loaded, server


def test_served_tokens_equal_hf_greedy_with_stamps_and_usage(served):
    loaded, server = served
    engine = OpenAIEngine(loaded, EngineConfig(openai_base_url=server.base_url))
    requests = mixed_requests(6, (8, 40), (4, 24), loaded.spec.vocab_size, seed=3)
    result = engine.generate(requests)
    assert OutputChecker(loaded).tokens_problem("openai", requests, result.outputs, "vllm serve") is None
    for req, out in zip(requests, result.outputs, strict=True):
        assert len(out.token_ids) == req.max_new_tokens  # and the usage count agreed (else out.error)
        assert len(out.token_times) == len(out.token_ids)
        assert out.arrival_s < out.first_token_s <= out.finish_s
    assert result.metrics["prefix_cache_reset"] == 1.0  # the server runs with VLLM_SERVER_DEV_MODE=1


def test_served_requests_arrive_on_time_under_the_cap(served):
    loaded, server = served
    engine = OpenAIEngine(loaded, EngineConfig(openai_base_url=server.base_url, max_concurrency=2))
    assert arrival_problems(engine, loaded) == []


def test_a_request_the_server_refuses_gets_its_error_while_the_others_finish(served):
    loaded, server = served
    engine = OpenAIEngine(loaded, EngineConfig(openai_base_url=server.base_url))
    too_long = Request(tuple(range(1, 2001)), 4, request_id=100)  # beyond the server's max_model_len
    ok = mixed_requests(2, (8, 20), (4, 8), loaded.spec.vocab_size, seed=4)
    result = engine.generate([too_long, *ok])
    assert "HTTP 400" in result.outputs[0].error
    assert [len(o.token_ids) for o in result.outputs[1:]] == [r.max_new_tokens for r in ok]
    assert all(o.error is None for o in result.outputs[1:])


def test_the_server_and_its_engine_processes_are_gone_once_it_stops(served):
    """Last in this file: it stops the module's server (stopping twice is harmless)."""
    import psutil

    _, server = served
    started = [psutil.Process(server.proc.pid), *psutil.Process(server.proc.pid).children(recursive=True)]
    assert len(started) >= 2  # the API server and vLLM's engine core at least
    server.stop()
    assert [p.pid for p in started if _alive(p)] == []


def _alive(proc) -> bool:
    """Running and not a zombie; a process that ends between the two questions is not alive."""
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
