"""The case-kind registry: which cases exist, how each is named, what work it does and what it costs.

A kind is one CaseKind object: its matrix per tier, its id format, how it builds its cases, the
requests it sends (generate kinds), its roofline cost, the shape of its machine-speed reference
forward, and whether it times one step (prefill, decode) or whole requests. Everything else (the
plugin, the bench, the report) looks kinds up in KINDS; adding a kind is one object here plus its
perf_tests/test_<kind>.py (README, "Adding a case kind").

Parameter lists are appended to, never reordered, so stored baselines keep matching by id.
Tiers: `quick` (the CI gate's set, about a minute on 2 CPU cores), `default` (make bench), `full`
(adds the larger serving workload and longer contexts; for GPUs and nightly runs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from harness import roofline
from harness.arrivals import AT_ONCE, Load
from harness.engines.base import EngineConfig
from harness.errors import UnknownNameError
from harness.specs import ModelSpec
from harness.workloads import WORKLOADS, Request, fixed_requests

TIERS = ("quick", "default", "full")
NEWER_WORKLOADS = ["prefix16", "conv16"]  # appended to the full tier after mixed64: stored ids keep matching
REFERENCE_MAX_TOKENS = 128  # the largest reference forward (see CaseKind.reference_shape)


@dataclass(frozen=True)
class Case:
    kind: str
    model: str
    engine: str
    batch_size: int = 1
    prompt_len: int = 0
    context_len: int = 0
    new_tokens: int = 0
    workload: str = ""
    load: Load = AT_ONCE  # serving: how the requests arrive (harness/arrivals.py)

    def __str__(self) -> str:  # how results JSON shows the parameter
        return self.id

    @property
    def id(self) -> str:
        return get_kind(self.kind).case_id(self)


@dataclass(frozen=True)
class CaseKind:
    """One kind of case. Subclasses say how its cases are built, named, fed and costed."""

    name: str
    matrix: dict[str, dict] = field(repr=False)  # tier -> engines, batch sizes, lengths...
    step: bool = False  # timed as one step through the engine's `<name>_case`; else through generate()
    marker: str = "o"  # its points in the report's roofline figure

    def case_id(self, case: Case) -> str:
        return f"{case.model}-{case.engine}-bs{case.batch_size}-prompt{case.prompt_len}-new{case.new_tokens}"

    def sizes(self, tier: str) -> list[dict]:
        """The non-engine parameters of this kind's cases in a tier, in a stable order."""
        m = self.matrix[tier]
        return [{"prompt_len": p, "new_tokens": t} for p in m["prompt_lens"] for t in m["new_tokens"]]

    def cases(self, tier: str, model: str, engines: list[str], batch_sizes: list[int] | None, **serving) -> list[Case]:
        """This kind's cases in a tier; `serving` (loads, workloads) applies to kinds whose requests arrive
        over time (ServingKind)."""
        return [
            Case(self.name, model, engine, bs, **sizes)
            for engine in engines
            for bs in batch_sizes or self.matrix[tier]["batch_sizes"]
            for sizes in self.sizes(tier)
        ]

    def requests(self, case: Case, vocab_size: int, seed: int, tokenizer=None) -> list[Request]:
        """The requests one round sends (generate kinds); `tokenizer`, for workloads of real text."""
        return fixed_requests(case.batch_size, case.prompt_len, case.new_tokens, vocab_size, seed=seed)

    def step_tokens(self, case: Case) -> int:
        """Tokens one round of a step case produces (its throughput's numerator)."""
        raise NotImplementedError(f"{self.name} cases are not step cases")

    def step_case(self, engine, case: Case, seed: int):
        """The engine's StepCase for a step kind: engine.<kind>_case(batch_size, length, seed)."""
        raise NotImplementedError(f"{self.name} cases are not step cases")

    def cost(self, spec: ModelSpec, dtype: str, case: Case, requests: list[Request], config: EngineConfig):
        """The roofline work of one round (harness/roofline.py); `config` gives the engines' step limits."""
        return roofline.generation_cost(spec, dtype, case.prompt_len, case.new_tokens, case.batch_size)

    def held_tokens(self, case: Case, requests: list[Request]) -> int:
        """KV tokens the case holds at its largest: every request at its full length."""
        return case.batch_size * (case.prompt_len + case.new_tokens)

    def reference_shape(self, case: Case) -> tuple[int, int]:
        """(rows, tokens) of the reference forward timed beside a case: the shape of the forwards the case
        spends its time in, so the reference meets the same kernels and a busy neighbour slows both
        alike. Measured on the 2-core host: a 1 x 8 reference for every case cut the run-to-run spread
        of bs8 and prefill cases (9-16% -> 3-7%) but raised it for batch-1 decode (3-5% -> 7-9%).
        Generation is mostly decode steps: batch x 1."""
        return case.batch_size, 1

    @property
    def equal_kv_memory(self) -> bool:
        """Engines that size their own KV pool get what static-batch reserves for the same requests."""
        return False

    keeps_round_latency = False  # its cases record every round's latency metrics (CaseResult.round_latency)


