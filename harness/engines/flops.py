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
activations are not counted. On CPU, torch's attention runs an op its table has no formula for, so
`_ATTENTION_CPU` adds one, with the same convention.

A case is counted where its unit runs on the calling thread in this process and does the same
arithmetic every time: the engine says `counts_flops = True` (the suite's own engines; a plug-in engine
may too), nothing is compiled or replayed from a CUDA graph (their work is not dispatched op by op),
and no request waits for its arrival time (serving), whose batches depend on timing. Elsewhere the
counter is left out, never zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from harness.engines import onednn

COUNTER = "flops"


def attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Scaled dot-product attention: Q K^T and then P V, 2 operations per multiply-add, every query
    against every key (a causal mask not discounted, as torch's own formula counts it). Shapes
    (batch, heads, length, head_dim); keys and values may have fewer heads (grouped queries)."""
    batch, heads, queries, dim = query_shape
    keys, value_dim = key_shape[-2], value_shape[-1]
    return 2 * batch * heads * queries * keys * (dim + value_dim)


_ATTENTION_CPU = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: attention_flops}


def countable(engine, config, requests: Sequence | None = None) -> bool:
    """Whether a case of this engine can be counted (the module text says when)."""
    if not getattr(engine, "counts_flops", False) or getattr(config, "compile", False):
        return False
    if getattr(config, "cuda_graphs", False):
        return False
    return not any(getattr(r, "arrival_offset_s", 0) for r in requests or ())


def count_flops(unit: Callable[[], object], setup: Callable[[], object] | None = None) -> int | None:
    """Run `setup` (uncounted) and `unit` once, counting the unit's floating-point operations; None
    where nothing was counted (its work ran elsewhere: never reported as zero)."""
    if setup is not None:
        setup()
    with onednn.on_torch(), FlopCounterMode(display=False, custom_mapping=_ATTENTION_CPU) as counter:
        unit()
    total = counter.get_total_flops()
    return int(total) if total else None


def unit_flops(engine, unit: Callable[[], object], setup=None, requests: Sequence | None = None) -> dict[str, int]:
    """{"flops": n} for one run of a countable case's unit (`requests`: a generate kind's), else {}."""
    if not countable(engine, getattr(engine, "config", None), requests):
        return {}
    flops = count_flops(unit, setup)
    return {COUNTER: flops} if flops else {}
