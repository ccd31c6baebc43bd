"""A decode step's attention read through the block tables, without copying K/V (`--perf-compile`).

Eagerly, the paged engine copies each length group's blocks out of the pool before attending
(decode_groups.py): on `small`'s mixed64 requests that copy was a quarter of paged's time, and
attention then reads the copy again. FlexAttention (Dong et al. 2024, "Flex Attention: A Programming
Model for Generating Optimized Attention Kernels"; torch.nn.attention.flex_attention) attends over
a list of key blocks per row: given the whole pool as one key sequence, and each row's block table
as its list of blocks, the compiled kernel reads every row's K/V where it lies. Full blocks need no
mask; a row's last, partly written block is masked past its position. This is the page-table scheme
of torch's own experimental PagedAttention, applied to the engine's block tables.

The query heads that share a key/value head are folded into that head's query positions (GQA as
Ainslie et al. 2023 define it), so each block is read once for all of them. Shapes are static per
batch bucket (a power of two; padded rows see no blocks): one compile per bucket, model and pool
size, seconds, cached on disk by TorchInductor. Every engine in a process shares TorchDynamo's cache
of flex_attention's compiled versions, so its limit (8 by default) is raised to RECOMPILE_LIMIT
here. It needs a C++ compiler on CPU; where compiling fails, a warning says why and the engine
gathers as it does without the flag.
"""

from __future__ import annotations

import warnings

import torch
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from harness.engines.paged.decode_groups import padded_tables

RECOMPILE_LIMIT = 64  # compiled versions of the kernel a process keeps: buckets x models x pool sizes


def worth_it(positions: list[int], min_rows: int = 16) -> bool:
    """Whether a decode step with rows at these positions attends through its tables rather than
    gathering. One layer's attention on `small`'s shapes, both ways interleaved (`python -m
    experiments.decode_attention`; docs/measurements.md): from 16 rows the tables were as fast or
    faster (1.2-1.5x for rows of differing contexts), below 16 the gather as fast or faster (up to 2x
    at 2 rows): its buffers are reused, and the flash kernel it feeds is faster per token."""
    return len(positions) >= min_rows


def bucket(batch: int) -> int:
    """The padded batch a step of `batch` rows runs at: the next power of two, at least 2."""
    return max(2, 1 << (batch - 1).bit_length())


class FlexDecode:
    """block_mask(positions, block_tables) once a step, then attend(q, k_pool, v_pool, mask) for each
    layer's pool, (blocks, bs, n_kv, d): (B, heads * d), or None once compiling has failed (the caller
    then attends its own way)."""

    def __init__(self, pool_blocks: int, block_size: int, heads: tuple[int, int, int], device: torch.device) -> None:
        self.pool_blocks, self.block_size, self.device = pool_blocks, block_size, device
        self.n_heads, self.n_kv, self.head_dim = heads
        self.group = self.n_heads // self.n_kv
        self._kernel = torch.compile(flex_attention, dynamic=False, fullgraph=True)
        self._buffers: dict[int, tuple[torch.Tensor, ...]] = {}
        self._masks: dict[int, object] = {}
        self.problem: str | None = None

    def block_mask(self, positions: list[int], block_tables: list[list[int]]) -> BlockMask:
        """Row b (of a batch padded to its bucket) attends to positions 0 .. positions[b], through its
        table: its full blocks unmasked, the block holding its own position masked past it."""
        batch, bs = len(positions), self.block_size
        padded = bucket(batch)
        full_n, part_n, full_idx, part_idx, last = self._buffers_for(padded)
        pos = torch.tensor(positions, device=self.device)
        width = max(len(t) for t in block_tables)
        tables = padded_tables(block_tables, width, self.device, torch.int32)
        n_full = (pos + 1) // bs
        full_n.zero_()
        part_n.zero_()
        full_n[:batch, 0, 0] = n_full.to(torch.int32)
        part_n[:batch, 0, 0] = ((pos + 1) % bs != 0).to(torch.int32)
        full_idx[:batch, 0, 0, :width] = tables
        part_idx[:batch, 0, 0, 0] = tables.gather(1, n_full.clamp(max=width - 1)[:, None])[:, 0]
        last[:batch] = pos % bs
        return BlockMask.from_kv_blocks(
            part_n,
            part_idx,
            full_n,
            full_idx,
            BLOCK_SIZE=(self.group, bs),
            mask_mod=self._masks[padded],
            seq_lengths=(self.group, self.pool_blocks * bs),
            compute_q_blocks=False,
        )

    def _buffers_for(self, padded: int) -> tuple[torch.Tensor, ...]:
        """Per bucket, reused: the block lists (only a step's first columns are written; the counts say
        how many are read) and the offsets the mask reads, which its function closes over."""
        if padded not in self._buffers:
            counts = [torch.zeros(padded, 1, 1, dtype=torch.int32, device=self.device) for _ in range(2)]
            size = (padded, 1, 1, self.pool_blocks)
            lists = [torch.zeros(size, dtype=torch.int32, device=self.device) for _ in range(2)]
            last = torch.zeros(padded, dtype=torch.int64, device=self.device)
            self._buffers[padded] = (counts[0], counts[1], lists[0], lists[1], last)
            bs = self.block_size

            def within_position(b, h, q_idx, kv_idx):
                return (kv_idx % bs) <= last[b]

            self._masks[padded] = within_position
        return self._buffers[padded]

    def attend(
        self,
        q: torch.Tensor,
        k_pool: torch.Tensor,
        v_pool: torch.Tensor,
        mask: BlockMask,
    ) -> torch.Tensor | None:
        """q: (B, n_heads, d) -> (B, n_heads * d); None (after one warning) where the kernel cannot compile."""
        if self.problem is not None:
            return None
        batch, padded = q.shape[0], mask.kv_num_blocks.shape[0]
        folded = q.new_zeros(padded, self.n_kv, self.group, self.head_dim)
        folded[:batch] = q.view(batch, self.n_kv, self.group, self.head_dim)
        keys = k_pool.view(1, -1, self.n_kv, self.head_dim).transpose(1, 2)  # (1, n_kv, slots, d): a view
        values = v_pool.view(1, -1, self.n_kv, self.head_dim).transpose(1, 2)
        try:
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                out = self._kernel(folded, keys, values, block_mask=mask, scale=self.head_dim**-0.5)
        except Exception as exc:  # noqa: BLE001 - no compiler, or inductor cannot build here: say so once
            self.problem = f"--perf-compile: the block-table attention is unavailable ({type(exc).__name__}: {exc})"
            warnings.warn(self.problem + "; gathering K/V instead", RuntimeWarning, stacklevel=2)
            return None
        return out[:batch].reshape(batch, -1)
