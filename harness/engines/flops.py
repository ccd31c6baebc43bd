"""The floating-point operations of a case's unit of work, counted exactly: the `flops` work counter.

The other counters (harness/engines/work.py) are the scheduler's: steps, tokens, blocks. A change that
multiplies more inside a forward (a projection computed twice, logits for every position instead of
the last) leaves them all equal and costs a few percent of time, at the edge of what a noisy machine
resolves. Its floating-point operations are a count like the others: on a seeded case they are the same
in every run, so the exact gate (harness/judge/work.py) sees the change on any machine, with no noise.

They are counted by torch's own FlopCounterMode (torch.utils.flop_counter) over one extra, untimed run
of the case's unit, with the products on torch's ops (onednn.on_torch): the C kernel of rowdot.py is
not a torch op, and the count is of the arithmetic, not of the library doing it. FlopCounterMode counts
the matrix products and attention (2 per multiply-add, causal masks not discounted); the norms and
activations are not counted. Attention is counted by one formula here (`_ATTENTION`), the convention
of torch's own, for every op torch may pick: CPU's has no formula in torch's table, and older torch
refused keys with fewer heads than queries. The paged engine's C kernels (its decode attention,
kv_attention.py, over each row's own keys; its batch-1 layer, row_layer.py) run, while counted, as
torch ops with their own formulas. Where they do not build (no C compiler), paged attends in torch
over length groups padded to their longest row, and the count includes the padding: the stored gate
compares flops only between runs of the same torch and CPU kernels (their `machine_info`).
Arithmetic an engine moves into an op of its own without a formula (a custom kernel) is not counted:
the counter would read it as an improvement.

A case is counted where its unit runs on the calling thread in this process and does the same
arithmetic every time: the engine says `counts_flops = True` (the suite's own engines; a plug-in engine
may too), nothing is compiled or replayed from a CUDA graph (their work is not dispatched op by op),
and no request waits for its arrival time (serving), whose batches depend on timing. Elsewhere the
counter is left out, never zero.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from harness.engines import kv_attention, onednn, row_layer
from harness.engines.work import FLOPS


def attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Scaled dot-product attention: Q K^T and then P V, 2 operations per multiply-add, every query
    against every key (a causal mask not discounted, as torch's own formula counts it). Shapes
    (batch, heads, length, head_dim); keys and values may have fewer heads (grouped queries)."""
    batch, heads, queries, dim = query_shape
    keys, value_dim = key_shape[-2], value_shape[-1]
    return 2 * batch * heads * queries * keys * (dim + value_dim)


_aten = torch.ops.aten
_ATTENTION = {  # one formula for every attention op, whichever torch: older ones refused grouped queries
    op: attention_flops
    for name in (
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
    )
    if (op := getattr(_aten, name, None)) is not None
}


# torch's attention ops by one formula; the suite's own C kernels, run as torch ops while counted
COUNTED = {**_ATTENTION, **kv_attention.FLOP_FORMULAS, **row_layer.FLOP_FORMULAS}


def countable(engine, requests: Sequence | None = None) -> bool:
    """Whether a case of this engine can be counted (the module text says when)."""
    config = getattr(engine, "config", None)
    replayed = getattr(config, "compile", False) or getattr(config, "cuda_graphs", False)
    arriving = any(getattr(r, "arrival_offset_s", 0) for r in requests or ())
    return getattr(engine, "counts_flops", False) and not replayed and not arriving


def count_flops(unit: Callable[[], object], setup: Callable[[], object] | None = None) -> int | None:
    """Run `setup` (uncounted) and `unit` once, counting the unit's floating-point operations; None
    where nothing was counted (its work ran elsewhere: never reported as zero) or the counting failed
    (a warning says why: the case keeps its timing, without the counter)."""
    try:
        if setup is not None:
            setup()
        with (
            onednn.on_torch(),
            FlopCounterMode(display=False, custom_mapping=COUNTED) as counter,
        ):
            unit()
    except Exception as exc:  # noqa: BLE001 - an op the counter cannot take: the case is still timed
        warnings.warn(f"flops not counted ({type(exc).__name__}: {exc})", RuntimeWarning, stacklevel=2)
        return None
    return int(counter.get_total_flops()) or None


def unit_flops(engine, unit: Callable[[], object], setup=None, requests: Sequence | None = None) -> dict[str, int]:
    """{"flops": n} for one run of a countable case's unit (`requests`: a generate kind's), else {}."""
    if not countable(engine, requests):
        return {}
    flops = count_flops(unit, setup)
    return {FLOPS: flops} if flops is not None else {}
