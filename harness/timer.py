"""Times one case: how many rounds, the rounds themselves (pytest-benchmark's pedantic mode), the
machine-speed reference forward before and after, and NVML sampling on a GPU.

Every round ends with a device synchronise; warm-up rounds never count; the reference forward and
set-up sit outside the rounds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from harness.hardware import NvmlSampler
from harness.models import LoadedModel
from harness.timing import synchronize

MAX_ROUNDS = 200
REFERENCE_REPS = 3  # reference forwards before and after each case (machine-speed correction): at least
REFERENCE_MIN_S = 0.2  # and enough to span this long, so one short stall does not set the machine speed


@dataclass
class Timing:
    """What a case's timing gathered beside pytest-benchmark's own round times."""

    reference_ms: list[float] = field(default_factory=list)
    reference_shape: tuple[int, int] | None = None
    sampled: dict[str, float] = field(default_factory=dict)  # NVML: gpu_util_pct, mem_util_pct, power_w
    energy_j: float | None = None
    rounds_run: int = 0  # timed + warm-up rounds (energy covers all of them)


def reference_forward_ms(
    loaded: LoadedModel, shape: tuple[int, int], reps: int = REFERENCE_REPS, min_s: float = REFERENCE_MIN_S
) -> list[float]:
    """Time a fixed forward of the model (rows x tokens, no cache) that no engine code runs: how fast the
    machine is right now. The gate divides it out (harness/baseline/gate.py, Speed).
    PERF_INJECT_SLOWDOWN does not touch it."""
    rows, tokens = shape
    ids = (torch.arange(rows * tokens, device=loaded.device) % (loaded.spec.vocab_size - 1) + 1).view(rows, tokens)
    times: list[float] = []
    with torch.inference_mode():
        loaded.model(ids, use_cache=False)  # untimed: the first call after other work pays for allocations
        begin = time.perf_counter()
        while len(times) < reps or (time.perf_counter() - begin < min_s and len(times) < MAX_ROUNDS):
            start = time.perf_counter()
            loaded.model(ids, use_cache=False)
            synchronize(loaded.device)
            times.append((time.perf_counter() - start) * 1e3)
    return times


@dataclass
class CaseTimer:
    device: torch.device
    rounds: int = 5
    warmup_rounds: int = 1
    min_time_s: float = 1.0
    nvml: object = None  # the pynvml module on a GPU, else None
    gpu_index: int = 0

    def plan(self, timed: Callable[[], None], setup: Callable[[], object] | None) -> tuple[int, int]:
        """(rounds, warm-up rounds left). The first warm-up round is timed here (it never counts) to size
        the run: at least `rounds`, and enough to span min_time_s, so a millisecond decode step is not
        judged on a 0.1 s window that one stall on the host can shift."""
        if self.warmup_rounds < 1 or self.min_time_s <= 0:
            return self.rounds, self.warmup_rounds
        if setup is not None:
            setup()
        start = time.perf_counter()
        timed()
        per_round = max(time.perf_counter() - start, 1e-6)
        return max(self.rounds, min(MAX_ROUNDS, math.ceil(self.min_time_s / per_round))), self.warmup_rounds - 1

    def _pedantic(self, benchmark, target: Callable[[], object], setup) -> int:
        def timed() -> None:
            target()
            synchronize(self.device)  # the round ends when the device is done, not when launches are

        rounds, warmup = self.plan(timed, setup)
        kwargs = {"rounds": rounds, "warmup_rounds": warmup, "iterations": 1}
        if setup is not None:
            kwargs["setup"] = setup
        benchmark.pedantic(timed, **kwargs)
        return rounds + self.warmup_rounds

    def time(
        self, benchmark, target: Callable[[], object], loaded: LoadedModel, shape: tuple[int, int], setup=None
    ) -> Timing:
        """Time `target` with the reference forward (of `shape`) before and after; on a GPU, sample
        utilisation and power while it runs."""
        timing = Timing()
        if not benchmark.disabled:
            timing.reference_ms, timing.reference_shape = reference_forward_ms(loaded, shape), shape
        if self.nvml is None:
            timing.rounds_run = self._pedantic(benchmark, target, setup)
        else:
            with NvmlSampler(self.nvml, self.gpu_index) as sampler:
                timing.rounds_run = self._pedantic(benchmark, target, setup)
            timing.sampled, timing.energy_j = sampler.summary(0), sampler.energy_j()
        if timing.reference_ms:
            timing.reference_ms = [round(ms, 4) for ms in timing.reference_ms + reference_forward_ms(loaded, shape)]
        return timing
