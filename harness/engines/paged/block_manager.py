"""Fixed-size KV blocks: a free list, per-sequence block tables, reference counts, prefix sharing
and swap to a CPU pool. Bookkeeping only (block ids); the runner moves the bytes. No torch.

Prefix sharing: a full block is looked up by its whole token chain, the block's own tokens and every
token before it (the KV of a token depends on all of them). The chain itself is the dictionary key, so
Python compares it in full on every hit: two prefixes that agree on a block but differ before it never
share, and a hash collision can never hand a sequence someone else's KV. A freed block keeps its chain
until it is reused, so a later request (or a preempted one coming back) can still hit it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from harness.engines.paged.sequence import Sequence


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    chain: tuple[int, ...] | None = None  # all tokens up to and including this block, once it is full


class BlockManager:
    def __init__(
        self, num_blocks: int, block_size: int, num_cpu_blocks: int = 0, enable_prefix_caching: bool = True
    ) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need at least one block of at least one token, got {num_blocks} x {block_size}")
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_block_ids: deque[int] = deque(range(num_blocks))
        self.chain_to_block: dict[tuple[int, ...], int] = {}
        self.free_cpu_block_ids: deque[int] = deque(range(num_cpu_blocks))
        self.num_cpu_blocks = num_cpu_blocks
        self.prefix_hit_tokens = 0
        self.shared_extra_refs = 0  # sum over blocks of (ref_count - 1): slots counted twice by sequences

    # --- sizes -------------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_block_ids)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # --- allocation --------------------------------------------------------------------------
    def _take_free(self) -> Block:
        block = self.blocks[self.free_block_ids.popleft()]
        if block.chain is not None and self.chain_to_block.get(block.chain) == block.block_id:
            del self.chain_to_block[block.chain]  # its old contents are about to be overwritten
        block.chain, block.ref_count = None, 1
        return block

    def _ref(self, block: Block) -> None:
        if block.ref_count == 0:
            self.free_block_ids.remove(block.block_id)
        else:
            self.shared_extra_refs += 1
        block.ref_count += 1

    def _register(self, block: Block, chain: tuple[int, ...]) -> None:
        block.chain = chain
        if self.enable_prefix_caching:
            self.chain_to_block[chain] = block.block_id

    def _cached(self, chain: tuple[int, ...]) -> Block | None:
        if not self.enable_prefix_caching:
            return None
        block_id = self.chain_to_block.get(chain)
        return None if block_id is None else self.blocks[block_id]

    def can_allocate(self, seq: Sequence, reserve: int = 0) -> bool:
        """Room for all of seq's tokens with `reserve` blocks still free afterwards."""
        return self.blocks_for(len(seq)) + reserve <= self.num_free_blocks

    def allocate(self, seq: Sequence) -> None:
        """Blocks for all of seq's tokens. Leading full blocks found in the prefix cache are shared;
        the last token is always computed (its logits give the next token), so it never hits."""
        assert not seq.block_table, f"sequence {seq.seq_id} already has blocks"
        tokens, hitting, cached = tuple(seq.token_ids), True, 0
        for index in range(self.blocks_for(len(seq))):
            end = (index + 1) * self.block_size
            full = end <= len(tokens)
            block = self._cached(tokens[:end]) if hitting and end < len(tokens) else None
            if block is not None:
                self._ref(block)
                cached += self.block_size
            else:
                hitting = False
                block = self._take_free()
                if full:
                    self._register(block, tokens[:end])
            seq.block_table.append(block.block_id)
        seq.num_cached_tokens = cached
        self.prefix_hit_tokens += cached

    def free(self, seq: Sequence) -> None:
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            assert block.ref_count > 0, f"block {block_id} freed twice"
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free_block_ids.append(block_id)
            else:
                self.shared_extra_refs -= 1
        seq.block_table = []
        seq.num_cached_tokens = 0

    def can_append(self, seq: Sequence) -> bool:
        """Room for the KV of seq's last token, which the next decode step writes."""
        return self.blocks_for(len(seq)) <= len(seq.block_table) or self.num_free_blocks >= 1

    def append_slot(self, seq: Sequence) -> None:
        if self.blocks_for(len(seq)) > len(seq.block_table):
            seq.block_table.append(self._take_free().block_id)
        if len(seq) % self.block_size == 0:  # this step fills the last block: it becomes shareable
            self._register(self.blocks[seq.block_table[len(seq) // self.block_size - 1]], tuple(seq.token_ids))

    # --- swap --------------------------------------------------------------------------------
    def can_swap_out(self, seq: Sequence) -> bool:
        return len(seq.block_table) <= len(self.free_cpu_block_ids)

    def swap_out(self, seq: Sequence) -> list[tuple[int, int]]:
        """Move seq's blocks to the CPU pool: returns (device block, cpu block) copies to make."""
        pairs = [(block_id, self.free_cpu_block_ids.popleft()) for block_id in seq.block_table]
        self.free(seq)
        seq.cpu_block_table = [cpu for _, cpu in pairs]
        return pairs

    def can_swap_in(self, seq: Sequence) -> bool:
        return len(seq.cpu_block_table) <= self.num_free_blocks

    def swap_in(self, seq: Sequence) -> list[tuple[int, int]]:
        """Bring seq back into fresh device blocks: returns (cpu block, device block) copies to make."""
        pairs = [(cpu, self._take_free().block_id) for cpu in seq.cpu_block_table]
        seq.block_table = [dev for _, dev in pairs]
        self.free_cpu_block_ids.extend(seq.cpu_block_table)
        seq.cpu_block_table = []
        return pairs

    def drop_swapped(self, seq: Sequence) -> None:
        """Give a swapped-out sequence's CPU blocks back without bringing it in (it is abandoned)."""
        self.free_cpu_block_ids.extend(seq.cpu_block_table)
        seq.cpu_block_table = []

    def reset_prefix_cache(self) -> None:
        """Forget every cached block and hand blocks out in id order again, as a fresh pool does (only
        while no sequence holds blocks): a benchmark round that follows another must not reuse the KV of
        the previous round's identical prompts, nor inherit the order its frees left the free list in
        (a lone sequence on consecutive blocks is read in place: decode_groups.py)."""
        assert self.num_used_blocks == 0, "reset_prefix_cache with blocks in use"
        self.chain_to_block.clear()
        for block in self.blocks:
            block.chain = None
        self.free_block_ids = deque(sorted(self.free_block_ids))

    # --- metrics -----------------------------------------------------------------------------
    def filled_slots(self, seqs: list[Sequence]) -> int:
        """Slots holding KV data for these sequences, counting each shared block once.

        A running sequence holds KV for all its tokens but the last (written by the next step);
        shared blocks are always full, so each extra reference over-counts exactly block_size slots."""
        return sum(len(s) - 1 for s in seqs) - self.shared_extra_refs * self.block_size
