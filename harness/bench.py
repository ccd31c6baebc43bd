"""The benchmark session: runs one case (its kind says how), checks what it produced, and records its
CaseResult (built by harness/recording.py) in pytest-benchmark's extra_info.

It composes the pieces that do the work: EngineCache (models, engines, output checks), CaseTimer
(rounds, reference forward, sampling) and the gate run (harness/baseline/run.py). The pytest plugin
only parses options and delegates here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pytest

from harness import roofline
from harness.cases import Case, get_kind
from harness.correctness.calibrate import CALIBRATION_FACTOR
from harness.engine_cache import EngineCache
from harness.engines import BUILTIN_ENGINES, EngineSource, GenerateResult
from harness.engines.flops import unit_flops
from harness.engines.work import round_work
from harness.hardware import HardwareInfo, probe
from harness.models import default_dtype, resolve_device
from harness.nvml import NvmlUnavailable, load_nvml, nvml_handle
from harness.passes import LaterPasses, PassRound, merged, run_later_passes
from harness.recording import Measured, case_result
from harness.results import CaseResult, round_latency
from harness.roofline import canonical_dtype
from harness.settings import PerfOptions
from harness.timer import CaseTimer, Timing, reference_forward_ms
from harness.workloads import Request


@dataclass
class PerfSession:
    options: PerfOptions
    engine_sources: dict[str, EngineSource] = field(
        default_factory=lambda: {n: EngineSource(n, t, "builtin") for n, t in BUILTIN_ENGINES.items()}
    )
    records: list[tuple[str, CaseResult]] = field(default_factory=list)  # (benchmark name, result) per case
    gate_requested: object = None  # the --benchmark-compare value: True (this machine's baseline) or a path
    gate_lines: list[str] = field(default_factory=list)
    later: list = field(default_factory=list)  # LaterPasses per case, with --perf-passes above 1
    pass_problems: list[str] = field(default_factory=list)  # cases that failed in a later pass

    @cached_property
    def device(self):
        return resolve_device(self.options.device)

    @cached_property
    def dtype(self) -> str:
        return canonical_dtype(self.options.dtype) if self.options.dtype else default_dtype(self.device)

    @cached_property
    def hardware(self) -> HardwareInfo:
        return probe(self.device, self.dtype)

    @cached_property
    def cache(self) -> EngineCache:
        return EngineCache(self.options, self.engine_sources, self.device, self.dtype)

    @cached_property
    def timer(self) -> CaseTimer:
        nvml = handle = None
        if self.device.type == "cuda":
            try:
                nvml = load_nvml()
                handle = nvml_handle(nvml, self.device.index or 0, self.hardware.notes)
            except NvmlUnavailable:
                nvml = None
        o = self.options
        return CaseTimer(self.device, o.rounds, o.warmup_rounds, o.min_time_s, o.passes, nvml, handle)

    @cached_property
    def thresholds(self):
        from harness.judge import Thresholds

        return Thresholds.from_pyproject(self.options.pyproject)

    # --- running one case ------------------------------------------------------------------------
    def run_case(self, benchmark, case: Case, engine) -> GenerateResult | None:
        """Time one case through its engine; step kinds (prefill, decode) time the engine's `<kind>_case`
        step, the others whole rounds of requests. Returns the last round of a generate kind."""
        if get_kind(case.kind).step:
            self.bench_step(benchmark, case, engine)
            return None
        return self.bench_generate(benchmark, case, self.cache.requests(case), engine)

    def bench_step(self, benchmark, case: Case, engine) -> None:
        kind = get_kind(case.kind)
        step = kind.step_case(engine, case, self.options.seed)
        loaded = self.cache.model(case.model)
        shape = kind.reference_shape(case)
        try:
            timing = self.timer.time(benchmark, step.run, loaded, shape, step.setup)
            flops = unit_flops(engine, step.run, step.setup) if recorded(benchmark) else {}  # untimed, counted
        finally:
            if step.teardown is not None:
                step.teardown()
        cost = kind.cost(loaded.spec, self.dtype, case, [], self.options.engine_config())
        work = round_work([], flops)
        self.record(benchmark, case, kind.step_tokens(case), cost, timing, work)

        def make() -> PassRound:
            again = kind.step_case(engine, case, self.options.seed)
            return again.run, again.setup, again.teardown

        def finish(rounds_s: list[float], reference_ms: list[float]) -> None:
            self.record(benchmark, case, kind.step_tokens(case), cost, merged(timing, rounds_s, reference_ms), work)

        self._later(benchmark, timing, make, loaded, shape, lambda: None, finish)

    def _later(self, benchmark, timing: Timing, make, loaded, shape, check, finish) -> None:
        """With --perf-passes above 1, the case's later passes, to run after every case's first."""
        if self.options.passes > 1 and recorded(benchmark):
            reference = (lambda: reference_forward_ms(loaded, shape)) if timing.reference_ms else list
            self.later.append(LaterPasses(benchmark.name, benchmark, timing.per_pass, make, reference, check, finish))

    def run_later_passes(self) -> None:
        """Passes 2..N of every case (harness/passes.py); cases that fail there are left out of the run."""
        self.pass_problems = run_later_passes(self.later, self.options.passes, self.timer.time_pass)
        failed = {p.name for p in self.later if p.problem is not None}
        self.records = [(n, r) for n, r in self.records if n not in failed]
        self.later = []

    def bench_generate(self, benchmark, case: Case, requests: Sequence[Request], engine) -> GenerateResult:
        kind = get_kind(case.kind)
        engine.prepare(requests)  # untimed: start threads, size caches for this workload
        rounds: list[GenerateResult] = []  # every round's outputs are checked; the last one's metrics reported
        loaded = self.cache.model(case.model)
        shape = kind.reference_shape(case)
        timing = self.timer.time(benchmark, lambda: rounds.append(engine.generate(requests)), loaded, shape)
        ties_before = len(self.cache.checker(case.model).near_ties)
        problem = self.cache.check_rounds(case, requests, rounds)
        if problem:
            benchmark.has_error = True  # pytest-benchmark then leaves it out of its JSON: the numbers never count
            pytest.fail(f"output check failed: {problem}; a fast wrong engine is not timed", pytrace=False)
        cost = kind.cost(loaded.spec, self.dtype, case, list(requests), self.options.engine_config())
        flops = unit_flops(engine, lambda: engine.generate(requests), requests=requests) if recorded(benchmark) else {}
        timed = rounds[-timing.per_pass :] if benchmark.stats is not None else rounds[-1:]  # the rest: warm-up
        every, later = list(rounds), []  # later: what one later pass produced

        def record(timing: Timing) -> None:
            extra = self._generate_extra(benchmark.name, case, requests, every, timed, ties_before, flops)
            self.record(benchmark, case, timed[-1].generated_tokens, cost, timing, extra, list(requests))

        record(timing)

        def make() -> PassRound:
            later.clear()
            return lambda: later.append(engine.generate(requests)), None, None

        def check() -> str | None:
            every.extend(later)
            timed.extend(later[-timing.per_pass :])
            return self.cache.check_rounds(case, requests, list(later))

        self._later(benchmark, timing, make, loaded, shape, check, lambda s, ref: record(merged(timing, s, ref)))
        return rounds[-1]

    def _generate_extra(self, name: str, case: Case, requests, every, timed, ties: int, flops: dict) -> dict:
        """What a generate kind records beside its throughput: the last round's metrics, every timed round's
        latency (serving), the work counters (the same in `every` round) and the output check's summary."""
        kind, last = get_kind(case.kind), timed[-1]
        extra = {
            **last.metrics,
            **last.phase_ms,
            **last.latency_summary(self.options.slo_ms),
            **case.load.recorded(),
            **({"slo_ms": self.options.slo_ms} if self.options.slo_ms else {}),
            "num_requests": len(requests),
            "failed_requests": sum(o.error is not None for o in last.outputs),
            "output_check": self._check_summary(case, len(every), len(requests), ties),
        }
        if kind.keeps_round_latency:
            extra["round_latency"] = round_latency([r.latency_summary(self.options.slo_ms) for r in timed])
        if last.step_ms:  # per decode step of the last round, for the report's per-step plot
            extra["decode_step_ms"] = [round(ms, 4) for ms in last.step_ms]
        extra.update(round_work([r.work for r in every], flops))
        if kind.keeps_round_latency:  # serving: the last round as a timeline, and as a trace file where asked
            extra["timeline"] = self._timeline(name, case, last)
        return extra

    def _timeline(self, name: str, case: Case, last: GenerateResult) -> dict:
        from harness.files import write_json_atomic
        from harness.trace import chrome_trace, timeline

        t0 = last.start_s if last.start_s is not None else min(o.arrival_s for o in last.outputs)
        if self.options.trace_dir:
            trace = chrome_trace(last.outputs, last.steps, t0, name)
            write_json_atomic(Path(self.options.trace_dir) / f"{case.id}.json", trace)
        return timeline(last.outputs, last.steps, t0)

    def _check_summary(self, case: Case, rounds: int, requests: int, ties_before: int) -> str:
        if not self.options.parity:
            return "off (--perf-no-parity)"
        checker = self.cache.checker(case.model)
        ties = {(r, p): gap for _, r, p, gap in checker.near_ties[ties_before:]}  # the same tie recurs each round
        text = f"{rounds} rounds x {requests} requests equal HF greedy"
        if ties:
            gaps = ", ".join(
                f"request {r} token {p} (top two {gap:.2g} apart)" for (r, p), gap in list(ties.items())[:3]
            )
            text += f"; {len(ties)} near-tie(s) within {checker.margin:.3g} x |logit| accepted: {gaps}"
        if checker.calibration is not None:
            measured = checker.calibration.describe(checker.reference.loaded.dtype)
            text += f"; margins x{CALIBRATION_FACTOR:g} of what they measured: {measured}"
        return text

    def record(
        self,
        benchmark,
        case: Case,
        tokens: int,
        cost: roofline.PhaseCost,
        timing: Timing,
        extra: dict | None = None,
        requests: list[Request] | None = None,
    ) -> CaseResult | None:
        if not recorded(benchmark):
            return None
        measured = Measured(tokens, benchmark.stats.stats.median, cost, timing)
        result = case_result(
            case,
            measured,
            self.hardware,
            self.dtype,
            self.cache.model(case.model).spec,
            own_forward=bool(self.cache.engine_class(case.engine).own_forward),
            seed=self.options.seed,
            extra=extra or {},
            requests=requests or [],
        )
        benchmark.extra_info.update(result.to_extra_info())
        self._keep(benchmark.name, result)
        return result

    def _keep(self, name: str, result: CaseResult) -> None:
        """Add a case's result; one recorded again after its later passes keeps its place."""
        names = [n for n, _ in self.records]
        if name in names:
            self.records[names.index(name)] = (name, result)
        else:
            self.records.append((name, result))

    # --- the gate --------------------------------------------------------------------------------
    def machine_info(self) -> dict:
        from harness.baseline.storage import stable_machine_info
        from harness.hardware import machine_slug

        info = stable_machine_info(self.hardware, self.dtype) | {"slug": machine_slug(self.hardware)}
        if self.hardware.device == "cpu":  # what multiplies the weights (engines/onednn.py): it sets their speed
            import torch

            from harness.engines import kv_attention, onednn

            cpu, dtype = torch.device("cpu"), getattr(torch, self.dtype)
            info["cpu_products"] = onednn.library(cpu, dtype)
            info["cpu_attention"] = "c" if kv_attention.takes(cpu, dtype) else "torch"  # paged's decode attention
        return info | ({"engine_options": self.options.engine_options} if self.options.engine_options else {})


def recorded(benchmark) -> bool:
    """Whether pytest-benchmark keeps this case's numbers (not under --benchmark-disable)."""
    return benchmark.stats is not None and not benchmark.disabled
