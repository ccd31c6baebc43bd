"""How fast this machine's torch reads a model's weights, by the operation that reads them: the
probe's kind of read (a sum), the matrix-vector product the engines run at batch 1 through either
library (`F.linear`: the BLAS; oneDNN's linear), the suite's C kernel (rowdot.py) and the same kernel
with four weight rows a block (as it was before eight), the BLAS's with the weight stored transposed,
and a few rows through each library. Best of `--reps` each, in GB/s.

    python -m experiments.gemv_bandwidth --model qwen3-0.6b [--reps 7] [--rows 8]

A decode step at batch 1 reads every weight once, so the product's rate, not the sum's, is the most
an engine built on torch's BLAS can reach (docs/measurements.md, decode against the read bound).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

import torch
import torch.nn.functional as F

from harness.engines import rowdot
from harness.engines.onednn import _onednn_linear
from harness.engines.paged.matvec import row_times_weight
from harness.hardware import last_level_cache_bytes, measure_read_gbps
from harness.models import build_model
from harness.specs import get_spec


def best_seconds(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def rows_source(rows: int) -> str:
    """rowdot.py's SOURCE with `rows` weight rows a block instead of its own ROWS."""
    define = f"#define ROWS {rowdot.ROWS}\n"
    if define not in rowdot.SOURCE:
        raise ValueError(f"rowdot.SOURCE has no {define.strip()!r} to replace")
    return rowdot.SOURCE.replace(define, f"#define ROWS {rows}\n")


def rows_a_block(rows: int):
    """rowdot.py's kernel built with `rows` weight rows a block instead of its own ROWS, as a function
    (x, w[, bias]) -> F.linear for one row x; None where it does not build."""
    built = rowdot.build(rows_source(rows), f"rowdot{rows}")
    return None if built is None else functools.partial(rowdot.row_times_weight, built=built)


def rates(weights: list[torch.Tensor], reps: int, rows: int, compiled: bool = True) -> dict[str, float]:
    """GB/s of each way of reading `weights` (each (out, in)), counting every weight byte once; with
    compiled, also the paged engine's `--perf-compile` product (harness/engines/paged/matvec.py)."""
    nbytes = sum(w.numel() * w.element_size() for w in weights)
    transposed = [w.t().contiguous() for w in weights]
    one = [torch.randn(1, w.shape[1], dtype=w.dtype) for w in weights]
    many = [torch.randn(rows, w.shape[1], dtype=w.dtype) for w in weights]
    ways = {
        "sum": lambda: [w.sum() for w in weights],
        "F.linear, 1 row": lambda: [F.linear(x, w) for x, w in zip(one, weights, strict=True)],
        "x @ W transposed, 1 row": lambda: [x @ w for x, w in zip(one, transposed, strict=True)],
        f"F.linear, {rows} rows": lambda: [F.linear(x, w) for x, w in zip(many, weights, strict=True)],
    }
    if torch.backends.mkldnn.is_available():
        ways["oneDNN, 1 row"] = lambda: [_onednn_linear(x, w, None) for x, w in zip(one, weights, strict=True)]
        ways[f"oneDNN, {rows} rows"] = lambda: [_onednn_linear(x, w, None) for x, w in zip(many, weights, strict=True)]
    if rowdot.kernel() is not None:
        ways["C kernel (rowdot.py), 1 row"] = lambda: [
            rowdot.row_times_weight(x, w) for x, w in zip(one, weights, strict=True)
        ]
        four = rows_a_block(4)
        ways["C kernel, 4 rows a block (before), 1 row"] = lambda: [
            four(x, w) for x, w in zip(one, weights, strict=True)
        ]
    if compiled:
        kernel = torch.compile(row_times_weight, dynamic=True, fullgraph=True)
        ways["compiled multiply-sum, 1 row"] = lambda: [kernel(x, w) for x, w in zip(one, weights, strict=True)]
    with torch.inference_mode():
        return {name: nbytes / best_seconds(fn, reps) / 1e9 for name, fn in ways.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.gemv_bandwidth", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="qwen3-0.6b")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--rows", type=int, default=8)
    args = parser.parse_args(argv)
    cpu = torch.device("cpu")
    probe = measure_read_gbps(cpu, last_level_cache_bytes(cpu))
    print(f"threads {torch.get_num_threads()}; probe read {probe:.1f} GB/s")
    model = build_model(get_spec(args.model), dtype="float32").model
    weights = list({id(m.weight): m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)}.values())
    print(f"{args.model}: {len(weights)} linear weights, {sum(w.numel() * 4 for w in weights) / 1e9:.2f} GB")
    for name, gbps in rates(weights, args.reps, args.rows).items():
        print(f"{name}: {gbps:.1f} GB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
