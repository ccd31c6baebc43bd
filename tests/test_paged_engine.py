"""The paged engine's greedy tokens equal HF generate's, token for token, in every mode."""

import pytest
import torch

from harness.engines import EngineConfig
from harness.engines.hf_generate import HFGenerateEngine
from harness.engines.paged.decode_groups import length_buckets
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


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_a_generate_that_raises_part_way_leaves_an_empty_pool(tiny, reference, preemption):
    reqs = mixed_requests(12, (10, 30), (20, 40), tiny.spec.vocab_size, seed=23)
    engine = paged(tiny, num_blocks=10, block_size=8, max_num_seqs=8, preemption=preemption)
    run, calls = engine._run, []

    def failing(batch):
        calls.append(1)
        if len(calls) == 10:  # by then requests run, wait and (swap) one sits in the CPU pool
            raise RuntimeError("a forward that failed")
        return run(batch)

    engine._run = failing
    with pytest.raises(RuntimeError, match="a forward that failed"):
        engine.generate(reqs)
    assert not engine.has_unfinished()
    assert not engine._outputs
    assert engine.bm.num_free_blocks == engine.bm.num_blocks
    assert len(engine.bm.free_cpu_block_ids) == engine.bm.num_cpu_blocks
    engine._run = run
    assert tokens(engine.generate(reqs)) == reference(reqs)


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
    with pytest.raises(RequestTooLargeError, match="--perf-kv-cache-mem"):
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
    lengths = [700, 20, 400, 650, 30, 200, 90]
    groups = length_buckets(lengths, ratio=0.5)
    assert groups == [[0, 3, 2], [5], [6], [4, 1]]  # longest first; each down to half its longest
    assert sorted(b for g in groups for b in g) == list(range(7))
    groups = length_buckets(lengths)  # the default: down to 3/4 of its longest
    assert groups == [[0, 3], [2], [5], [6], [4], [1]]
    assert len(length_buckets([2**i for i in range(12)], most=4)) == 4


LENGTHS = {"one-group": [20, 24, 22, 19, 23], "several-groups": [5, 40, 90, 17, 61, 33]}
ORDERS = {
    "ascending": sorted,
    "descending": lambda xs: sorted(xs, reverse=True),
    "shuffled": lambda xs: [xs[i] for i in torch.randperm(len(xs), generator=torch.Generator().manual_seed(7))],
}


def ragged_decode_error(loaded, lengths, order, runner_class=None, attention="c"):
    """Max |logit difference| from HF of one paged decode step over sequences of these lengths, in this
    row order (each row against HF's forward over that sequence alone); attention "c" where the C kernel
    of kv_attention.py takes it, "torch" for the gathered length groups."""
    from harness.engines.paged.model_runner import PrefillChunk
    from harness.engines.paged.sequence import Sequence

    engine = paged(loaded, num_blocks=64, block_size=8)
    runner = engine.runner if runner_class is None else runner_class(loaded, 64, 8)
    runner.kv_in_c = runner.kv_in_c and attention == "c"
    gen = torch.Generator().manual_seed(3)
    seqs = []
    for i, n in enumerate(ORDERS[order](LENGTHS[lengths])):
        seq = Sequence(i, torch.randint(1, loaded.spec.vocab_size, (n,), generator=gen).tolist(), 1)
        engine.bm.allocate(seq)
        seqs.append(seq)
    assert (len(length_buckets([len(s) for s in seqs])) == 1) == (lengths == "one-group")
    runner.prefill([PrefillChunk(s.prompt_ids[:-1], 0, s.block_table) for s in seqs])
    got = runner.decode_logits(
        [s.prompt_ids[-1] for s in seqs], [len(s) - 1 for s in seqs], [s.block_table for s in seqs]
    )
    with torch.inference_mode():
        want = torch.stack([loaded.model(torch.tensor([s.prompt_ids])).logits[0, -1] for s in seqs])
    return float((got - want).abs().max())


@pytest.mark.parametrize("attention", ["c", "torch"])
@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("lengths", list(LENGTHS))
def test_ragged_decode_logits_equal_hf_in_every_row_order(tiny, lengths, order, attention):
    """The regression test for the bug that made paged wrong on mixed64: one decode step over sequences
    of different lengths, rows in ascending, descending and shuffled order, in one length group and in
    several. Every row's logits must be HF's for that sequence alone (float32: within 1e-4)."""
    assert ragged_decode_error(tiny, lengths, order, attention=attention) < 1e-4


@pytest.mark.parametrize("attention", ["c", "torch"])
def test_the_ragged_decode_test_fails_on_the_bug_it_guards_against(tiny, attention):
    from mutants import ReorderedRaggedRunner

    assert ragged_decode_error(tiny, "one-group", "ascending", ReorderedRaggedRunner, attention) > 1e-2
    assert ragged_decode_error(tiny, "one-group", "shuffled", ReorderedRaggedRunner, attention) > 1e-2


