"""What an engine is and what it returns.

The Engine protocol. A class joins the suite when it has:

  name: str                                     the id used in --perf-engines and in case ids
  __init__(self, loaded: LoadedModel, config: EngineConfig)
                                                built once per model, outside any timed region
  generate(self, requests) -> GenerateResult    required: greedy-decode every Request (exactly
                                                max_new_tokens tokens when config.ignore_eos), one
                                                RequestOutput per request, in request order, with
                                                token_ids and timestamps (arrival, first token,
                                                finish) on one monotonic clock (time.perf_counter)

and may have:

  prefill_case(batch_size, prompt_len, seed) -> StepCase   joins the prefill cases
  decode_case(batch_size, context_len, seed) -> StepCase   joins the decode cases
  prepare(requests)                    untimed set-up for a workload (start threads, size caches)
  close()                              release threads/memory when the suite is done with it
  unavailable_reason(device) -> str | None   (staticmethod) why it cannot run here; its cases skip
  teacher_forced_logits(requests, continuations) -> list[Tensor]   its logits, fed the given tokens:
                                       checked against HF's (harness/correctness/)
  keep_logits: bool = False            set by the check while it runs the probe: an engine may then
                                       keep the logits it picked each token from and answer
                                       teacher_forced_logits for those same tokens with them
  own_forward: bool = False            True when its forward is its own code, not HF's model forward:
                                       only then does the gate correct it by the reference forward

Before any of an engine's cases are timed, its greedy output on a probe workload must equal HF
greedy's, and so must every round of its timed cases (harness/correctness/); --perf-no-parity turns
that off.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from harness.workloads import Request

if TYPE_CHECKING:
    import torch

    from harness.models import LoadedModel


@dataclass
class RequestOutput:
    """One request's tokens and timestamps (seconds on one monotonic clock)."""

    request_id: int
    prompt_len: int
    token_ids: list[int] = field(default_factory=list)
    arrival_s: float = 0.0
    first_token_s: float | None = None
    finish_s: float | None = None
    error: str | None = None  # set when the engine could not serve this request; the others go on
    token_times: list[float] = field(default_factory=list)  # when each token reached the caller, where known

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.arrival_s

    @property
    def tpot_s(self) -> float | None:
        """Mean time per output token after the first (vLLM's TPOT)."""
        if self.first_token_s is None or self.finish_s is None or len(self.token_ids) < 2:
            return None
        return (self.finish_s - self.first_token_s) / (len(self.token_ids) - 1)

    @property
    def latency_s(self) -> float | None:
        """End-to-end latency (vLLM's E2EL): arrival to the last token."""
        return None if self.finish_s is None else self.finish_s - self.arrival_s

    @property
    def itl_s(self) -> list[float]:
        """Inter-token latencies: the gaps between consecutive arrivals of tokens. Tokens that arrive
        together (one streamed chunk, one engine output) share a stamp and count once, as vLLM's
        benchmark counts one ITL per chunk."""
        return [b - a for a, b in zip(self.token_times, self.token_times[1:], strict=False) if b > a]

    def meets(self, slo_ms: dict[str, float]) -> bool:
        """Whether this request met every SLO (DistServe's goodput): ttft, tpot, e2el in ms."""
        values = {"ttft": self.ttft_s, "tpot": self.tpot_s, "e2el": self.latency_s}

        def within(name: str, limit_ms: float) -> bool:
            if values[name] is None:
                return name == "tpot"  # a one-token request has no TPOT, so nothing to miss
            return values[name] * 1e3 <= limit_ms

        return self.error is None and all(within(k, limit) for k, limit in slo_ms.items())


