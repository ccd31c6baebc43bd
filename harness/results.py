"""The typed record of one timed case, and a results file of them.

CaseResult holds everything a case records; on disk it is pytest-benchmark's `extra_info` with the
same key names as before this module existed, so stored baselines load unchanged. The bench writes
it; the gate, the baseline recorder, the report and the gate experiment read it. Adding a metric
means one field here (README, "Adding a metric"). Keys a file holds that this version does not
know are kept in `extra` and written back, so nothing is lost.

ResultsFile is one pytest-benchmark JSON document: machine_info and one BenchRecord (name, raw
round times, CaseResult) per case; it loads with errors that name the file and saves atomically.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import BaselineError
from harness.files import read_json, write_json_atomic


@dataclass
class CaseResult:
    # what was timed
    kind: str = ""
    model: str = ""
    engine: str = ""
    device: str = ""
    dtype: str = ""
    batch_size: int = 1
    prompt_len: int = 0
    context_len: int = 0
    new_tokens: int = 0
    workload: str = ""
    tokens: float = 0  # tokens one round produces (prefill: prompt tokens; otherwise generated tokens)
    tokens_per_s: float | None = None  # tokens / median round time (harness/roofline.py, tokens_per_s)
    median_ms: float | None = None
    # the machine's ceilings this case was held against
    peak_bw_gbps: float | None = None
    peak_bw_source: str | None = None
    peak_tflops: float | None = None
    peak_flops_source: str | None = None
    theoretical_bw_gbps: float | None = None
    measured_bw_gbps: float | None = None  # copy: bytes read + written
    measured_read_bw_gbps: float | None = None  # reading a buffer 4x the last-level cache
    llc_mb: float | None = None
    theoretical_tflops: float | None = None
    measured_tflops: float | None = None
    bw_warning: str | None = None
    gpu_healthy: bool | None = None
    health_problems: list[str] | None = None
    # roofline (harness/roofline.py, utilisation)
    roofline_ms: float | None = None
    pct_of_roofline: float | None = None
    bound: str | None = None
    arith_intensity: float | None = None
    flops: float | None = None
    bytes_moved: float | None = None
    achieved_gbps: float | None = None
    achieved_tflops: float | None = None
    mbu: float | None = None
    mfu: float | None = None
    working_set_mb: float | None = None  # weights + the KV the case holds at its largest (an upper bound)
    fits_llc: bool | None = None  # the working set fits in the last-level cache: reads may beat DRAM
    roofline_note: str | None = None  # why a case shows more than 100% of its roofline
    # memory
    peak_rss_mb: float | None = None  # CPU: the process's peak resident set during the case's rounds
    peak_gpu_mem_mb: float | None = None  # GPU: torch's peak allocated bytes during the rounds
    peak_gpu_reserved_mb: float | None = None
    kv_pool_mb: float | None = None  # the KV memory the engine held (kv_pool_tokens x bytes per token)
    # phases
    prefill_ms: float | None = None
    decode_ms: float | None = None
    decode_ms_per_token: float | None = None
    decode_step_ms: list[float] | None = None  # every decode step of the last round
    # requests (generate, batching, serving)
    num_requests: int | None = None
    failed_requests: int | None = None
    output_check: str | None = None
    ttft_ms_p50: float | None = None
    ttft_ms_p99: float | None = None
    tpot_ms_p50: float | None = None
    tpot_ms_p99: float | None = None
    latency_ms_p50: float | None = None  # E2EL, its older name
    latency_ms_p99: float | None = None
    # serving under load (vLLM's definitions; GenerateResult.latency_summary)
    ttft_ms_mean: float | None = None
    ttft_ms_p90: float | None = None
    tpot_ms_mean: float | None = None
    tpot_ms_p90: float | None = None
    itl_ms_mean: float | None = None
    itl_ms_p50: float | None = None
    itl_ms_p90: float | None = None
    itl_ms_p99: float | None = None
    e2el_ms_mean: float | None = None
    e2el_ms_p50: float | None = None
    e2el_ms_p90: float | None = None
    e2el_ms_p99: float | None = None
    request_throughput: float | None = None  # finished requests per second of the round
    output_throughput: float | None = None  # output tokens per second of the round
    goodput: float | None = None  # requests per second that met every --goodput SLO
    slo_attainment: float | None = None  # the fraction of requests that met every --goodput SLO
    slo_ms: dict[str, float] | None = None  # the --goodput SLOs, ms by metric: {"ttft": 2000, "tpot": 200}
    round_latency: dict[str, list[float]] | None = None  # serving: the gated latency metrics of every timed round
    request_rate: float | None = None  # the offered load (None: every request at once)
    burstiness: float | None = None
    max_concurrency: int | None = None
    # engine metrics (GenerateResult.metrics)
    kv_utilisation: float | None = None
    preemptions: float | None = None
    swaps: float | None = None
    prefix_cache_hit_tokens: float | None = None
    kv_pool_blocks: float | None = None
    kv_pool_tokens: float | None = None
    num_batches: float | None = None
    max_running_seqs: float | None = None  # most sequences in one step: the concurrency its KV memory allowed
    # work, counted (harness/engines/work.py): once per case, the same in every round of a deterministic engine
    work: dict[str, int] | None = None
    work_unsteady: bool | None = None  # the rounds' counters differed: not deterministic, not gated
    seed: int | None = None  # --perf-seed: work is compared only between runs of the same seed
    timeline: dict | None = None  # serving: the last round's requests, ms from its start (harness/trace.py)
    # GPU, sampled through NVML while the case ran
    gpu_util_pct: float | None = None
    mem_util_pct: float | None = None
    power_w: float | None = None
    sm_clock_mhz_min: float | None = None
    temperature_c_max: float | None = None
    j_per_token: float | None = None
    # machine speed: the reference forward timed before and after the case (harness/timer.py)
    reference_ms: list[float] | None = None
    reference_shape: list[int] | None = None
    own_forward: bool | None = None  # the engine runs its own forward, not HF's: the reference may correct it
    # a baseline pooled from several runs (harness/baseline/record.py)
    baseline_runs: int | None = None
    run_tok_s: list[float] | None = None
    run_reference_ms: list[float] | None = None
    run_latency: dict[str, list[float]] | None = None  # each run's median of every round_latency metric
    run_round_counts: list[int] | None = None  # each run's number of rounds, in order (the rounds are pooled)
    extra: dict = field(default_factory=dict)  # keys this version does not know, kept as they were

    @classmethod
    def from_extra_info(cls, info: dict) -> CaseResult:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(
            **{k: v for k, v in info.items() if k in known}, extra={k: v for k, v in info.items() if k not in known}
        )

    def to_extra_info(self) -> dict:
        """The extra_info dict: every field that is set, the fields every case records even when empty
        (ALWAYS, as null), plus `extra`. Other unset fields are left out (a decode case has no TTFT)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **{k: v for k, v in out.items() if v is not None or k in ALWAYS}}

    def update(self, values: dict) -> None:
        """Set fields from a dict of metrics (an engine's, a sampler's); unknown names go to `extra`."""
        for key, value in values.items():
            if key != "extra" and hasattr(self, key):
                setattr(self, key, value)
            else:
                self.extra[key] = value

    @property
    def reference_median_ms(self) -> float | None:
        return statistics.median(self.reference_ms) if self.reference_ms else None

    @property
    def pooled_run_tok_s(self) -> list[float]:
        """Each pooled baseline run's median tokens/s ([] unless two or more runs were pooled)."""
        runs = self.run_tok_s or []
        return [float(x) for x in runs] if len(runs) >= 2 else []


