"""Serving workloads of real English text: prompts cut from the documentation that ships with every
Python (`pydoc_data.topics`, the language reference's topics), tokenized by the model's own tokenizer.
No corpus is copied into this repository, and nothing is downloaded.

Each prompt is prose from one paragraph onward, cut to its drawn length in tokens at a point where
decoding the ids and encoding the text again gives the same ids (so a server that takes text, `openai`
with `--perf-openai-prompt text`, computes what the suite checks). Lengths follow the token-id
workloads they mirror: `text-mixed16` (mixed16's), `text-prefix16` (prefix16's groups sharing a system
prompt) and `text-conv16` (conv16's conversation lengths). Generation is fixed-length, as everywhere in
the suite: every round does the same work.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import ConfigError
from harness.workloads import Request, Workload, read_lengths


@functools.lru_cache(maxsize=4)
def tokenizer_at(path: str | None):
    """The tokenizer saved with the checkpoint at `path` (a trained spec's, or --perf-model-path's);
    None for seeded random weights and for a checkpoint saved without one."""
    if path is None or not any((Path(path) / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


@functools.lru_cache(maxsize=4)
def text_ids(path: str, paragraphs_used: int = 200) -> tuple[int, ...]:
    """One long run of real text in the tokens of the checkpoint at `path`: the probe's prompts for a
    trained model (harness/correctness/probe.py)."""
    return tuple(tokenizer_at(path).encode(" ".join(paragraphs()[:paragraphs_used]), add_special_tokens=False))


def paragraphs() -> list[str]:
    """The topics' prose paragraphs, in a fixed order (grammar and code blocks left out)."""
    from pydoc_data.topics import topics

    out = []
    for name in sorted(topics):
        for block in topics[name].split("\n\n"):
            text = " ".join(line.strip() for line in block.splitlines())
            if len(text) > 200 and not block.startswith((" ", "*", "=")) and "::=" not in text:
                out.append(text)
    return out


def _cut(tokenizer, text: str, length: int, head: tuple[int, ...] = ()) -> tuple[int, ...]:
    """`head` and then `length` tokens of `text` or a few fewer: the longest such prompt that survives
    decode and encode whole."""
    ids = tokenizer.encode(" " + text if head else text, add_special_tokens=False)  # a word boundary after head
    for n in range(min(length, len(ids)), 0, -1):
        prompt = [*head, *ids[:n]]
        if tokenizer.encode(tokenizer.decode(prompt), add_special_tokens=False) == prompt:
            return tuple(prompt)
    raise ConfigError(f"no prefix of {text[:40]!r}... survives the tokenizer's round trip")


def _text(rng: np.random.Generator, pool: list[str], min_chars: int) -> str:
    """Paragraphs from a seeded start, joined until long enough."""
    start, parts = int(rng.integers(len(pool))), []
    while sum(len(p) for p in parts) < min_chars:
        parts.append(pool[(start + len(parts)) % len(pool)])
    return " ".join(parts)


@dataclass(frozen=True)
class TextWorkload(Workload):
    """`num_requests` text prompts; `shape` says how their lengths are drawn: "mixed" (uniform over
    prompt_range and output_range), "prefix" (groups of group_size sharing a prefix_len-token system
    prompt, then suffixes from prompt_range) or a lengths file in harness/data (conv)."""

    name: str
    num_requests: int
    shape: str
    prompt_range: tuple[int, int] = (16, 128)
    output_range: tuple[int, int] = (16, 64)
    group_size: int = 4
    prefix_len: int = 100
    lengths_file: str = ""
    seed: int = 0
    needs_tokenizer = True

    def requests(self, vocab_size: int, tokenizer=None) -> list[Request]:
        if tokenizer is None:
            raise ConfigError(
                f"workload {self.name} is real text: it needs the model's tokenizer (a trained model such as "
                "--perf-models smollm2-135m, or --perf-model-path)"
            )
        rng, pool = np.random.default_rng(self.seed), paragraphs()
        lengths = self._lengths(rng)
        if self.shape == "prefix":
            groups = self.num_requests // self.group_size
            prefixes = [_cut(tokenizer, _text(rng, pool, 8 * self.prefix_len), self.prefix_len) for _ in range(groups)]
            return [
                Request(_cut(tokenizer, _text(rng, pool, 8 * p), p, head=prefixes[i % groups]), n, request_id=i)
                for i, (p, n) in enumerate(lengths)
            ]
        return [
            Request(_cut(tokenizer, _text(rng, pool, 8 * p), p), n, request_id=i) for i, (p, n) in enumerate(lengths)
        ]

    def _lengths(self, rng: np.random.Generator) -> list[tuple[int, int]]:
        if self.lengths_file:
            rows = read_lengths(self.lengths_file)
            return [rows[r] for r in rng.choice(len(rows), size=self.num_requests, replace=False)]
        prompts = rng.integers(self.prompt_range[0], self.prompt_range[1] + 1, size=self.num_requests)
        outputs = rng.integers(self.output_range[0], self.output_range[1] + 1, size=self.num_requests)
        return [(int(p), int(n)) for p, n in zip(prompts, outputs, strict=True)]


TEXT_WORKLOADS = (
    TextWorkload("text-mixed16", 16, "mixed"),
    TextWorkload("text-prefix16", 16, "prefix", prompt_range=(8, 32), output_range=(16, 48)),
    TextWorkload("text-conv16", 16, "conv", lengths_file="conversation_lengths.csv"),
)
