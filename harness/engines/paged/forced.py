"""The paged engine's logits fed given tokens, for the output check (harness/correctness/)."""

from __future__ import annotations

from collections.abc import Sequence as Seq
from typing import TYPE_CHECKING

import torch

from harness.engines.paged.model_runner import PrefillChunk
from harness.engines.paged.sequence import Sequence
from harness.errors import PerfSuiteError
from harness.workloads import Request

if TYPE_CHECKING:
    from harness.engines.paged.engine import PagedEngine


def forced_logits(engine: PagedEngine, requests: Seq[Request], continuations: Seq[Seq[int]]) -> list[torch.Tensor]:
    """Per request, (len(continuation), vocab) float32 logits from the engine's runner, fed the given
    continuation instead of its own picks. All requests run as one batch: one packed prefill, then
    decode steps over a ragged batch that shrinks as continuations end (rows in request order, which
    the runner's length groups reorder where its decode attention runs in torch), reading and writing
    K/V through the block tables."""
    seqs = [
        Sequence(-1 - i, list(r.prompt_ids), len(c))
        for i, (r, c) in enumerate(zip(requests, continuations, strict=True))
    ]
    try:
        for seq in seqs:
            engine._allocate(seq, "the teacher-forced check")
        chunks = [PrefillChunk(s.token_ids[s.num_cached_tokens :], s.num_cached_tokens, s.block_table) for s in seqs]
        rows = [[row] for row in engine.runner.prefill_logits(chunks).float().cpu()]
        for step in range(1, max(len(c) for c in continuations)):
            live = [i for i, c in enumerate(continuations) if len(c) > step]
            for i in live:
                seqs[i].output_ids.append(continuations[i][step - 1])
                if not engine.bm.can_append(seqs[i]):
                    raise PerfSuiteError(f"paged KV pool ({engine.bm.num_blocks} blocks) is too small for the check")
                engine.bm.append_slot(seqs[i])
            logits = (
                engine.runner.decode_logits(
                    [seqs[i].last_token for i in live],
                    [len(seqs[i]) - 1 for i in live],
                    [seqs[i].block_table for i in live],
                )
                .float()
                .cpu()
            )
            for row, i in enumerate(live):
                rows[i].append(logits[row])
        return [torch.stack(r) for r in rows]
    finally:
        engine._release([s for s in seqs if s.block_table])
