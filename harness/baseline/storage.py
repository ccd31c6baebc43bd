"""Where baselines live: baselines/<slug>/baseline.json. What a results file holds is harness/results.py;
how files are written, harness/files.py."""

from __future__ import annotations

from pathlib import Path

from harness.results import ResultsFile

BASELINE_ROOT = Path("baselines")
BASELINE_FILE = "baseline.json"
STABLE_MACHINE_KEYS = ("slug", "gpu", "driver_major", "cuda", "torch", "transformers", "dtype", "cpu")


def baseline_path(slug: str, root: Path = BASELINE_ROOT) -> Path:
    return root / slug / BASELINE_FILE


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
