"""The paged engine's greedy tokens equal HF generate's, token for token, in every mode."""

import pytest

from harness.engines import EngineConfig
from harness.engines.hf_generate import HFGenerateEngine
from harness.engines.paged.engine import PagedEngine, RequestTooLargeError
from harness.workloads import Request, mixed_requests, shared_prefix_requests


@pytest.fixture(scope="module")
def reference(tiny):
    engine = HFGenerateEngine(tiny, EngineConfig())
    return lambda reqs: [o.token_ids for o in engine.generate(reqs).outputs]


def paged(tiny, num_blocks=None, **config):
    return PagedEngine(tiny, EngineConfig(**config), num_blocks=num_blocks)


def tokens(result):
    return [o.token_ids for o in result.outputs]


def test_alone(tiny, reference):
    engine = paged(tiny)
    for req in mixed_requests(4, (1, 60), (1, 30), tiny.spec.vocab_size, seed=21):
        assert tokens(engine.generate([req])) == reference([req])


def test_a_batch_of_mixed_lengths(tiny, reference):
    reqs = mixed_requests(20, (1, 90), (1, 50), tiny.spec.vocab_size, seed=22)
    result = paged(tiny, max_num_seqs=8).generate(reqs)
    assert tokens(result) == reference(reqs)
    assert result.metrics["preemptions"] == 0


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_a_pool_so_small_that_preemption_happens_many_times(tiny, reference, preemption):
    reqs = mixed_requests(12, (10, 30), (20, 40), tiny.spec.vocab_size, seed=23)  # <= 70 tokens: 9 blocks
    engine = paged(tiny, num_blocks=10, block_size=8, max_num_seqs=8, preemption=preemption)
    result = engine.generate(reqs)
    assert tokens(result) == reference(reqs)
    assert result.metrics["preemptions"] >= 5
    if preemption == "swap":
        assert result.metrics["swaps"] >= 5
    assert engine.bm.num_free_blocks == engine.bm.num_blocks


def test_shared_prefixes_hit_the_cache_and_change_nothing(tiny, reference):
    reqs = shared_prefix_requests(6, 40, (1, 20), 12, tiny.spec.vocab_size, seed=24)
    engine = paged(tiny, max_num_seqs=3)  # later requests join after the first ones cached the prefix
    result = engine.generate(reqs)
    assert tokens(result) == reference(reqs)
    assert result.metrics["prefix_cache_hit_tokens"] >= 3 * 32
    again = engine.generate(reqs)  # a second round starts cold: same work, same hits
    assert again.metrics["prefix_cache_hit_tokens"] == result.metrics["prefix_cache_hit_tokens"]


def test_requests_arriving_while_others_run(tiny, reference):
    reqs = mixed_requests(9, (2, 50), (5, 40), tiny.spec.vocab_size, seed=25)
    engine = paged(tiny, max_num_seqs=4)
    got: dict[int, list[int]] = {}
    pending = list(reqs)
    while pending or engine.has_unfinished():
        if pending:  # one new request every step, while earlier ones are mid-decode
            req = pending.pop(0)
            engine.add_request(req.prompt_ids, req.max_new_tokens, request_id=req.request_id)
        for out in engine.step():
            got[out.request_id] = out.token_ids
    assert [got[r.request_id] for r in reqs] == reference(reqs)


def test_a_request_that_can_never_fit_fails_alone(tiny, reference):
    reqs = mixed_requests(5, (5, 30), (5, 20), tiny.spec.vocab_size, seed=26)
    huge = Request(tuple(range(1, 200)), 10, request_id=99)
    engine = paged(tiny, num_blocks=8, block_size=8)
    result = engine.generate([*reqs[:2], huge, *reqs[2:]])
    errors = [o.error for o in result.outputs]
    assert errors[2] is not None
    assert "199 prompt + 10 new tokens need 27 KV blocks" in errors[2]
    assert "whole pool has 8" in errors[2]
    ok = [o.token_ids for o in result.outputs if o.error is None]
    assert ok == reference(reqs)
    with pytest.raises(RequestTooLargeError, match="--kv-cache-mem"):
        engine.add_request(huge.prompt_ids, 10)


