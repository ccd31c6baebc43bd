"""The suite end to end through pytest, in subprocesses (as a user runs it)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIELDS = [
    "model",
    "engine",
    "device",
    "dtype",
    "batch_size",
    "prompt_len",
    "context_len",
    "new_tokens",
    "tokens",
    "tokens_per_s",
    "roofline_ms",
    "pct_of_roofline",
    "bound",
    "arith_intensity",
    "mbu",
    "mfu",
    "peak_bw_gbps",
    "peak_tflops",
    "theoretical_bw_gbps",
    "measured_bw_gbps",
    "measured_tflops",
    "measured_read_bw_gbps",
    "fits_llc",
]


def run_pytest(*args, env=None, cwd=ROOT):
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "perf_tests"), "-p", "no:cacheprovider", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out.json"
    proc = run_pytest("--perf-models", "tiny", "--perf-rounds", "2", "--perf-warmup", "0", "--benchmark-json", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_every_kind_is_recorded_with_its_fields(tiny_results):
    doc, _ = tiny_results
    kinds = {b["extra_info"]["kind"] for b in doc["benchmarks"]}
    assert kinds == {"prefill", "decode", "batching", "generate", "serving"}
    for b in doc["benchmarks"]:
        info = b["extra_info"]
        missing = [f for f in FIELDS if f not in info]
        assert not missing, (b["name"], missing)
        assert info["tokens_per_s"] > 0
        assert info["pct_of_roofline"] > 0
        assert info["pct_of_roofline"] <= 1 or info.get("roofline_note"), (b["name"], info["pct_of_roofline"])
        assert info["working_set_mb"] > 0
        assert "peak_rss_mb" in info  # CPU: the case's own peak resident set
        assert len(b["stats"]["data"]) == 2  # raw rounds are saved for the gate


def test_ids_are_readable_and_stable(tiny_results):
    doc, _ = tiny_results
    names = {b["name"] for b in doc["benchmarks"]}
    assert "test_decode[tiny-manual-bs8-ctx512]" in names
    assert "test_prefill[tiny-paged-bs4-prompt256]" in names
    assert "test_serving[tiny-paged-mixed16]" in names
    assert "test_batching[tiny-static-batch-bs16-prompt32-new32]" in names


def test_header_and_summary_table(tiny_results):
    doc, stdout = tiny_results
    assert doc["machine_info"]["cpu_products"].startswith("onednn")  # float32 on CPU
    assert "llm-perf-suite device:" in stdout
    assert "bandwidth peak" in stdout
    assert "llm-perf-suite CPU products (float32): onednn" in stdout
    assert "llm-perf-suite: throughput and roofline" in stdout
    assert "% roofline" in stdout


def test_an_unknown_model_stops_with_the_valid_names():
    proc = run_pytest("--perf-models", "nope")
    assert proc.returncode != 0
    assert "unknown model 'nope'" in proc.stderr
    assert "qwen3-0.6b" in proc.stderr
    assert "small" in proc.stderr


def test_old_option_names_still_work_for_one_release_with_a_warning():
    proc = run_pytest("--models", "tiny", "--engines", "paged", "-k", "decode and bs1", "--benchmark-disable", "-v")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "--models -> --perf-models" in proc.stdout  # in the terminal summary
    assert "tiny-paged-bs1" in proc.stdout


def test_benchmark_compare_fail_is_refused_with_the_reason():
    proc = run_pytest("--perf-models", "tiny", "--benchmark-compare-fail", "mean:5%")
    assert proc.returncode == 4
    assert "--benchmark-compare-fail compares pytest-benchmark's time statistics" in proc.stderr


@pytest.mark.slow
def test_gate_through_pytest(tmp_path):
    common = [
        "--perf-models",
        "tiny",
        "--perf-tier",
        "quick",
        "--perf-rounds",
        "7",
        "-k",
        "decode",
        "--perf-baselines-dir",
        str(tmp_path / "baselines"),
        "--perf-results-dir",
        str(tmp_path / "results"),
    ]
    # no baseline for this machine: the run is recorded, one line says so, exit 0; an error when required
    proc = run_pytest(*common, "--benchmark-compare")
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "no baseline for this machine" in proc.stdout
    proc = run_pytest(*common, "--benchmark-compare", "--perf-require-baseline")
    assert proc.returncode == 11, proc.stdout[-2000:]
    assert "llm-perf baseline update" in proc.stdout
    saved = next((tmp_path / "results").glob("*/latest.json"))
    # promote it, then a run twice as slow fails with the gate's own exit code and table
    slug = saved.parent.name
    (tmp_path / "baselines" / slug).mkdir(parents=True)
    (tmp_path / "baselines" / slug / "baseline.json").write_text(saved.read_text())
    summary = tmp_path / "summary.md"
    summarised = ["--benchmark-compare", "--perf-summary", str(summary)]
    proc = run_pytest(*common, *summarised, env={"PERF_INJECT_SLOWDOWN": "1.0"})
    assert proc.returncode == 10, proc.stdout[-3000:]
    assert "REGRESSION" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "**regression**" in summary.read_text()
    assert "| `test_decode[tiny-manual-bs1-ctx128]` |" in summary.read_text()


def test_a_bad_tool_perf_value_stops_the_run_at_once_with_one_line(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.perf]\nnormalise = "sometimes"\n')
    proc = run_pytest("-c", str(tmp_path / "pyproject.toml"), "--perf-models", "tiny", cwd=tmp_path)
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "normalise must be one of run, case, off" in proc.stderr
    assert str(tmp_path / "pyproject.toml") in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
