"""CUDA graphs for the paged engine's decode step (`--perf-cuda-graphs`, GPU only).

A small model's decode step on a GPU is bound by launching its kernels, not by the GPU: on an H200
every decode case of `small` ran at 0.2-0.4% of its bandwidth bound. A CUDA graph records a step's
kernels once and replays them with one launch. It needs every shape fixed, so the captured step
differs from the eager one in two ways only: its rows are padded to a bucket of the batch size, and
each row gathers a fixed number of K/V blocks (a bucket of the longest row's), with a mask hiding
each row's positions beyond its own. Padded rows decode token 0 at position 0 and write their K/V
into a scratch block beyond the block manager's pool (the runner allocates it), so they touch no
sequence's cache; their logits are dropped. One graph per (rows, blocks) bucket pair, captured the
first time a step needs it, all sharing one memory pool (as vLLM captures per batch size).

StaticDecode is the capturable step itself and runs anywhere (the CPU tests compare it with the
eager step); DecodeGraphs captures and replays it, and refuses any device but CUDA.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from harness.errors import ConfigError

ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
BLOCK_BUCKETS = (4, 8, 16, 32, 64, 128, 256, 512, 1024)


def bucket(n: int, buckets: tuple[int, ...]) -> int | None:
    """The smallest bucket that holds n; None beyond the largest (the step then runs eagerly)."""
    return next((b for b in buckets if b >= n), None)


def refusal(device: torch.device) -> str | None:
    """Why this device cannot capture, or None."""
    if device.type != "cuda":
        return f"--perf-cuda-graphs: CUDA graphs need a CUDA device; this run is on {device.type}"
    return None


class StaticDecode:
    """One decode step of `rows` rows over `blocks` K/V blocks each, from fixed input buffers: load()
    fills them, forward() computes (rows, vocab) logits with the runner's own pieces."""

    def __init__(self, runner, rows: int, blocks: int) -> None:
        dev = runner.device
        self.runner, self.rows, self.blocks = runner, rows, blocks
        self.tokens = torch.zeros(rows, dtype=torch.long, device=dev)
        self.positions = torch.zeros(rows, dtype=torch.long, device=dev)
        self.tables = torch.zeros(rows, blocks, dtype=torch.long, device=dev)
        self.slots = torch.full((rows,), runner.scratch_slot, dtype=torch.long, device=dev)
        self.span = torch.arange(blocks * runner.block_size, device=dev)
        runner._rope(self.positions, runner.spec.max_position - 1)  # the whole table, before any capture
        self.logits: torch.Tensor | None = None

    def load(self, token_ids: list[int], positions: list[int], block_tables: list[list[int]]) -> None:
        pad, bs = self.rows - len(token_ids), self.runner.block_size
        slots = [table[p // bs] * bs + p % bs for table, p in zip(block_tables, positions, strict=True)]
        tables = [(table + [0] * self.blocks)[: self.blocks] for table in block_tables]
        for buffer, values in (
            (self.tokens, token_ids + [0] * pad),
            (self.positions, positions + [0] * pad),
            (self.slots, slots + [self.runner.scratch_slot] * pad),
            (self.tables, tables + [[0] * self.blocks] * pad),
        ):
            buffer.copy_(torch.tensor(values, dtype=torch.long), non_blocking=True)

    def forward(self) -> torch.Tensor:
        r = self.runner
        cos, sin = (t[self.positions][:, None, :] for t in r._rope_cache)
        mask = (self.span[None] <= self.positions[:, None])[:, None, None, :]  # (rows, 1, 1, ctx)
        x = r.embed[self.tokens]
        for layer, w in enumerate(r.layers):
            q, k, v = r._qkv(w, x, cos, sin)
            r._write_kv(layer, self.slots, k, v)
            keys, values = r._read_kv(layer, self.tables)
            out = r._attend(q[:, :, None], keys.transpose(1, 2), values.transpose(1, 2), mask, causal=False)
            x = r._mlp_residual(w, x, out.reshape(self.rows, -1))
        return r._logits(x)


def cuda_capture(fn, pool) -> tuple[torch.Tensor, Callable[[], None]]:
    """Run fn twice on a side stream (lazy initialisation outside the graph), then record it into a CUDA
    graph: (its output, whose memory every replay rewrites; replay)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        out = fn()
    return out, graph.replay


class DecodeGraphs:
    """decode_logits(...) through a captured graph of its bucket, or None where no bucket holds the step.
    `capture` records a step (cuda_capture; the tests pass a stand-in that runs it eagerly)."""

    def __init__(self, runner, capture=None) -> None:
        problem = refusal(runner.device) if capture is None else None
        if problem:
            raise ConfigError(problem)
        self.runner, self.capture = runner, capture or cuda_capture
        self.pool = torch.cuda.graph_pool_handle() if capture is None else None
        self.graphs: dict[tuple[int, int], tuple[StaticDecode, Callable[[], None]]] = {}

    def decode_logits(self, token_ids: list[int], positions: list[int], block_tables: list[list[int]]):
        bs = self.runner.block_size
        key = (bucket(len(token_ids), ROW_BUCKETS), bucket(max(p // bs for p in positions) + 1, BLOCK_BUCKETS))
        if None in key:
            return None
        if key not in self.graphs:
            static = StaticDecode(self.runner, *key)  # every row padded: warm-up writes the scratch block only
            static.logits, replay = self.capture(static.forward, self.pool)
            self.graphs[key] = (static, replay)
        static, replay = self.graphs[key]
        static.load(token_ids, positions, block_tables)
        replay()
        return static.logits[: len(token_ids)]
