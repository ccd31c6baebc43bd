"""What an engine did, counted: the work a case's round took, not its time. On a seeded workload these
counts are deterministic, so a change in them is a fact on any machine, however noisy; the gate
compares them exactly (harness/judge/work.py). Torch-free.

An engine reports them in `GenerateResult.work` ({counter: int}), only the counters it can count
exactly; an engine that cannot count leaves `work` None, never zeros.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

COUNTERS = {
    "steps": "forward passes",
    "prefill_tokens": "tokens computed in prefill forwards, recomputation after preemption included",
    "decode_tokens": "tokens computed in decode forwards",
    "padded_tokens": "positions computed for padding (static batching)",
    "prefix_hit_tokens": "prompt tokens whose KV came from the prefix cache",
    "preemptions": "sequences preempted (recompute or swap)",
    "swapped_blocks": "KV blocks moved by swapping, out and in",
    "swap_bytes": "bytes of KV moved by swapping",
    "peak_kv_blocks": "the most KV blocks held at once",
    "flops": "floating-point operations of the products and attention, counted by torch (harness/engines/flops.py)",
}
FLOPS = "flops"  # counted by the session around the engine, not by the engine (harness/engines/flops.py)


@dataclass
class Work:
    """Counters an engine adds to as it runs; `counted` says which of them it counts exactly."""

    steps: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    padded_tokens: int = 0
    prefix_hit_tokens: int = 0
    preemptions: int = 0
    swapped_blocks: int = 0
    swap_bytes: int = 0
    peak_kv_blocks: int = 0

    def report(self, counted: tuple[str, ...]) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k in counted}


assert set(COUNTERS) == set(Work.__dataclass_fields__) | {FLOPS}


def sequential_work(outputs) -> dict[str, int]:
    """Requests one at a time (manual, hf-generate): a prefill forward over each prompt, then one decode
    forward per later token. `outputs`: RequestOutputs (prompt_len, token_ids)."""
    return {
        "steps": sum(len(o.token_ids) for o in outputs),
        "prefill_tokens": sum(o.prompt_len for o in outputs if o.token_ids),
        "decode_tokens": sum(max(len(o.token_ids) - 1, 0) for o in outputs),
    }


def round_work(works: list[dict | None], flops: dict | None = None) -> dict:
    """The case's work counters, recorded once: every round's must be the same (seeded, fixed work); where
    they are not, the first round's are kept and `work_unsteady` says so (the gate then refuses them).
    `flops`: the counter of the untimed counted unit (harness/engines/flops.py), added to them."""
    if not works or any(w is None for w in works):
        return {"work": flops} if flops else {}
    unsteady = {"work_unsteady": True} if any(w != works[0] for w in works) else {}
    return {"work": works[0] | (flops or {}), **unsteady}


def counts_differ(a: dict | None, b: dict | None) -> bool:
    """Whether two records of one case's counters disagree on a counter both hold. A counter only one
    holds (recorded by a version that did not count it, or counted once at a first open) is not a
    disagreement."""
    return any(a[k] != b[k] for k in (a or {}).keys() & (b or {}).keys())
