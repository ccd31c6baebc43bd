"""Does `llm-perf ab` pass unchanged code and catch real regressions, at the configuration CI runs?

    python -m experiments.ab_check --commit C --aa 20 --each 10 --keep DIR --seed 1 [-- pytest args]

Both sides are trees of commit C (worktrees): the base as it is, the head with a patch from
experiments/regressions/ applied. The A/A's head is C plus a comment (noop-comment: a different tree,
no change in work); each regression's head does more real work in one case (REGRESSIONS: the case
each patch was sized on, to cost about 5% there). Trials run in a seeded random order, each
`python -m harness ab BASE HEAD --out DIR/<label>-<i>.json -- <pytest args>` with C's own code; the
pytest arguments default to ci.yml's (`perf_tests --perf-tier quick`) and so does the plan.

Scoring: an A/A trial fails when any case is called a regression; a regression trial passes only
with exit 10 and the regression flagged on its case. Each trial's wall time and the share of
inconclusive cases are reported too.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

from experiments.trees import trees
from experiments.trials import run_trials, summary

REGRESSIONS = {
    "decode-v-twice": "test_decode[small-paged-bs1-ctx128]",
    "prefill-kv-twice": "test_prefill[small-paged-bs1-prompt128]",
    "batching-wider-padding": "test_batching[small-static-batch-bs8-prompt32-new16]",
}
AA = "noop-comment"
CI_ARGS = ["perf_tests", "--perf-tier", "quick"]


def score(label: str, code: int, doc: dict) -> tuple[bool, str]:
    """(failed, detail) of one trial from ab's exit code and its --out document."""
    verdicts = {v["name"]: v for v in doc.get("verdicts", [])}
    flagged = sorted(n for n, v in verdicts.items() if v["status"] == "regression")
    judged = [v for v in verdicts.values() if v["status"] != "missing"]
    inconclusive = sum(v["status"] == "inconclusive" for v in judged)
    detail = f"exit {code}; {inconclusive}/{len(judged)} inconclusive; flagged: {', '.join(flagged) or 'none'}"
    if label == AA:
        return bool(flagged), detail
    target = verdicts.get(REGRESSIONS[label], {})
    seen = f"; {REGRESSIONS[label]}: {target.get('change', float('nan')):+.1%} {target.get('status', 'absent')}"
    return not (code == 10 and REGRESSIONS[label] in flagged), detail + seen


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="python -m experiments.ab_check", description=__doc__.split("\n")[0])
    parser.add_argument("--commit", default=None, help="the frozen commit both sides are made from")
    parser.add_argument("--replay", default=None, metavar="DIR", help="score the kept --out files in DIR; runs nothing")
    parser.add_argument("--aa", type=int, default=20, help="A/A trials (default 20)")
    parser.add_argument("--each", type=int, default=10, help="trials per regression patch (default 10)")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated scenarios to run ({AA} or patches; default: all); the order stays that of all",
    )
    parser.add_argument("--keep", default=None, help="folder for every trial's ab --out file and the log")
    parser.add_argument("--seed", type=int, default=0, help="seed of the trial order and of each ab run")
    args = parser.parse_args(argv[:cut])
    if args.replay:
        print("\n".join(replay(Path(args.replay))))
        return 0
    if not (args.commit and args.keep):
        parser.error("--commit and --keep are required (or --replay DIR)")
    pytest_args = argv[cut + 1 :] or CI_ARGS
    counts = {AA: args.aa, **dict.fromkeys(REGRESSIONS, args.each)}
    chosen = [p for p in args.only.split(",") if p] or list(counts)
    if unknown := set(chosen) - set(counts):
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; valid: {', '.join(counts)}")
    keep = Path(args.keep).resolve()  # the trials run in their trees: a relative path would land there
    keep.mkdir(parents=True, exist_ok=True)
    with trees(args.commit, chosen) as (base, heads):

        def trial(label: str, i: int, n: int) -> tuple[bool, str]:
            out = keep / f"{label}-{i:02d}.json"
            if out.exists():  # kept by a sitting that stopped part-way: scored again, not run again
                doc = json.loads(out.read_text())
                return score(label, _exit_code(doc), doc)
            cmd = [sys.executable, "-m", "harness", "ab", str(base), str(heads[label]), "--out", str(out)]
            cmd += ["--order-seed", str(args.seed * 1000 + n), "--", *pytest_args]
            code = subprocess.run(cmd, cwd=base, env=_env(base)).returncode
            return score(label, code, json.loads(out.read_text()) if out.exists() else {})

        tallies = run_trials(counts, trial, args.seed, only=set(chosen))
    what = {AA: "with a false regression", **dict.fromkeys(REGRESSIONS, "missed")}
    print("\n".join(summary(tallies, what)))
    return 0


