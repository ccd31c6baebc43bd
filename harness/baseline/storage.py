"""Results files: read with errors that name the file, write atomically (temp file + rename)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from harness.errors import BaselineError

BASELINE_ROOT = Path("baselines")
BASELINE_FILE = "baseline.json"
STABLE_MACHINE_KEYS = ("slug", "gpu", "driver_major", "cuda", "torch", "transformers", "dtype", "cpu")


def baseline_path(slug: str, root: Path = BASELINE_ROOT) -> Path:
    return root / slug / BASELINE_FILE


def write_json_atomic(path: Path, doc: dict) -> None:
    """Sorted, indented JSON, written to a temp file in the same folder then renamed over the target:
    a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; a baseline is for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_results(path: str | Path) -> dict:
    """A pytest-benchmark JSON document with raw rounds; anything else is a BaselineError naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not text.strip():
        raise BaselineError(f"{path}: the file is empty")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BaselineError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise BaselineError(f"{path}: not a pytest-benchmark results file (no 'benchmarks' list)")
    for i, bench in enumerate(doc["benchmarks"]):
        problem = _bench_problem(bench)
        if problem:
            raise BaselineError(
                f"{path}: benchmark #{i} ({bench.get('name', '?') if isinstance(bench, dict) else '?'}) {problem}"
            )
    return doc


def _bench_problem(bench: object) -> str | None:
    if not isinstance(bench, dict) or "name" not in bench:
        return "is not an object with a name"
    data = (bench.get("stats") or {}).get("data")
    if not data:
        return "has no raw rounds (stats.data): record with --benchmark-save-data (the suite's default)"
    if not isinstance((bench.get("extra_info") or {}).get("tokens"), int | float):
        return "has no extra_info.tokens: it was not recorded by llm-perf-suite"
    return None


def stable_machine_info(hw, dtype: str) -> dict:
    """Only keys that identify the machine and stack: a mismatch warning about these means something."""
    driver = hw.driver.split(".")[0] if hw.driver else None
    return {
        "slug": None,
        "gpu": hw.name if hw.device.startswith("cuda") else None,
        "driver_major": driver,
        "cuda": hw.cuda,
        "torch": hw.torch,
        "transformers": hw.transformers,
        "dtype": dtype,
        "cpu": hw.cpu_model,
    }
