"""Mutation tests: the suite's own output check (the probe before timing, then every timed round)
refuses each deliberately broken engine in tests/mutants.py, on `tiny` and on `small`, and passes
the correct ones. The check is called exactly as the benchmark cases call it (harness/bench.py)."""

import mutants
import pytest

from harness.bench import PerfSession
from harness.cases import Case
from harness.engine_cache import EngineCache
from harness.engines.registry import engine_sources
from harness.options import PerfOptions

MUTANTS = [*mutants.PAGED_MUTANTS, *mutants.PLUGIN_MUTANTS]
CORRECT = ["paged", "manual", "static-batch", mutants._GreedyLoop.name]


def _cache(model: str, dtype: str = "float32") -> EngineCache:
    """The engine cache of a suite run with the mutants registered (as --engine-module would)."""
    modules = [f"mutants:{cls.__name__}" for cls in [*MUTANTS, mutants._GreedyLoop]]
    options = PerfOptions(
        models=(model,), device="cpu", dtype=dtype, engine_modules=tuple(modules), kv_cache_mem=64 * 2**20
    )
    return PerfSession(options, engine_sources=engine_sources(modules)).cache


# bfloat16: the margins are calibrated to HF's own rounding (harness/correctness/calibrate.py) and must
# still refuse every mutant
@pytest.fixture(scope="module", params=["tiny", "tiny-bfloat16", pytest.param("small", marks=pytest.mark.slow)])
def session(request):
    model, _, dtype = request.param.partition("-")
    cache = _cache(model, dtype or "float32")
    yield cache
    cache.close()


def refusal(cache: EngineCache, engine: str) -> str | None:
    """What the suite says before timing (probe) or after it (the timed rounds of a batching case)."""
    model = cache.options.models[0]
    problem = cache.parity_problem(Case("generate", model, engine))
    if problem:
        return problem
    case = Case("batching", model, engine, batch_size=4, prompt_len=32, new_tokens=32)
    requests = cache.requests(case)
    rounds = [cache.engine(case).generate(requests) for _ in range(3)]
    return cache.check_rounds(case, requests, rounds)


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_every_broken_engine_is_refused(session, mutant):
    problem = refusal(session, mutant.name)
    assert problem is not None, f"{mutant.name} passed the output check"
    assert f"engine {mutant.name}" in problem
    assert "request" in problem  # says where it first went wrong
    assert "token" in problem


@pytest.mark.parametrize("engine", CORRECT)
def test_correct_engines_pass_the_same_check(session, engine):
    assert refusal(session, engine) is None


def test_a_one_shot_probe_alone_misses_a_stale_engine_the_timed_rounds_catch(session):
    name = mutants.StaleAcrossRounds.name
    assert session.parity_problem(Case("generate", session.options.models[0], name)) is None
    assert "round 1 of 3" in refusal(session, name)
