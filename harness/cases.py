"""The benchmark matrix: which cases exist, with stable, readable ids.

Parameter lists are appended to, never reordered, so stored baselines keep matching by id.
Tiers: `quick` (the CI gate's set, about a minute on 2 CPU cores), `default` (make bench), `full`
(adds the larger serving workload and longer contexts; for GPUs and nightly runs).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import UnknownNameError

KINDS = ("prefill", "decode", "batching", "generate", "serving")
TIERS = ("quick", "default", "full")


@dataclass(frozen=True)
class Workload:
    """A seeded mixed-length request set for the serving cases."""

    name: str
    num_requests: int
    prompt_range: tuple[int, int]
    output_range: tuple[int, int]
    seed: int = 0


WORKLOADS = {
    w.name: w
    for w in (
        Workload("mixed16", 16, (16, 128), (16, 64)),
        Workload("mixed32", 32, (16, 256), (16, 128)),
        Workload("mixed64", 64, (16, 512), (16, 256)),
    )
}


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

    def __str__(self) -> str:  # how results JSON shows the parameter
        return self.id

    @property
    def id(self) -> str:
        head = f"{self.model}-{self.engine}"
        if self.kind == "prefill":
            return f"{head}-bs{self.batch_size}-prompt{self.prompt_len}"
        if self.kind == "decode":
            return f"{head}-bs{self.batch_size}-ctx{self.context_len}"
        if self.kind == "serving":
            return f"{head}-{self.workload}"
        return f"{head}-bs{self.batch_size}-prompt{self.prompt_len}-new{self.new_tokens}"


# Per kind and tier: default engines, batch sizes and lengths.
MATRIX: dict[str, dict[str, dict]] = {
    "prefill": {
        "quick": {"engines": ["manual", "paged"], "batch_sizes": [1], "prompt_lens": [128]},
        "default": {"engines": ["manual", "paged"], "batch_sizes": [1, 4], "prompt_lens": [32, 256]},
        "full": {"engines": ["manual", "paged"], "batch_sizes": [1, 4, 16], "prompt_lens": [32, 256, 1024]},
    },
    "decode": {
        "quick": {"engines": ["manual", "paged"], "batch_sizes": [1, 8], "context_lens": [128]},
        "default": {"engines": ["manual", "paged"], "batch_sizes": [1, 8], "context_lens": [128, 512]},
        "full": {"engines": ["manual", "paged"], "batch_sizes": [1, 8, 32], "context_lens": [128, 512, 2048]},
    },
    "batching": {
        "quick": {"engines": ["static-batch"], "batch_sizes": [1, 8], "prompt_lens": [32], "new_tokens": [16]},
        "default": {
            "engines": ["static-batch", "paged"],
            "batch_sizes": [1, 2, 4, 8, 16],
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
    "generate": {
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
    "serving": {
        "quick": {"engines": ["paged"], "workloads": ["mixed16"]},
        "default": {"engines": ["static-batch", "paged"], "workloads": ["mixed16"]},
        "full": {"engines": ["static-batch", "paged", "transformers-cb"], "workloads": ["mixed64"]},
    },
}


def build_cases(
    kind: str, tier: str, models: list[str], engines: list[str] | None, batch_sizes: list[int] | None, engine_ok
) -> list[Case]:
    """Cases of one kind. `engines`/`batch_sizes` override the tier's; `engine_ok(name, kind)` filters
    engines that cannot run this kind (an engine without decode_case has no decode cases)."""
    if kind not in MATRIX:
        raise UnknownNameError("case kind", kind, list(MATRIX))
    if tier not in TIERS:
        raise UnknownNameError("tier", tier, list(TIERS))
    m = MATRIX[kind][tier]
    chosen = [e for e in (engines or m["engines"]) if engine_ok(e, kind)]
    cases = []
    for model in models:
        for engine in chosen:
            if kind == "serving":
                cases += [Case(kind, model, engine, workload=w) for w in m["workloads"]]
                continue
            for bs in batch_sizes or m["batch_sizes"]:
                if kind == "prefill":
                    cases += [Case(kind, model, engine, bs, prompt_len=n) for n in m["prompt_lens"]]
                elif kind == "decode":
                    cases += [Case(kind, model, engine, bs, context_len=n) for n in m["context_lens"]]
                else:
                    cases += [
                        Case(kind, model, engine, bs, prompt_len=p, new_tokens=t)
                        for p in m["prompt_lens"]
                        for t in m["new_tokens"]
                    ]
    return cases
