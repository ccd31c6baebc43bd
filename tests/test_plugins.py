"""Engines the suite did not write: entry points, --perf-engine-module, parity, transformers-cb."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.engines import EngineConfig
from harness.engines.hf_generate import HFGenerateEngine
from harness.engines.registry import discover, engine_sources
from harness.engines.transformers_cb import TransformersCBEngine
from harness.errors import PerfSuiteError
from harness.workloads import mixed_requests

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


@pytest.fixture
def toy_dist(tmp_path):
    """An installed-looking distribution that declares the toy engine under the suite's entry-point group."""
    info = tmp_path / "toy_engines_dist-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-engines-dist\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[llm_perf_suite.engines]\ntoy = toy_engines:ToyEngine\n")
    return tmp_path


def test_entry_point_and_engine_module_registration(toy_dist, monkeypatch):
    monkeypatch.syspath_prepend(str(toy_dist))
    monkeypatch.syspath_prepend(str(TESTS))
    sources = engine_sources(["examples.greedy_loop_engine:GreedyLoopEngine"])
    assert sources["toy"].origin == "entry point (toy-engines-dist)"
    assert sources["greedy-loop"].origin == "--perf-engine-module"
    assert sources["paged"].origin == "builtin"
    rows = {r.name: r for r in discover(["examples.greedy_loop_engine:GreedyLoopEngine"])}
    assert rows["toy"].available
    assert rows["greedy-loop"].available
    assert not rows["vllm"].available
    assert rows["vllm"].reason


def test_a_bad_engine_module_is_a_clear_error():
    with pytest.raises(PerfSuiteError, match="no_such_module"):
        engine_sources(["no_such_module:Engine"])
    with pytest.raises(PerfSuiteError, match="package.module:Class"):
        engine_sources(["just_a_name"])


def run_suite(tmp_path, toy_dist, *args):
    out = tmp_path / "out.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(toy_dist), str(TESTS), str(ROOT)])}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(ROOT / "perf_tests"),
        "-p",
        "no:cacheprovider",
        "--perf-models",
        "tiny",
        "--perf-rounds",
        "1",
        "--perf-warmup",
        "0",
        "--benchmark-json",
        str(out),
        *args,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    return proc, (json.loads(out.read_text()) if out.exists() and out.read_text().strip() else None)


@pytest.mark.slow
def test_external_engines_run_through_generate_and_serving(tmp_path, toy_dist):
    proc, doc = run_suite(
        tmp_path,
        toy_dist,
        "--perf-engines",
        "toy,greedy-loop",
        "-k",
        "generate or serving",
        "--perf-engine-module",
        "examples.greedy_loop_engine:GreedyLoopEngine",
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    names = {b["name"] for b in doc["benchmarks"]}
    assert {
        "test_serving[tiny-toy-mixed16]",
        "test_serving[tiny-greedy-loop-mixed16]",
        "test_generate[tiny-toy-bs1-prompt32-new32]",
    } <= names
    assert "test_serving[tiny-toy-mixed16]" in proc.stdout  # the summary table


@pytest.mark.slow
def test_a_wrong_engine_is_caught_by_the_parity_check(tmp_path, toy_dist):
    args = ["--perf-engines", "wrong-toy", "-k", "generate", "--perf-engine-module", "toy_engines:WrongToyEngine"]
    proc, _ = run_suite(tmp_path, toy_dist, *args)
    assert proc.returncode == 1
    assert (
        "parity check failed: engine wrong-toy differs from HF greedy on the probe workload: "
        "request 1 (id 1) at token 3" in proc.stdout
    )
    proc, _ = run_suite(tmp_path, toy_dist, *args, "--perf-no-parity")
    assert proc.returncode == 0, proc.stdout[-3000:]


@pytest.mark.slow
def test_an_engine_wrong_only_in_its_timed_rounds_fails_its_case_and_its_numbers_are_not_saved(tmp_path, toy_dist):
    """Right on the one-shot probe, wrong on every later call: the check of the timed rounds fails the
    case, names the round, request and token, and pytest-benchmark's JSON leaves the case out."""
    args = [
        "--perf-engines",
        "mutant-stale-across-rounds,manual",
        "-k",
        "generate",
        "--perf-engine-module",
        "mutants:StaleAcrossRounds",
    ]
    proc, doc = run_suite(tmp_path, toy_dist, *args)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "output check failed: engine mutant-stale-across-rounds differs from HF greedy on round 1 of" in proc.stdout
    assert "request 0 (id 0) at token" in proc.stdout
    assert {b["name"] for b in doc["benchmarks"]} == {"test_generate[tiny-manual-bs1-prompt32-new32]"}


def test_the_engine_docs_show_the_example_engine_verbatim():
    example = (ROOT / "examples" / "greedy_loop_engine.py").read_text()
    body = example[example.index("import torch") :]
    assert f"```python\n{body}```" in (ROOT / "docs" / "engines.md").read_text()


def test_transformers_cb_is_available_here():
    import torch

    assert TransformersCBEngine.unavailable_reason(torch.device("cpu")) is None


@pytest.mark.slow
def test_transformers_cb_matches_hf(tiny):
    reqs = mixed_requests(6, (3, 40), (2, 20), tiny.spec.vocab_size, seed=1)
    reference = [o.token_ids for o in HFGenerateEngine(tiny, EngineConfig()).generate(reqs).outputs]
    engine = TransformersCBEngine(tiny, EngineConfig())
    try:
        result = engine.generate(reqs)
        again = engine.generate(reqs)  # the manager is reused across rounds
    finally:
        engine.close()
    assert [o.token_ids for o in result.outputs] == reference
    assert [o.token_ids for o in again.outputs] == reference
    for out in result.outputs:
        assert out.arrival_s <= out.first_token_s <= out.finish_s


def test_an_engine_written_without_the_base_gets_its_defaults_and_keeps_its_own_methods():
    from harness.engines.base import BaseEngine, as_engine_class

    class Bare:
        name = "bare"

        def __init__(self, loaded, config):
            self.closed = False

        def close(self):
            self.closed = True

    cls = as_engine_class(Bare)
    assert issubclass(cls, Bare)
    assert issubclass(cls, BaseEngine)
    assert cls.name == "bare"
    assert cls.own_forward is False
    assert cls.teacher_forced_logits is None
    assert cls.unavailable_reason(torch.device("cpu")) is None
    engine = cls(None, None)  # its own constructor, not the base's
    engine.prepare([])  # the base's no-op
    engine.close()
    assert engine.closed  # its own close, not the base's
    assert as_engine_class(cls) is cls
