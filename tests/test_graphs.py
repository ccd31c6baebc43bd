"""--perf-cuda-graphs without a GPU: the capturable decode step (fixed shapes, padded rows, a scratch
block) gives the eager step's logits and leaves every sequence's K/V as the eager step leaves it;
graphs are captured once per bucket and replayed with each step's inputs; any device but CUDA is
refused with the reason. tests/test_cuda.py runs the real capture on a GPU."""

import pytest
import torch

from harness.engines import EngineConfig
from harness.engines.paged.engine import PagedEngine
from harness.engines.paged.graphs import BLOCK_BUCKETS, ROW_BUCKETS, DecodeGraphs, StaticDecode, bucket
from harness.engines.paged.model_runner import PagedModelRunner, PrefillChunk
from harness.errors import ConfigError

LENGTHS = [5, 40, 90, 17, 61]  # ragged: several length groups in the eager step


def eager_capture(fn, pool):
    """A stand-in for cuda_capture: 'replay' runs the step again into the same output tensor."""
    out = fn()
    return out, lambda: out.copy_(fn())


def runner_with_sequences(loaded, lengths):
    runner = PagedModelRunner(loaded, num_blocks=64, block_size=16)
    gen = torch.Generator().manual_seed(11)
    tables, start = [], 0
    for n in lengths:
        blocks = -(-(n + 1) // 16)
        tables.append(list(range(start, start + blocks)))
        start += blocks
        ids = torch.randint(1, loaded.spec.vocab_size, (n,), generator=gen).tolist()
        runner.prefill([PrefillChunk(ids, 0, tables[-1])])
    return runner, tables


def step_inputs(loaded, lengths, tables):
    tokens = torch.randint(1, loaded.spec.vocab_size, (len(lengths),), generator=torch.Generator().manual_seed(12))
    return tokens.tolist(), list(lengths), tables


def test_buckets_hold_the_smallest_fit_and_none_beyond():
    assert [bucket(n, ROW_BUCKETS) for n in (1, 2, 3, 5, 256)] == [1, 2, 4, 8, 256]
    assert bucket(257, ROW_BUCKETS) is None
    assert bucket(1, BLOCK_BUCKETS) == 4
    assert bucket(BLOCK_BUCKETS[-1] + 1, BLOCK_BUCKETS) is None


def test_any_device_but_cuda_is_refused_with_the_reason(tiny):
    with pytest.raises(ConfigError, match="CUDA graphs need a CUDA device; this run is on cpu"):
        PagedEngine(tiny, EngineConfig(cuda_graphs=True))


def test_the_static_step_equals_the_eager_step_and_touches_only_its_own_slots(tiny):
    eager, tables = runner_with_sequences(tiny, LENGTHS)
    static_runner, _ = runner_with_sequences(tiny, LENGTHS)
    inputs = step_inputs(tiny, LENGTHS, tables)
    want = eager.decode_logits(*inputs)
    static = StaticDecode(static_runner, rows=8, blocks=8)  # 3 padded rows, wider than any row needs
    static.load(*inputs)
    got = static.forward()[: len(LENGTHS)]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    pool = slice(0, 64)  # the block manager's blocks; the padded rows wrote the scratch block beyond them
    torch.testing.assert_close(static_runner.k_cache[:, pool], eager.k_cache[:, pool], rtol=1e-5, atol=1e-5)
    assert static_runner.k_cache[:, 64].abs().sum() > 0  # the scratch block took the padded rows' K


def test_a_bucket_is_captured_once_and_replayed_with_each_step_s_inputs(tiny):
    runner, tables = runner_with_sequences(tiny, LENGTHS)
    reference, _ = runner_with_sequences(tiny, LENGTHS)
    graphs = DecodeGraphs(runner, capture=eager_capture)
    captures = []
    graphs.capture = lambda fn, pool: captures.append(fn) or eager_capture(fn, pool)
    for step in range(3):  # each step one position further: same bucket, new inputs
        tokens, positions, _ = step_inputs(tiny, LENGTHS, tables)
        positions = [p + step for p in positions]
        got = graphs.decode_logits(tokens, positions, tables)
        torch.testing.assert_close(got, reference.decode_logits(tokens, positions, tables), rtol=1e-4, atol=1e-4)
    assert len(captures) == 1
    assert list(graphs.graphs) == [(8, 8)]
    assert graphs.decode_logits([1], [BLOCK_BUCKETS[-1] * 16], [[0]]) is None  # beyond every bucket: eager
