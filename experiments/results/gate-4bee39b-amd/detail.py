"""What each row could tell in a gate tally's kept runs (run from the repository root):

python experiments/results/gate-4bee39b-amd/detail.py experiments/results/gate-4bee39b-amd
"""

import glob
import json
import statistics
import sys

from harness.baseline.gate import SUITE_ROW, compare
from harness.judge import Thresholds

PATCHED = "test_prefill[small-paged-bs1-prompt128]"


def summary(folder: str, label: str, baseline: dict) -> str:
    patched, detectable, suite, inconclusive, rows = [], [], [], 0, 0
    for path in sorted(glob.glob(f"{folder}/{label}-*.json")):
        with open(path) as f:
            verdicts = compare(baseline, json.load(f), Thresholds())
        judged = [v for v in verdicts if v.change is not None]
        inconclusive += sum(v.status == "inconclusive" for v in judged)
        rows += len(judged)
        one = next(v for v in verdicts if v.name == PATCHED)
        patched.append(one.change)
        detectable.append(one.detectable or 0.0)
        suite.append(next(v for v in verdicts if v.name == SUITE_ROW))
    return (
        f"{label}: patched case {statistics.median(patched):+.1%} (median), could tell "
        f"{statistics.median(detectable):.1%}; suite row {statistics.median(s.change for s in suite):+.1%}, could "
        f"tell {statistics.median(s.detectable for s in suite):.1%}; inconclusive rows {inconclusive} of {rows}"
    )


if __name__ == "__main__":
    folder = sys.argv[1]
    with open(f"{folder}/baseline.json") as f:
        baseline = json.load(f)
    for label in ("unchanged", "one-case-25", "every-case-10"):
        print(summary(folder, label, baseline))
