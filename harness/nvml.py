"""NVML (nvidia-ml-py, `import pynvml`): loading it, finding torch's device in it, the GPU's health
before a case and samples between a case's rounds. NVML being absent or a query being unsupported is
a note, never a crash. NVML is passed in as a module so tests can hand in a fake one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import ModuleType

import torch

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
    except nvml_errors(pynvml) as exc:
        raise NvmlUnavailable(f"NVML could not start: {exc}") from exc
    return pynvml


def nvml_errors(nvml: ModuleType) -> tuple[type[BaseException], ...]:
    """What an NVML call may raise: NVMLError, and NVMLLibraryMismatchError, which nvidia-ml-py raises
    (not an NVMLError) when an unversioned function meets an older driver library."""
    mismatch = getattr(nvml, "NVMLLibraryMismatchError", None)
    return (nvml.NVMLError,) + ((mismatch,) if isinstance(mismatch, type) else ())


def nvml_query(nvml: ModuleType, notes: list[str], what: str, fn, *args):
    """Call one NVML function; an unsupported or failing query becomes a note and None."""
    try:
        return fn(*args)
    except nvml_errors(nvml) as exc:
        notes.append(f"NVML {what}: {exc}")
        return None


def nvml_handle(nvml: ModuleType, index: int, notes: list[str], props=None):
    """The NVML handle of torch's CUDA device `index`. torch numbers the devices CUDA_VISIBLE_DEVICES
    lets it see; NVML numbers every GPU on the machine. So the handle is looked up by the device's
    UUID (or PCI bus id) from torch, and by index only when neither is known."""
    props = props if props is not None else torch.cuda.get_device_properties(index)
    uuid = getattr(props, "uuid", None)
    if uuid is not None:
        text = str(uuid)
        handle = nvml_query(
            nvml,
            notes,
            "handle by UUID",
            nvml.nvmlDeviceGetHandleByUUID,
            text if text.startswith("GPU-") else f"GPU-{text}",
        )
        if handle is not None:
            return handle
    bus = getattr(props, "pci_bus_id", None)
    if bus is not None:
        bus_id = f"{getattr(props, 'pci_domain_id', 0):08x}:{bus:02x}:{getattr(props, 'pci_device_id', 0):02x}.0"
        handle = nvml_query(nvml, notes, "handle by PCI bus id", nvml.nvmlDeviceGetHandleByPciBusId, bus_id)
        if handle is not None:
            return handle
    notes.append(f"NVML device looked up by index {index}: with CUDA_VISIBLE_DEVICES set it may be another GPU")
    return nvml.nvmlDeviceGetHandleByIndex(index)


def own_pids(status_text: str | None = None) -> set[int]:
    """This process's PIDs in every PID namespace it is in. Inside a container NVML reports host PIDs,
    and /proc/self/status's NSpid line lists the host PID first, so the suite does not count itself
    as another process on the GPU."""
    if status_text is None:
        try:
            with open("/proc/self/status") as f:
                status_text = f.read()
        except OSError:
            status_text = ""
    for line in status_text.splitlines():
        if line.startswith("NSpid:"):
            return {int(p) for p in line.split()[1:]} | {os.getpid()}
    return {os.getpid()}


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


def decode_name(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def nvml_health(nvml: ModuleType, handle, notes: list[str], own_pid: int | set[int] | None = None) -> Health:
    health = Health()
    mine = own_pids() if own_pid is None else ({own_pid} if isinstance(own_pid, int) else own_pid)
    procs = nvml_query(nvml, notes, "running processes", nvml.nvmlDeviceGetComputeRunningProcesses, handle)
    if procs is not None:
        health.other_processes = sum(1 for p in procs if p.pid not in mine)
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


@dataclass(frozen=True)
class GpuSample:
    gpu_util_pct: float | None
    mem_util_pct: float | None
    power_w: float | None
    sm_clock_mhz: float | None
    temperature_c: float | None
    clock_events: tuple[str, ...]


class NvmlSampler:
    """Samples the GPU between a case's rounds, never during one: a polling thread beside the timed
    work would compete with it for the host. NVML's utilisation and power are averages over the
    driver's own recent window, so a sample taken just after a round describes that round. Beside
    them it records what makes a case unreliable (clock-event reasons such as thermal or power
    slowdowns, the SM clock, temperature); energy comes from the counter across the whole case."""

    def __init__(self, nvml: ModuleType, handle) -> None:
        self.nvml, self.handle = nvml, handle
        self.samples: list[GpuSample] = []
        self.notes: list[str] = []
        self._energy_start_mj: float | None = None
        self._energy_mj: float | None = None

    def _query(self, what: str, fn, *args):
        return nvml_query(self.nvml, self.notes, what, fn, self.handle, *args)

    def _energy(self) -> float | None:
        energy = self._query("energy", self.nvml.nvmlDeviceGetTotalEnergyConsumption)
        return None if energy is None else float(energy)

    def sample(self) -> None:
        n = self.nvml
        util = self._query("utilisation", n.nvmlDeviceGetUtilizationRates)
        power = self._query("power", n.nvmlDeviceGetPowerUsage)
        clock = self._query("SM clock", n.nvmlDeviceGetClockInfo, n.NVML_CLOCK_SM)
        temp = self._query("temperature", n.nvmlDeviceGetTemperature, n.NVML_TEMPERATURE_GPU)
        reasons_fn = (
            getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None) or n.nvmlDeviceGetCurrentClocksThrottleReasons
        )
        reasons = self._query("clock event reasons", reasons_fn)
        self.samples.append(
            GpuSample(
                None if util is None else float(util.gpu),
                None if util is None else float(util.memory),
                None if power is None else power / 1000,
                None if clock is None else float(clock),
                None if temp is None else float(temp),
                tuple(name for bit, name in CLOCK_EVENT_NAMES.items() if reasons and reasons & bit),
            )
        )

    def start(self) -> None:
        self._energy_start_mj = self._energy()

    def stop(self) -> None:
        self.sample()
        end = self._energy()
        if end is not None and self._energy_start_mj is not None:
            self._energy_mj = end - self._energy_start_mj

    def energy_j(self) -> float | None:
        return None if self._energy_mj is None else self._energy_mj / 1000

    def summary(self) -> dict[str, float]:
        """Means of utilisation and power over the samples; the lowest SM clock and highest temperature."""
        out: dict[str, float] = {}
        for key in ("gpu_util_pct", "mem_util_pct", "power_w"):
            values = [getattr(x, key) for x in self.samples if getattr(x, key) is not None]
            if values:
                out[key] = sum(values) / len(values)
        clocks = [x.sm_clock_mhz for x in self.samples if x.sm_clock_mhz is not None]
        temps = [x.temperature_c for x in self.samples if x.temperature_c is not None]
        if clocks:
            out["sm_clock_mhz_min"] = min(clocks)
        if temps:
            out["temperature_c_max"] = max(temps)
        return out

    def problems(self) -> list[str]:
        """What was seen while the case ran that makes its numbers unreliable."""
        seen = sorted({name for x in self.samples for name in x.clock_events})
        hot = [x.temperature_c for x in self.samples if x.temperature_c is not None and x.temperature_c >= HOT_GPU_C]
        problems = [f"while the case ran: clocks held down ({', '.join(seen)})"] if seen else []
        if hot:
            problems.append(f"while the case ran: temperature reached {max(hot):.0f} C (>= {HOT_GPU_C} C)")
        return problems
