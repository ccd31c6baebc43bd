"""The template for an engine of one's own (examples/external_engine): built and installed beside the
suite in a temporary folder, found by its entry point, run, gated, and A/B-compared in two builds."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "examples" / "external_engine"
SELECT = ["--perf-models", "tiny", "--perf-engines", "toy-greedy"]


def install(tmp: Path, name: str, extra_every: int = 0) -> Path:
    """The template built and installed (not editable) into a folder of its own; returns the folder."""
    src = tmp / f"src-{name}"
    subprocess.run(["cp", "-r", str(TEMPLATE), str(src)], check=True)
    init = src / "src" / "toy_engine" / "__init__.py"
    init.write_text(init.read_text().replace("EXTRA_FORWARD_EVERY = 0", f"EXTRA_FORWARD_EVERY = {extra_every}"))
    site = tmp / f"site-{name}"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    cmd += ["--target", str(site), str(src)]
    subprocess.run(cmd, check=True, capture_output=True)
    return site


def run(cmd: list[str], cwd: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, *cmd], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_the_template_engine_is_found_run_checked_and_gated_from_any_folder(tmp_path):
    site = install(tmp_path, "v1")
    work = tmp_path / "project"
    work.mkdir()
    listed = run(["-m", "harness", "engines"], work, site)
    assert "entry point (toy-engine)" in listed.stdout, listed.stderr
    assert "toy-greedy" in listed.stdout
    args = ["-m", "pytest", "--pyargs", "perf_tests", *SELECT, "--perf-tier", "quick", "-p", "no:cacheprovider"]
    args += ["-k", "generate or serving"]  # a request-level and a load-level case; batching adds time, not coverage
    first = run([*args, "--perf-rounds", "3", "--benchmark-json", "run.json"], work, site)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    assert "toy-greedy" in first.stdout
    assert "test_generate[tiny-toy-greedy-bs1-prompt32-new32] PASSED" in first.stdout or " passed" in first.stdout
    promoted = run(["-m", "harness", "baseline", "update", "--from", "run.json"], work, site)
    assert promoted.returncode == 0, promoted.stderr
    gated = run([*args, "--perf-rounds", "3", "--benchmark-compare", "--perf-require-baseline"], work, site)
    assert gated.returncode in (0, 10), gated.stdout[-3000:]  # judged against its own baseline, not an error
    assert "verdicts:" in gated.stdout


@pytest.mark.slow
def test_ab_of_two_builds_of_an_engine_this_repository_did_not_write(tmp_path):
    """The second build does a thrown-away forward every 2nd token: about 50% more work on tiny."""
    base, head = install(tmp_path, "base"), install(tmp_path, "head", extra_every=2)
    work = tmp_path / "project"
    work.mkdir()
    cmd = ["-m", "harness", "ab", "--base-path", str(base), "--head-path", str(head), "--sweeps", "5", "--case-s", "4"]
    cmd += ["--stage2-s", "6", "--order-seed", "3", "--", "--pyargs", "perf_tests", *SELECT, "-k", "generate"]
    result = run(cmd, work, tmp_path)
    assert result.returncode == 10, result.stdout[-3000:] + result.stderr[-2000:]
    assert "test_generate[tiny-toy-greedy-bs1-prompt32-new32]" in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith("test_generate[tiny-toy-greedy"))
    assert "REGRESSION" in row