def test_priorities_are_served_first(tiny):
    reqs = [Request((5, 6, 7), 4, priority=p, request_id=i) for i, p in enumerate([3, 0, 2, 1])]
    result = paged(tiny, max_num_seqs=1).generate(reqs)
    finish_order = sorted(range(4), key=lambda i: result.outputs[i].finish_s)
    assert [reqs[i].priority for i in finish_order] == [0, 1, 2, 3]


def test_kv_utilisation_and_latency_records(tiny):
    reqs = mixed_requests(10, (20, 80), (10, 40), tiny.spec.vocab_size, seed=27)
    result = paged(tiny, max_num_seqs=10).generate(reqs)
    assert 0.8 < result.metrics["kv_utilisation"] <= 1.0
    for out in result.outputs:
        assert out.arrival_s <= out.first_token_s <= out.finish_s


@pytest.mark.parametrize("case", ["prefill", "decode"])
def test_step_cases_give_their_blocks_back(tiny, case):
    engine = paged(tiny, num_blocks=64)
    step = getattr(engine, f"{case}_case")(4, 40)
    step.run()
    step.run()
    step.teardown()
    assert engine.bm.num_free_blocks == 64


def test_decode_case_computes_the_real_next_token(tiny, reference):
    """The decode case's step is a genuine decode: on a 40-token context plus one input token it
    yields the token HF generates after those 41 tokens, every round."""
    import torch

    engine = paged(tiny, num_blocks=64)
    step = engine.decode_case(1, 40, seed=3)
    prompt = torch.randint(1, tiny.spec.vocab_size, (41,), generator=torch.Generator().manual_seed(3)).tolist()
    expected = reference([Request(tuple(prompt), 1)])[0]
    assert step.run() == expected
    assert step.run() == expected  # the same slot is rewritten: same work, same answer
    step.teardown()


def test_length_buckets_group_rows_of_similar_context():
    from harness.engines.paged.model_runner import PagedModelRunner

    lengths = [700, 20, 400, 650, 30, 200, 90]
    groups = PagedModelRunner.length_buckets(lengths, ratio=0.5)
    assert groups == [[0, 3, 2], [5], [6], [4, 1]]  # longest first; each down to half its longest
    assert sorted(b for g in groups for b in g) == list(range(7))
    groups = PagedModelRunner.length_buckets(lengths)  # the default: down to 3/4 of its longest
    assert groups == [[0, 3], [2], [5], [6], [4], [1]]
    assert len(PagedModelRunner.length_buckets([2**i for i in range(12)], most=4)) == 4


def test_a_ragged_decode_batch_matches_each_sequence_decoded_alone(tiny):
    """Rows of very different lengths fall into different length groups; each row's next token must
    be the one it gets when decoded on its own."""
    engine = paged(tiny, block_size=8)
    runner, bm = engine.runner, engine.bm
    reqs = mixed_requests(6, (3, 90), (1, 2), tiny.spec.vocab_size, seed=5)
    from harness.engines.paged.model_runner import PrefillChunk
    from harness.engines.paged.sequence import Sequence

    seqs = []
    for i, r in enumerate(reqs):
        seq = Sequence(100 + i, list(r.prompt_ids), 1)
        bm.allocate(seq)
        seqs.append(seq)
    runner.prefill([PrefillChunk(s.prompt_ids[:-1], 0, s.block_table) for s in seqs])
    args = ([s.prompt_ids[-1] for s in seqs], [len(s.prompt_ids) - 1 for s in seqs], [s.block_table for s in seqs])
    assert len(runner.length_buckets([p + 1 for p in args[1]])) > 1
    together = runner.decode(*args)
    alone = [runner.decode([t], [p], [b])[0] for t, p, b in zip(*args, strict=True)]
    assert together == alone
