"""Batch-1 decode against the read-bandwidth bound, every engine variant in one process, interleaved.

The suite's own decode case reports a percentage of the bound its probe measured at the start of the
run; on a shared machine that probe moves by tens of percent between runs, so two runs' percentages do
not compare. Here each round times one decode step of every variant and one read of the probe's kind
(a sum over 256 MiB) back to back, in a fresh random order, so every variant meets the same machine.

    python -m experiments.decode_bound --model qwen3-0.6b [--ctx 128] [--rounds 15] [--variants a,b,...]

Prints, per variant, the median step and the bytes the roofline counts for it (weights, K/V) divided
by that step, against the median and the best of the interleaved reads: "% of bound" is the share of
the best read (the bound the suite reports), "% of typical" of the median read.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import random
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from harness.engines import EngineConfig, onednn, row_layer, rowdot
from harness.engines.base import StepCase
from harness.engines.manual import ManualEngine
from harness.engines.paged.engine import PagedEngine
from harness.engines.paged.layers import apply_rope, rms_norm
from harness.engines.paged.row_step import RowStep
from harness.models import build_model
from harness.roofline import decode_cost
from harness.specs import get_spec

PROBE_BYTES = 256 << 20


def _torch_layers(engine: PagedEngine) -> PagedEngine:
    """paged stepping a lone row through layers.py's torch ops and torch's attention, as it did before
    its batch-1 step ran each layer as one C call (harness/engines/paged/row_step.py) and its decode
    attention read the pool in C (kv_attention.py); the other variants of paged build on it."""
    engine.runner.row_step, engine.runner.kv_in_c = None, False
    return engine


def _on_the_blas(engine: PagedEngine) -> PagedEngine:
    """paged with every product through F.linear (the BLAS) and its LM head transposed: as it ran before
    it used oneDNN on CPU (harness/engines/onednn.py)."""
    runner = _torch_layers(engine).runner
    runner.linear, runner.lm_head_t = F.linear, runner.lm_head.t().contiguous()
    return engine


def _unstacked(engine: PagedEngine) -> PagedEngine:
    """paged with Q, K, V, the MLP's gate and up each its own product (7 a layer, not 4), as it ran
    before layers.py stacked their weights."""
    runner = _torch_layers(engine).runner

    def qkv(w, x, cos, sin):
        h = rms_norm(x, w.input_norm, runner.eps)
        q = runner.linear(h, w.q_proj).view(-1, runner.n_heads, runner.head_dim)
        k = runner.linear(h, w.k_proj).view(-1, runner.n_kv, runner.head_dim)
        v = runner.linear(h, w.v_proj).view(-1, runner.n_kv, runner.head_dim)
        if w.q_norm is not None:
            q, k = rms_norm(q, w.q_norm, runner.eps), rms_norm(k, w.k_norm, runner.eps)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def mlp_residual(w, x, attn):
        x = x + runner.linear(attn, w.o_proj)
        h = rms_norm(x, w.post_norm, runner.eps)
        return x + runner.linear(F.silu(runner.linear(h, w.gate_proj)) * runner.linear(h, w.up_proj), w.down_proj)

    runner._qkv, runner._mlp_residual = qkv, mlp_residual
    return engine


def _gathered(engine: PagedEngine) -> PagedEngine:
    """paged copying a lone row's K/V out of the pool before attending, as it did before it read
    consecutive blocks in place, with its products unstacked as well: the engine as it ran before both."""
    runner, groups = engine.runner, engine.runner._decode_groups

    def gathering(positions, block_tables):
        return [
            dataclasses.replace(g, first_block=None, buffers=runner._gather_buffers(g.tables.numel()))
            for g in groups(positions, block_tables)
        ]

    runner._decode_groups = gathering
    return _unstacked(engine)


def _without_onednn(engine: ManualEngine) -> ManualEngine:
    """manual with HF's F.linear on the BLAS, as it ran before it used oneDNN on CPU."""
    engine.row_mode = nullcontext()
    return engine


def _every_row_on_onednn(x, w, bias=None):
    """Every product on oneDNN, one row too: as the engines ran before harness/engines/onednn.py kept
    one row on MKL on an Intel CPU and sent it to rowdot.py's C kernel elsewhere."""
    return onednn._onednn_linear(x, w, bias)


def _one_row_in_c(x, w, bias=None, built=None):
    """One row on rowdot.py's C kernel (or `built`, a variant of it from rowdot.build) whatever the CPU
    (on an Intel CPU, where onednn.py keeps it on MKL, the comparison that rule rests on); several rows
    on oneDNN."""
    kernel = built or rowdot.kernel()
    if rowdot.fits(x, w) and kernel is not None:
        return rowdot.row_times_weight(x, w, bias, built=kernel)
    return onednn._onednn_linear(x, w, bias)


