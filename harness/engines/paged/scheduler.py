"""Iteration-level scheduling: each step picks which sequences run. No torch.

Order of business each step (after vLLM's v0 scheduler and nano-vllm):
1. swapped-out sequences come back first, most important first, while blocks allow;
2. otherwise waiting sequences join (a prefill step) while max_num_seqs, the token budget and
   free blocks allow, keeping a watermark of free blocks (1% of the pool, as vLLM does) for the
   running sequences to grow into, so an admission is not undone by a preemption a step later;
3. otherwise every running sequence decodes one token; when blocks run out, the least important
   sequence (highest priority value, latest arrival) is preempted, by recompute (its blocks are
   freed and it re-enters the waiting queue with its generated tokens) or by swap (its blocks are
   copied to the CPU pool).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from harness.engines.paged.block_manager import BlockManager
from harness.engines.paged.sequence import SeqStatus, Sequence


@dataclass(frozen=True)
class SchedulerConfig:
    """The paged engine's scheduling knobs; their defaults are EngineConfig's (harness/engines/base.py)."""

    max_num_seqs: int
    max_num_batched_tokens: int
    preemption: str  # "recompute" or "swap"
    watermark: float = 0.01  # share of the pool admissions leave free while others run

    def __post_init__(self) -> None:
        if self.preemption not in ("recompute", "swap"):
            raise ValueError(f"preemption must be 'recompute' or 'swap', got {self.preemption!r}")
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be positive")


@dataclass
class ScheduledBatch:
    seqs: list[Sequence]
    is_prefill: bool
    swap_in: list[tuple[int, int]] = field(default_factory=list)  # (cpu block, device block)
    swap_out: list[tuple[int, int]] = field(default_factory=list)  # (device block, cpu block)
    preempted: list[tuple[int, str]] = field(default_factory=list)  # (seq id, "recompute" or "swap") this step
    swapped_in: list[int] = field(default_factory=list)  # seq ids back from the CPU pool this step


class Scheduler:
    def __init__(self, config: SchedulerConfig, block_manager: BlockManager) -> None:
        self.config = config
        self.bm = block_manager
        self.waiting: list[Sequence] = []  # kept sorted by order_key
        self.running: list[Sequence] = []
        self.swapped: list[Sequence] = []
        self.num_preemptions = 0
        self.num_swap_outs = 0

    def add(self, seq: Sequence) -> None:
        seq.status = SeqStatus.WAITING
        bisect.insort(self.waiting, seq, key=lambda s: s.order_key)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running or self.swapped)

    def schedule(self) -> ScheduledBatch | None:
        swap_in, back = self._swap_in()
        if not swap_in and not self.swapped:
            prefill = self._admit()
            if prefill:
                return ScheduledBatch(prefill, is_prefill=True)
        batch = self._decode()
        batch.swap_in, batch.swapped_in = swap_in + batch.swap_in, back
        return batch if batch.seqs else None

    def _swap_in(self) -> tuple[list[tuple[int, int]], list[int]]:
        pairs: list[tuple[int, int]] = []
        back: list[int] = []
        self.swapped.sort(key=lambda s: s.order_key)
        while self.swapped and len(self.running) < self.config.max_num_seqs and self.bm.can_swap_in(self.swapped[0]):
            seq = self.swapped.pop(0)
            pairs += self.bm.swap_in(seq)
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            back.append(seq.seq_id)
        return pairs, back

    def _admit(self) -> list[Sequence]:
        admitted: list[Sequence] = []
        budget = self.config.max_num_batched_tokens
        watermark = int(self.config.watermark * self.bm.num_blocks)
        while self.waiting and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            # One sequence longer than the budget still runs alone (no chunked prefill); alone, it
            # may use the whole pool.
            reserve = watermark if self.running else 0
            if (admitted and len(seq) > budget) or not self.bm.can_allocate(seq, reserve):
                break
            self.waiting.pop(0)
            self.bm.allocate(seq)
            budget -= len(seq) - seq.num_cached_tokens
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            admitted.append(seq)
        return admitted

    def _decode(self) -> ScheduledBatch:
        batch = ScheduledBatch([], is_prefill=False)
        queue = sorted(self.running, key=lambda s: s.order_key)
        while queue:
            seq = queue.pop(0)
            while not self.bm.can_append(seq):
                victim = queue.pop() if queue else seq  # least important: last in order
                moved = self._preempt(victim)
                batch.swap_out += moved
                batch.preempted.append((victim.seq_id, "swap" if victim.status == SeqStatus.SWAPPED else "recompute"))
                if victim is seq:
                    break
            else:
                self.bm.append_slot(seq)
                batch.seqs.append(seq)
        return batch

    def _preempt(self, seq: Sequence) -> list[tuple[int, int]]:
        self.running.remove(seq)
        self.num_preemptions += 1
        if self.config.preemption == "swap" and self.bm.can_swap_out(seq):
            self.num_swap_outs += 1
            seq.status = SeqStatus.SWAPPED
            self.swapped.append(seq)
            return self.bm.swap_out(seq)
        self.bm.free(seq)  # recompute: prompt + generated tokens are prefilled again later
        self.add(seq)
        return []

    def abort_all(self) -> list[Sequence]:
        """Drop every unfinished sequence and give its blocks back, device and CPU pool alike (a generate
        that raised part-way: the next one must start from an empty pool). Returns the dropped ones."""
        for seq in self.running:
            self.bm.free(seq)
        for seq in self.swapped:
            self.bm.drop_swapped(seq)
        dropped = [*self.waiting, *self.running, *self.swapped]
        for seq in dropped:
            seq.status = SeqStatus.FINISHED
        self.waiting, self.running, self.swapped = [], [], []
        return dropped

    def finish(self, seq: Sequence) -> None:
        seq.status = SeqStatus.FINISHED
        self.running.remove(seq)
        self.bm.free(seq)
