"""--perf-compile: a decode step's rows attend through their block tables (flex_decode.py), reading the
pool where it lies. The answer must equal attending to each row's own K/V copied out in order; a mask
one slot off, or a table read wrongly, must not; a kernel that cannot compile falls back loudly."""

import random
import warnings

import pytest
import torch
import torch.nn.functional as F

from harness.engines import EngineConfig
from harness.engines.hf_generate import HFGenerateEngine
from harness.engines.paged import flex_decode, model_runner
from harness.engines.paged.engine import PagedEngine
from harness.engines.paged.flex_decode import FlexDecode, bucket
from harness.workloads import mixed_requests

BS, POOL = 4, 40


def pools_and_rows(n_heads, n_kv, lengths, seed=0, spare=0):
    """A pool of random K/V, rows with these context lengths on scattered blocks (and `spare` blocks
    each beyond what their length needs, as the block manager allocates ahead), and their queries."""
    gen = torch.Generator().manual_seed(seed)
    k = torch.randn(POOL, BS, n_kv, 8, generator=gen)
    v = torch.randn(POOL, BS, n_kv, 8, generator=gen)
    free = list(range(POOL))
    random.Random(seed).shuffle(free)
    tables = [[free.pop() for _ in range(-(-n // BS) + spare)] for n in lengths]
    q = torch.randn(len(lengths), n_heads, 8, generator=gen)
    return k, v, tables, q


def each_row_alone(q, k, v, tables, lengths, n_kv):
    """The reference: every row's K/V copied out block by block, in order, attended to at its length."""
    outs = []
    for row, (table, n) in enumerate(zip(tables, lengths, strict=True)):
        keys = k[table].reshape(-1, n_kv, 8)[:n].transpose(0, 1)[None]
        values = v[table].reshape(-1, n_kv, 8)[:n].transpose(0, 1)[None]
        o = F.scaled_dot_product_attention(q[row : row + 1, :, None], keys, values, enable_gqa=True)
        outs.append(o.reshape(1, -1))
    return torch.cat(outs)


def test_a_batch_runs_at_the_next_power_of_two():
    assert [bucket(b) for b in (1, 2, 3, 4, 5, 64, 65)] == [2, 2, 4, 4, 8, 64, 128]


@pytest.mark.slow
@pytest.mark.parametrize(("n_heads", "n_kv"), [(4, 2), (2, 2)], ids=["gqa", "mha"])
def test_attending_through_the_tables_equals_each_rows_own_copy(n_heads, n_kv):
    """Two steps of one bucket, as a decode loop runs them (the second reuses the first's buffers):
    partial last blocks, exactly full ones, a single token, tables longer than the rows; 5 rows pad to 8."""
    first = [9, 4, 1, 13, 8]
    k, v, tables, q = pools_and_rows(n_heads, n_kv, first, spare=1)
    flex = FlexDecode(POOL, BS, (n_heads, n_kv, 8), torch.device("cpu"))
    for lengths in (first, [n + 1 for n in first]):
        got = flex.attend(q, k, v, flex.block_mask([n - 1 for n in lengths], tables))
        want = each_row_alone(q, k, v, [t[: -(-n // BS)] for t, n in zip(tables, lengths, strict=True)], lengths, n_kv)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert flex.problem is None


@pytest.mark.slow
@pytest.mark.parametrize("broken", ["mask-one-slot-further", "last-block-of-the-next-row"])
def test_the_equality_fails_on_a_broken_mask_or_table(broken):
    """The planted faults the test above must catch: the mask lets a row see one stale slot past its
    position (the offsets it reads, changed after the mask was made: read at run time, not compiled
    in), or a row reads its partial block from another row's table."""
    lengths = [9, 6, 3, 5, 7]  # each ends inside a block: every row has a masked partial block
    k, v, tables, q = pools_and_rows(4, 2, lengths, seed=1)  # the shapes of the gqa case: no new compile
    flex = FlexDecode(POOL, BS, (4, 2, 8), torch.device("cpu"))
    mask = flex.block_mask([n - 1 for n in lengths], tables)
    if broken == "mask-one-slot-further":
        flex._buffers[bucket(5)][-1][:5] += 1  # the offsets within_position reads
    if broken == "last-block-of-the-next-row":
        mask.kv_indices[:5, 0, 0, 0] = mask.kv_indices[[1, 2, 3, 4, 0], 0, 0, 0]
    got = flex.attend(q, k, v, mask)
    wrong_by = (got - each_row_alone(q, k, v, tables, lengths, 2)).abs().amax(dim=-1)
    assert (wrong_by > 1e-4).all()  # every row, each of them faulty, is told apart


def test_a_kernel_that_cannot_compile_warns_once_and_the_step_gathers(tiny, monkeypatch):
    engine = PagedEngine(tiny, EngineConfig(compile=True))
    runner = engine.runner

    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(runner.flex, "_kernel", no_compiler)
    monkeypatch.setattr(model_runner, "worth_it", lambda positions: len(positions) > 1)  # 3 rows suffice
    reqs = mixed_requests(3, (5, 20), (3, 6), tiny.spec.vocab_size, seed=5)
    expected = [o.token_ids for o in HFGenerateEngine(tiny, EngineConfig()).generate(reqs).outputs]
    with pytest.warns(RuntimeWarning, match="no C.. compiler"):
        assert [o.token_ids for o in engine.generate(reqs).outputs] == expected
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [o.token_ids for o in engine.generate(reqs).outputs] == expected
    assert "block-table attention is unavailable" in runner.flex.problem


@pytest.mark.parametrize(
    ("positions", "through_tables"),
    [([7], False), ([7, 3], False), ([7] * 14 + [6], False), ([7] * 16, True), ([7] * 15 + [6] * 17, True)],
    ids=["one-row", "two-rows", "fifteen-rows", "sixteen-rows", "thirty-two-rows"],
)
def test_under_the_flag_steps_of_many_rows_are_read_through_the_tables(tiny, positions, through_tables):
    """One row reads its blocks in place; fewer than 16 rows gather (flex_decode.worth_it)."""
    runner = PagedEngine(tiny, EngineConfig(compile=True)).runner
    tables = [[b] for b in range(len(positions))]
    assert (runner._decode_groups(positions, tables)[0].block_mask is not None) is through_tables
    assert flex_decode.worth_it(positions) is through_tables