class PrefillKind(CaseKind):
    def case_id(self, case: Case) -> str:
        return f"{case.model}-{case.engine}-bs{case.batch_size}-prompt{case.prompt_len}"

    def sizes(self, tier: str) -> list[dict]:
        return [{"prompt_len": n} for n in self.matrix[tier]["prompt_lens"]]

    def step_tokens(self, case: Case) -> int:
        return case.batch_size * case.prompt_len

    def step_case(self, engine, case: Case, seed: int):
        return engine.prefill_case(case.batch_size, case.prompt_len, seed=seed)

    def cost(self, spec, dtype, case, requests, config):
        return roofline.prefill_cost(spec, dtype, case.batch_size, case.prompt_len)

    def held_tokens(self, case: Case, requests: list[Request]) -> int:
        return case.batch_size * case.prompt_len

    def reference_shape(self, case: Case) -> tuple[int, int]:
        """The prompt, capped at REFERENCE_MAX_TOKENS: by then the forward is a compute-bound GEMM
        already, and a 4 x 256 one would cost seconds per case."""
        if case.batch_size * case.prompt_len <= REFERENCE_MAX_TOKENS:
            return case.batch_size, case.prompt_len
        return 1, REFERENCE_MAX_TOKENS


class DecodeKind(CaseKind):
    def case_id(self, case: Case) -> str:
        return f"{case.model}-{case.engine}-bs{case.batch_size}-ctx{case.context_len}"

    def sizes(self, tier: str) -> list[dict]:
        return [{"context_len": n} for n in self.matrix[tier]["context_lens"]]

    def step_tokens(self, case: Case) -> int:
        return case.batch_size

    def step_case(self, engine, case: Case, seed: int):
        return engine.decode_case(case.batch_size, case.context_len, seed=seed)

    def cost(self, spec, dtype, case, requests, config):
        return roofline.decode_cost(spec, dtype, case.batch_size, case.context_len)

    def held_tokens(self, case: Case, requests: list[Request]) -> int:
        return case.batch_size * (case.context_len + 1)


class ServingKind(CaseKind):
    def case_id(self, case: Case) -> str:
        return f"{case.model}-{case.engine}-{case.workload}{case.load.suffix()}"

    def cases(self, tier, model, engines, batch_sizes, loads: list[Load] | None = None, workloads=None) -> list[Case]:
        """One case per engine, workload and load: several loads (a list of --request-rate) are a rate
        sweep, each rate its own case, so each is timed, checked and gated like any other."""
        for name in workloads or []:
            if name not in WORKLOADS:
                raise UnknownNameError("workload", name, list(WORKLOADS))
        return [
            Case(self.name, model, e, workload=w, load=load)
            for e in engines
            for w in workloads or self.matrix[tier]["workloads"]
            for load in loads or [AT_ONCE]
        ]

    def requests(self, case: Case, vocab_size: int, seed: int, tokenizer=None) -> list[Request]:
        """The workload's requests, each with its arrival time under the case's load (seeded: fixed work)."""
        requests = WORKLOADS[case.workload].requests(vocab_size, tokenizer)
        offsets = case.load.offsets(len(requests), seed)
        return [dataclasses.replace(r, arrival_offset_s=t) for r, t in zip(requests, offsets, strict=True)]

    def cost(self, spec, dtype, case, requests, config):
        lengths = [(len(r.prompt_ids), r.max_new_tokens) for r in requests]
        most_per_step = max(config.max_batch_size, config.max_num_seqs)  # static-batch's or paged's, whichever is more
        return roofline.serving_cost(spec, dtype, lengths, most_per_step, config.max_num_batched_tokens)

    def held_tokens(self, case: Case, requests: list[Request]) -> int:
        return sum(len(r.prompt_ids) + r.max_new_tokens for r in requests)

    def reference_shape(self, case: Case) -> tuple[int, int]:
        """A serving case mixes prefills and decodes of many sizes: a small 1 x 8 forward."""
        return 1, 8

    @property
    def equal_kv_memory(self) -> bool:
        return True

    keeps_round_latency = True


