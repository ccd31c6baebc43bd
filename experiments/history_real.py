"""`llm-perf history check` on real runs: nights of the quick tier, a real regression patch from the
middle night on.

    python -m experiments.history_real --commit C --patch prefill-qkv-twice --nights 10 --keep DIR

Runs the suite `--nights` times in a row on this machine: the first half in C's tree, the rest with
the patch applied (the step is at night nights // 2 + 1). Each run is added to a fresh history in DIR
under its night's date, and the check is run after each night from the step on, as the nightly job
would. Prints the nights on which the check failed the job and what it found; the patch's case must
be among them for the step to count as found.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
from pathlib import Path

from experiments.trees import trees

CI_ARGS = ["perf_tests", "--perf-tier", "quick"]
FIRST_NIGHT = datetime.datetime(2026, 1, 1, 2, 0)


def night_date(night: int) -> str:
    """The ISO date a night's run is filed under (night 1 is FIRST_NIGHT, one a day)."""
    return (FIRST_NIGHT + datetime.timedelta(days=night - 1)).isoformat()


def _env(tree: Path) -> dict:
    """The tree's own code first. A tree with the `llm_perf` entry point's conftest (this one and later)
    loads its plugin through the entry point, which resolves to the tree's own module."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PERF_INJECT_SLOWDOWN", "PERF_INJECT_CASE")}
    return env | {"PYTHONPATH": str(tree)}


def run_suite(tree: Path, args: list[str], out: Path) -> None:
    cmd = [sys.executable, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider", "--benchmark-json", str(out)]
    if subprocess.run(cmd, cwd=tree, env=_env(tree), stdout=subprocess.DEVNULL).returncode != 0:
        raise SystemExit(f"the suite failed in {tree}: {' '.join(cmd)}")


def history(tree: Path, store: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "harness", "history", *args, "--history", str(store)]
    return subprocess.run(cmd, cwd=tree, env=_env(tree), capture_output=True, text=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.history_real", description=__doc__.split("\n")[0])
    parser.add_argument("--commit", required=True)
    parser.add_argument("--patch", required=True)
    parser.add_argument("--nights", type=int, default=10)
    parser.add_argument("--keep", type=Path, required=True)
    args, pytest_args = parser.parse_known_args(argv)
    args.keep.mkdir(parents=True, exist_ok=True)
    store, step = args.keep / "history.sqlite", args.nights // 2 + 1
    with trees(args.commit, [args.patch]) as (base, heads):
        for night in range(1, args.nights + 1):
            tree = base if night < step else heads[args.patch]
            out = args.keep / f"night-{night:02d}.json"
            run_suite(tree, [*CI_ARGS, *pytest_args], out)
            added = history(base, store, "add", str(out), "--commit", f"night{night}", "--date", night_date(night))
            if added.returncode != 0:
                raise SystemExit(added.stderr)
            if night >= step:
                checked = history(base, store, "check")
                found = [line for line in checked.stdout.splitlines() if "regression" in line]
                print(f"night {night}: check exit {checked.returncode}; {len(found)} regression(s)", flush=True)
                print("\n".join(f"  {line}" for line in found), flush=True)
        print(history(base, store, "show", "--out", str(args.keep / "show")).stdout[-2000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