def replay(folder: Path) -> list[str]:
    """Each scenario's tally from kept trial files (<label>-<i>.json): how often it failed its score, the
    share of inconclusive cases, the trials' lengths (from spent_s: the time the comparison's parts took)."""
    lines = []
    for label in [AA, *REGRESSIONS]:
        docs = [json.loads(f.read_text()) for f in sorted(folder.glob(f"{label}-*.json"))]
        if not docs:
            continue
        scored = [score(label, _exit_code(d), d) for d in docs]
        judged = [v for d in docs for v in d["verdicts"] if v["status"] != "missing" and " work" not in v["name"]]
        share = sum(v["status"] == "inconclusive" for v in judged) / max(len(judged), 1)
        counts = Counter(v["status"] for v in judged)
        seconds = [sum(d["spent_s"].values()) for d in docs]
        what = "with a false regression" if label == AA else "missed"
        by_work = "" if label == AA else f"; its case's work flagged in {sum(work_flagged(d, label) for d in docs)}"
        lines.append(
            f"{label}: {sum(f for f, _ in scored)} of {len(docs)} {what}{by_work}; {share:.0%} of case verdicts "
            f"inconclusive ({', '.join(f'{n} {k}' for k, n in sorted(counts.items()))}); "
            f"{min(seconds):.0f}-{max(seconds):.0f} s of comparison a trial"
        )
    aa = [json.loads(f.read_text()) for f in sorted(folder.glob(f"{AA}-*.json"))]
    return lines + (detectable_lines(aa) if aa else [])


def detectable_lines(docs: list[dict]) -> list[str]:
    """What each case could tell in the A/A trials: the median (and range) over trials of the smallest
    change its stage-1 test could have called (a verdict's `detectable`; none: no test)."""
    seen: dict[str, list[float]] = {}
    for doc in docs:
        for v in doc.get("verdicts", []):
            if " work:" not in v["name"] and v["status"] != "missing":
                seen.setdefault(v["name"], []).append(v.get("detectable") or math.inf)
    lines = [f"what each case could tell, over {len(docs)} A/A trials (median, range):"]
    for name, values in sorted(seen.items()):
        low, mid, high = min(values), statistics.median(values), max(values)
        none = sum(not math.isfinite(x) for x in values)
        shown = [f"{x:.1%}" if math.isfinite(x) else "none" for x in (mid, low, high)]
        lines.append(f"  {name}: {shown[0]} ({shown[1]}-{shown[2]})" + (f"; no test in {none}" if none else ""))
    return lines


def work_flagged(doc: dict, label: str) -> bool:
    """Did the exact work gate flag the patched case (a work row of it called a regression)? Reported
    beside the score, which counts the time verdict only (as frozen)."""
    case = REGRESSIONS[label]
    return any(v["name"].startswith(f"{case} work:") and v["status"] == "regression" for v in doc.get("verdicts", []))


def _exit_code(doc: dict) -> int:
    """ab's exit code, from its --out document: 10 when any case was called a regression."""
    return 10 if any(v["status"] == "regression" for v in doc.get("verdicts", [])) else 0


def _env(base: Path) -> dict:
    import os

    return {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(base)}


if __name__ == "__main__":
    sys.exit(main())
