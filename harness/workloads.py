"""Seeded request sets. Token ids: no tokenizer is needed to time a model; the text-* workloads
(harness/text_workloads.py) are real English for trained models.

WORKLOADS is the serving cases' registry (`--perf-workloads a,b`): uniform mixes (mixedN), groups
sharing a system prompt (prefix16), lengths drawn from a shipped conversation-like sample (conv16),
and their real-text counterparts (text-mixed16, text-prefix16, text-conv16).
Existing entries never change their requests: stored baselines match them by case id."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType

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


class Workload(ABC):
    """A named, seeded request set for the serving cases: the same requests on every call."""

    name: str
    needs_tokenizer = False  # real-text workloads (harness/text_workloads.py) need the model's tokenizer

    @abstractmethod
    def requests(self, vocab_size: int, tokenizer=None) -> list[Request]:
        """The requests of one round, token ids below vocab_size, request ids 0..n-1 in arrival order."""


@dataclass(frozen=True)
class MixedWorkload(Workload):
    """Prompt and output lengths uniform over inclusive ranges (mixed_requests)."""

    name: str
    num_requests: int
    prompt_range: tuple[int, int]
    output_range: tuple[int, int]
    seed: int = 0

    def requests(self, vocab_size: int, tokenizer=None) -> list[Request]:
        return mixed_requests(self.num_requests, self.prompt_range, self.output_range, vocab_size, seed=self.seed)


@dataclass(frozen=True)
class SharedPrefixWorkload(Workload):
    """`num_groups` groups of `group_size` requests; a group's requests share one `prefix_len`-token
    system prompt and differ after it. Groups take turns in arrival order (0, 1, ..., 0, 1, ...), so a
    prefix cache must hold all the groups' prefixes at once to hit."""

    name: str
    num_groups: int
    group_size: int
    prefix_len: int
    suffix_range: tuple[int, int]
    output_range: tuple[int, int]
    seed: int = 0

    def requests(self, vocab_size: int, tokenizer=None) -> list[Request]:
        rng = np.random.default_rng(self.seed)
        prefixes = [_prompt(rng, self.prefix_len, vocab_size) for _ in range(self.num_groups)]
        num = self.num_groups * self.group_size
        suffix_lens = rng.integers(self.suffix_range[0], self.suffix_range[1] + 1, size=num)
        output_lens = rng.integers(self.output_range[0], self.output_range[1] + 1, size=num)
        return [
            Request(prefixes[i % self.num_groups] + _prompt(rng, int(s), vocab_size), int(n), request_id=i)
            for i, (s, n) in enumerate(zip(suffix_lens, output_lens, strict=True))
        ]


def read_lengths(file_name: str) -> list[tuple[int, int]]:
    """(prompt_len, output_len) rows of a CSV shipped in harness/data ('#' lines are comments)."""
    text = resources.files("harness.data").joinpath(file_name).read_text()
    rows = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if rows[:1] != ["prompt_len,output_len"]:
        raise ValueError(f"{file_name}: expected the header 'prompt_len,output_len', got {rows[:1]}")
    return [(int(p), int(o)) for p, o in (row.split(",") for row in rows[1:])]


@dataclass(frozen=True)
class LengthsFileWorkload(Workload):
    """`num_requests` (prompt_len, output_len) rows drawn, seeded and without replacement, from a
    lengths file in harness/data; random prompt tokens of those lengths."""

    name: str
    num_requests: int
    file_name: str
    seed: int = 0

    def requests(self, vocab_size: int, tokenizer=None) -> list[Request]:
        rng = np.random.default_rng(self.seed)
        lengths = read_lengths(self.file_name)
        rows = rng.choice(len(lengths), size=self.num_requests, replace=False)
        return [
            Request(_prompt(rng, lengths[r][0], vocab_size), lengths[r][1], request_id=i) for i, r in enumerate(rows)
        ]


def _registry() -> Mapping[str, Workload]:
    from harness.text_workloads import TEXT_WORKLOADS

    token_ids = (
        MixedWorkload("mixed16", 16, (16, 128), (16, 64)),
        MixedWorkload("mixed32", 32, (16, 256), (16, 128)),
        MixedWorkload("mixed64", 64, (16, 512), (16, 256)),
        SharedPrefixWorkload("prefix16", 4, 4, 100, (8, 32), (16, 48)),
        LengthsFileWorkload("conv16", 16, "conversation_lengths.csv"),
    )
    return MappingProxyType({w.name: w for w in (*token_ids, *TEXT_WORKLOADS)})


WORKLOADS: Mapping[str, Workload] = _registry()