PREFILL = PrefillKind(
    "prefill",
    {
        "quick": {"engines": ["manual", "paged"], "batch_sizes": [1], "prompt_lens": [128]},
        "default": {"engines": ["manual", "paged"], "batch_sizes": [1, 4], "prompt_lens": [32, 256]},
        "full": {"engines": ["manual", "paged"], "batch_sizes": [1, 4, 16], "prompt_lens": [32, 256, 1024]},
    },
    step=True,
    marker="o",
)
DECODE = DecodeKind(
    "decode",
    {
        "quick": {"engines": ["manual", "paged"], "batch_sizes": [1, 8], "context_lens": [128]},
        "default": {"engines": ["manual", "paged"], "batch_sizes": [1, 8], "context_lens": [128, 512]},
        "full": {"engines": ["manual", "paged"], "batch_sizes": [1, 8, 32], "context_lens": [128, 512, 2048]},
    },
    step=True,
    marker="s",
)
BATCHING = CaseKind(
    "batching",
    {
        "quick": {"engines": ["static-batch"], "batch_sizes": [1, 8], "prompt_lens": [32], "new_tokens": [16]},
        "default": {
            "engines": ["static-batch", "paged"],
            "batch_sizes": [1, 4, 16],
            "prompt_lens": [32],
            "new_tokens": [32],
        },
        "full": {
            "engines": ["static-batch", "paged"],
            "batch_sizes": [1, 2, 4, 8, 16, 32, 64],
            "prompt_lens": [128],
            "new_tokens": [128],
        },
    },
    marker="^",
)
GENERATE = CaseKind(
    "generate",
    {
        "quick": {"engines": ["manual", "paged"], "batch_sizes": [1], "prompt_lens": [32], "new_tokens": [32]},
        "default": {
            "engines": ["hf-generate", "manual", "static-batch", "paged"],
            "batch_sizes": [1],
            "prompt_lens": [32],
            "new_tokens": [32],
        },
        "full": {
            "engines": ["hf-generate", "manual", "static-batch", "paged"],
            "batch_sizes": [1, 4],
            "prompt_lens": [128],
            "new_tokens": [256],
        },
    },
    marker="D",
)
SERVING = ServingKind(
    "serving",
    {
        "quick": {"engines": ["paged"], "workloads": ["mixed16"]},
        "default": {"engines": ["static-batch", "paged"], "workloads": ["mixed16"]},
        "full": {"engines": ["static-batch", "paged", "transformers-cb"], "workloads": ["mixed64", *NEWER_WORKLOADS]},
    },
    marker="*",
)

KINDS: dict[str, CaseKind] = {k.name: k for k in (PREFILL, DECODE, BATCHING, GENERATE, SERVING)}


def get_kind(name: str) -> CaseKind:
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownNameError("case kind", name, list(KINDS)) from None


def build_cases(
    kind: str,
    tier: str,
    models: list[str],
    engines: list[str] | None,
    batch_sizes: list[int] | None,
    engine_ok,
    loads: list[Load] | None = None,
    workloads: list[str] | None = None,
    plugins: list[str] = (),
) -> list[Case]:
    """Cases of one kind. `engines`/`batch_sizes` override the tier's; without `engines`, the tier's
    engines and every plug-in engine (`plugins`: by entry point or --perf-engine-module). `engine_ok(name,
    kind)` filters engines that cannot run this kind (an engine without decode_case has no decode cases);
    `loads` are the serving cases' arrival processes (one case each) and `workloads` replace the tier's."""
    k = get_kind(kind)
    if tier not in TIERS:
        raise UnknownNameError("tier", tier, list(TIERS))
    default = [*k.matrix[tier]["engines"], *(p for p in plugins if p not in k.matrix[tier]["engines"])]
    chosen = [e for e in (engines or default) if engine_ok(e, k)]
    serving = {"loads": loads, "workloads": workloads} if isinstance(k, ServingKind) else {}
    return [case for model in models for case in k.cases(tier, model, chosen, batch_sizes, **serving)]
