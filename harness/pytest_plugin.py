"""pytest options, fixtures and hooks (registered by the `pytest11` entry point `llm_perf`). Thin:
parsing and printing here, the work in harness.bench. torch is imported only when perf cases run, so
the plugin costs other test suites in the same environment next to nothing."""

from __future__ import annotations

import pytest

from harness.cases import KINDS
from harness.errors import EXIT_GATE_ERROR, EXIT_UNHEALTHY, PerfSuiteError
from harness.options import add_options, deprecation, options_from, renamed
from harness.settings import rooted

SESSION_KEY = pytest.StashKey["PerfSession"]()
OLD_KEY = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser.getgroup("llm-perf-suite").addoption)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """Options renamed with the --perf- prefix keep their old names for one release: rewritten here,
    with a warning, unless another plugin owns the old name."""
    taken = {name for opt in parser._anonymous.options for name in opt.names()}
    taken |= {
        name
        for group in parser._groups
        if group.name != "llm-perf-suite"
        for opt in group.options
        for name in opt.names()
    }
    args[:], found = renamed(args, taken)
    if found:  # said in the terminal summary (pytest captures what is printed this early)
        early_config.stash[OLD_KEY] = found


def _runs_perf_tests(config: pytest.Config) -> bool:
    return any("perf_tests" in str(a) for a in config.args)


def _session(config: pytest.Config):
    """The run's PerfSession, built on first use (it brings torch)."""
    if SESSION_KEY not in config.stash:
        from harness.bench import PerfSession
        from harness.engines.registry import engine_sources

        options = rooted(options_from(config.getoption), config.rootpath)
        config.stash[SESSION_KEY] = PerfSession(options, engine_sources=engine_sources(options.engine_modules))
    return config.stash[SESSION_KEY]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "benchmark_compare_fail", None):
        raise pytest.UsageError(
            "--benchmark-compare-fail compares pytest-benchmark's time statistics and treats any rise as worse; "
            "this suite's gate is --benchmark-compare alone (tokens/s, its own thresholds: docs/gate.md)"
        )
    compare = getattr(config.option, "benchmark_compare", None)
    if not (_runs_perf_tests(config) or compare):
        return
    try:
        session = _session(config)
        session.cache.model_names()  # unknown models and engines stop the run here, listing the valid names
        for name in session.options.engines or ():
            session.cache.engine_class(name)
        session.thresholds  # noqa: B018 - a bad [tool.perf] stops the run now, not after every case has run
    except PerfSuiteError as exc:
        raise pytest.UsageError(str(exc)) from None
    # --benchmark-compare runs this suite's gate against baselines/<machine slug>/ instead of
    # pytest-benchmark's own time-only comparison (cleared before pytest-benchmark reads it).
    if compare:
        session.gate_requested = compare
        config.option.benchmark_compare = []


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session):
    """With --perf-passes above 1: after every case's first pass, the later passes (harness/passes.py)."""
    result = yield
    perf = session.config.stash.get(SESSION_KEY, None)
    if perf is not None and perf.later and not (session.shouldfail or session.shouldstop):
        perf.run_later_passes()
        if perf.pass_problems:
            session.testsfailed += len(perf.pass_problems)
    return result


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None and session.records:
        machine_info.clear()
        machine_info.update(session.machine_info())


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    perf = session.config.stash.get(SESSION_KEY, None)
    if perf is not None and "cache" in vars(perf):  # only when a case built something
        perf.cache.close()
    bench_session = getattr(session.config, "_benchmarksession", None)
    if perf is None or not perf.gate_requested or bench_session is None or not perf.records:
        return
    from harness.baseline.run import gate_session

    try:
        code = gate_session(perf, bench_session.benchmarks)
    except PerfSuiteError as exc:
        perf.gate_lines = [f"gate error: {exc}"]
        session.exitstatus = EXIT_GATE_ERROR
        return
    if code != 0 and session.exitstatus == 0:  # 10 regression, 11 no baseline (required), 12 inconclusive (strict)
        session.exitstatus = code


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    if not _runs_perf_tests(config):
        return None
    session = _session(config)
    try:
        hw = session.hardware
    except PerfSuiteError as exc:
        raise pytest.UsageError(str(exc)) from None
    if session.options.strict_health and hw.health is not None and not hw.health.healthy:
        pytest.exit(
            "--perf-strict-health: refusing to benchmark on an unhealthy GPU: " + "; ".join(hw.health.problems),
            returncode=EXIT_UNHEALTHY,
        )
    return [f"llm-perf-suite {line}" for line in [*hw.header_lines(), *_products_line(hw)]]