def test_teacher_forced_logits_of_a_shrinking_ragged_batch_equal_hf(tiny):
    """Many decode steps: prompts of mixed lengths, continuations of mixed lengths (the batch shrinks as
    they end), prefix-cache hits included. paged's and manual's logits equal HF's one-forward logits."""
    from harness.correctness.probe import probe_requests
    from harness.correctness.reference import GreedyReference
    from harness.engines.manual import ManualEngine

    reqs = probe_requests(tiny.spec.vocab_size)
    ref = GreedyReference(tiny)
    conts = [ref.for_request(r).tokens for r in reqs]
    want = [ref.teacher_forced_logits(r, c) for r, c in zip(reqs, conts, strict=True)]
    for engine in (paged(tiny), ManualEngine(tiny, EngineConfig())):
        got = engine.teacher_forced_logits(reqs, conts)
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape
            assert (g - w).abs().max() < 1e-4


def test_stacked_projections_share_the_models_memory_and_are_built_once():
    """Q/K/V and gate/up are one product each over their weights stacked by rows (layers.stack_rows):
    HF's modules are re-pointed at views of the stacked tensor, so nothing is held twice, the values
    are untouched, and a second engine on the same model reuses the stacking."""
    from harness.engines.paged.layers import layer_weights
    from harness.models import build_model
    from harness.specs import get_spec

    loaded = build_model(get_spec("tiny"), dtype="float32")
    attn = loaded.model.model.layers[0].self_attn
    before = [m.weight.detach().clone() for m in (attn.q_proj, attn.k_proj, attn.v_proj)]
    w = layer_weights(loaded.model.model.layers[0])
    assert torch.equal(w.qkv_proj, torch.cat(before))
    rows = 0
    for m, old in zip((attn.q_proj, attn.k_proj, attn.v_proj), before, strict=True):
        assert torch.equal(m.weight, old)
        assert m.weight.data_ptr() == w.qkv_proj[rows].data_ptr()  # a view of its rows, not a copy
        rows += old.shape[0]
    assert layer_weights(loaded.model.model.layers[0]).qkv_proj is w.qkv_proj
    mlp = loaded.model.model.layers[0].mlp
    assert mlp.up_proj.weight.data_ptr() == w.gate_up_proj[mlp.gate_proj.weight.shape[0]].data_ptr()


@pytest.mark.parametrize(
    ("tables", "in_place"),
    [([[3, 4, 5]], 3), ([[3, 5, 6]], None), ([[0, 1], [2, 3]], None), ([[7]], 7)],
    ids=["consecutive", "a-gap", "two-rows", "one-block"],
)
def test_a_lone_row_on_consecutive_blocks_is_read_in_place(tiny, tables, in_place):
    """Decode through torch's attention attends to such a row's K/V as a view of the pool (no gather
    copy); anything else gathers. Through kv_attention.py's C kernel nothing is gathered."""
    runner = paged(tiny).runner
    if runner.kv_in_c:
        groups = runner._decode_groups([len(t) * runner.block_size - 1 for t in tables], tables)
        assert len(groups) == 1
        assert groups[0].buffers is None
    runner.kv_in_c = False
    positions = [len(t) * runner.block_size - 1 for t in tables]
    groups = runner._decode_groups(positions, tables)
    assert groups[0].first_block == in_place
    assert (groups[0].buffers is None) == (in_place is not None)


def test_a_step_case_starts_from_a_fresh_pool_whatever_ran_before(tiny):
    engine = paged(tiny)
    engine.generate(mixed_requests(6, (20, 60), (5, 20), tiny.spec.vocab_size, seed=3))
    (seq,) = engine._case_seqs(1, 100, seed=0)
    assert seq.block_table == list(range(len(seq.block_table)))


def test_a_cached_prefix_read_in_place_equals_its_gathered_copy(tiny, monkeypatch):
    """Prefill after a cached prefix on consecutive blocks views the pool; the gather must agree."""
    from harness.engines.paged import model_runner
    from harness.engines.paged.model_runner import PrefillChunk

    ids = torch.randint(1, tiny.spec.vocab_size, (40,), generator=torch.Generator().manual_seed(4)).tolist()
    table = [5, 6, 7]

    def prefill_after_prefix(runner):
        runner.prefill_logits([PrefillChunk(ids[:32], 0, table)])
        return runner.prefill_logits([PrefillChunk(ids[32:], 32, table)], all_positions=True)

    in_place = prefill_after_prefix(paged(tiny).runner)
    monkeypatch.setattr(model_runner, "consecutive_from", lambda table: None)
    assert torch.equal(in_place, prefill_after_prefix(paged(tiny).runner))
