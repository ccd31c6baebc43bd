"""Times one case: how many rounds, the rounds themselves (pytest-benchmark's pedantic mode), the
machine-speed reference forward before and after, the case's peak memory, and NVML samples on a GPU.

Every round ends with a device synchronise; warm-up rounds never count; the reference forward,
set-up and GPU sampling sit outside the rounds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from harness.models import LoadedModel
from harness.nvml import NvmlSampler
from harness.timing import synchronize

MAX_ROUNDS = 200
REFERENCE_REPS = 3  # reference forwards before and after each case (machine-speed correction): at least
REFERENCE_MIN_S = 0.2  # and enough to span this long, so one short stall does not set the machine speed


@dataclass
class Timing:
    """What a case's timing gathered beside pytest-benchmark's own round times."""

    reference_ms: list[float] = field(default_factory=list)
    reference_shape: tuple[int, int] | None = None
    sampled: dict[str, float] = field(default_factory=dict)  # NVML: gpu_util_pct, power_w, sm_clock_mhz_min...
    gpu_problems: list[str] = field(default_factory=list)  # seen while the case ran: throttling, heat
    energy_j: float | None = None
    rounds_run: int = 0  # timed + warm-up rounds (energy covers all of them)
    per_pass: int = 0  # timed rounds in each pass (--perf-passes; harness/passes.py)
    memory: dict[str, float] = field(default_factory=dict)  # peak_rss_mb, or peak_gpu_mem_mb and reserved


class PeakMemory:
    """The peak memory of the rounds of one case. CPU: the process's peak resident set (VmHWM), reset
    before the case through /proc/self/clear_refs (Linux); where it cannot be reset, the process's
    lifetime peak is not the case's, and nothing is reported. GPU: torch's peak allocated and
    reserved bytes, reset before the case."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset_ok = False

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.reset_ok = True
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets the peak RSS (VmHWM) to the current RSS
            self.reset_ok = True
        except OSError:
            self.reset_ok = False

    def read(self) -> dict[str, float]:
        if not self.reset_ok:
            return {}
        if self.device.type == "cuda":
            return {
                "peak_gpu_mem_mb": torch.cuda.max_memory_allocated(self.device) / 2**20,
                "peak_gpu_reserved_mb": torch.cuda.max_memory_reserved(self.device) / 2**20,
            }
        try:
            with open("/proc/self/status") as f:
                hwm = next(line for line in f if line.startswith("VmHWM:"))
        except (OSError, StopIteration):
            return {}
        return {"peak_rss_mb": int(hwm.split()[1]) / 1024}  # kB


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
    passes: int = 1  # the rounds are split over this many passes of the run (harness/passes.py)
    nvml: object = None  # the pynvml module on a GPU, else None
    nvml_handle: object = None  # this device's NVML handle (harness/nvml.py, nvml_handle)

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

    def _pedantic(self, benchmark, target: Callable[[], object], setup) -> tuple[int, int]:
        """(rounds run, warm-up included; timed rounds per pass): this pass times its share of the plan."""

        def timed() -> None:
            target()
            synchronize(self.device)  # the round ends when the device is done, not when launches are

        rounds, warmup = self.plan(timed, setup)
        share = math.ceil(rounds / self.passes)
        kwargs = {"rounds": share, "warmup_rounds": warmup, "iterations": 1}
        if setup is not None:
            kwargs["setup"] = setup
        benchmark.pedantic(timed, **kwargs)
        return share + self.warmup_rounds, share

    def time_pass(self, target: Callable[[], object], setup: Callable[[], object] | None, rounds: int) -> list[float]:
        """A later pass of a case (harness/passes.py): a warm-up round (when the case has any), then
        `rounds` timed ones, each after its untimed `setup`; the seconds of each timed round."""
        warm = min(self.warmup_rounds, 1)
        seconds = []
        for i in range(warm + rounds):
            if setup is not None:
                setup()
            start = time.perf_counter()
            target()
            synchronize(self.device)
            if i >= warm:
                seconds.append(time.perf_counter() - start)
        return seconds

    @staticmethod
    def _between_rounds(sampler: NvmlSampler, setup: Callable[[], object] | None) -> Callable[[], None]:
        """pytest-benchmark calls `setup` before every round, outside its timing: sample there."""

        def before_round() -> None:
            sampler.sample()
            if setup is not None:
                setup()

        return before_round

    def time(
        self, benchmark, target: Callable[[], object], loaded: LoadedModel, shape: tuple[int, int], setup=None
    ) -> Timing:
        """Time `target` with the reference forward (of `shape`) before and after; on a GPU, sample
        utilisation and power while it runs."""
        timing = Timing()
        if not benchmark.disabled:
            timing.reference_ms, timing.reference_shape = reference_forward_ms(loaded, shape), shape
        memory = PeakMemory(self.device)
        memory.reset()
        if self.nvml is None:
            timing.rounds_run, timing.per_pass = self._pedantic(benchmark, target, setup)
        else:
            sampler = NvmlSampler(self.nvml, self.nvml_handle)
            sampler.start()
            timing.rounds_run, timing.per_pass = self._pedantic(benchmark, target, self._between_rounds(sampler, setup))
            sampler.stop()
            timing.sampled, timing.energy_j, timing.gpu_problems = (
                sampler.summary(),
                sampler.energy_j(),
                sampler.problems(),
            )
        timing.memory = memory.read()
        if timing.reference_ms:
            timing.reference_ms = [round(ms, 4) for ms in timing.reference_ms + reference_forward_ms(loaded, shape)]
        return timing
