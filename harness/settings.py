"""The settings of one run of the suite, with every default (engine knobs take theirs from EngineConfig).

harness/options.py says how each one is spelled on the command line; the pytest plugin and the CLI
build a PerfOptions from what was given, and the rest of the suite reads only this.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from harness.arrivals import Load
from harness.engines.base import EngineConfig


@dataclass(frozen=True)
class PerfOptions:
    models: tuple[str, ...] = ("small",)
    engines: tuple[str, ...] | None = None
    batch_sizes: tuple[int, ...] | None = None
    device: str = "auto"
    dtype: str | None = None  # None: float32 on CPU, bfloat16 on CUDA
    model_path: str | None = None
    tier: str = "default"
    rounds: int = 5
    warmup_rounds: int = 1
    min_time_s: float = 1.0
    passes: int = 1  # each case's rounds split over this many passes of the run (harness/passes.py)
    strict_health: bool = False
    kv_cache_mem: float | None = EngineConfig.kv_cache_mem
    preemption: str = EngineConfig.preemption
    max_batch_size: int = EngineConfig.max_batch_size
    max_num_seqs: int = EngineConfig.max_num_seqs
    seed: int = 0
    request_rates: tuple[float, ...] = (math.inf,)  # serving: requests/s, one case per rate (inf: all at t=0)
    burstiness: float = 1.0  # serving: gamma shape of the gaps between arrivals (1: Poisson)
    max_concurrency: int = 0  # serving: most requests in flight (0: no cap)
    goodput: tuple[tuple[str, float], ...] = ()  # serving: SLOs in ms, ("ttft", 2000.0), ...
    workloads: tuple[str, ...] | None = None  # serving: replaces each tier's workload list
    openai_base_url: str | None = EngineConfig.openai_base_url
    openai_model: str | None = EngineConfig.openai_model
    openai_prompt: str = EngineConfig.openai_prompt
    engine_modules: tuple[str, ...] = ()
    parity: bool = True
    baselines_dir: str = "baselines"
    results_dir: str = "results"
    pyproject: str = "pyproject.toml"
    strict: bool = False  # the gate: an inconclusive row fails too (exit 12)
    require_baseline: bool = False  # the gate: no baseline for this machine is an error (exit 11)
    summary: str | None = None  # the gate's verdicts as markdown, here (default: $GITHUB_STEP_SUMMARY when set)
    trace_dir: str | None = None  # serving cases: a Chrome trace of the last round, one file per case, here
    compile: bool = EngineConfig.compile
    cuda_graphs: bool = EngineConfig.cuda_graphs
    inject: tuple[float, str] = (0.0, "")  # experiments only: (fraction, case pattern), from the environment

    def slowdown_for(self, case_name: str) -> float:
        """The injected slowdown of a case (its pytest name, test_<kind>[<id>]): PERF_INJECT_SLOWDOWN, for
        every case or, with PERF_INJECT_CASE, for the cases whose name contains it; 0 otherwise."""
        fraction, pattern = self.inject
        return fraction if fraction and (not pattern or pattern in case_name) else 0.0

    def engine_config(self, slowdown: float = 0.0) -> EngineConfig:
        return EngineConfig(
            max_batch_size=self.max_batch_size,
            max_num_seqs=self.max_num_seqs,
            kv_cache_mem=self.kv_cache_mem,
            preemption=self.preemption,
            slowdown=slowdown,
            max_concurrency=self.max_concurrency,
            openai_base_url=self.openai_base_url,
            openai_model=self.openai_model,
            openai_prompt=self.openai_prompt,
            trace=self.trace_dir is not None,
            compile=self.compile,
            cuda_graphs=self.cuda_graphs,
        )

    @property
    def engine_options(self) -> str | None:
        """The flags that change how fast the reference engines run, as a run records them (None: none):
        results taken with different ones are not compared."""
        flags = {"--perf-compile": self.compile, "--perf-cuda-graphs": self.cuda_graphs}
        return " ".join(flag for flag, on in flags.items() if on) or None

    def loads(self) -> list[Load]:
        """How serving requests arrive (harness/arrivals.py): one Load per --request-rate, so a list of
        rates is a sweep, one serving case per rate."""
        return [Load(rate, self.burstiness, self.max_concurrency) for rate in self.request_rates]

    @property
    def slo_ms(self) -> dict[str, float]:
        return dict(self.goodput)


def rooted(options: PerfOptions, root: Path) -> PerfOptions:
    """Relative folders and the pyproject, resolved against the project root (pytest's rootdir)."""
    return dataclasses.replace(
        options,
        baselines_dir=str(root / options.baselines_dir),
        results_dir=str(root / options.results_dir),
        pyproject=str(root / options.pyproject),
    )
