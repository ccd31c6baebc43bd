"""Clocks that mean what they say on every device.

CUDA runs asynchronously: a host clock read without a synchronise measures the launch, not the
work. Every clock here synchronises the device first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

SLOWDOWN_ENV = "PERF_INJECT_SLOWDOWN"
CASE_ENV = "PERF_INJECT_CASE"  # with it, only the cases whose name contains it are slowed


def injected_case() -> str:
    return os.environ.get(CASE_ENV, "").strip()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device: torch.device) -> float:
    """Seconds on a monotonic clock, after all queued device work has finished."""
    synchronize(device)
    return time.perf_counter()


def injected_slowdown() -> float:
    """The fraction of extra work asked for by PERF_INJECT_SLOWDOWN (0 when unset). Engines apply it to
    every unit of their work; with PERF_INJECT_CASE set, the bench applies it to the rounds of the
    matching cases instead (harness/bench.py)."""
    raw = os.environ.get(SLOWDOWN_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{SLOWDOWN_ENV}={raw!r} is not a number (try 0.10 for 10% slower)") from None
    if not 0 <= value < 10:
        raise ValueError(f"{SLOWDOWN_ENV}={value} must be in [0, 10)")
    return value


@dataclass
class WorkClock:
    """Times units of engine work; with a slowdown fraction f, each unit then costs (1 + f) times as long.

    The extra cost is a busy spin proportional to the unit's own measured time, so it scales with
    real work (bigger batch, longer context -> more extra time), as a genuine regression would.
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
