"""NVML paths with a fake pynvml module: no GPU needed."""

import sys
import types

import pytest

from harness import hardware
from harness.hardware import (
    HardwareInfo,
    NvmlUnavailable,
    bandwidth_warning,
    machine_slug,
    nvml_health,
    nvml_peak_bw_bytes_s,
)


class FakeNVMLError(Exception):
    pass


class NotSupported(FakeNVMLError):
    def __str__(self):
        return "Not Supported"


def fake_nvml(**overrides):
    util = types.SimpleNamespace(gpu=87, memory=61)
    funcs = dict(
        NVMLError=FakeNVMLError,
        NVML_CLOCK_MEM=2,
        NVML_TEMPERATURE_GPU=0,
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: f"gpu{i}",
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3",
        nvmlSystemGetDriverVersion=lambda: "550.54.15",
        nvmlDeviceGetMaxClockInfo=lambda h, clock: 2619,
        nvmlDeviceGetMemoryBusWidth=lambda h: 5120,
        nvmlDeviceGetComputeRunningProcesses=lambda h: [types.SimpleNamespace(pid=1234)],
        nvmlDeviceGetCurrentClocksEventReasons=lambda h: 0x1,  # idle only
        nvmlDeviceGetTemperature=lambda h, sensor: 41,
        nvmlDeviceGetEnforcedPowerLimit=lambda h: 700_000,
        nvmlDeviceGetPowerManagementDefaultLimit=lambda h: 700_000,
        nvmlDeviceGetUtilizationRates=lambda h: util,
        nvmlDeviceGetPowerUsage=lambda h: 350_000,
        nvmlDeviceGetTotalEnergyConsumption=lambda h: 1_000_000,
    )
    funcs.update(overrides)
    return types.SimpleNamespace(**funcs)


def test_h100_peak_bandwidth_from_nvml():
    notes = []
    assert nvml_peak_bw_bytes_s(fake_nvml(), "gpu0", notes) == pytest.approx(3.352e12, rel=1e-4)
    assert notes == []


def test_an_unsupported_query_is_a_note_not_a_crash():
    def unsupported(*_):
        raise NotSupported()

    notes = []
    nvml = fake_nvml(nvmlDeviceGetMemoryBusWidth=unsupported, nvmlDeviceGetTemperature=unsupported)
    assert nvml_peak_bw_bytes_s(nvml, "gpu0", notes) is None
    health = nvml_health(nvml, "gpu0", notes, own_pid=1234)
    assert health.healthy
    assert health.temperature_c is None
    assert notes == ["NVML memory bus width: Not Supported", "NVML temperature: Not Supported"]


def test_nvml_library_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    with pytest.raises(NvmlUnavailable, match="nvidia-ml-py is not installed"):
        hardware.load_nvml()


def test_nvml_init_failure(monkeypatch):
    def fail():
        raise FakeNVMLError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(nvmlInit=fail))
    with pytest.raises(NvmlUnavailable, match="Shared Library Not Found"):
        hardware.load_nvml()


def test_health_problems_are_named():
    nvml = fake_nvml(
        nvmlDeviceGetCurrentClocksEventReasons=lambda h: 0x1 | 0x20 | 0x4,
        nvmlDeviceGetTemperature=lambda h, s: 90,
        nvmlDeviceGetEnforcedPowerLimit=lambda h: 400_000,
    )
    health = nvml_health(nvml, "gpu0", [], own_pid=99)
    assert not health.healthy
    text = "; ".join(health.problems)
    assert "1 other process" in text
    assert "sw_thermal_slowdown" in text
    assert "sw_power_cap" in text
    assert "90 C" in text
    assert "400 W below default 700 W" in text


def test_fill_from_nvml_and_slug():
    info = HardwareInfo(device="cuda:0", name="?", dtype="bfloat16", cpu_model="x", cpu_cores=16)
    hardware._fill_from_nvml(info, fake_nvml(), 0)
    assert info.name == "NVIDIA H100 80GB HBM3"
    assert info.driver == "550.54.15"
    assert info.theoretical_bw_gbps == pytest.approx(3352.32)
    assert machine_slug(info) == "nvidia-h100-80gb-hbm3"
    cpu = HardwareInfo(device="cpu", name="AMD EPYC", dtype="float32", cpu_model="AMD EPYC 7B13", cpu_cores=2)
    assert machine_slug(cpu) == "cpu-amd-epyc-7b13-2c"


def test_bandwidth_check():
    assert "WARNING" in bandwidth_warning(2000, 3352)
    assert "ok" in bandwidth_warning(3000, 3352)
    assert bandwidth_warning(30, None) is None


def test_sampler_energy_per_token():
    energy = iter([1_000_000, 1_350_000])  # mJ counter before and after: 350 J
    nvml = fake_nvml(nvmlDeviceGetTotalEnergyConsumption=lambda h: next(energy))
    with hardware.NvmlSampler(nvml, 0, interval_s=0.001) as sampler:
        import time

        time.sleep(0.02)
    summary = sampler.summary(700)
    assert summary["j_per_token"] == pytest.approx(0.5)
    assert summary["gpu_util_pct"] == 87
    assert summary["power_w"] == 350


def test_cpu_probe_measures_without_nvml():
    info = hardware.probe("cpu", "float32")
    assert info.measured_bw_gbps > 0
    assert info.measured_tflops > 0
    assert info.theoretical_bw_gbps is None
    peaks = info.peaks()
    assert peaks.bw_source == "measured"
    assert peaks.flops_source == "measured"