def _products_line(hw) -> list[str]:
    """On CPU, which library the engines multiply with and whether paged's decode attention is C's
    (their speed depends on it: onednn.py, kv_attention.py)."""
    if hw.device != "cpu":
        return []
    import torch

    from harness.engines import kv_attention, onednn

    cpu, dtype = torch.device("cpu"), getattr(torch, hw.dtype)
    attention = "in c" if kv_attention.takes(cpu, dtype) else "torch's"
    return [f"CPU products ({hw.dtype}): {onednn.described(cpu, dtype)}; paged decode attention {attention}"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames or "perf" not in metafunc.fixturenames:
        return  # only perf cases (which take both fixtures) are parametrized here
    kind = metafunc.function.__name__.removeprefix("test_")
    if kind not in KINDS:
        raise pytest.UsageError(
            f"{metafunc.function.__name__}: perf tests are named test_<kind>, kind one of {', '.join(KINDS)}"
        )
    try:
        cases = _session(metafunc.config).cache.cases(kind)
    except PerfSuiteError as exc:
        raise pytest.UsageError(str(exc)) from None
    metafunc.parametrize("case", cases, ids=[c.id for c in cases])


@pytest.fixture(scope="session")
def perf(request: pytest.FixtureRequest):
    return _session(request.config)


@pytest.fixture
def case_engine(request: pytest.FixtureRequest, perf):
    """The engine of this case, built (with its model) outside the timed region and checked against HF
    greedy on the probe workload; skipped when unavailable."""
    case = request.getfixturevalue("case")
    reason = perf.cache.unavailable_reason(case.engine) or perf.cache.load_problem(case)
    if reason:
        pytest.skip(f"engine {case.engine} unavailable: {reason}")
    problem = perf.cache.parity_problem(case)
    if problem:
        pytest.fail(
            f"parity check failed: {problem}; a fast wrong engine is not timed "
            f"(--perf-no-parity skips this check, for engines that sample)",
            pytrace=False,
        )
    return perf.cache.engine(case)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    tr = terminalreporter
    if config.stash.get(OLD_KEY, None):
        tr.write_line(f"llm-perf-suite: {deprecation(config.stash[OLD_KEY])}", yellow=True)
    if not session or not session.records:
        return
    for problem in session.pass_problems:
        tr.write_line(f"FAILED in a later pass (left out of the results): {problem}", red=True)
    if session.gate_lines:
        tr.section("llm-perf-suite: regression gate (tokens/s; serving latency at a fixed rate)")
        for line in session.gate_lines:
            tr.write_line(line)
    tr.section("llm-perf-suite: throughput and roofline")
    width = max(len(name) for name, _ in session.records)
    tr.write_line(f"{'case':<{width}}  {'tokens/s':>12}  {'% roofline':>10}  bound")
    for name, r in session.records:
        over = " *" if r.roofline_note else ""
        tr.write_line(f"{name:<{width}}  {r.tokens_per_s:>12,.1f}  {r.pct_of_roofline:>10.1%}  {r.bound}{over}")
    for name, r in session.records:
        if r.roofline_note:
            tr.write_line(f"* {name}: {r.roofline_note}")
    if session.options.parity:
        tr.write_line(
            f"output check: every generate/batching/serving round equal to HF greedy; the check cost "
            f"{session.cache.check_seconds_total():.1f} s outside the timed rounds (HF reference + comparison)"
        )
