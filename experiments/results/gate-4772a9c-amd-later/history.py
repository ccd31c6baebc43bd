"""An exploration after the tally: the kept trials judged against another baseline (a grown history).

    python experiments/results/gate-4772a9c-amd-later/history.py BASELINE.json FOLDER

Per scenario: how many trials came out right (unchanged: no regression; one case: its case flagged;
every case: any regression), then each trial's suite row change ('.' right, 'X' wrong).
"""

import glob
import json
import sys

from harness.baseline.gate import compare, method_line
from harness.judge import Thresholds

ONE = "test_prefill[small-paged-bs1-prompt128]"


def read(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def right(label: str, flagged: list[str]) -> bool:
    if label == "unchanged":
        return not flagged
    if label == "one-case-25":
        return any(name.startswith(ONE) for name in flagged)
    return bool(flagged)


def main(baseline_file: str, folder: str) -> None:
    base, last = read(baseline_file), None
    for label in ("unchanged", "one-case-25", "every-case-10"):
        marks = []
        for path in sorted(glob.glob(f"{folder}/{label}-*.json")):
            last = read(path)
            verdicts = compare(base, last, Thresholds())
            good = right(label, [v.name for v in verdicts if v.status == "regression"])
            suite = next(v for v in verdicts if v.name.startswith("suite"))
            marks.append(("." if good else "X") + f"{suite.change:+.3f}")
        print(label, sum(m.startswith(".") for m in marks), len(marks), " ".join(marks))
    if last is None:
        raise SystemExit(f"no trial runs in {folder}")
    print(method_line(base, last))


if __name__ == "__main__":
    main(*sys.argv[1:3])