def _step_in_c(engine: PagedEngine) -> PagedEngine:
    """paged with a lone row's step as one C call a layer (row_step.py) and its one-row products on the
    C kernel whatever the CPU: on an Intel CPU, where onednn.py keeps one row on MKL and so the step on
    torch's ops, what the step in C would give there."""
    if row_layer.kernel() is None:
        raise SystemExit(f"no C layer here: {rowdot.problem()}")
    engine.runner.linear = _one_row_in_c
    if engine.runner.row_step is None:
        engine.runner.row_step = RowStep(engine.runner)
    return engine


def _four_rows_a_block(engine: PagedEngine | ManualEngine) -> PagedEngine | ManualEngine:
    """paged or manual with rowdot.py's kernel as it was before it took eight weight rows a block (four),
    in paged's C layer, its LM head and manual's one-row products alike; several rows on oneDNN. On an
    Intel CPU, where the engines keep one row on MKL, compare it with the `-c` variants, not the plain
    ones."""
    from experiments.gemv_bandwidth import rows_source

    built = rowdot.build(rows_source(4), "rowdot4")
    if built is None:
        raise SystemExit(f"no C kernel here: {rowdot.problem()}")
    linear = functools.partial(_one_row_in_c, built=built)
    if isinstance(engine, PagedEngine):
        engine.runner.linear = linear
        if engine.runner.row_step is not None:
            engine.runner.row_step.kernel = row_layer.build(rows_source(4), "rowlayer4")
        return engine
    return _products_through(linear, engine)


def _products_through(linear, engine: PagedEngine | ManualEngine) -> PagedEngine | ManualEngine:
    """paged or manual with every product through `linear` (for manual, one-row forwards included)."""
    if isinstance(engine, ManualEngine):
        engine.row_mode = onednn.LinearMode(linear)
        engine._mode_for = lambda ids: engine.row_mode  # also for one-row forwards on an Intel CPU
    else:
        _torch_layers(engine).runner.linear = linear
    return engine


VARIANTS: dict[str, Callable] = {
    "paged": lambda loaded: PagedEngine(loaded, EngineConfig()),
    "paged-torch-layers": lambda loaded: _torch_layers(PagedEngine(loaded, EngineConfig())),
    "paged-blas": lambda loaded: _on_the_blas(PagedEngine(loaded, EngineConfig())),
    "paged-unstacked": lambda loaded: _unstacked(PagedEngine(loaded, EngineConfig())),
    "paged-before": lambda loaded: _gathered(PagedEngine(loaded, EngineConfig())),
    "paged-onednn": lambda loaded: _products_through(_every_row_on_onednn, PagedEngine(loaded, EngineConfig())),
    "paged-c": lambda loaded: _products_through(_one_row_in_c, PagedEngine(loaded, EngineConfig())),
    "paged-c-step": lambda loaded: _step_in_c(PagedEngine(loaded, EngineConfig())),
    "paged-compiled": lambda loaded: PagedEngine(loaded, EngineConfig(compile=True)),
    "paged-rows4": lambda loaded: _four_rows_a_block(PagedEngine(loaded, EngineConfig())),
    "manual": lambda loaded: ManualEngine(loaded, EngineConfig()),
    "manual-blas": lambda loaded: _without_onednn(ManualEngine(loaded, EngineConfig())),
    "manual-onednn": lambda loaded: _products_through(_every_row_on_onednn, ManualEngine(loaded, EngineConfig())),
    "manual-c": lambda loaded: _products_through(_one_row_in_c, ManualEngine(loaded, EngineConfig())),
    "manual-compiled": lambda loaded: ManualEngine(loaded, EngineConfig(compile=True)),
    "manual-rows4": lambda loaded: _four_rows_a_block(ManualEngine(loaded, EngineConfig())),
}


def seconds(case: StepCase) -> float:
    if case.setup is not None:
        case.setup()
    start = time.perf_counter()
    case.run()
    return time.perf_counter() - start


def interleaved(cases: dict[str, StepCase], rounds: int, seed: int = 0) -> dict[str, list[float]]:
    """Seconds of each case's run per round (its setup untimed), every case once a round in a fresh
    random order, after one untimed round."""
    rng = random.Random(seed)
    for case in cases.values():
        seconds(case)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        order = list(cases)
        rng.shuffle(order)
        for name in order:
            times[name].append(seconds(cases[name]))
    return times


