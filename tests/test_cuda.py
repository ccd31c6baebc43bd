"""The CUDA paths, on a real GPU (skipped without one). The suite's own output check, called as the
benchmark cases call it, passes every shipped engine and refuses every broken one in float32 and in
bfloat16 (the near-tie margin must not let a wrong engine through); the swap path (pinned host
memory) keeps the tokens; the hardware probe reads NVML and measures below the GPU's peaks.
PERF_CUDA_TEST_DEVICE=cpu runs the same tests on the CPU (a dry run of this file)."""

import os

import mutants
import pytest
import torch

from harness.engines import EngineConfig
from harness.engines.paged.engine import PagedEngine
from harness.hardware import probe
from harness.workloads import mixed_requests

DEVICE = os.environ.get("PERF_CUDA_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")

SHIPPED = ["hf-generate", "manual", "static-batch", "paged"]
MUTANTS = [*mutants.PAGED_MUTANTS, *mutants.PLUGIN_MUTANTS]


@pytest.fixture(scope="module", params=["small-float32", "small-bfloat16"])
def cache(request):
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 here, as on the CPU
    model, _, dtype = request.param.rpartition("-")
    cache = mutants.mutant_cache(model, dtype, DEVICE, kv_cache_mem=256 << 20)
    yield cache
    cache.close()


def refusal(cache, engine: str) -> str | None:
    """The probe before timing, then three rounds of a batching case, as tests/test_mutants.py."""
    return mutants.suite_refusal(cache, engine, batch_size=8, prompt_len=64)


@pytest.mark.parametrize("engine", SHIPPED)
def test_every_shipped_engine_passes_the_output_check(cache, engine):
    assert refusal(cache, engine) is None


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_the_output_check_refuses_every_broken_engine(cache, mutant):
    problem = refusal(cache, mutant.name)
    assert problem is not None
    assert f"engine {mutant.name}" in problem


def test_swap_preemption_through_pinned_host_memory_keeps_the_tokens(cache):
    model = cache.options.models[0]
    loaded = cache.model(model)
    reqs = mixed_requests(12, (10, 30), (20, 40), loaded.spec.vocab_size, seed=23)
    engine = PagedEngine(loaded, EngineConfig(block_size=8, max_num_seqs=8, preemption="swap"), num_blocks=10)
    result = engine.generate(reqs)
    assert result.metrics["swaps"] >= 5
    assert cache.checker(model).tokens_problem("paged-swap", reqs, result.outputs, "swap") is None
    assert engine.bm.num_free_blocks == engine.bm.num_blocks


@pytest.mark.skipif(DEVICE != "cuda", reason="reads NVML")
def test_the_probe_reads_nvml_and_measures_below_the_peaks():
    info = probe("cuda", "bfloat16")
    assert info.name
    assert info.memory_bytes > 8 << 30
    assert info.cuda
    assert info.driver
    assert (info.theoretical_bw_gbps or 0) > 500, info.notes
    assert 0 < info.measured_read_bw_gbps <= 1.05 * info.theoretical_bw_gbps
    assert info.measured_tflops > 0
    if info.theoretical_tflops:  # a GPU in the known-GPU table
        assert info.measured_tflops <= 1.05 * info.theoretical_tflops
    assert info.health is not None
    assert info.health.temperature_c is not None


@pytest.mark.skipif(DEVICE != "cuda", reason="CUDA graphs are refused on a CPU (tests/test_graphs.py)")
def test_cuda_graphs_keep_paged_s_tokens():
    from harness.models import build_model
    from harness.specs import get_spec

    loaded = build_model(get_spec("small"), device=DEVICE)
    reqs = mixed_requests(12, (4, 60), (4, 40), loaded.spec.vocab_size, seed=5)
    eager = PagedEngine(loaded, EngineConfig()).generate(reqs)
    graphs = PagedEngine(loaded, EngineConfig(cuda_graphs=True))
    got = graphs.generate(reqs)
    assert [o.token_ids for o in got.outputs] == [o.token_ids for o in eager.outputs]
    assert graphs.runner.graphs.graphs  # captured, and replayed
