"""What a regression patch costs its case, measured without the A/B under test.

    python -m experiments.patch_cost PATCH CASE --commit C [--runs 6] [--rounds 40]

Runs `pytest perf_tests -k CASE` alternately in C's tree and in C with the patch applied (ABAB...,
`--runs` each, each run in a fresh process with --perf-rounds ROUNDS and no output check), and prints
each pair's ratio of median tokens/s and their median: the patch's cost on this machine now. A patch
is sized to about 5% (25% for the stored gate's one-case scenario) before any validation uses it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from experiments.gate_check import run_suite
from experiments.trees import trees


def median_tok_s(path: Path, case: str) -> float:
    bench = next(b for b in json.loads(path.read_text())["benchmarks"] if b["name"] == case)
    return bench["extra_info"]["tokens"] / statistics.median(bench["stats"]["data"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.patch_cost", description=__doc__.split("\n")[0])
    parser.add_argument("patch", help="a patch name in experiments/regressions/")
    parser.add_argument("case", help="the case's full name, e.g. 'test_decode[small-paged-bs1-ctx128]'")
    parser.add_argument("--commit", default="HEAD")
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args(argv)
    kind, case_id = args.case.split("[")[0].removeprefix("test_"), args.case.split("[")[1].rstrip("]")
    model = case_id.split("-")[0]
    pytest_args = [f"perf_tests/test_{kind}.py", "--models", model, "--perf-tier", "quick", "-k", case_id]
    pytest_args += ["--perf-rounds", str(args.rounds), "--perf-warmup", "2", "--no-parity"]
    ratios = []
    with trees(args.commit, [args.patch]) as (base, heads), tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            outs = {}
            for label, tree in (("base", base), ("head", heads[args.patch]))[:: 1 if i % 2 == 0 else -1]:
                outs[label] = Path(tmp) / f"{label}-{i}.json"
                run_suite(tree, pytest_args, outs[label])
            ratios.append(median_tok_s(outs["head"], args.case) / median_tok_s(outs["base"], args.case) - 1)
            print(f"pair {i + 1}: head {ratios[-1]:+.1%}", flush=True)
    print(f"{args.patch} on {args.case}: median {statistics.median(ratios):+.1%} over {len(ratios)} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
