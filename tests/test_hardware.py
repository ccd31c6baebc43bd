"""NVML paths with a fake pynvml module: no GPU needed."""

import sys
import types

import pytest

from harness import hardware
from harness import nvml as nvml_lib
from harness.hardware import HardwareInfo, bandwidth_warning, machine_slug
from harness.nvml import NvmlUnavailable, nvml_health, nvml_peak_bw_bytes_s


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
        NVML_CLOCK_SM=1,
        nvmlDeviceGetHandleByIndex=lambda i: f"gpu{i}",
        nvmlDeviceGetHandleByUUID=lambda uuid: f"uuid:{uuid}",
        nvmlDeviceGetHandleByPciBusId=lambda bus: f"pci:{bus}",
        nvmlDeviceGetClockInfo=lambda h, clock: 1980,
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
        nvml_lib.load_nvml()


def test_nvml_init_failure(monkeypatch):
    def fail():
        raise FakeNVMLError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(nvmlInit=fail))
    with pytest.raises(NvmlUnavailable, match="Shared Library Not Found"):
        nvml_lib.load_nvml()


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


PROPS = types.SimpleNamespace(
    uuid="5c2ab0e3-0000-1111-2222-333344445555", pci_bus_id=0x1B, pci_device_id=0, pci_domain_id=0
)


def test_fill_from_nvml_and_slug():
    info = HardwareInfo(device="cuda:0", name="?", dtype="bfloat16", cpu_model="x", cpu_cores=16)
    hardware._fill_from_nvml(info, fake_nvml(), 0, PROPS)
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


def test_sampler_energy_and_what_it_saw_between_rounds():
    energy = iter([1_000_000, 1_350_000])  # mJ counter at start and stop: 350 J
    reasons = iter([0x1, 0x1, 0x40])  # idle, idle, then a hardware thermal slowdown after the last round
    nvml = fake_nvml(
        nvmlDeviceGetTotalEnergyConsumption=lambda h: next(energy),
        nvmlDeviceGetCurrentClocksEventReasons=lambda h: next(reasons),
    )
    sampler = nvml_lib.NvmlSampler(nvml, "gpu0")
    sampler.start()
    sampler.sample()
    sampler.sample()
    sampler.stop()
    assert sampler.energy_j() == pytest.approx(350)
    summary = sampler.summary()
    assert summary["gpu_util_pct"] == 87
    assert summary["power_w"] == 350
    assert summary["sm_clock_mhz_min"] == 1980
    assert sampler.problems() == ["while the case ran: clocks held down (hw_thermal_slowdown)"]


def test_no_sampling_thread_runs_beside_the_timed_rounds(tiny):
    """The sampler is called between rounds (pytest-benchmark's setup), never from a thread."""
    import threading

    import torch

    from harness.timer import CaseTimer

    threads_seen = []
    nvml = fake_nvml(nvmlDeviceGetUtilizationRates=lambda h: (threads_seen.append(threading.active_count()), UTIL)[1])

    class Bench:
        disabled = False

        def pedantic(self, target, rounds, warmup_rounds, iterations, setup=None):
            for _ in range(rounds + warmup_rounds):
                setup()
                counts.append(threading.active_count())
                target()

    counts = []
    timer = CaseTimer(torch.device("cpu"), rounds=3, warmup_rounds=0, nvml=nvml, nvml_handle="gpu0")
    timing = timer.time(Bench(), lambda: counts.append(threading.active_count()), tiny, (1, 4))
    assert len(threads_seen) == 3 + 1  # before each round, and once after the last
    assert len(set(counts)) == 1  # no thread started for the case
    assert timing.sampled["gpu_util_pct"] == 87


UTIL = types.SimpleNamespace(gpu=87, memory=61)


