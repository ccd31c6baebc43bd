"""The `openai` engine against a fake OpenAI-compatible server (tests/fake_openai_server.py): its
tokens held to HF greedy, per-token stamps, arrivals and the cap, usage counts, refused requests, and
the broken servers its checks refuse. tests/test_openai_real.py runs it against a real `vllm serve`."""

from __future__ import annotations

import dataclasses
import time

import pytest
from arrival_check import arrival_problems
from fake_openai_server import FakeServer

from harness.correctness import OutputChecker
from harness.engines.base import EngineConfig
from harness.engines.openai_client import Endpoint
from harness.engines.openai_engine import OpenAIEngine
from harness.errors import ConfigError, UnknownNameError
from harness.workloads import Request, mixed_requests


def engine_for(loaded, server: FakeServer, **config) -> OpenAIEngine:
    return OpenAIEngine(loaded, EngineConfig(openai_base_url=server.base_url, **config))


def requests_for(loaded, n: int = 5) -> list[Request]:
    return mixed_requests(n, (4, 20), (3, 10), loaded.spec.vocab_size, seed=7)


def test_tokens_equal_hf_greedy_with_a_stamp_per_token(tiny):
    requests = requests_for(tiny)
    with FakeServer(tiny, gap_s=0.01) as server:
        result = engine_for(tiny, server).generate(requests)
    assert OutputChecker(tiny).tokens_problem("openai", requests, result.outputs, "fake server") is None
    for req, out in zip(requests, result.outputs, strict=True):
        assert out.error is None
        assert len(out.token_ids) == req.max_new_tokens
        assert len(out.token_times) == len(out.token_ids)
        assert out.arrival_s < out.first_token_s <= out.finish_s
        assert len(out.itl_s) == len(out.token_ids) - 1  # one chunk per token: each stamped apart
        # the server sends a chunk every 10 ms; stamped when each arrives, not all at the end (half of
        # that, so a stall of the client on a busy machine cannot fail a correct stamp)
        assert out.finish_s - out.first_token_s >= 0.5 * 0.01 * (len(out.token_ids) - 1)
    assert result.metrics["prefix_cache_reset"] == 1.0
    assert server.resets == 1


def test_requests_arrive_on_time_under_the_cap(tiny):
    with FakeServer(tiny) as server:
        engine = engine_for(tiny, server, max_concurrency=2)
        assert arrival_problems(engine, tiny) == []


@pytest.mark.parametrize(
    ("fault", "expect"),
    [
        ("wrong-token", "differs"),  # a server serving other weights, or a broken one
        ("no-ids", "outside the vocabulary"),  # no token ids: placeholders, which no greedy output equals
        ("usage-mismatch", "usage says"),  # the stream lost a token the server counted
        ("cut-stream", "finish_reason"),  # the stream ended early
        ("cut-chunk", "IncompleteRead"),  # the server died mid-chunk: an error, not a hung round
        ("garbage", "JSONDecodeError"),  # a data line that is not JSON
        ("bad-prompt-count", "prompt"),  # the server saw another prompt than the one sent
    ],
)
def test_broken_servers_are_refused(tiny, fault, expect):
    """Mutants: each broken server fails the output check (the same check every timed round gets)."""
    requests = requests_for(tiny, 3)
    with FakeServer(tiny, fault=fault) as server:
        result = engine_for(tiny, server).generate(requests)
    problem = OutputChecker(tiny).tokens_problem("openai", requests, result.outputs, "fake server")
    errors = " ".join(o.error or "" for o in result.outputs)
    assert problem is not None
    assert expect in problem + errors


def test_no_ids_still_counts_tokens_from_usage(tiny):
    requests = requests_for(tiny, 3)
    with FakeServer(tiny, fault="no-ids") as server:
        result = engine_for(tiny, server).generate(requests)
    assert [len(o.token_ids) for o in result.outputs] == [r.max_new_tokens for r in requests]
    assert all(o.error is None for o in result.outputs)


def test_a_refused_request_gets_its_error_while_the_others_finish(tiny):
    requests = requests_for(tiny, 3)
    too_long = Request(tuple(range(1, 41)), 4, request_id=99)
    with FakeServer(tiny, max_prompt=30) as server:
        result = engine_for(tiny, server).generate([too_long, *requests])
    assert "HTTP 400" in result.outputs[0].error
    assert "maximum context length" in result.outputs[0].error
    assert all(o.error is None and o.token_ids for o in result.outputs[1:])


def test_bad_configuration_is_a_clear_error(tiny):
    with pytest.raises(ConfigError, match="--perf-openai-base-url"):
        OpenAIEngine(tiny, EngineConfig())
    with pytest.raises(ConfigError, match="cannot reach"):
        OpenAIEngine(tiny, EngineConfig(openai_base_url="http://127.0.0.1:9/v1"))
    with pytest.raises(ConfigError, match="http://HOST:PORT/v1"):
        Endpoint("127.0.0.1:8000")
    with pytest.raises(ConfigError, match="http://HOST:PORT/v1"):
        Endpoint("http://127.0.0.1:99999/v1")
    with FakeServer(tiny) as server:
        with pytest.raises(UnknownNameError, match="fake-model"):
            engine_for(tiny, server, openai_model="gpt-9")
        with pytest.raises(ConfigError, match="--perf-model-path"):
            engine_for(tiny, server, openai_prompt="text")


def test_endpoint_accepts_a_base_url_with_or_without_v1():
    assert Endpoint("http://127.0.0.1:8000").prefix == "/v1"
    assert Endpoint("http://127.0.0.1:8000/v1/").prefix == "/v1"
    assert Endpoint("https://host/proxy/v1").port == 443


def test_every_round_starts_from_a_reset_cache(tiny):
    requests = requests_for(tiny, 2)
    with FakeServer(tiny) as server:
        engine = engine_for(tiny, server)
        for _ in range(3):
            engine.generate(requests)
    assert server.resets == 3


def test_a_request_due_while_others_run_is_sent_on_time(tiny):
    """Arrivals while calls are in flight and the cap is not full go out when they arrive, not when a
    call happens to finish (the slow server keeps every call in flight for the whole round: a request
    sent only when one ends would be 0.3 s late or more)."""
    base = mixed_requests(4, (4, 12), (8, 8), tiny.spec.vocab_size, seed=9)
    offsets = [0.0, 0.05, 0.1, 0.15]
    requests = [dataclasses.replace(r, arrival_offset_s=t) for r, t in zip(base, offsets, strict=True)]
    with FakeServer(tiny, gap_s=0.05) as server:  # 8 tokens x 50 ms: each call lasts 0.4 s or more
        start = time.perf_counter()
        result = engine_for(tiny, server).generate(requests)
    for req, out in zip(requests, result.outputs, strict=True):
        assert out.error is None
        assert out.arrival_s == pytest.approx(start + req.arrival_offset_s, abs=0.2)  # counted from arrival
        assert server.received[req.prompt_ids] - out.arrival_s < 0.2
