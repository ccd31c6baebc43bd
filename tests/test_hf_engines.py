import dataclasses

import pytest

from harness.engines import EngineConfig
from harness.engines.hf_generate import HFGenerateEngine
from harness.engines.manual import ManualEngine
from harness.engines.static_batch import StaticBatchEngine, contiguous_kv_utilisation
from harness.models import LoadedModel
from harness.workloads import Request, mixed_requests

ENGINES = [HFGenerateEngine, ManualEngine, StaticBatchEngine]


def tokens(engine_cls, loaded, requests, **config):
    result = engine_cls(loaded, EngineConfig(**config)).generate(requests)
    return [o.token_ids for o in result.outputs]


def test_the_three_engines_agree_token_for_token(tiny):
    reqs = mixed_requests(7, (2, 48), (1, 24), tiny.spec.vocab_size, seed=11)
    reference = tokens(HFGenerateEngine, tiny, reqs)
    assert [len(t) for t in reference] == [r.max_new_tokens for r in reqs]
    assert tokens(ManualEngine, tiny, reqs) == reference
    assert tokens(StaticBatchEngine, tiny, reqs, max_batch_size=3) == reference


def test_a_request_in_a_padded_batch_gets_its_tokens_alone(tiny):
    reqs = mixed_requests(5, (3, 40), (5, 20), tiny.spec.vocab_size, seed=5)
    batched = tokens(StaticBatchEngine, tiny, reqs, max_batch_size=5)
    for req, got in zip(reqs, batched, strict=True):
        assert tokens(StaticBatchEngine, tiny, [req]) == [got]


@pytest.mark.parametrize("engine_cls", ENGINES)
def test_ignore_eos_gives_exact_lengths_and_eos_stops_otherwise(tiny, engine_cls):
    req = Request(tuple(range(5, 17)), 30)
    free_run = tokens(engine_cls, tiny, [req])[0]
    eos = free_run[4]  # a token the model really produces, early
    with_eos = LoadedModel(dataclasses.replace(tiny.spec, eos_token_id=eos), tiny.model, tiny.device, tiny.dtype)
    assert tokens(engine_cls, with_eos, [req], ignore_eos=True)[0] == free_run
    stopped = tokens(engine_cls, with_eos, [req], ignore_eos=False)[0]
    assert stopped == free_run[: free_run.index(eos) + 1]


def test_timestamps_are_ordered(tiny):
    reqs = mixed_requests(4, (3, 20), (2, 9), tiny.spec.vocab_size, seed=2)
    for engine_cls in ENGINES:
        for out in engine_cls(tiny, EngineConfig(max_batch_size=2)).generate(reqs).outputs:
            assert out.arrival_s <= out.first_token_s <= out.finish_s
            assert out.ttft_s >= 0
            assert out.tpot_s >= 0


def test_contiguous_kv_utilisation_by_hand():
    # Batch of two: prompts 2 and 4, outputs 1 and 3 -> each reserves 4 + 3 = 7 slots for 3 steps.
    batch = [Request((1, 2), 1), Request((1, 2, 3, 4), 3)]
    used = (2 + 1 + 4 + 1) + (2 + 1 + 4 + 2) + (2 + 1 + 4 + 3)
    assert contiguous_kv_utilisation([batch]) == pytest.approx(used / (3 * 2 * 7))


def test_contiguous_kv_tokens_is_the_largest_batch_reservation():
    from harness.engines.static_batch import arrival_batches, contiguous_kv_tokens

    reqs = [Request((1,) * p, n, request_id=i) for i, (p, n) in enumerate([(10, 5), (3, 20), (7, 7), (2, 2), (50, 1)])]
    batches = arrival_batches(reqs, 2)
    assert [[r.request_id for r in b] for b in batches] == [[0, 1], [2, 3], [4]]
    assert contiguous_kv_tokens(batches) == max(2 * (10 + 20), 2 * (7 + 7), 1 * (50 + 1))
