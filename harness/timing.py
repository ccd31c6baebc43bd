"""Clocks that mean what they say on every device.

CUDA runs asynchronously: a host clock read without a synchronise measures the launch, not the
work. Every clock here synchronises the device first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device: torch.device) -> float:
    """Seconds on a monotonic clock, after all queued device work has finished."""
    synchronize(device)
    return time.perf_counter()


@dataclass
class WorkClock:
    """Times units of engine work; with a slowdown fraction f, each unit then costs (1 + f) times as long.

    The extra cost is a busy spin proportional to the unit's own measured time, so it scales with real
    work (bigger batch, longer context -> more extra time). It is the experiments' one way to slow a
    case (EngineConfig.slowdown, set by EngineCache.engine for the case PERF_INJECT_CASE names): a pure
    shift in time that contention and cache pressure do not stretch, the easiest change to detect.
    Validation rests on real regressions too (experiments/regressions/).
    """

    device: torch.device
    slowdown: float = 0.0

    def run(self, fn: Callable[[], object]) -> object:
        if not self.slowdown:
            return fn()
        start = now(self.device)
        out = fn()
        spent = now(self.device) - start
        deadline = time.perf_counter() + spent * self.slowdown
        while time.perf_counter() < deadline:
            pass
        return out
