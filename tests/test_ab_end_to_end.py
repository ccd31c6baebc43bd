"""`llm-perf ab` for real, on the tiny model: two trees, fresh worker processes per sweep, verdicts."""

import os
import shutil
import sys
from pathlib import Path

import pytest

from harness.ab.plan import Plan
from harness.ab.runner import ab
from harness.ab.sides import resolve_side, worker_env
from harness.errors import EXIT_REGRESSION, PerfSuiteError

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["perf_tests", "--perf-models", "tiny", "-k", "decode and bs8 and ctx128"]
QUICK = Plan(sweeps=4, case_s=3.0, suspects=1, stage2_s=4.0, stage2_sweeps=4)


def tree_copy(tmp_path: Path, name: str) -> Path:
    """The suite's code in a folder of its own (what a worktree of a ref gives)."""
    dst = tmp_path / name
    shutil.copytree(ROOT / "harness", dst / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "perf_tests", dst / "perf_tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    return dst


def slowed(tree: Path) -> Path:
    """A real regression: the manual engine runs every forward twice (the same outputs, twice the work)."""
    path = tree / "harness" / "engines" / "manual.py"
    text = path.read_text()
    old = "        logits = self._last_logits(ids, cache)\n"
    assert old in text
    new = "        self._last_logits(ids, cache.__class__(config=self.model.config))\n" + old
    path.write_text(text.replace(old, new))
    return tree


@pytest.mark.slow
def test_ab_finds_a_real_regression_in_the_slowed_tree_and_nowhere_else(tmp_path):
    base, head = tree_copy(tmp_path, "base"), slowed(tree_copy(tmp_path, "head"))
    result = ab(str(base), str(head), ARGS, QUICK, out=str(tmp_path / "ab.json"), seed=1)
    verdicts = {v.name: v for v in result.verdicts}
    assert result.exit_code == EXIT_REGRESSION, "\n".join(result.lines)
    assert verdicts["test_decode[tiny-manual-bs8-ctx128]"].status == "regression"
    assert verdicts["test_decode[tiny-paged-bs8-ctx128]"].status != "regression"
    assert verdicts["test_decode[tiny-manual-bs8-ctx128]"].change < -0.2
    assert verdicts["test_decode[tiny-manual-bs8-ctx128] work:flops"].status == "regression"  # counted by the worker
    assert "test_decode[tiny-paged-bs8-ctx128] work:flops" not in verdicts  # the same arithmetic: no row
    doc = result.doc
    assert set(doc["spent_s"]) == {"start", "prepare", "open", "rounds", "close"}
    visits = doc["cases"]["test_decode[tiny-manual-bs8-ctx128]"]["visits"]
    assert len({v["sweep"] for v in visits if v["stage"] == 1}) == len([v for v in visits if v["stage"] == 1])
    assert (tmp_path / "ab.json").exists()


def test_ab_with_no_case_selected_is_an_error():
    with pytest.raises(PerfSuiteError, match="no case in common"):
        ab(str(ROOT), str(ROOT), ["perf_tests", "--perf-models", "tiny", "-k", "nothing-matches-this"], QUICK, seed=1)


def test_sides_get_environments_of_equal_size_before_their_random_pad(tmp_path):
    import random

    short = resolve_side("base", str(tree_copy(tmp_path, "b")), None, tmp_path)
    long = resolve_side("head", str(tree_copy(tmp_path, "a-much-longer-folder-name")), None, tmp_path)
    suite = tmp_path / "suite"
    sizes = []
    for side, other in ((short, long), (long, short)):
        env = worker_env(side, other, suite, random.Random(0))
        sizes.append(len(env["PYTHONPATH"]) + len(env["LLM_PERF_LAYOUT_PAD"]))
        assert env["PYTHONPATH"] == str(side.path)
    assert sizes[0] == sizes[1]
    rng = random.Random(0)
    pads = {len(worker_env(short, long, suite, rng)["LLM_PERF_LAYOUT_PAD"]) for _ in range(20)}
    assert len(pads) > 10  # drawn anew for each process


def test_environment_sides_run_this_suites_code_with_their_own_path_first(tmp_path):
    engine_checkout = tmp_path / "engine"
    engine_checkout.mkdir()
    side = resolve_side("head", None, None, tmp_path, env=(sys.executable, str(engine_checkout)))
    assert side.path is None
    assert side.python == sys.executable
    assert side.import_path(tmp_path / "suite").split(os.pathsep) == [str(engine_checkout), str(tmp_path / "suite")]
    with pytest.raises(PerfSuiteError, match="--base-python /nonexistent: not an executable file"):
        resolve_side("base", None, None, tmp_path, env=("/nonexistent", None))
    with pytest.raises(PerfSuiteError, match="not both"):
        resolve_side("base", "main", None, tmp_path, env=(sys.executable, None))
