"""Helpers shared by the engines built on transformers' own generate and forward."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from transformers.generation.streamers import BaseStreamer

from harness.engines.base import EngineConfig, RequestOutput
from harness.timing import now


class StepRecorder(BaseStreamer):
    """A generate() streamer that clocks each step: the first put() is the prompt, then one per token."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.step_times: list[float] = []
        self._seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if self._seen_prompt:
            self.step_times.append(now(self.device))
        self._seen_prompt = True

    def end(self) -> None:
        pass


def cache_keyword(model: torch.nn.Module) -> str:
    """The forward's keyword for a KV cache object: `cache` where the model's forward takes it
    (transformers 5.2x, which warns on every call that passes `past_key_values`), else
    `past_key_values` (older releases, such as the one vLLM's own environment pins). Read it once,
    not per forward: a timed loop should not pay for inspecting a signature."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def generate_kwargs(config: EngineConfig, eos_token_id: int | None) -> dict:
    # eos_token_id=None as a keyword overrides the checkpoint's generation_config (a whole
    # GenerationConfig would not: its unset fields fall back to the model's defaults).
    return {"do_sample": False, "pad_token_id": 0, "eos_token_id": None if config.ignore_eos else eos_token_id}


def trim_at_eos(tokens: list[int], eos_token_id: int | None, ignore_eos: bool) -> list[int]:
    if ignore_eos or eos_token_id is None or eos_token_id not in tokens:
        return tokens
    return tokens[: tokens.index(eos_token_id) + 1]


def left_padded(prompts: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P_max) ids and attention mask, padded on the left so every row's last token is at -1."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


def fill_output(out: RequestOutput, tokens: list[int], step_times: list[float], finish_s: float) -> None:
    out.token_ids = tokens
    out.token_times = list(step_times[: len(tokens)])
    out.first_token_s = step_times[0] if step_times else finish_s
    out.finish_s = finish_s
