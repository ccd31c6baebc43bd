"""Does the stored-baseline gate pass unchanged runs and fail real regressions?

    python -m experiments.gate_check --commit C --trials 20 --keep DIR --seed 1 [--baseline FILE] [-- pytest args]

With no --baseline, records one first in C's tree (`llm-perf baseline update --runs 5`, with the
pytest arguments; default: the quick tier) and keeps it as DIR/baseline.json; --baseline FILE judges
against an earlier one (a baseline from another day). Then, in a seeded random order, runs the suite
`--trials` times for each scenario and judges each run with C's `llm-perf compare`:
- unchanged: C as it is; fails when anything is called a regression;
- one case: C with a patch that does about 25% more work in one case (ONE_CASE); passes only with
  exit 10 and that case flagged;
- every case: C with every engine's work slowed 10% (PERF_INJECT_SLOWDOWN=0.10, the one injection
  path); passes on exit 10.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from experiments.trees import trees
from experiments.trials import run_trials, summary

ONE_CASE = ("prefill-qkv-twice", "test_prefill[small-paged-bs1-prompt128]")
LABELS = ("unchanged", "one case 25%", "every case 10%")


def _env(tree: Path, slowdown: float = 0.0) -> dict:
    """The tree's own code first: the installed entry point (`llm_perf`) names the module
    harness.pytest_plugin, which PYTHONPATH then finds in the tree, not in the installed copy."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PERF_INJECT_SLOWDOWN", "PERF_INJECT_CASE")}
    env |= {"PYTHONPATH": str(tree)}
    return env | ({"PERF_INJECT_SLOWDOWN": str(slowdown)} if slowdown else {})


def run_suite(tree: Path, args: list[str], out: Path, slowdown: float = 0.0) -> None:
    cmd = [sys.executable, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider", "--benchmark-json", str(out)]
    if subprocess.run(cmd, cwd=tree, env=_env(tree, slowdown), stdout=subprocess.DEVNULL).returncode != 0:
        raise SystemExit(f"the suite failed in {tree}: {' '.join(cmd)}")


def judge(base: Path, baseline: Path, current: Path) -> tuple[int, list[str], str]:
    """(exit code, rows flagged, the suite row's line) of `llm-perf compare` run with C's code."""
    cmd = [sys.executable, "-m", "harness", "compare", str(baseline), str(current)]
    proc = subprocess.run(cmd, cwd=base, env=_env(base), capture_output=True, text=True)
    flagged = [line.split()[0] for line in proc.stdout.splitlines() if "REGRESSION" in line]
    suite = next((line for line in proc.stdout.splitlines() if line.startswith("suite geometric mean")), "")
    return proc.returncode, flagged, " ".join(suite.split()[3:6])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="python -m experiments.gate_check", description=__doc__.split("\n")[0])
    parser.add_argument("--commit", required=True, help="the frozen commit every run is made with")
    parser.add_argument("--trials", type=int, default=20, help="trials per scenario (default 20)")
    parser.add_argument("--baseline", default=None, help="judge against this baseline instead of recording one")
    parser.add_argument("--runs", type=int, default=5, help="runs pooled into a new baseline (default 5)")
    parser.add_argument("--keep", required=True, help="folder for the baseline, every run and the log")
    parser.add_argument("--seed", type=int, default=0, help="seed of the trial order")
    args = parser.parse_args(argv[:cut])
    pytest_args = argv[cut + 1 :] or ["perf_tests", "--perf-tier", "quick"]
    keep = Path(args.keep).resolve()  # the trials run in their trees: a relative path would land there
    keep.mkdir(parents=True, exist_ok=True)
    with trees(args.commit, [ONE_CASE[0]]) as (base, heads):
        baseline = keep / "baseline.json"
        if args.baseline:
            if Path(args.baseline).resolve() != baseline.resolve():
                shutil.copy(args.baseline, baseline)
        else:
            cmd = [sys.executable, "-m", "harness", "baseline", "update", "--runs", str(args.runs)]
            proc = subprocess.run(
                [*cmd, "--", *pytest_args[1:]], cwd=base, env=_env(base), capture_output=True, text=True
            )
            written = next(line for line in proc.stdout.splitlines() if line.startswith("baseline written:"))
            shutil.copy(base / written.split()[2], baseline)
        runs = json.loads(baseline.read_text())["benchmarks"][0]["extra_info"].get("baseline_runs")
        print(f"baseline: {baseline} ({runs} runs)", flush=True)
        trees_of = {"unchanged": (base, 0.0), "one case 25%": (heads[ONE_CASE[0]], 0.0), "every case 10%": (base, 0.10)}

        def trial(label: str, i: int, n: int) -> tuple[bool, str]:
            tree, slowdown = trees_of[label]
            out = keep / f"{label.replace(' ', '-').replace('%', '')}-{i:02d}.json"
            if not out.exists():  # else kept by a sitting that stopped part-way: judged again, not run again
                run_suite(tree, pytest_args, out, slowdown)
            code, flagged, suite = judge(base, baseline, out)
            detail = f"exit {code}; flagged: {', '.join(flagged) or 'none'}; suite {suite}"
            if label == "unchanged":
                return code == 10, detail
            if label == "one case 25%":
                return not (code == 10 and ONE_CASE[1] in flagged), detail
            return code != 10, detail

        tallies = run_trials(dict.fromkeys(LABELS, args.trials), trial, args.seed)
    what = {"unchanged": "with a false regression", "one case 25%": "missed", "every case 10%": "missed"}
    print("\n".join(summary(tallies, what)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
