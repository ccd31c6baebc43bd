"""A batch-1 decode step of the paged engine, each layer one call of row_layer.py's C layer.

It takes a step where the runner's one-row products are rowdot.py's C kernel (float32 on a CPU that is
not Intel's, where onednn.py sends one row to that kernel) and the row's blocks lie one after another
in the pool (every batch-1 case of a fresh pool); elsewhere the runner steps through layers.py's torch
ops. The embedding, RoPE's table (the runner's `_rope`) and the final norm and LM head stay the
runner's. Under torch's FlopCounterMode each layer runs as the torch op whose formula counts it.
"""

from __future__ import annotations

import ctypes

import torch

from harness.engines import onednn, row_layer


def _address(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


# the weights of a layer in row_decode_layer's order (row_layer.py); Llama has no q/k norms: 0
ORDER = ("input_norm", "qkv_proj", "o_proj", "q_norm", "k_norm", "post_norm", "gate_up_proj", "down_proj")


class RowStep:
    def __init__(self, runner) -> None:
        self.runner = runner
        self.kernel = row_layer.kernel()
        intermediate = runner.layers[0].down_proj.shape[1]
        self.dims = [runner.embed.shape[1], runner.n_heads, runner.n_kv, runner.head_dim, intermediate]
        self._dims = (ctypes.c_long * 5)(*self.dims)
        self._weights = [(ctypes.c_void_p * 8)(*(_address(getattr(w, n)) for n in ORDER)) for w in runner.layers]
        self._scratch = torch.empty(0, dtype=torch.float32)

    @staticmethod
    def takes(runner) -> bool:
        """Whether this runner's batch-1 steps can go through the C layer."""
        tensors = [t for w in runner.layers for t in vars(w).values() if t is not None]
        plain = all(t.dtype == torch.float32 and t.is_contiguous() for t in [runner.k_cache, *tensors])
        in_c = onednn.library(runner.device, runner.dtype) == "onednn, one row in c"
        return in_c and plain and row_layer.kernel() is not None

    def _scratch_for(self, ctx: int) -> torch.Tensor:
        hidden, heads, kv_heads, head_dim, intermediate = self.dims
        need = 2 * hidden + 2 * (heads + kv_heads) * head_dim + 3 * intermediate + heads * ctx
        if self._scratch.numel() < need:
            self._scratch = torch.empty(max(need, 2 * self._scratch.numel()), dtype=torch.float32)
        return self._scratch

    def logits(self, token: int, position: int, first_block: int) -> torch.Tensor:
        """(1, vocab) logits after `token` at `position`, the row's K/V in consecutive blocks from
        `first_block`; writes the token's K and V into its slot."""
        r = self.runner
        cos, sin = (t.contiguous() for t in r._rope(torch.tensor([position]), position))
        x = r.embed[token].clone()
        ctx, scratch = position + 1, self._scratch_for(position + 1)
        size, threads, counting = r.k_cache.element_size(), torch.get_num_threads(), onednn.counting()
        first, per_layer = first_block * r.k_cache.stride(1) * size, r.k_cache.stride(0) * size  # bytes
        k0, v0 = r.k_cache.data_ptr() + first, r.v_cache.data_ptr() + first
        x_at, scratch_at, cos_at, sin_at = x.data_ptr(), scratch.data_ptr(), cos.data_ptr(), sin.data_ptr()
        for layer, weights in enumerate(self._weights):
            kc, vc = k0 + layer * per_layer, v0 + layer * per_layer
            if counting:
                pointers = [ctypes.addressof(weights), scratch_at, kc, vc, cos_at, sin_at]
                row_layer.counted_layer(x, pointers, ctx, self.dims, r.eps, threads)
            else:
                self.kernel(weights, x_at, scratch_at, kc, vc, cos_at, sin_at, ctx, self._dims, r.eps, threads)
        return r._logits(x[None])
