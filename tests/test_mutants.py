"""Mutation tests: the suite's own output check (the probe before timing, then every timed round)
refuses each deliberately broken engine in tests/mutants.py, on `tiny` and on `small`, and passes
the correct ones. The check is called exactly as the benchmark cases call it (harness/bench.py)."""

import mutants
import pytest

from harness.bench import PerfOptions, PerfSession
from harness.cases import Case
from harness.engines.registry import engine_sources

MUTANTS = [*mutants.PAGED_MUTANTS, *mutants.PLUGIN_MUTANTS]
CORRECT = ["paged", "manual", "static-batch", mutants._GreedyLoop.name]


def _session(model: str) -> PerfSession:
    modules = [f"mutants:{cls.__name__}" for cls in [*MUTANTS, mutants._GreedyLoop]]
    options = PerfOptions(models=(model,), device="cpu", engine_modules=tuple(modules))
    return PerfSession(options, engine_sources=engine_sources(modules))


@pytest.fixture(scope="module", params=["tiny", pytest.param("small", marks=pytest.mark.slow)])
def session(request):
    perf = _session(request.param)
    yield perf
    perf.close_engines()


def refusal(perf: PerfSession, engine: str) -> str | None:
    """What the suite says before timing (probe) or after it (the timed rounds of a batching case)."""
    model = perf.options.models[0]
    problem = perf.parity_problem(Case("generate", model, engine))
    if problem:
        return problem
    case = Case("batching", model, engine, batch_size=4, prompt_len=32, new_tokens=32)
    requests = perf.requests(case)
    rounds = [perf.engine(case).generate(requests) for _ in range(3)]
    return perf.check_rounds(case, requests, rounds)


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