# What every case records, null when it does not apply here (no NVML peak on a CPU): the case's
# identity, its throughput and the machine's ceilings and health.
ALWAYS = frozenset(
    (
        *("kind", "model", "engine", "device", "dtype", "batch_size", "prompt_len", "context_len", "new_tokens"),
        *("workload", "tokens", "tokens_per_s", "median_ms", "peak_bw_gbps", "peak_bw_source", "peak_tflops"),
        *("peak_flops_source", "theoretical_bw_gbps", "measured_bw_gbps", "theoretical_tflops", "measured_tflops"),
        *("bw_warning", "gpu_healthy", "health_problems"),
    )
)
assert ALWAYS <= {f.name for f in dataclasses.fields(CaseResult)}


# The latency metrics a serving case keeps for every timed round (CaseResult.round_latency), so the gate
# can test them like throughput: lower is better for the first two, higher for goodput.
ROUND_LATENCY = ("ttft_ms_p99", "tpot_ms_p99", "goodput")


def round_latency(summaries: list[dict[str, float]]) -> dict[str, list[float]] | None:
    """ROUND_LATENCY's values of every round (GenerateResult.latency_summary), for the metrics every round has."""
    out = {k: [s[k] for s in summaries] for k in ROUND_LATENCY if summaries and all(k in s for s in summaries)}
    return out or None


