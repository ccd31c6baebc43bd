"""What machine is this, what are its ceilings, and is it healthy right now?

GPU peaks come from NVML (harness/nvml.py) and the known-GPU table; every machine also gets measured
figures (a large copy, a large matmul, a read over 4x the last-level cache).
"""

from __future__ import annotations

import glob
import os
import platform
from dataclasses import asdict, dataclass, field
from types import ModuleType

import torch

from harness.nvml import (
    Health,
    NvmlUnavailable,
    decode_name,
    load_nvml,
    nvml_handle,
    nvml_health,
    nvml_peak_bw_bytes_s,
    nvml_query,
)
from harness.roofline import Peaks
from harness.specs import gpu_for_nvml_name

BW_CHECK_MIN_FRACTION = 0.70  # measured read bandwidth below this share of the NVML peak is a warning


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
    measured_bw_gbps: float | None = None  # copy: bytes read + written
    measured_read_bw_gbps: float | None = None  # a sum over 4x the last-level cache: bytes read
    llc_bytes: int | None = None
    theoretical_tflops: float | None = None  # known-GPU table
    measured_tflops: float | None = None
    table_entry: str | None = None
    bw_warning: str | None = None
    health: Health | None = None
    notes: list[str] = field(default_factory=list)

    def peaks(self) -> Peaks:
        """Bounds use the theoretical peak where one is known, else the measured figure: the read bandwidth
        (a decode step reads; a copy's bytes/s, reads plus writes, understates what reading alone reaches)."""
        measured_bw = self.measured_read_bw_gbps or self.measured_bw_gbps
        bw = self.theoretical_bw_gbps or measured_bw
        tf = self.theoretical_tflops or self.measured_tflops
        return Peaks(
            bw_bytes_s=bw * 1e9,
            flops_s=tf * 1e12,
            bw_source="nvml"
            if self.theoretical_bw_gbps
            else ("measured read" if self.measured_read_bw_gbps else "measured"),
            flops_source="table" if self.theoretical_tflops else "measured",
            theoretical_bw_bytes_s=self.theoretical_bw_gbps and self.theoretical_bw_gbps * 1e9,
            measured_bw_bytes_s=measured_bw and measured_bw * 1e9,
            theoretical_flops_s=self.theoretical_tflops and self.theoretical_tflops * 1e12,
            measured_flops_s=self.measured_tflops and self.measured_tflops * 1e12,
        )

    def header_lines(self) -> list[str]:
        def fmt(x: float | None, unit: str) -> str:
            return f"{x:,.1f} {unit}" if x else "n/a"

        llc = f"; last-level cache {self.llc_bytes / 2**20:,.0f} MiB" if self.llc_bytes else ""
        lines = [
            f"device: {self.name} ({self.device}, {self.dtype}); bandwidth peak {fmt(self.theoretical_bw_gbps, 'GB/s')}"
            f" measured read {fmt(self.measured_read_bw_gbps, 'GB/s')}, copy {fmt(self.measured_bw_gbps, 'GB/s')};"
            f" compute peak {fmt(self.theoretical_tflops, 'TFLOP/s')} measured {fmt(self.measured_tflops, 'TFLOP/s')}"
            f"{llc}"
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


def _cpuinfo(field: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model_name() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_vendor() -> str:
    """The CPU's vendor id (GenuineIntel, AuthenticAMD, ...), or "" where the system does not say."""
    return _cpuinfo("vendor_id") or ""


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


def last_level_cache_bytes(device: torch.device, sysfs: str = "/sys/devices/system/cpu/cpu0/cache") -> int | None:
    """The largest cache a case's working set could sit in: the GPU's L2, or the CPU's highest-level
    cache as sysfs reports it (one instance: what one core group shares)."""
    if device.type == "cuda":
        return getattr(torch.cuda.get_device_properties(device.index or 0), "L2_cache_size", None)
    best: tuple[int, int] | None = None
    for entry in sorted(glob.glob(os.path.join(sysfs, "index*"))):
        try:
            level = int(open(os.path.join(entry, "level")).read())
            size = open(os.path.join(entry, "size")).read().strip()
        except (OSError, ValueError):
            continue
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        nbytes = int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
        best = max(best or (0, 0), (level, nbytes))
    return best[1] if best else None


def measure_read_gbps(
    device: torch.device, llc_bytes: int | None = None, nbytes: int | None = None, reps: int | None = None
) -> float:
    """Read-only bandwidth (what a decode step needs: it reads weights and KV and writes little): a sum
    over a buffer four times the last-level cache (at least 256 MiB; 1 GiB on a GPU), so every byte
    comes from DRAM. Counts bytes read."""
    floor = 1 << 30 if device.type == "cuda" else 256 << 20
    nbytes = nbytes or max(floor, 4 * (llc_bytes or 0))
    reps = reps or (5 if device.type == "cuda" else 15)
    buf = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    return nbytes / _best_seconds(lambda: buf.sum(), device, reps) / 1e9


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


def _fill_from_nvml(info: HardwareInfo, nvml: ModuleType, index: int, props=None) -> None:
    notes = info.notes
    handle = nvml_handle(nvml, index, notes, props)
    info.name = decode_name(nvml_query(nvml, notes, "name", nvml.nvmlDeviceGetName, handle) or info.name)
    info.driver = decode_name(nvml_query(nvml, notes, "driver", nvml.nvmlSystemGetDriverVersion) or "") or None
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
            _fill_from_nvml(info, nvml or load_nvml(), index, props)
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
        info.notes.append(
            f"CPU: no theoretical peaks; bounds use the measured read bandwidth and {dtype} matmul FLOP/s"
        )
    info.llc_bytes = last_level_cache_bytes(device)
    if measure:
        info.measured_bw_gbps = measure_copy_gbps(device)
        info.measured_read_bw_gbps = measure_read_gbps(device, info.llc_bytes)
        info.measured_tflops = measure_matmul_tflops(device, dtype)
        info.bw_warning = bandwidth_warning(info.measured_read_bw_gbps, info.theoretical_bw_gbps)
    return info


def bandwidth_warning(measured_gbps: float | None, theoretical_gbps: float | None) -> str | None:
    if not measured_gbps or not theoretical_gbps:
        return None
    share = measured_gbps / theoretical_gbps
    if share < BW_CHECK_MIN_FRACTION:
        return (
            f"WARNING: measured read bandwidth {measured_gbps:,.0f} GB/s is {share:.0%} of the NVML peak "
            f"{theoretical_gbps:,.0f} GB/s (< {BW_CHECK_MIN_FRACTION:.0%}): a busy, throttled or misconfigured GPU"
        )
    return f"bandwidth check ok: reading reaches {share:.0%} of the NVML peak"


def machine_slug(info: HardwareInfo) -> str:
    """Names the hardware a baseline belongs to: the GPU model, or CPU model + core count."""
    raw = info.name if info.device.startswith("cuda") else f"cpu {info.cpu_model} {info.cpu_cores}c"
    slug = "".join(c if c.isalnum() else "-" for c in raw.lower())
    return "-".join(part for part in slug.split("-") if part)


def info_rows(hw: HardwareInfo) -> list[tuple[str, str]]:
    """`llm-perf info`'s table: the machine, its peaks (theoretical and measured) and its health."""

    def fmt(value, unit: str) -> str:
        return f"{value:,.4g} {unit}" if value else "n/a"

    rows = [
        ("device", f"{hw.name} ({hw.device})"),
        ("machine slug", machine_slug(hw)),
        ("cpu", f"{hw.cpu_model}, {hw.cpu_cores} cores"),
        ("memory", fmt(hw.memory_bytes and hw.memory_bytes / 2**30, "GiB")),
        ("driver / cuda / torch", f"{hw.driver or '-'} / {hw.cuda or '-'} / {hw.torch}"),
        ("transformers", hw.transformers),
        ("dtype", hw.dtype),
        ("bandwidth peak (NVML)", fmt(hw.theoretical_bw_gbps, "GB/s")),
        ("bandwidth measured (copy)", fmt(hw.measured_bw_gbps, "GB/s")),
        (f"compute peak ({hw.table_entry or 'no table entry'})", fmt(hw.theoretical_tflops, "TFLOP/s")),
        ("compute measured (matmul)", fmt(hw.measured_tflops, "TFLOP/s")),
        ("bandwidth check", hw.bw_warning or "n/a (no NVML peak to check against)"),
    ]
    if hw.health is not None:
        h = hw.health
        rows += [
            ("health", "ok" if h.healthy else "UNHEALTHY: " + "; ".join(h.problems)),
            ("temperature", fmt(h.temperature_c, "C")),
            ("power limit", fmt(h.power_limit_w, "W")),
            ("other GPU processes", str(h.other_processes)),
            ("clock event reasons", ", ".join(h.clock_event_reasons) or "none"),
        ]
    rows += [("note", n) for n in hw.notes]
    return rows
