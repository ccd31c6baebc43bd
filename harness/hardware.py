"""What machine is this, what are its ceilings, and is it healthy right now?

GPU peaks come from NVML (nvidia-ml-py, `import pynvml`) and the known-GPU table; every machine
also gets measured figures (a large copy, a large matmul). NVML being absent or a query being
unsupported is a note in the report, never a crash. NVML is passed in as a module so tests can
hand in a fake one.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from dataclasses import asdict, dataclass, field
from types import ModuleType

import torch

from harness.roofline import Peaks
from harness.specs import gpu_for_nvml_name

BW_CHECK_MIN_FRACTION = 0.70  # measured copy below this share of the NVML peak is a warning
HOT_GPU_C = 85
# NVML clock-event (throttle) reason bits (nvml.h, nvmlClocksEventReason*). Idle, application
# clocks and display clocks do not slow a benchmark down; the rest do.
CLOCK_EVENT_NAMES = {
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
}


class NvmlUnavailable(Exception):
    pass


def load_nvml() -> ModuleType:
    """pynvml (from nvidia-ml-py), initialised; NvmlUnavailable says why when it cannot be."""
    try:
        import pynvml
    except ImportError as exc:
        raise NvmlUnavailable(f"nvidia-ml-py is not installed ({exc})") from exc
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise NvmlUnavailable(f"NVML could not start: {exc}") from exc
    return pynvml


def nvml_query(nvml: ModuleType, notes: list[str], what: str, fn, *args):
    """Call one NVML function; an unsupported or failing query becomes a note and None."""
    try:
        return fn(*args)
    except nvml.NVMLError as exc:
        notes.append(f"NVML {what}: {exc}")
        return None


def nvml_peak_bw_bytes_s(nvml: ModuleType, handle, notes: list[str]) -> float | None:
    """DRAM peak = 2 (double data rate) x max memory clock x bus width / 8 (bits -> bytes)."""
    clock_mhz = nvml_query(nvml, notes, "max memory clock", nvml.nvmlDeviceGetMaxClockInfo, handle, nvml.NVML_CLOCK_MEM)
    bus_bits = nvml_query(nvml, notes, "memory bus width", nvml.nvmlDeviceGetMemoryBusWidth, handle)
    if not clock_mhz or not bus_bits:
        return None
    return 2 * clock_mhz * 1e6 * bus_bits / 8


@dataclass
class Health:
    healthy: bool = True
    problems: list[str] = field(default_factory=list)
    temperature_c: float | None = None
    power_limit_w: float | None = None
    default_power_limit_w: float | None = None
    other_processes: int | None = None
    clock_event_reasons: list[str] = field(default_factory=list)


def _decode(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def nvml_health(nvml: ModuleType, handle, notes: list[str], own_pid: int | None = None) -> Health:
    health = Health()
    own_pid = os.getpid() if own_pid is None else own_pid
    procs = nvml_query(nvml, notes, "running processes", nvml.nvmlDeviceGetComputeRunningProcesses, handle)
    if procs is not None:
        health.other_processes = sum(1 for p in procs if p.pid != own_pid)
        if health.other_processes:
            health.problems.append(f"{health.other_processes} other process(es) using the GPU")
    reasons_fn = (
        getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
    )
    reasons = nvml_query(nvml, notes, "clock event reasons", reasons_fn, handle)
    if reasons is not None:
        health.clock_event_reasons = [n for bit, n in CLOCK_EVENT_NAMES.items() if reasons & bit]
        if health.clock_event_reasons:
            health.problems.append("clocks held down: " + ", ".join(health.clock_event_reasons))
    temp = nvml_query(nvml, notes, "temperature", nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
    if temp is not None:
        health.temperature_c = float(temp)
        if temp >= HOT_GPU_C:
            health.problems.append(f"temperature {temp} C >= {HOT_GPU_C} C")
    limit = nvml_query(nvml, notes, "power limit", nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
    default = nvml_query(nvml, notes, "default power limit", nvml.nvmlDeviceGetPowerManagementDefaultLimit, handle)
    if limit is not None:
        health.power_limit_w = limit / 1000
    if default is not None:
        health.default_power_limit_w = default / 1000
        if limit is not None and limit < 0.95 * default:
            health.problems.append(f"power limit {limit / 1000:.0f} W below default {default / 1000:.0f} W")
    health.healthy = not health.problems
    return health


@dataclass
class HardwareInfo:
    device: str  # "cpu" or "cuda:N"
    name: str
    dtype: str
    cpu_model: str
    cpu_cores: int
    memory_bytes: int | None = None
    driver: str | None = None
    cuda: str | None = None
    torch: str = torch.__version__
    transformers: str = ""
    theoretical_bw_gbps: float | None = None  # NVML
    measured_bw_gbps: float | None = None
    theoretical_tflops: float | None = None  # known-GPU table
    measured_tflops: float | None = None
    table_entry: str | None = None
    bw_warning: str | None = None
    health: Health | None = None
    notes: list[str] = field(default_factory=list)

    def peaks(self) -> Peaks:
        """Bounds use the theoretical peak where one is known, else the measured figure."""
        bw = self.theoretical_bw_gbps or self.measured_bw_gbps
        tf = self.theoretical_tflops or self.measured_tflops
        return Peaks(
            bw_bytes_s=bw * 1e9,
            flops_s=tf * 1e12,
            bw_source="nvml" if self.theoretical_bw_gbps else "measured",
            flops_source="table" if self.theoretical_tflops else "measured",
            theoretical_bw_bytes_s=self.theoretical_bw_gbps and self.theoretical_bw_gbps * 1e9,
            measured_bw_bytes_s=self.measured_bw_gbps and self.measured_bw_gbps * 1e9,
            theoretical_flops_s=self.theoretical_tflops and self.theoretical_tflops * 1e12,
            measured_flops_s=self.measured_tflops and self.measured_tflops * 1e12,
        )

    def header_lines(self) -> list[str]:
        def fmt(x: float | None, unit: str) -> str:
            return f"{x:,.1f} {unit}" if x else "n/a"

        lines = [
            f"device: {self.name} ({self.device}, {self.dtype}); bandwidth peak {fmt(self.theoretical_bw_gbps, 'GB/s')}"
            f" measured {fmt(self.measured_bw_gbps, 'GB/s')}; compute peak {fmt(self.theoretical_tflops, 'TFLOP/s')}"
            f" measured {fmt(self.measured_tflops, 'TFLOP/s')}"
        ]
        checks = [
            self.bw_warning or ("bandwidth check ok" if self.theoretical_bw_gbps else "bandwidth check: no NVML peak")
        ]
        if self.health is not None:
            checks.append("health ok" if self.health.healthy else "UNHEALTHY: " + "; ".join(self.health.problems))
        lines.append("; ".join(checks))
        return lines

    def as_dict(self) -> dict:
        return asdict(self)


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _best_seconds(fn, device: torch.device, reps: int) -> float:
    from harness.timing import now

    fn()  # warm-up: page faults, allocator, kernel selection
    best = float("inf")
    for _ in range(reps):
        start = now(device)
        fn()
        best = min(best, now(device) - start)
    return best


# A peak is the most the machine can do. On a shared machine a neighbour can steal any one trial,
# so each figure is the best of many short trials (one of them is likely to run uncontended):
# a single long trial under load would understate the peak, and cases would then "beat" their bound.
def measure_copy_gbps(device: torch.device, nbytes: int | None = None, reps: int | None = None) -> float:
    """Copy a buffer far larger than any cache; bandwidth counts bytes read + bytes written."""
    nbytes = nbytes or (1 << 30 if device.type == "cuda" else 256 << 20)
    reps = reps or (5 if device.type == "cuda" else 15)
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    return 2 * nbytes / _best_seconds(lambda: dst.copy_(src), device, reps) / 1e9


def measure_matmul_tflops(device: torch.device, dtype: str, sizes: tuple[tuple[int, int], ...] | None = None) -> float:
    """Best square-matmul FLOP/s over (n, reps) trials: 2 n^3 FLOPs each."""
    from harness.models import DTYPES

    sizes = sizes or (((8192, 5),) if device.type == "cuda" else ((1024, 15), (2048, 4)))
    best = 0.0
    for n, reps in sizes:
        a = torch.randn(n, n, device=device).to(DTYPES[dtype])
        b = torch.randn(n, n, device=device).to(DTYPES[dtype])
        best = max(best, 2 * n**3 / _best_seconds(lambda a=a, b=b: a @ b, device, reps) / 1e12)
    return best


def _fill_from_nvml(info: HardwareInfo, nvml: ModuleType, index: int) -> None:
    notes = info.notes
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    info.name = _decode(nvml_query(nvml, notes, "name", nvml.nvmlDeviceGetName, handle) or info.name)
    info.driver = _decode(nvml_query(nvml, notes, "driver", nvml.nvmlSystemGetDriverVersion) or "") or None
    peak = nvml_peak_bw_bytes_s(nvml, handle, notes)
    info.theoretical_bw_gbps = peak and peak / 1e9
    info.health = nvml_health(nvml, handle, notes)


def probe(
    device: str | torch.device = "cpu", dtype: str = "float32", nvml: ModuleType | None = None, measure: bool = True
) -> HardwareInfo:
    """Describe `device`: names, versions, peaks (theoretical and measured), bandwidth check, health."""
    import transformers

    device = torch.device(device)
    info = HardwareInfo(
        device=str(device),
        name=cpu_model_name(),
        dtype=dtype,
        cpu_model=cpu_model_name(),
        cpu_cores=cpu_cores(),
        transformers=transformers.__version__,
    )
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.name, info.memory_bytes, info.cuda = props.name, props.total_memory, torch.version.cuda
        try:
            _fill_from_nvml(info, nvml or load_nvml(), index)
        except NvmlUnavailable as exc:
            info.notes.append(f"no NVML figures: {exc}")
        entry = gpu_for_nvml_name(info.name)
        if entry is not None:
            info.table_entry = entry.key
            info.theoretical_tflops = entry.peak_tflops.get(dtype)
        else:
            info.notes.append(f"{info.name!r} is not in the known-GPU table: compute peak is the measured figure")
    else:
        import psutil

        info.memory_bytes = psutil.virtual_memory().total
        info.notes.append("CPU: no theoretical peaks; bounds use the measured copy bandwidth and matmul FLOP/s")
    if measure:
        info.measured_bw_gbps = measure_copy_gbps(device)
        info.measured_tflops = measure_matmul_tflops(device, dtype)
        info.bw_warning = bandwidth_warning(info.measured_bw_gbps, info.theoretical_bw_gbps)
    return info


def bandwidth_warning(measured_gbps: float | None, theoretical_gbps: float | None) -> str | None:
    if not measured_gbps or not theoretical_gbps:
        return None
    share = measured_gbps / theoretical_gbps
    if share < BW_CHECK_MIN_FRACTION:
        return (
            f"WARNING: measured copy bandwidth {measured_gbps:,.0f} GB/s is {share:.0%} of the NVML peak "
            f"{theoretical_gbps:,.0f} GB/s (< {BW_CHECK_MIN_FRACTION:.0%}): a busy, throttled or misconfigured GPU"
        )
    return f"bandwidth check ok: copy reaches {share:.0%} of the NVML peak"


def machine_slug(info: HardwareInfo) -> str:
    """Names the hardware a baseline belongs to: the GPU model, or CPU model + core count."""
    raw = info.name if info.device.startswith("cuda") else f"cpu {info.cpu_model} {info.cpu_cores}c"
    slug = "".join(c if c.isalnum() else "-" for c in raw.lower())
    return "-".join(part for part in slug.split("-") if part)


class NvmlSampler:
    """Samples GPU utilisation, memory utilisation and power in a background thread while a case runs."""

    def __init__(self, nvml: ModuleType, index: int = 0, interval_s: float = 0.05) -> None:
        self.nvml, self.handle, self.interval_s = nvml, nvml.nvmlDeviceGetHandleByIndex(index), interval_s
        self.samples: list[tuple[float, float, float, float]] = []  # (t, gpu util %, mem util %, power W)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._energy_start_mj: float | None = None
        self._energy_mj: float | None = None

    def _energy(self) -> float | None:
        try:
            return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except self.nvml.NVMLError:
            return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                util = self.nvml.nvmlDeviceGetUtilizationRates(self.handle)
                power = self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000
                self.samples.append((time.perf_counter(), float(util.gpu), float(util.memory), power))
            except self.nvml.NVMLError:
                return
            self._stop.wait(self.interval_s)

    def __enter__(self) -> NvmlSampler:
        self._energy_start_mj = self._energy()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        end = self._energy()
        if end is not None and self._energy_start_mj is not None:
            self._energy_mj = end - self._energy_start_mj

    def energy_j(self) -> float | None:
        """Energy counter difference when NVML has one; else power samples integrated (trapezoid)."""
        if self._energy_mj is not None:
            return self._energy_mj / 1000
        s = self.samples
        if len(s) < 2:
            return None
        return sum((b[0] - a[0]) * (a[3] + b[3]) / 2 for a, b in zip(s, s[1:], strict=False))

    def summary(self, generated_tokens: int) -> dict[str, float]:
        if not self.samples:
            return {}
        n = len(self.samples)
        out = {
            "gpu_util_pct": sum(x[1] for x in self.samples) / n,
            "mem_util_pct": sum(x[2] for x in self.samples) / n,
            "power_w": sum(x[3] for x in self.samples) / n,
        }
        energy = self.energy_j()
        if energy is not None and generated_tokens:
            out["energy_j"] = energy
            out["j_per_token"] = energy / generated_tokens
        return out
