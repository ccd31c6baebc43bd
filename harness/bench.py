"""The benchmark session: builds models and engines outside the timed region, times cases with
pytest-benchmark, and records every case's numbers and roofline in extra_info.

The pytest plugin only parses options and delegates here.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

from harness import roofline
from harness.cases import WORKLOADS, Case
from harness.correctness import OutputChecker
from harness.engines import BUILTIN_ENGINES, EngineConfig, EngineSource, GenerateResult, load_engine_class
from harness.engines.base import StepCase
from harness.hardware import HardwareInfo, NvmlSampler, NvmlUnavailable, load_nvml, probe
from harness.models import LoadedModel, build_model, canonical_dtype, default_dtype, load_model, resolve_device
from harness.specs import get_spec
from harness.timing import injected_slowdown, synchronize
from harness.workloads import Request, fixed_requests, mixed_requests

STEP_KINDS = ("prefill", "decode")

MAX_ROUNDS = 200
REFERENCE_REPS = 3  # reference forwards before and after each case (machine-speed correction): at least
REFERENCE_MIN_S = 0.2  # and enough to span this long, so one short stall does not set the machine speed
REFERENCE_MAX_TOKENS = 128  # the largest reference forward (see reference_shape)


@dataclass(frozen=True)
class PerfOptions:
    models: tuple[str, ...] = ("small",)
    engines: tuple[str, ...] | None = None
    batch_sizes: tuple[int, ...] | None = None
    device: str = "auto"
    dtype: str | None = None
    model_path: str | None = None
    tier: str = "default"
    rounds: int = 5
    warmup_rounds: int = 1
    min_time_s: float = 1.0
    strict_health: bool = False
    kv_cache_mem: float | None = None
    preemption: str = "recompute"
    max_batch_size: int = 16
    max_num_seqs: int = 256
    seed: int = 0
    engine_modules: tuple[str, ...] = ()
    parity: bool = True
    baselines_dir: str = "baselines"
    results_dir: str = "results"
    pyproject: str = "pyproject.toml"


@dataclass
class CaseRecord:
    """What the terminal summary shows for one case."""

    case_id: str
    kind: str
    tokens_per_s: float
    pct_of_roofline: float
    bound: str


@dataclass
class PerfSession:
    options: PerfOptions
    engine_sources: dict[str, EngineSource] = field(
        default_factory=lambda: {n: EngineSource(n, t, "builtin") for n, t in BUILTIN_ENGINES.items()}
    )
    _parity: dict[tuple[str, str], str | None] = field(default_factory=dict)
    records: list[CaseRecord] = field(default_factory=list)
    gate_requested: object = None  # the --benchmark-compare value: True (this machine's baseline) or a path
    gate_lines: list[str] = field(default_factory=list)
    _loaded: dict[str, LoadedModel] = field(default_factory=dict)
    _checkers: dict[str, OutputChecker] = field(default_factory=dict)
    check_seconds: float = 0.0  # what the output checks cost this session, models already switched away from
    _engines: dict[tuple[str, str, int | None], object] = field(default_factory=dict)

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
    def nvml(self):
        try:
            return load_nvml() if self.device.type == "cuda" else None
        except NvmlUnavailable:
            return None

    def model_names(self) -> list[str]:
        if self.options.model_path:
            from harness.specs import ModelSpec

            return [ModelSpec.from_pretrained(self.options.model_path).name]
        for name in self.options.models:
            get_spec(name)  # unknown names fail here, listing the valid ones
        return list(self.options.models)

    def model(self, name: str) -> LoadedModel:
        """One model in memory at a time: switching models frees the last one and its engines."""
        if name not in self._loaded:
            self.close_engines()
            self._loaded.clear()
            self._parity.clear()
            self.check_seconds += sum(c.seconds for c in self._checkers.values())
            self._checkers.clear()
            if self.options.model_path:
                self._loaded[name] = load_model(self.options.model_path, dtype=self.dtype, device=self.device)
            else:
                self._loaded[name] = build_model(
                    get_spec(name), dtype=self.dtype, device=self.device, seed=self.options.seed
                )
        return self._loaded[name]

    def close_engines(self) -> None:
        """Engines that hold threads or pools (transformers-cb's manager) release them here."""
        for engine in self._engines.values():
            close = getattr(engine, "close", None)
            if close is not None:
                close()
        self._engines.clear()

    def checker(self, model_name: str) -> OutputChecker:
        if model_name not in self._checkers:
            self._checkers[model_name] = OutputChecker(self.model(model_name))
        return self._checkers[model_name]

    def output_check_seconds(self) -> float:
        return self.check_seconds + sum(c.seconds for c in self._checkers.values())

    def parity_problem(self, case: Case) -> str | None:
        """None when the engine's greedy tokens (and logits, where it gives them) on the probe workload
        equal HF's; else the first difference, described. Checked once per (model, engine), before any
        of its cases is timed; the timed rounds are checked as well (check_rounds)."""
        key = (case.model, case.engine)
        if not self.options.parity:
            return None
        if key not in self._parity:
            self._parity[key] = self.checker(case.model).probe_problem(case.engine, self.engine(case))
        return self._parity[key]

    def check_rounds(self, case: Case, requests: Sequence[Request], rounds: list[GenerateResult]) -> str | None:
        """Every round the case ran (warm-up and timed) against HF greedy for the same requests."""
        if not self.options.parity:
            return None
        checker = self.checker(case.model)
        for i, result in enumerate(rounds):
            problem = checker.tokens_problem(
                case.engine, requests, result.outputs, f"round {i + 1} of {len(rounds)} of {case.id}"
            )
            if problem:
                return problem
        return None

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            max_batch_size=self.options.max_batch_size,
            max_num_seqs=self.options.max_num_seqs,
            kv_cache_mem=self.options.kv_cache_mem,
            preemption=self.options.preemption,
            slowdown=injected_slowdown(),
        )

    def engine_class(self, name: str) -> type:
        return load_engine_class(name, self.engine_sources)

    def engine_ok(self, name: str, kind: str) -> bool:
        cls = self.engine_class(name)
        return kind not in STEP_KINDS or hasattr(cls, f"{kind}_case")

    def unavailable_reason(self, name: str) -> str | None:
        check = getattr(self.engine_class(name), "unavailable_reason", None)
        return check(self.device) if check else None

    def serving_kv_bytes(self, case: Case) -> int | None:
        """KV memory for a serving case when --kv-cache-mem is not given: what static-batch reserves for
        the same workload (its largest batch, each request holding the batch's padded length). Engines
        that size their own KV pool (paged) get exactly that, so the comparison is at equal memory and
        a paged engine's gain is what it does with that memory: more sequences per step, less waste."""
        from harness.engines.static_batch import arrival_batches, contiguous_kv_tokens

        if case.kind != "serving" or self.options.kv_cache_mem is not None:
            return None
        loaded = self.model(case.model)
        tokens = contiguous_kv_tokens(arrival_batches(self.requests(case), self.options.max_batch_size))
        return tokens * roofline.kv_bytes_per_token(loaded.spec, loaded.dtype)

    def engine(self, case: Case):
        kv_bytes = self.serving_kv_bytes(case)
        key = (case.model, case.engine, kv_bytes)
        if key not in self._engines:
            config = self.engine_config()
            if kv_bytes is not None:
                config = dataclasses.replace(config, kv_cache_mem=float(kv_bytes))
            self._engines[key] = self.engine_class(case.engine)(self.model(case.model), config)
        return self._engines[key]

    def requests(self, case: Case) -> list[Request]:
        vocab = self.model(case.model).spec.vocab_size
        if case.workload:
            w = WORKLOADS[case.workload]
            return mixed_requests(w.num_requests, w.prompt_range, w.output_range, vocab, seed=w.seed)
        return fixed_requests(case.batch_size, case.prompt_len, case.new_tokens, vocab, seed=self.options.seed)

    # --- timing -------------------------------------------------------------------------------

    def _rounds(self, timed, setup) -> tuple[int, int]:
        """(rounds, warm-up rounds left). The first warm-up round is timed here (it never counts) to
        size the run: at least --perf-rounds rounds, and enough to span --perf-min-time seconds, so a
        millisecond decode step is not judged on a 0.1 s window that one stall on the host can shift."""
        opts = self.options
        if opts.warmup_rounds < 1 or opts.min_time_s <= 0:
            return opts.rounds, opts.warmup_rounds
        if setup is not None:
            setup()
        start = time.perf_counter()
        timed()
        per_round = max(time.perf_counter() - start, 1e-6)
        return max(opts.rounds, min(MAX_ROUNDS, math.ceil(opts.min_time_s / per_round))), opts.warmup_rounds - 1

    def _pedantic(self, benchmark, target, setup=None) -> None:
        def timed() -> None:
            target()
            synchronize(self.device)  # the round ends when the device is done, not when launches are

        rounds, warmup = self._rounds(timed, setup)
        kwargs = {"rounds": rounds, "warmup_rounds": warmup, "iterations": 1}
        if setup is not None:
            kwargs["setup"] = setup
        benchmark.pedantic(timed, **kwargs)

    def reference_ms(self, model_name: str, shape: tuple[int, int] = (1, 8), reps: int = REFERENCE_REPS) -> list[float]:
        """Time a fixed forward of the model (rows x tokens, no cache) that no engine code runs: how fast
        the machine is right now. Timed just before and after every case, outside its rounds; the gate
        divides it out (harness/baseline/gate.py, Speed). PERF_INJECT_SLOWDOWN does not touch it."""
        import torch

        loaded = self.model(model_name)
        rows, tokens = shape
        ids = (torch.arange(rows * tokens, device=loaded.device) % (loaded.spec.vocab_size - 1) + 1).view(rows, tokens)
        times = []
        with torch.inference_mode():
            loaded.model(ids, use_cache=False)  # untimed: the first call after other work pays for allocations
            begin = time.perf_counter()
            while len(times) < reps or (time.perf_counter() - begin < REFERENCE_MIN_S and len(times) < MAX_ROUNDS):
                start = time.perf_counter()
                loaded.model(ids, use_cache=False)
                synchronize(self.device)
                times.append((time.perf_counter() - start) * 1e3)
        return times

    def _sampled(self, benchmark, target, case: Case, setup=None) -> dict:
        """Time `target`, with the reference forward timed before and after; on a GPU sample
        utilisation and power while it runs."""
        shape = reference_shape(case)
        reference = [] if benchmark.disabled else self.reference_ms(case.model, shape)
        if self.nvml is None:
            self._pedantic(benchmark, target, setup)
            sampled = {}
        else:
            with NvmlSampler(self.nvml, self.device.index or 0) as sampler:
                self._pedantic(benchmark, target, setup)
            sampled = sampler.summary(0) | {"_energy_j": sampler.energy_j() or 0.0}
        if reference:
            sampled["reference_ms"] = [round(ms, 4) for ms in reference + self.reference_ms(case.model, shape)]
            sampled["reference_shape"] = list(shape)
        return sampled

    def bench_step(self, benchmark, case: Case, step: StepCase) -> None:
        loaded = self.model(case.model)
        spec, dtype = loaded.spec, self.dtype
        if case.kind == "prefill":
            cost, tokens = (
                roofline.prefill_cost(spec, dtype, case.batch_size, case.prompt_len),
                case.batch_size * case.prompt_len,
            )
        else:
            cost, tokens = roofline.decode_cost(spec, dtype, case.batch_size, case.context_len), case.batch_size
        try:
            sampled = self._sampled(benchmark, step.run, case, step.setup)
        finally:
            if step.teardown is not None:
                step.teardown()
        self.record(benchmark, case, tokens, cost, sampled, {})

    def bench_generate(self, benchmark, case: Case, requests: Sequence[Request]) -> GenerateResult:
        engine = self.engine(case)
        prepare = getattr(engine, "prepare", None)
        if prepare is not None:  # untimed: start threads, size caches for this workload
            prepare(requests)
        rounds: list[GenerateResult] = []  # every round's outputs are checked; the last one's metrics reported

        def run() -> None:
            rounds.append(engine.generate(requests))

        sampled = self._sampled(benchmark, run, case)
        problem = self.check_rounds(case, requests, rounds)
        if problem:
            import pytest

            benchmark.has_error = True  # pytest-benchmark then leaves it out of its JSON: the numbers never count
            pytest.fail(f"output check failed: {problem}; a fast wrong engine is not timed", pytrace=False)
        last = rounds[-1]
        failed = [o for o in last.outputs if o.error]
        lengths = [(len(r.prompt_ids), r.max_new_tokens) for r in requests]
        spec = self.model(case.model).spec
        if case.kind == "serving":
            most_per_step = max(self.options.max_batch_size, self.options.max_num_seqs)
            cost = roofline.serving_cost(spec, self.dtype, lengths, most_per_step)
        else:
            cost = roofline.generation_cost(spec, self.dtype, case.prompt_len, case.new_tokens, case.batch_size)
        extra = {
            **last.metrics,
            **last.phase_ms,
            **last.latency_summary(),
            "num_requests": len(requests),
            "failed_requests": len(failed),
            "output_check": f"{len(rounds)} rounds x {len(requests)} requests equal HF greedy"
            if self.options.parity
            else "off (--no-parity)",
        }
        if last.step_ms:  # per decode step of the last round, for the report's per-step plot
            extra["decode_step_ms"] = [round(ms, 4) for ms in last.step_ms]
        self.record(benchmark, case, last.generated_tokens, cost, sampled, extra)
        return last

    def record(self, benchmark, case: Case, tokens: int, cost: roofline.PhaseCost, sampled: dict, extra: dict) -> None:
        if benchmark.disabled or benchmark.stats is None:
            return
        median_s = benchmark.stats.stats.median
        hw = self.hardware
        peaks = hw.peaks()
        info = {
            "kind": case.kind,
            "model": case.model,
            "engine": case.engine,
            "device": hw.name,
            "dtype": self.dtype,
            "batch_size": case.batch_size,
            "prompt_len": case.prompt_len,
            "context_len": case.context_len,
            "new_tokens": case.new_tokens,
            "workload": case.workload,
            "tokens": tokens,
            "tokens_per_s": roofline.tokens_per_s(tokens, median_s),
            "median_ms": median_s * 1e3,
            "peak_bw_gbps": peaks.bw_bytes_s / 1e9,
            "peak_bw_source": peaks.bw_source,
            "peak_tflops": peaks.flops_s / 1e12,
            "peak_flops_source": peaks.flops_source,
            "theoretical_bw_gbps": hw.theoretical_bw_gbps,
            "measured_bw_gbps": hw.measured_bw_gbps,
            "theoretical_tflops": hw.theoretical_tflops,
            "measured_tflops": hw.measured_tflops,
            "bw_warning": hw.bw_warning,
            "gpu_healthy": None if hw.health is None else hw.health.healthy,
            "health_problems": [] if hw.health is None else hw.health.problems,
        }
        if case.kind in STEP_KINDS:
            info[f"{case.kind}_ms"] = median_s * 1e3
        info.update(roofline.utilisation(cost, peaks, median_s))
        energy = sampled.pop("_energy_j", None)
        info.update(sampled)
        if energy:
            rounds_run = len(benchmark.stats.stats.data) + self.options.warmup_rounds
            info["j_per_token"] = energy / (tokens * rounds_run)
        info.update(extra)
        benchmark.extra_info.update(info)
        self.records.append(
            CaseRecord(f"{benchmark.name}", case.kind, info["tokens_per_s"], info["pct_of_roofline"], info["bound"])
        )

    # --- the gate -------------------------------------------------------------------------------

    def machine_info(self) -> dict:
        from harness.baseline.storage import stable_machine_info
        from harness.hardware import machine_slug

        return stable_machine_info(self.hardware, self.dtype) | {"slug": machine_slug(self.hardware)}

    def current_doc(self, benchmarks) -> dict:
        done = [b.as_dict(include_data=True) for b in benchmarks if not b.has_error and b.stats is not None]
        for bench in done:  # params hold Case objects: store their ids, as pytest-benchmark's JSON does
            bench["params"] = {k: str(v) for k, v in (bench.get("params") or {}).items()}
            bench["param"] = str(bench.get("param"))
        return {"machine_info": self.machine_info(), "benchmarks": done}

    def run_gate(self, benchmarks) -> bool:
        """Compare this run with the baseline; fills gate_lines; True when a case regressed."""
        from pathlib import Path

        from harness.baseline.gate import Thresholds, compare, format_table, has_regression, method_line
        from harness.baseline.storage import baseline_path, load_results, write_json_atomic

        current = self.current_doc(benchmarks)
        slug = current["machine_info"]["slug"]
        saved = Path(self.options.results_dir) / slug / "latest.json"
        write_json_atomic(saved, current)
        explicit = (
            self.gate_requested
            if isinstance(self.gate_requested, str) and self.gate_requested.endswith(".json")
            else None
        )
        base_file = Path(explicit) if explicit else baseline_path(slug, Path(self.options.baselines_dir))
        if not base_file.exists():
            self.gate_lines = [
                f"no baseline for this machine ({slug}): {base_file} does not exist; this run was "
                f"saved to {saved}. Record one with `python -m harness baseline update --from {saved}`."
            ]
            return False
        baseline = load_results(base_file)
        base_slug = baseline.get("machine_info", {}).get("slug")
        if base_slug and base_slug != slug:
            self.gate_lines = [f"not comparing: {base_file} was recorded on {base_slug}, this is {slug}"]
            return False
        thresholds = Thresholds.from_pyproject(self.options.pyproject)
        verdicts = compare(baseline, current, thresholds)
        self.gate_lines = [
            f"baseline {base_file} vs this run (saved to {saved})",
            *format_table(verdicts, thresholds.alpha, method_line(baseline, current, thresholds)),
        ]
        return has_regression(verdicts)


def reference_shape(case: Case) -> tuple[int, int]:
    """(rows, tokens) of the reference forward timed beside a case: the shape of the forwards the case
    itself spends its time in, so the reference meets the same kernels (matrix-vector products for
    batch-1 decode, wide GEMMs for prefill) and a busy neighbour slows both alike. Measured on the
    2-core host: a 1 x 8 reference for every case cut the run-to-run spread of bs8 and prefill cases
    (9-16% -> 3-7%) but raised it for batch-1 decode (3-5% -> 7-9%). A serving case mixes prefills and
    decodes of many sizes: it keeps the 1 x 8 forward. A prefill reference is capped at 128 tokens: by
    then the forward is a compute-bound GEMM already, and a 4 x 256 one would cost seconds per case."""
    if case.kind == "prefill":
        tokens = case.batch_size * case.prompt_len
        return (case.batch_size, case.prompt_len) if tokens <= REFERENCE_MAX_TOKENS else (1, REFERENCE_MAX_TOKENS)
    if case.kind == "serving":
        return 1, 8
    return case.batch_size, 1  # decode, and generate/batching, whose time is mostly decode steps