@dataclass
class GenerateResult:
    outputs: list[RequestOutput]
    elapsed_s: float
    metrics: dict[str, float] = field(default_factory=dict)  # engine metrics: kv_utilisation, preemptions...
    phase_ms: dict[str, float] = field(default_factory=dict)  # prefill_ms, decode_ms_per_token where known
    step_ms: list[float] = field(default_factory=list)  # per decode step, where the engine clocks steps
    work: dict[str, int] | None = None  # what the round did, counted (harness/engines/work.py); None: not counted
    steps: list | None = None  # the engine's steps (harness/trace.py StepEvent), where traced; None: not recorded
    start_s: float | None = None  # when the round started, on the clock of the outputs' stamps

    @property
    def generated_tokens(self) -> int:
        return sum(len(o.token_ids) for o in self.outputs)

    def latency_summary(self, slo_ms: dict[str, float] | None = None) -> dict[str, float]:
        """vLLM's serving metrics over the requests that finished, in ms: TTFT, TPOT, ITL (every gap
        between consecutive tokens, pooled over requests) and E2EL, each as mean, p50, p90 and p99
        (E2EL also under its older name latency_ms_*); request and output-token throughput; and, with
        SLOs, goodput: requests per second that met every one of them."""
        done = [o for o in self.outputs if o.error is None]
        series = {
            "ttft": [o.ttft_s for o in done if o.ttft_s is not None],
            "tpot": [o.tpot_s for o in done if o.tpot_s is not None],
            "itl": [gap for o in done for gap in o.itl_s],
            "e2el": [o.latency_s for o in done if o.latency_s is not None],
        }
        summary: dict[str, float] = {}
        for name, seconds in series.items():
            if seconds:
                values = [v * 1e3 for v in seconds]
                summary[f"{name}_ms_mean"] = statistics.fmean(values)
                for pct in (50, 90, 99):
                    summary[f"{name}_ms_p{pct}"] = percentile(values, pct)
        if "e2el_ms_p50" in summary:
            summary["latency_ms_p50"], summary["latency_ms_p99"] = summary["e2el_ms_p50"], summary["e2el_ms_p99"]
        if self.elapsed_s > 0:
            summary["request_throughput"] = len(done) / self.elapsed_s
            summary["output_throughput"] = sum(len(o.token_ids) for o in done) / self.elapsed_s
            if slo_ms:
                met = sum(o.meets(slo_ms) for o in done)
                summary["goodput"] = met / self.elapsed_s
                summary["slo_attainment"] = met / len(self.outputs)
        return summary


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (numpy's default method), without numpy for bookkeeping code."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * pct / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class EngineConfig:
    """Options every engine receives; each engine reads the ones that apply to it."""

    ignore_eos: bool = True
    max_batch_size: int = 16  # static-batch: requests per padded batch
    max_num_seqs: int = 256  # continuous batching (paged, vllm): most sequences in one step; vLLM's default
    block_size: int = 16
    kv_cache_mem: float | None = None  # paged: bytes (> 1) or a fraction of free memory (<= 1)
    preemption: str = "recompute"
    max_num_batched_tokens: int = 4096
    enable_prefix_caching: bool = True
    slowdown: float = 0.0  # PERF_INJECT_SLOWDOWN: extra work, proportional to real work
    max_concurrency: int = 0  # most requests in flight at once (--max-concurrency; 0: no cap)
    openai_base_url: str | None = None  # openai: the server, e.g. http://127.0.0.1:8000/v1
    openai_model: str | None = None  # openai: the served model's name (None: the first the server lists)
    openai_prompt: str = "ids"  # openai: prompts as token ids, or as text through --perf-model-path's tokenizer
    trace: bool = False  # record each step for the trace (--perf-trace); engines that cannot, ignore it
    compile: bool = False  # paged, manual on CPU: compiled single-row products, block-table attention (--perf-compile)
    cuda_graphs: bool = False  # paged: decode steps replayed from CUDA graphs, per batch bucket (--perf-cuda-graphs)


@dataclass
class StepCase:
    """A prefill or decode case: `setup` (untimed) then `run` (timed) does the same work every round."""

    run: Callable[[], object]
    setup: Callable[[], object] | None = None
    teardown: Callable[[], object] | None = None  # after timing: give back what the case holds


@runtime_checkable
class Engine(Protocol):
    name: str

    def generate(self, requests: Sequence[Request]) -> GenerateResult:
        """Greedy-decode every request (exactly max_new_tokens tokens when ignore_eos)."""


@runtime_checkable
class StepEngine(Engine, Protocol):
    def prefill_case(self, batch_size: int, prompt_len: int, seed: int = 0) -> StepCase: ...

    def decode_case(self, batch_size: int, context_len: int, seed: int = 0) -> StepCase: ...


class BaseEngine:
    """The shared constructor and the optional methods, doing nothing, of every engine.

    Built-in engines subclass it; an engine from elsewhere that does not is given it as a mixin when
    it is loaded (as_engine_class), so the suite calls prepare/close/unavailable_reason on any engine
    without probing for them. teacher_forced_logits is None where an engine cannot give its logits."""

    name: str = ""
    own_forward: bool = False  # True when its forward is its own code, not HF's (see the module docstring)
    takes_arrivals: bool = False  # generate() honours Request.arrival_offset_s and config.max_concurrency
    teacher_forced_logits: Callable | None = None
    keep_logits: bool = False  # the output check's probe is running (see the module docstring)
    counts_flops: bool = False  # its unit runs here, op by op on the calling thread: flops can count it

    def __init__(self, loaded: LoadedModel, config: EngineConfig) -> None:
        self.loaded, self.config = loaded, config
        self.model, self.device, self.spec = loaded.model, loaded.device, loaded.spec
        self.eos_token_id = loaded.spec.eos_token_id
        from harness.timing import WorkClock  # torch: not imported with the protocol (the bookkeeping has none)

        self.clock = WorkClock(loaded.device, config.slowdown)  # PERF_INJECT_SLOWDOWN's extra work

    @staticmethod
    def unavailable_reason(device: torch.device) -> str | None:
        """Why the engine cannot run on `device` (its cases skip with this), or None."""
        return None

    def prepare(self, requests: Sequence[Request]) -> None:
        """Untimed set-up for a workload (threads, caches sized for it)."""

    def close(self) -> None:
        """Give back threads, processes and memory when the suite is done with the engine."""

    def generate(self, requests: Sequence[Request]) -> GenerateResult:
        raise NotImplementedError


def as_engine_class(cls: type) -> type:
    """`cls` with BaseEngine's defaults behind its own methods (an engine written without the base)."""
    if issubclass(cls, BaseEngine):
        return cls
    return type(cls.__name__, (cls, BaseEngine), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
