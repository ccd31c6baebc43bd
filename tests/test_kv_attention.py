"""Decode attention over the paged pool in C (harness/engines/kv_attention.py): torch's attention of each
row over its own blocks and length, to float32 rounding, for grouped queries, rows fewer and more than
the threads, tails shorter than a block; a kernel that skips a piece fails the same comparison; counted
over each row's own keys."""

import pytest
import torch
import torch.nn.functional as F

from harness.engines import kv_attention, rowdot
from harness.engines.flops import count_flops

built = pytest.mark.skipif(kv_attention.kernel() is None, reason=f"no C kernel here: {rowdot.problem()}")
BS = 12  # a block: one run of the kernel's ROWS (8) keys and a tail of 4


def case(rows: int, heads: int, kv_heads: int, seed: int = 0, spread: float = 1.0):
    """q, the pools, block tables over shuffled blocks and each row's length (some not a multiple of BS)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 40, (rows,), generator=gen).tolist()
    blocks = sum(-(-n // BS) for n in lengths)
    order = torch.randperm(blocks, generator=gen).tolist()
    tables, at = [], 0
    for n in lengths:
        tables.append(order[at : at + -(-n // BS)])
        at += len(tables[-1])
    width = max(map(len, tables))
    padded = torch.tensor([t + [0] * (width - len(t)) for t in tables])
    k_pool = torch.randn(blocks, BS, kv_heads, 16, generator=gen)
    v_pool = torch.randn(blocks, BS, kv_heads, 16, generator=gen)
    return torch.randn(rows, heads, 16, generator=gen) * spread, k_pool, v_pool, padded, lengths


def torch_attention(q, k_pool, v_pool, tables, lengths):
    """Each row alone: its blocks gathered in table order, cut to its length, through torch's SDPA."""
    out = []
    for b, n in enumerate(lengths):
        keys = k_pool[tables[b]].flatten(0, 1)[:n].transpose(0, 1)[None]
        values = v_pool[tables[b]].flatten(0, 1)[:n].transpose(0, 1)[None]
        out.append(F.scaled_dot_product_attention(q[b][None, :, None], keys, values, enable_gqa=True).flatten())
    return torch.stack(out)


@built
@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (4, 2), (8, 2)])
@pytest.mark.parametrize("rows", [1, 2, 5])
@pytest.mark.parametrize("spread", [1.0, 8.0])  # scores over a wide range: the softmax's exp far from 0
def test_each_row_gets_torchs_attention_over_its_own_blocks_and_length(heads, kv_heads, rows, spread):
    args = case(rows, heads, kv_heads, seed=rows * 10 + heads, spread=spread)
    torch.testing.assert_close(kv_attention.attend(*args), torch_attention(*args), rtol=1e-5, atol=1e-5)


@built
@pytest.mark.parametrize(
    ("broken", "fixed"),
    [
        ("kp + table[t0 / bs] * bs * nk;\n        long t = t0", "kp + (t0 / bs) * bs * nk;\n        long t = t0"),
        ("for (; t < end; t++, k += nk)\n", "for (; t < end && 0; t++, k += nk)\n"),  # a block's tail of keys
        ("p[h * most + t] *= scale;", "p[h * most + t] *= 1.0f;"),  # unscaled scores
    ],
    ids=["table-ignored", "tail-dropped", "unscaled"],
)
def test_a_kernel_that_skips_a_piece_fails_the_same_comparison(tmp_path, monkeypatch, broken, fixed):
    assert broken in kv_attention.ATTENTION_SOURCE
    monkeypatch.setenv("LLM_PERF_CACHE", str(tmp_path))
    monkeypatch.setattr(kv_attention, "ATTENTION_SOURCE", kv_attention.ATTENTION_SOURCE.replace(broken, fixed))
    kv_attention.kernel.cache_clear()
    try:
        args = case(3, 4, 2, seed=5)
        got, want = kv_attention.attend(*args), torch_attention(*args)
    finally:
        kv_attention.kernel.cache_clear()
    with pytest.raises(AssertionError):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@built
def test_it_is_counted_over_each_rows_own_keys():
    q, k_pool, v_pool, tables, lengths = case(3, 4, 2, seed=1)
    counted = count_flops(lambda: kv_attention.attend(q, k_pool, v_pool, tables, lengths))
    assert counted == kv_attention.attention_flops(4, sum(lengths), 16) == 2 * 4 * sum(lengths) * 2 * 16
