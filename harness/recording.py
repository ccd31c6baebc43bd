"""What a case records: its CaseResult, built from the timing, the roofline cost and the machine.

The bench (harness/bench.py) runs a case and calls `case_result` once per recording (again after the
case's later passes); nothing here times or runs anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import roofline
from harness.cases import Case, get_kind
from harness.hardware import HardwareInfo
from harness.results import CaseResult
from harness.specs import ModelSpec
from harness.timer import Timing
from harness.workloads import Request


@dataclass(frozen=True)
class Measured:
    """One recording of a case: tokens a round produces, its median round time, its cost, its timing."""

    tokens: int
    median_s: float
    cost: roofline.PhaseCost
    timing: Timing


def case_result(
    case: Case,
    m: Measured,
    hw: HardwareInfo,
    dtype: str,
    spec: ModelSpec,
    *,
    own_forward: bool,
    seed: int,
    extra: dict,
    requests: list[Request],
) -> CaseResult:
    """The case's record: what ran, its throughput against the roofline, the machine, and `extra`
    (a generate kind's metrics, work counters and output check) on top."""
    peaks = hw.peaks()
    result = CaseResult(
        kind=case.kind,
        model=case.model,
        engine=case.engine,
        dtype=dtype,
        batch_size=case.batch_size,
        prompt_len=case.prompt_len,
        context_len=case.context_len,
        new_tokens=case.new_tokens,
        workload=case.workload,
        tokens=m.tokens,
        tokens_per_s=roofline.tokens_per_s(m.tokens, m.median_s),
        median_ms=m.median_s * 1e3,
        own_forward=own_forward,
        seed=seed,
        **machine_fields(hw, peaks, m.timing),
    )
    if get_kind(case.kind).step:
        result.update({f"{case.kind}_ms": m.median_s * 1e3})
    result.update(roofline.utilisation(m.cost, peaks, m.median_s))
    _working_set(result, case, requests, spec, dtype, hw, peaks)
    timing = m.timing
    result.update(timing.sampled)
    result.update(timing.memory)
    if timing.energy_j:
        result.j_per_token = timing.energy_j / (m.tokens * timing.rounds_run)
    if timing.reference_ms:
        result.reference_ms, result.reference_shape = timing.reference_ms, list(timing.reference_shape)
    result.update(extra)
    if result.kv_pool_tokens:
        result.kv_pool_mb = result.kv_pool_tokens * roofline.kv_bytes_per_token(spec, dtype) / 2**20
    return result


def machine_fields(hw: HardwareInfo, peaks: roofline.Peaks, timing: Timing) -> dict:
    """What a case records about the machine it ran on: peaks, measured figures, GPU health."""
    return dict(
        device=hw.name,
        peak_bw_gbps=peaks.bw_bytes_s / 1e9,
        peak_bw_source=peaks.bw_source,
        peak_tflops=peaks.flops_s / 1e12,
        peak_flops_source=peaks.flops_source,
        theoretical_bw_gbps=hw.theoretical_bw_gbps,
        measured_bw_gbps=hw.measured_bw_gbps,
        theoretical_tflops=hw.theoretical_tflops,
        measured_tflops=hw.measured_tflops,
        measured_read_bw_gbps=hw.measured_read_bw_gbps,
        llc_mb=hw.llc_bytes and hw.llc_bytes / 2**20,
        bw_warning=hw.bw_warning,
        gpu_healthy=None if hw.health is None else hw.health.healthy and not timing.gpu_problems,
        health_problems=[] if hw.health is None else hw.health.problems + timing.gpu_problems,
    )


def _working_set(result: CaseResult, case: Case, requests, spec, dtype, hw: HardwareInfo, peaks) -> None:
    """Does the case's working set fit in the last-level cache, and, above 100%, why."""
    working = roofline.working_set_bytes(spec, dtype, get_kind(case.kind).held_tokens(case, requests))
    llc = hw.llc_bytes
    result.working_set_mb = working / 2**20
    result.fits_llc = None if llc is None else working <= llc
    result.roofline_note = roofline.over_roofline_note(result.pct_of_roofline, result.bound, working, llc, peaks)