def test_nvml_handle_follows_the_device_torch_sees_not_its_index():
    """Under CUDA_VISIBLE_DEVICES=3, torch's cuda:0 is NVML's GPU 3: look it up by UUID, then PCI bus."""
    notes = []
    nvml = fake_nvml()
    assert nvml_lib.nvml_handle(nvml, 0, notes, PROPS) == "uuid:GPU-5c2ab0e3-0000-1111-2222-333344445555"

    def unknown(*_):
        raise FakeNVMLError("Not Found")

    nvml = fake_nvml(nvmlDeviceGetHandleByUUID=unknown)
    assert nvml_lib.nvml_handle(nvml, 0, notes, PROPS) == "pci:00000000:1b:00.0"
    bare = types.SimpleNamespace()
    assert nvml_lib.nvml_handle(nvml, 0, notes, bare) == "gpu0"
    assert "looked up by index 0" in notes[-1]


def test_inside_a_container_the_suite_is_not_another_process():
    """NVML lists host PIDs; /proc/self/status's NSpid gives this process's host PID first."""
    status = "Name:\tpython\nNSpid:\t48211\t37\nVmHWM:\t100 kB\n"
    mine = nvml_lib.own_pids(status)
    assert 48211 in mine
    nvml = fake_nvml(nvmlDeviceGetComputeRunningProcesses=lambda h: [types.SimpleNamespace(pid=48211)])
    health = nvml_health(nvml, "gpu0", [], own_pid=mine)
    assert health.other_processes == 0
    assert health.healthy


def test_a_library_version_mismatch_is_a_note_not_a_crash():
    class NVMLLibraryMismatchError(Exception):  # nvidia-ml-py's: not a subclass of NVMLError
        pass

    def mismatch(*_):
        raise NVMLLibraryMismatchError("Unversioned function called and the pyNVML version does not match")

    notes = []
    nvml = fake_nvml(NVMLLibraryMismatchError=NVMLLibraryMismatchError, nvmlDeviceGetComputeRunningProcesses=mismatch)
    health = nvml_health(nvml, "gpu0", notes, own_pid=1)
    assert health.other_processes is None
    assert "pyNVML version does not match" in notes[0]


def test_gpu_to_host_block_copies_are_never_asynchronous():
    """Swap-out reads the staged CPU tensor at once: the copy must have landed."""
    import torch

    from harness.engines.paged.model_runner import copy_may_overlap

    assert not copy_may_overlap(torch.device("cuda", 0), torch.device("cpu"))
    assert copy_may_overlap(torch.device("cpu"), torch.device("cuda", 0))
    assert not copy_may_overlap(torch.device("cpu"), torch.device("cpu"))


def test_decode_never_reads_a_position_back_from_the_device(tiny):
    """The RoPE table size comes from the host-side positions, not from positions.max() on the device."""
    import torch

    from harness.engines import EngineConfig
    from harness.engines.paged.engine import PagedEngine

    runner = PagedEngine(tiny, EngineConfig(), num_blocks=8).runner
    pos = torch.tensor([3, 1500])

    class NoItem(torch.Tensor):
        def max(self, *a, **k):
            raise AssertionError("synchronising read of the positions")

    cos, sin = runner._rope(pos.as_subclass(NoItem), 1500)
    assert cos.shape[0] == 2


def test_last_level_cache_from_sysfs(tmp_path):
    for i, (level, size) in enumerate([(1, "32K"), (1, "32K"), (2, "512K"), (3, "32768K")]):
        (tmp_path / f"index{i}").mkdir()
        (tmp_path / f"index{i}" / "level").write_text(f"{level}\n")
        (tmp_path / f"index{i}" / "size").write_text(f"{size}\n")
    import torch

    assert hardware.last_level_cache_bytes(torch.device("cpu"), str(tmp_path)) == 32 << 20
    assert hardware.last_level_cache_bytes(torch.device("cpu"), str(tmp_path / "none")) is None


def test_cpu_probe_measures_without_nvml():
    info = hardware.probe("cpu", "float32")
    assert info.measured_bw_gbps > 0
    assert info.measured_read_bw_gbps > 0
    assert info.measured_tflops > 0
    assert info.theoretical_bw_gbps is None
    peaks = info.peaks()
    assert peaks.bw_source == "measured read"  # decode reads: the bound is the read bandwidth
    assert peaks.bw_bytes_s == pytest.approx(info.measured_read_bw_gbps * 1e9)
    assert peaks.flops_source == "measured"
