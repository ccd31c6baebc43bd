"""Where results live and how they are written: baselines/<slug>/baseline.json, atomic writes
(temp file + rename). What a results file holds is harness/results.py."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from harness.results import ResultsFile

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


def load_results(path: str | Path) -> ResultsFile:
    """A results file with raw rounds (harness/results.py); anything else is a BaselineError naming the file."""
    return ResultsFile.load(path)


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