@dataclass
class BenchRecord:
    """One case of a results file: pytest-benchmark's name and raw round times, and its CaseResult."""

    name: str
    rounds_s: list[float]
    result: CaseResult
    raw: dict = field(default_factory=dict)  # the rest of pytest-benchmark's entry, written back as it was

    @property
    def group(self) -> str:
        """The case kind (test_<kind>[...] when an old file did not record it)."""
        return self.result.kind or self.name.split("[")[0].removeprefix("test_")

    def round_tok_s(self) -> list[float]:
        """tokens / seconds for every timed round: each round does the same fixed work."""
        return [self.result.tokens / s for s in self.rounds_s]

    @property
    def median_tok_s(self) -> float:
        return statistics.median(self.round_tok_s())

    @classmethod
    def from_dict(cls, bench: dict) -> BenchRecord:
        return cls(
            bench["name"],
            list(bench["stats"]["data"]),
            CaseResult.from_extra_info(bench.get("extra_info") or {}),
            {k: v for k, v in bench.items() if k not in ("name", "extra_info")},
        )

    def to_dict(self) -> dict:
        stats = {**self.raw.get("stats", {}), "data": self.rounds_s}
        return {**self.raw, "name": self.name, "stats": stats, "extra_info": self.result.to_extra_info()}


@dataclass
class ResultsFile:
    machine_info: dict
    benches: list[BenchRecord]
    raw: dict = field(default_factory=dict)  # pytest-benchmark's other top-level keys

    @property
    def slug(self) -> str | None:
        return (self.machine_info or {}).get("slug")

    def by_name(self) -> dict[str, BenchRecord]:
        return {b.name: b for b in self.benches}

    def get(self, name: str) -> BenchRecord | None:
        return self.by_name().get(name)

    def add(self, bench: BenchRecord) -> None:
        """Add a case, replacing one of the same name."""
        self.benches = [b for b in self.benches if b.name != bench.name] + [bench]

    @classmethod
    def coerce(cls, doc: ResultsFile | dict) -> ResultsFile:
        return doc if isinstance(doc, ResultsFile) else cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: dict, source: str = "results") -> ResultsFile:
        if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
            raise BaselineError(f"{source}: not a pytest-benchmark results file (no 'benchmarks' list)")
        if not doc["benchmarks"]:
            raise BaselineError(f"{source}: holds no cases (every case failed or none was selected)")
        for i, bench in enumerate(doc["benchmarks"]):
            problem = _bench_problem(bench)
            if problem:
                name = bench.get("name", "?") if isinstance(bench, dict) else "?"
                raise BaselineError(f"{source}: benchmark #{i} ({name}) {problem}")
        return cls(
            dict(doc.get("machine_info") or {}),
            [BenchRecord.from_dict(b) for b in doc["benchmarks"]],
            {k: v for k, v in doc.items() if k not in ("machine_info", "benchmarks")},
        )

    def to_dict(self) -> dict:
        return {**self.raw, "machine_info": self.machine_info, "benchmarks": [b.to_dict() for b in self.benches]}

    @classmethod
    def load(cls, path: str | Path) -> ResultsFile:
        """A pytest-benchmark JSON document with raw rounds; anything else is a BaselineError naming the file."""
        doc = read_json(path)
        return cls.from_dict(doc, str(path))

    def save(self, path: str | Path) -> None:
        write_json_atomic(Path(path), self.to_dict())


def _bench_problem(bench: object) -> str | None:
    if not isinstance(bench, dict) or "name" not in bench:
        return "is not an object with a name"
    data = (bench.get("stats") or {}).get("data")
    if not data:
        return "has no raw rounds (stats.data): record with --benchmark-save-data (the suite's default)"
    tokens = (bench.get("extra_info") or {}).get("tokens")
    if isinstance(tokens, bool) or not isinstance(tokens, int | float):
        return "has no extra_info.tokens: it was not recorded by llm-perf-suite"
    return None
