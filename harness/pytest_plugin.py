"""pytest options, fixtures and hooks. Thin: parsing and printing here, the work in harness.bench."""

from __future__ import annotations

import pytest

from harness.baseline.gate import REGRESSION_EXIT_CODE
from harness.bench import PerfOptions, PerfSession
from harness.cases import KINDS, TIERS, build_cases
from harness.engines.registry import engine_sources
from harness.errors import PerfSuiteError

GATE_ERROR_EXIT_CODE = 11

SESSION_KEY = pytest.StashKey[PerfSession]()


def _csv(value: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("llm-perf-suite")
    g.addoption(
        "--models",
        default="small",
        help="comma-separated model specs (default: small); see `python -m harness info --models`",
    )
    g.addoption("--engines", default=None, help="comma-separated engines (default: each case kind's own list)")
    g.addoption("--batch-sizes", default=None, help="comma-separated batch sizes, replacing each kind's list")
    g.addoption("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    g.addoption("--dtype", default=None, help="float32/bfloat16/float16 (default: float32 on CPU, bfloat16 on CUDA)")
    g.addoption("--model-path", default=None, help="a local HF checkpoint folder to use instead of --models")
    g.addoption("--perf-tier", default="default", choices=TIERS, help="case matrix: quick, default or full")
    g.addoption("--perf-rounds", type=int, default=5, help="timed rounds per case (default 5)")
    g.addoption("--perf-warmup", type=int, default=1, help="untimed warm-up rounds per case (default 1)")
    g.addoption(
        "--perf-min-time",
        type=float,
        default=1.0,
        help="timed rounds span at least this many seconds (more rounds for fast cases; default 1.0)",
    )
    g.addoption("--perf-strict-health", action="store_true", help="refuse to benchmark on an unhealthy GPU")
    g.addoption(
        "--kv-cache-mem",
        type=float,
        default=None,
        help="paged engine KV pool: bytes (> 1) or a fraction of free memory (<= 1)",
    )
    g.addoption(
        "--preemption",
        default="recompute",
        choices=("recompute", "swap"),
        help="paged engine: how to preempt when KV blocks run out",
    )
    g.addoption("--max-batch-size", type=int, default=16, help="static-batch: requests per padded batch")
    g.addoption(
        "--max-num-seqs",
        type=int,
        default=256,
        help="paged (and vllm): most sequences per step; in practice KV memory is the limit (vLLM's default)",
    )
    g.addoption(
        "--engine-module",
        action="append",
        default=[],
        help="add an engine class, package.module:Class (repeatable); see README 'Adding an engine'",
    )
    g.addoption(
        "--no-parity",
        action="store_true",
        help="time engines without first checking their greedy tokens against hf-generate",
    )
    g.addoption(
        "--perf-baselines-dir",
        default=None,
        help="where baselines/<machine slug>/baseline.json live (default: <rootdir>/baselines)",
    )
    g.addoption(
        "--perf-results-dir", default=None, help="where --benchmark-compare saves this run (default: <rootdir>/results)"
    )


def _options(config: pytest.Config) -> PerfOptions:
    opt = config.getoption
    batch_sizes = _csv(opt("--batch-sizes"))
    return PerfOptions(
        models=_csv(opt("--models")) or ("small",),
        engines=_csv(opt("--engines")),
        batch_sizes=tuple(int(b) for b in batch_sizes) if batch_sizes else None,
        device=opt("--device"),
        dtype=opt("--dtype"),
        model_path=opt("--model-path"),
        tier=opt("--perf-tier"),
        rounds=opt("--perf-rounds"),
        warmup_rounds=opt("--perf-warmup"),
        min_time_s=opt("--perf-min-time"),
        strict_health=opt("--perf-strict-health"),
        kv_cache_mem=opt("--kv-cache-mem"),
        preemption=opt("--preemption"),
        max_batch_size=opt("--max-batch-size"),
        max_num_seqs=opt("--max-num-seqs"),
        engine_modules=tuple(opt("--engine-module")),
        parity=not opt("--no-parity"),
        baselines_dir=opt("--perf-baselines-dir") or str(config.rootpath / "baselines"),
        results_dir=opt("--perf-results-dir") or str(config.rootpath / "results"),
        pyproject=str(config.rootpath / "pyproject.toml"),
    )


def _runs_perf_tests(config: pytest.Config) -> bool:
    return any("perf_tests" in str(a) for a in config.args)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    try:
        options = _options(config)
        session = PerfSession(options, engine_sources=engine_sources(options.engine_modules))
        session.model_names()  # unknown models and engines stop the run here, listing the valid names
        for name in session.options.engines or ():
            session.engine_class(name)
    except PerfSuiteError as exc:
        raise pytest.UsageError(str(exc)) from None
    # --benchmark-compare runs this suite's throughput gate against baselines/<machine slug>/ instead of
    # pytest-benchmark's own time-only comparison (cleared before pytest-benchmark reads it).
    compare = getattr(config.option, "benchmark_compare", None)
    if compare:
        session.gate_requested = compare
        config.option.benchmark_compare = []
    config.stash[SESSION_KEY] = session


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None and session.records:
        machine_info.clear()
        machine_info.update(session.machine_info())


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    perf = session.config.stash.get(SESSION_KEY, None)
    if perf is not None:
        perf.close_engines()
    bench_session = getattr(session.config, "_benchmarksession", None)
    if perf is None or not perf.gate_requested or bench_session is None or not perf.records:
        return
    try:
        failed = perf.run_gate(bench_session.benchmarks)
    except PerfSuiteError as exc:
        perf.gate_lines = [f"gate error: {exc}"]
        session.exitstatus = GATE_ERROR_EXIT_CODE
        return
    if failed and session.exitstatus == 0:
        session.exitstatus = REGRESSION_EXIT_CODE


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    if not _runs_perf_tests(config):
        return None
    session = config.stash[SESSION_KEY]
    try:
        hw = session.hardware
    except PerfSuiteError as exc:
        raise pytest.UsageError(str(exc)) from None
    if session.options.strict_health and hw.health is not None and not hw.health.healthy:
        pytest.exit(
            "--perf-strict-health: refusing to benchmark on an unhealthy GPU: " + "; ".join(hw.health.problems),
            returncode=3,
        )
    return [f"llm-perf-suite {line}" for line in hw.header_lines()]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames or "perf" not in metafunc.fixturenames:
        return  # only perf cases (which take both fixtures) are parametrized here
    kind = metafunc.function.__name__.removeprefix("test_")
    if kind not in KINDS:
        raise pytest.UsageError(f"{metafunc.function.__name__}: perf tests are named test_<kind>, kind one of {KINDS}")
    session = metafunc.config.stash[SESSION_KEY]
    opts = session.options
    try:
        cases = build_cases(
            kind,
            opts.tier,
            session.model_names(),
            list(opts.engines) if opts.engines else None,
            list(opts.batch_sizes) if opts.batch_sizes else None,
            session.engine_ok,
        )
    except PerfSuiteError as exc:
        raise pytest.UsageError(str(exc)) from None
    metafunc.parametrize("case", cases, ids=[c.id for c in cases])


@pytest.fixture(scope="session")
def perf(request: pytest.FixtureRequest) -> PerfSession:
    return request.config.stash[SESSION_KEY]


@pytest.fixture
def case_engine(request: pytest.FixtureRequest, perf: PerfSession):
    """The engine of this case, built (with its model) outside the timed region; skipped when unavailable."""
    case = request.getfixturevalue("case")
    reason = perf.unavailable_reason(case.engine)
    if reason:
        pytest.skip(f"engine {case.engine} unavailable: {reason}")
    problem = perf.parity_problem(case)
    if problem:
        pytest.fail(
            f"parity check failed: {problem}; a fast wrong engine is not timed "
            f"(--no-parity skips this check, for engines that sample)",
            pytrace=False,
        )
    return perf.engine(case)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if not session or not session.records:
        return
    tr = terminalreporter
    if session.gate_lines:
        tr.section("llm-perf-suite: regression gate (tokens/s)")
        for line in session.gate_lines:
            tr.write_line(line)
    tr.section("llm-perf-suite: throughput and roofline")
    width = max(len(r.case_id) for r in session.records)
    tr.write_line(f"{'case':<{width}}  {'tokens/s':>12}  {'% roofline':>10}  bound")
    for r in session.records:
        tr.write_line(f"{r.case_id:<{width}}  {r.tokens_per_s:>12,.1f}  {r.pct_of_roofline:>10.1%}  {r.bound}")
    if session.options.parity:
        tr.write_line(
            f"output check: every generate/batching/serving round equal to HF greedy; the check cost "
            f"{session.output_check_seconds():.1f} s outside the timed rounds (HF reference + comparison)"
        )
