"""The paged engine's batch-1 step with each layer one C call (harness/engines/row_layer.py,
harness/engines/paged/row_step.py): the torch path's logits and K/V to float32 rounding on both
architectures, taken only where it applies, counted as the torch path counts, and a layer that skips
a piece of its work fails the same comparison."""

import ctypes

import pytest
import torch

from harness.engines import EngineConfig, row_layer, rowdot
from harness.engines.flops import unit_flops
from harness.engines.paged.engine import PagedEngine
from harness.engines.paged.model_runner import PagedModelRunner, PrefillChunk
from harness.engines.paged.row_step import RowStep
from harness.engines.work import FLOPS
from harness.models import build_model
from harness.specs import ModelSpec, get_spec

SPECS = {
    "qwen3": get_spec("tiny"),  # q/k norms, grouped queries
    "llama": ModelSpec("tiny-llama", "llama", 2, 64, 4, 1, 16, 96, 512, tie_embeddings=True, max_position=2048),
}
built = pytest.mark.skipif(
    not RowStep.takes(PagedModelRunner(build_model(SPECS["qwen3"]), 8, 16)),
    reason=f"no C layer here (float32 one row stays on the BLAS, or {rowdot.problem()})",
)


@pytest.fixture(scope="module", params=sorted(SPECS))
def loaded(request):
    return build_model(SPECS[request.param], seed=1)


def step_both_ways(runner: PagedModelRunner, length: int, table: list[int]):
    """Prefill `length - 1` tokens, then the last one's decode step through the C layer and through the
    torch ops from the same pool: (logits, K written) of each."""
    torch.manual_seed(length)
    tokens = torch.randint(0, runner.spec.vocab_size, (length,)).tolist()
    runner.prefill([PrefillChunk(tokens[:-1], 0, table)])
    slot = table[(length - 1) // runner.block_size] * runner.block_size + (length - 1) % runner.block_size
    results, step = [], runner.row_step
    for way in (step, None):
        runner.row_step = way
        logits = runner.decode_logits([tokens[-1]], [length - 1], [table])
        k_written = runner.k_cache[:, slot // runner.block_size, slot % runner.block_size].clone()
        results.append((logits, k_written))
    runner.row_step = step
    return results


@built
@pytest.mark.parametrize("length", [2, 17, 40])
def test_the_c_layer_gives_the_torch_steps_logits_and_kv_to_float32_rounding(loaded, length):
    runner = PagedModelRunner(loaded, 16, 16)
    (c_logits, c_k), (t_logits, t_k) = step_both_ways(runner, length, [3, 4, 5])
    torch.testing.assert_close(c_logits, t_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c_k, t_k, rtol=1e-5, atol=1e-5)


@built
@pytest.mark.parametrize(
    "broken",
    [
        "        rope(q + g * d, cos, sin, d);\n",  # queries not rotated
        "    memcpy(vslot, k + nk, nk * sizeof(float));\n",  # the new token's V never written
        "    for (long i = 0; i < H; i++) x[i] += y[i];\n}",  # the MLP's residual dropped
        "        if (w[3]) rms_norm_row(q + g * d, w[3], q + g * d, d, eps);\n",  # Qwen3's q norm skipped
    ],
)
def test_a_layer_that_skips_a_piece_fails_the_same_comparison(tmp_path, monkeypatch, broken):
    assert broken in row_layer.LAYER_SOURCE
    monkeypatch.setenv("LLM_PERF_CACHE", str(tmp_path))
    monkeypatch.setattr(row_layer, "LAYER_SOURCE", row_layer.LAYER_SOURCE.replace(broken, "}" if "}" in broken else ""))
    row_layer.kernel.cache_clear()
    try:
        runner = PagedModelRunner(build_model(SPECS["qwen3"], seed=1), 16, 16)
        (c_logits, _), (t_logits, _) = step_both_ways(runner, 17, [3, 4])
    finally:
        row_layer.kernel.cache_clear()
    with pytest.raises(AssertionError):
        torch.testing.assert_close(c_logits, t_logits, rtol=1e-5, atol=1e-5)


@built
def test_it_takes_a_lone_row_on_consecutive_blocks_only(monkeypatch):
    runner = PagedModelRunner(build_model(SPECS["qwen3"]), 16, 16)
    calls = []
    real = runner.row_step.logits
    monkeypatch.setattr(runner.row_step, "logits", lambda *a: calls.append(a) or real(*a))
    runner.prefill([PrefillChunk(list(range(1, 20)), 0, [2, 3])])
    runner.prefill([PrefillChunk(list(range(1, 20)), 0, [5, 7])])
    runner.decode_logits([9], [19], [[2, 3]])
    assert calls == [(9, 19, 2)]
    runner.decode_logits([9], [19], [[5, 7]])  # blocks apart: gathered by the torch ops
    runner.decode_logits([9, 9], [19, 19], [[2, 3], [5, 7]])  # two rows
    assert len(calls) == 1
    assert PagedEngine(build_model(SPECS["qwen3"]), EngineConfig(compile=True)).runner.row_step is None


@built
def test_a_step_through_the_c_layer_is_counted_as_the_torch_ops_count_it(loaded):
    engine = PagedEngine(loaded, EngineConfig())
    counts = []
    for way in (engine.runner.row_step, None):
        engine.runner.row_step = way
        step = engine.decode_case(1, 40, seed=0)
        counts.append(unit_flops(engine, step.run, step.setup)[FLOPS])
        step.teardown()
    assert counts[0] == counts[1]
    assert row_layer.layer_flops(40, [64, 4, 2, 16, 128]) != row_layer.layer_flops(41, [64, 4, 2, 16, 128])


def test_the_weights_array_holds_every_layers_tensors_in_the_kernels_order():
    runner = PagedModelRunner(build_model(SPECS["llama"]), 8, 16)
    step = RowStep(runner)
    w = runner.layers[1]
    order = [w.input_norm, w.qkv_proj, w.o_proj, None, None, w.post_norm, w.gate_up_proj, w.down_proj]
    assert [a or 0 for a in step._weights[1]] == [0 if t is None else t.data_ptr() for t in order]
    assert ctypes.sizeof(step._weights[1]) == 8 * ctypes.sizeof(ctypes.c_void_p)
