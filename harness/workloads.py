"""Seeded request sets. Token ids only: no tokenizer is needed to time a model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Request:
    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    priority: int = 0  # lower value is served first (vLLM's convention)
    request_id: int = 0
    arrival_offset_s: float = 0.0  # when it arrives, seconds after the round starts (harness/arrivals.py)

    def __post_init__(self) -> None:
        if not self.prompt_ids:
            raise ValueError(f"request {self.request_id}: empty prompt")
        if self.max_new_tokens < 1:
            raise ValueError(f"request {self.request_id}: max_new_tokens must be >= 1, got {self.max_new_tokens}")


def _prompt(rng: np.random.Generator, length: int, vocab_size: int) -> tuple[int, ...]:
    return tuple(int(t) for t in rng.integers(1, vocab_size, size=length))


def fixed_requests(num: int, prompt_len: int, new_tokens: int, vocab_size: int, seed: int = 0) -> list[Request]:
    """`num` requests of identical lengths: the same fixed work every round."""
    rng = np.random.default_rng(seed)
    return [Request(_prompt(rng, prompt_len, vocab_size), new_tokens, request_id=i) for i in range(num)]


def mixed_requests(
    num: int, prompt_range: tuple[int, int], output_range: tuple[int, int], vocab_size: int, seed: int = 0
) -> list[Request]:
    """Prompt and output lengths drawn uniformly from the inclusive ranges: a serving-like mix."""
    rng = np.random.default_rng(seed)
    prompt_lens = rng.integers(prompt_range[0], prompt_range[1] + 1, size=num)
    output_lens = rng.integers(output_range[0], output_range[1] + 1, size=num)
    return [
        Request(_prompt(rng, int(p), vocab_size), int(n), request_id=i)
        for i, (p, n) in enumerate(zip(prompt_lens, output_lens, strict=True))
    ]


def shared_prefix_requests(
    num: int, prefix_len: int, suffix_range: tuple[int, int], new_tokens: int, vocab_size: int, seed: int = 0
) -> list[Request]:
    """Requests that share one system-prompt-like prefix and differ after it."""
    rng = np.random.default_rng(seed)
    prefix = _prompt(rng, prefix_len, vocab_size)
    suffix_lens = rng.integers(suffix_range[0], suffix_range[1] + 1, size=num)
    return [
        Request(prefix + _prompt(rng, int(s), vocab_size), new_tokens, request_id=i) for i, s in enumerate(suffix_lens)
    ]


@dataclass(frozen=True)
class Workload:
    """A seeded mixed-length request set for the serving cases."""

    name: str
    num_requests: int
    prompt_range: tuple[int, int]
    output_range: tuple[int, int]
    seed: int = 0

    def requests(self, vocab_size: int) -> list[Request]:
        return mixed_requests(self.num_requests, self.prompt_range, self.output_range, vocab_size, seed=self.seed)


WORKLOADS = {
    w.name: w
    for w in (
        Workload("mixed16", 16, (16, 128), (16, 64)),
        Workload("mixed32", 32, (16, 256), (16, 128)),
        Workload("mixed64", 64, (16, 512), (16, 256)),
    )
}