def report(times: dict[str, list[float]], step_bytes: float, probe_bytes: float = PROBE_BYTES) -> list[str]:
    reads = [probe_bytes / s / 1e9 for s in times["read"]]
    best, typical = max(reads), statistics.median(reads)
    lines = [f"read (sum over {probe_bytes >> 20} MiB): best {best:.1f} GB/s, median {typical:.1f} GB/s"]
    for name, secs in times.items():
        if name == "read":
            continue
        gbps = step_bytes / statistics.median(secs) / 1e9
        lines.append(
            f"{name}: {statistics.median(secs) * 1e3:.1f} ms/step, {gbps:.1f} GB/s, "
            f"{gbps / best:.1%} of bound, {gbps / typical:.1%} of typical"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.decode_bound", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="qwen3-0.6b")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--ctx", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="then profile N steps of each variant")
    parser.add_argument(
        "--split",
        type=int,
        default=0,
        metavar="N",
        help="then time N steps of paged's eager variants, products apart"
        " (the layers, the LM head and the rest where each layer is one C call)",
    )
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; valid: {', '.join(VARIANTS)}")
    spec = get_spec(args.model)
    loaded = build_model(spec, dtype=args.dtype)
    buf = torch.ones(PROBE_BYTES // 4)
    cases = {"read": StepCase(run=buf.sum)}
    engines = {name: VARIANTS[name](loaded) for name in names}
    cases.update({name: engine.decode_case(1, args.ctx, seed=0) for name, engine in engines.items()})
    print(f"{args.model} {args.dtype} decode bs1 ctx{args.ctx}, {torch.get_num_threads()} threads")
    step_bytes = decode_cost(spec, args.dtype, 1, args.ctx).bytes
    print("\n".join(report(interleaved(cases, args.rounds), step_bytes)))
    for name in names if args.profile else ():
        print(f"\n{name}, {args.profile} steps, by self CPU time:\n{profile(cases[name], args.profile)}")
    for name, engine in engines.items() if args.split else ():
        if not isinstance(engine, PagedEngine) or engine.runner.compiled or engine.runner.lm_head_t is not None:
            continue
        print(f"\n{name}, {args.split} steps, products apart:")
        pieces = split_c_step if engine.runner.row_step is not None else split
        print("\n".join(pieces(engine, cases[name], args.split, cases["read"])))
    return 0


def split_c_step(engine: PagedEngine, case: StepCase, steps: int, read: StepCase) -> list[str]:
    """paged's step where each layer is one C call (row_step.py): each step's time in the layers, in the
    final norm and LM head (the runner's `_logits`) and in the rest, and beside it a step whose layers'
    products only write zeros (the same C layer otherwise), which leaves the layers' other work."""
    runner, kernel = engine.runner, engine.runner.row_step.kernel
    zeros = row_layer.build(
        rowdot.SOURCE.replace("void row_times_weight(", "void unused_product(") + ZERO_PRODUCT, "zeros"
    )
    logits, spent = runner._logits, {}

    def timed(name, fn):
        def call(*args):
            start = time.perf_counter()
            out = fn(*args)
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
            return out

        return call

    lines = []
    try:
        runner._logits = timed("head", logits)
        for _ in range(steps):
            spent.clear()
            runner.row_step.kernel = timed("layers", zeros)
            seconds(case)
            bare = spent.get("layers", 0.0)  # none where the step did not go through the C layer
            spent.clear()
            runner.row_step.kernel = timed("layers", kernel)
            step = seconds(case)
            layers, head = spent.get("layers", 0.0), spent["head"]
            lines.append(
                f"step {step * 1e3:.2f} ms: layers {layers * 1e3:.2f} ms (without their products {bare * 1e3:.2f}), "
                f"final norm and LM head {head * 1e3:.2f} ms, the rest {(step - layers - head) * 1e3:.2f} ms; "
                f"read {PROBE_BYTES / seconds(read) / 1e9:.1f} GB/s"
            )
    finally:
        del runner._logits  # the class's method again
        runner.row_step.kernel = kernel
    return lines


# a product that only writes zeros: split_c_step's layer without its products
ZERO_PRODUCT = """
void row_times_weight(const float *w, const float *x, float *y, long N, long K, int threads) {
    for (long n = 0; n < N; n++) y[n] = 0.0f;
}
"""


def split(engine: PagedEngine, case: StepCase, steps: int, read: StepCase) -> list[str]:
    """Each step's time in paged's products (its `linear`, timed call by call: every product where the
    LM head is not the BLAS's transposed one) and in the rest, with a read of the probe's kind after
    each step."""
    runner, linear = engine.runner, engine.runner.linear
    spent = [0.0, 0]

    def timed(x, w, bias=None):
        start = time.perf_counter()
        out = linear(x, w, bias)
        spent[0] += time.perf_counter() - start
        spent[1] += w.numel() * w.element_size()
        return out

    runner.linear, lines = timed, []
    try:
        for _ in range(steps):
            spent[:] = [0.0, 0]
            step = seconds(case)
            rate = spent[1] / max(spent[0], 1e-9) / 1e9
            lines.append(
                f"step {step * 1e3:.1f} ms: products {spent[0] * 1e3:.1f} ms ({rate:.1f} GB/s), "
                f"the rest {(step - spent[0]) * 1e3:.1f} ms; read {PROBE_BYTES / seconds(read) / 1e9:.1f} GB/s"
            )
    finally:
        runner.linear = linear
    return lines


def profile(case: StepCase, steps: int, rows: int = 12) -> str:
    """torch.profiler's table of the ops a step spends its time in (self CPU time, all steps)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            seconds(case)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60)


if __name__ == "__main__":
    sys.exit(main())
