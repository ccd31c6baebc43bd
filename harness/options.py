"""The suite's options, defined once.

PerfOptions holds every default (engine knobs take theirs from EngineConfig); OPTIONS says how each
one is spelled on the command line, parsed and explained. The pytest plugin adds OPTIONS to pytest,
the CLI adds the ones it needs to its subcommands, and both build a PerfOptions from what was given.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.arrivals import Load
from harness.cases import TIERS
from harness.engines.base import EngineConfig
from harness.errors import ConfigError


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
        )

    def loads(self) -> list[Load]:
        """How serving requests arrive (harness/arrivals.py): one Load per --request-rate, so a list of
        rates is a sweep, one serving case per rate."""
        return [Load(rate, self.burstiness, self.max_concurrency) for rate in self.request_rates]

    @property
    def slo_ms(self) -> dict[str, float]:
        return dict(self.goodput)


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _int_csv(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in _csv(value))
    except ValueError:
        raise ConfigError(f"--batch-sizes wants comma-separated integers, got {value!r}") from None


@dataclass(frozen=True)
class Option:
    flag: str
    dest: str  # the PerfOptions field; its default is the option's default
    help: str
    parse: Callable[[str], object] | None = None  # str -> value (None: the string itself)
    choices: tuple[str, ...] | None = None
    switch: str | None = None  # a flag without a value: "store_true", or "store_false" (e.g. --no-parity)
    repeat: bool = False  # may be given several times (--engine-module)
    many: bool = False  # takes one or more values after the flag (--goodput ttft:2000 tpot:200)

    @property
    def default(self):
        return {f.name: f.default for f in dataclasses.fields(PerfOptions)}[self.dest]

    def add_to(self, add_argument: Callable, default_shown: bool = True) -> None:
        """Add to an argparse parser or a pytest option group (both take argparse's keywords)."""
        if self.switch:
            add_argument(self.flag, action="store_true", default=False, help=self.help)
        elif self.repeat:
            add_argument(self.flag, action="append", default=[], help=self.help)
        elif self.many:
            add_argument(self.flag, nargs="+", default=None, help=self.help)
        else:
            shown = ",".join(map(str, self.default)) if isinstance(self.default, tuple) else self.default
            add_argument(self.flag, default=None, choices=self.choices, help=f"{self.help} (default: {shown})")

    def value(self, raw):
        """What PerfOptions gets from the parsed command-line value (None or unset: the default)."""
        if self.switch:
            return (not raw) if self.switch == "store_false" else bool(raw)
        if self.repeat:
            return tuple(raw or ())
        if raw is None:
            return self.default
        return self.parse(raw) if self.parse else raw


def _rates(value: str) -> tuple[float, ...]:
    """--request-rate 0.5,1,2,inf -> (0.5, 1.0, 2.0, inf): one rate, or a ladder (a sweep), in the given order."""
    try:
        rates = tuple(float(v) for v in _csv(value))
    except ValueError:
        raise ConfigError(f"--request-rate wants numbers (requests/s) or inf, comma-separated, got {value!r}") from None
    if not rates:
        raise ConfigError("--request-rate got no rate")
    if len({f"{r:g}" for r in rates}) != len(rates):  # as case ids spell them (Load.suffix)
        raise ConfigError(f"--request-rate lists a rate twice: {value!r}")
    return rates


def _number(flag: str, kind: type = int) -> Callable[[str], object]:
    def parse(value: str):
        try:
            return kind(value)
        except ValueError:
            raise ConfigError(f"{flag} wants {'an integer' if kind is int else 'a number'}, got {value!r}") from None

    return parse


SLO_METRICS = ("ttft", "tpot", "e2el")


def _slos(values: list[str]) -> tuple[tuple[str, float], ...]:
    """--goodput ttft:2000 tpot:200 -> (("ttft", 2000.0), ("tpot", 200.0)): vLLM's spelling, ms."""
    out = []
    for item in values:
        name, _, ms = item.partition(":")
        if name not in SLO_METRICS:
            raise ConfigError(
                f"--goodput {item!r}: the metric must be one of {', '.join(SLO_METRICS)} (e.g. ttft:2000)"
            )
        try:
            limit = float(ms)
        except ValueError:
            raise ConfigError(f"--goodput {item!r}: the limit must be milliseconds, e.g. {name}:200") from None
        if not limit > 0:
            raise ConfigError(f"--goodput {item!r}: the limit must be > 0 ms")
        out.append((name, limit))
    return tuple(out)


OPTIONS = [
    Option("--models", "models", "comma-separated model specs; see `python -m harness model-check`", _csv),
    Option("--engines", "engines", "comma-separated engines (default: each case kind's own list)", _csv),
    Option("--batch-sizes", "batch_sizes", "comma-separated batch sizes, replacing each kind's list", _int_csv),
    Option("--device", "device", "auto (CUDA when present), cpu or cuda"),
    Option("--dtype", "dtype", "float32, bfloat16 or float16 (default: float32 on CPU, bfloat16 on CUDA)"),
    Option("--model-path", "model_path", "a local HF checkpoint folder to use instead of --models"),
    Option("--perf-tier", "tier", "case matrix: quick, default or full", choices=TIERS),
    Option("--perf-rounds", "rounds", "timed rounds per case", _number("--perf-rounds")),
    Option("--perf-warmup", "warmup_rounds", "untimed warm-up rounds per case", _number("--perf-warmup")),
    Option(
        "--perf-min-time",
        "min_time_s",
        "timed rounds span at least this many seconds (more rounds for fast cases)",
        _number("--perf-min-time", float),
    ),
    Option("--perf-strict-health", "strict_health", "refuse to benchmark on an unhealthy GPU", switch="store_true"),
    Option(
        "--kv-cache-mem",
        "kv_cache_mem",
        "paged engine KV pool: bytes (> 1) or a fraction of free memory (<= 1); serving cases default to what "
        "static-batch reserves",
        _number("--kv-cache-mem", float),
    ),
    Option(
        "--preemption",
        "preemption",
        "paged engine: how to preempt when KV blocks run out",
        choices=("recompute", "swap"),
    ),
    Option(
        "--max-batch-size", "max_batch_size", "static-batch: requests per padded batch", _number("--max-batch-size")
    ),
    Option(
        "--max-num-seqs",
        "max_num_seqs",
        "paged (and vllm): most sequences per step; in practice KV memory is the limit (vLLM's default)",
        _number("--max-num-seqs"),
    ),
    Option("--perf-seed", "seed", "seed of the model weights and of the requests", _number("--perf-seed")),
    Option(
        "--request-rate",
        "request_rates",
        "serving: requests per second, arrivals seeded (inf: every request at t=0); a comma-separated list "
        "is a rate sweep, one case per rate (e.g. 0.5,1,2,4,inf)",
        _rates,
    ),
    Option(
        "--workloads",
        "workloads",
        "serving: comma-separated workloads replacing the tier's (README, 'Workloads')",
        _csv,
    ),
    Option(
        "--burstiness",
        "burstiness",
        "serving: gamma shape of the gaps between arrivals (1: Poisson; lower: burstier)",
        _number("--burstiness", float),
    ),
    Option(
        "--max-concurrency",
        "max_concurrency",
        "serving: most requests in flight at once; an arrived request waits for a slot (0: no cap)",
        _number("--max-concurrency"),
    ),
    Option(
        "--goodput",
        "goodput",
        "serving: SLOs in ms, e.g. ttft:2000 tpot:200 e2el:10000; goodput = requests/s meeting all of them",
        _slos,
        many=True,
    ),
    Option("--openai-base-url", "openai_base_url", "openai engine: the server's base URL, e.g. http://127.0.0.1:8000/v1"),
    Option("--openai-model", "openai_model", "openai engine: the served model's name (default: the first it lists)"),
    Option(
        "--openai-prompt",
        "openai_prompt",
        "openai engine: send prompts as token ids, or as text decoded with --model-path's tokenizer",
        choices=("ids", "text"),
    ),
    Option(
        "--engine-module",
        "engine_modules",
        "add an engine class, package.module:Class (repeatable); see README 'Adding an engine'",
        repeat=True,
    ),
    Option(
        "--no-parity",
        "parity",
        "time engines without checking their tokens against HF greedy (for engines that sample)",
        switch="store_false",
    ),
    Option("--perf-baselines-dir", "baselines_dir", "where baselines/<machine slug>/baseline.json live"),
    Option("--perf-results-dir", "results_dir", "where --benchmark-compare saves this run"),
    Option(
        "--perf-strict", "strict", "--benchmark-compare: an inconclusive case fails too (exit 12)", switch="store_true"
    ),
    Option(
        "--perf-require-baseline",
        "require_baseline",
        "--benchmark-compare: no baseline for this machine is an error (exit 11), not a pass",
        switch="store_true",
    ),
    Option(
        "--perf-summary",
        "summary",
        "--benchmark-compare: write the verdicts as markdown to this file (default: $GITHUB_STEP_SUMMARY if set)",
    ),
]
BY_DEST = {o.dest: o for o in OPTIONS}


def add_options(add_argument: Callable, names: list[str] | None = None) -> None:
    """Add the named options (PerfOptions fields; all when None) to a parser or pytest option group."""
    for opt in OPTIONS if names is None else [BY_DEST[n] for n in names]:
        opt.add_to(add_argument)


def options_from(get: Callable[[str], object], names: list[str] | None = None, **overrides) -> PerfOptions:
    """A PerfOptions from parsed values: get(flag) returns what the command line gave for that option."""
    values = {o.dest: o.value(get(o.flag)) for o in (OPTIONS if names is None else [BY_DEST[n] for n in names])}
    return PerfOptions(**{**values, "inject": injection(os.environ), **overrides})


SLOWDOWN_ENV = "PERF_INJECT_SLOWDOWN"  # experiments: slow engine work by this fraction...
CASE_ENV = "PERF_INJECT_CASE"  # ...in the cases whose name contains this (all cases when unset)


def injection(env) -> tuple[float, str]:
    """(fraction, case pattern) asked for by the environment; (0.0, "") when unset."""
    raw = env.get(SLOWDOWN_ENV, "").strip()
    if not raw:
        return 0.0, ""
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{SLOWDOWN_ENV}={raw!r} is not a number (try 0.10 for 10% slower)") from None
    if not 0 <= value < 10:
        raise ConfigError(f"{SLOWDOWN_ENV}={value} must be in [0, 10)")
    return value, env.get(CASE_ENV, "").strip()


def rooted(options: PerfOptions, root: Path) -> PerfOptions:
    """Relative folders and the pyproject, resolved against the project root (pytest's rootdir)."""
    return dataclasses.replace(
        options,
        baselines_dir=str(root / options.baselines_dir),
        results_dir=str(root / options.results_dir),
        pyproject=str(root / options.pyproject),
    )
