"""The paged engine's own forward for Qwen3 and Llama decoders, reading and writing K/V through
block tables. Torch ops: runs on CPU and CUDA; on a float32 CPU, decode attention reads each row's
blocks in place in C (kv_attention.py), and where one-row products are the suite's C kernel a lone
row's decode step runs each layer as one C call (row_step.py).

Weights are the HF model's own tensors (built by harness/models.py or loaded from a checkpoint);
the forward is written here: RMSNorm, RoPE, grouped-query attention over a paged cache, SwiGLU,
and Qwen3's q/k norms. Each op follows the order of operations of transformers' modeling_qwen3 /
modeling_llama (RMSNorm in float32, weight applied after casting back), so greedy tokens match.

KV pool layout per layer: (num_blocks, block_size, n_kv, head_dim); token slot = block * bs + offset.
Torch's attention reads gathered whole blocks (index_select, one contiguous copy per block: on CPU
about 20x faster than indexing token slots one by one), or a view of a lone row's consecutive blocks
(decode_groups.py); writes index_copy_ token slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.engines import kv_attention, onednn
from harness.engines.paged.decode_groups import DecodeGroup, consecutive_from, in_place, plan_groups, whole_batch
from harness.engines.paged.flex_decode import FlexDecode, worth_it
from harness.engines.paged.graphs import DecodeGraphs
from harness.engines.paged.layers import LayerWeights, layer_weights, rms_norm
from harness.engines.paged.matvec import PIECES, CompiledRow
from harness.engines.paged.row_step import RowStep
from harness.models import DTYPES, LoadedModel


@dataclass
class PrefillChunk:
    token_ids: list[int]  # the tokens to compute (those after any prefix-cache hit)
    start_pos: int  # position of token_ids[0]; the KV of positions < start_pos is already cached
    block_table: list[int]


def copy_may_overlap(src: torch.device, dst: torch.device) -> bool:
    """Whether a block copy may run asynchronously. Host to GPU: yes, the kernels that read the blocks
    are queued on the same stream after it. GPU to host: no; the host reads the staged tensor at once
    (index_copy_ into the CPU pool), and an asynchronous copy would not have landed yet."""
    return dst.type == "cuda"


class PagedModelRunner:
    def __init__(
        self,
        loaded: LoadedModel,
        num_blocks: int,
        block_size: int,
        num_cpu_blocks: int = 0,
        compile: bool = False,
        cuda_graphs: bool = False,
    ) -> None:
        spec, hf = loaded.spec, loaded.model
        if getattr(hf.config, "attention_bias", False) or getattr(hf.config, "mlp_bias", False):
            raise ValueError("the paged engine supports bias-free Qwen3/Llama attention and MLP only")
        self.spec, self.device, self.block_size = spec, loaded.device, block_size
        self.dtype = DTYPES[loaded.dtype]
        self.n_heads, self.n_kv, self.head_dim = spec.num_heads, spec.num_kv_heads, spec.head_dim
        self.eps = spec.rms_norm_eps
        self.embed = hf.model.embed_tokens.weight
        self.final_norm = hf.model.norm.weight
        self.lm_head = hf.lm_head.weight
        # float32 on CPU: every product through oneDNN (onednn.py), not the BLAS
        self.linear = onednn.linear if onednn.available(self.device, self.dtype) else F.linear
        # Else on CPU the LM head, a decode step's largest GEMM, stored (hidden, vocab): MKL ran it 1.5-2.4x
        # faster than F.linear's (vocab, hidden) form on `small`. One transposed copy; cuBLAS takes either.
        blas_head = self.device.type == "cpu" and self.linear is F.linear
        self.lm_head_t = self.lm_head.t().contiguous() if blas_head else None
        on_cpu = compile and self.device.type == "cpu"
        self.compiled = CompiledRow(self.linear) if on_cpu else None
        heads = (self.n_heads, self.n_kv, self.head_dim)
        self.flex = FlexDecode(num_blocks + 1, block_size, heads, self.device) if on_cpu else None
        self.layers = [layer_weights(layer) for layer in hf.model.layers]
        if self.device.type == "cuda":  # the per-layer weights stacking left behind: back to the device
            torch.cuda.empty_cache()
        self.rotary = hf.model.rotary_emb  # transformers' own frequencies: any rope scaling it knows applies
        # one block beyond the block manager's pool: where a captured step's padded rows write (graphs.py)
        shape = (spec.num_layers, num_blocks + 1, block_size, self.n_kv, self.head_dim)
        self.scratch_slot = num_blocks * block_size
        # zeros, not empty: padded gather slots must never hold NaN (0 * NaN poisons a masked softmax row)
        self.k_cache = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.v_cache = torch.zeros(shape, dtype=self.dtype, device=self.device)
        cpu_shape = (spec.num_layers, num_cpu_blocks, block_size, self.n_kv, self.head_dim)
        pin = self.device.type == "cuda"
        self.k_cpu = torch.zeros(cpu_shape, dtype=self.dtype, pin_memory=pin)
        self.v_cpu = torch.zeros(cpu_shape, dtype=self.dtype, pin_memory=pin)
        self._rope_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self._gather: tuple[torch.Tensor, torch.Tensor] | None = None
        self.graphs = DecodeGraphs(self) if cuda_graphs else None
        # in C where they can: a lone row's step (row_step.py), decode attention in place (kv_attention.py)
        self.row_step = RowStep(self) if not (compile or cuda_graphs) and RowStep.takes(self) else None
        self.kv_in_c = not (compile or cuda_graphs) and kv_attention.takes(self.device, self.dtype)

    # --- helpers ---------------------------------------------------------------------------
    def _rope(self, positions: torch.Tensor, max_position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for these positions, (T, 1, d), from a table grown on demand. The caller passes the
        largest position from its host-side list: reading it off the device tensor would make the host
        wait for the GPU on every step."""
        need = max_position + 1
        if self._rope_cache is None or self._rope_cache[0].shape[0] < need:
            size = max(need, 2 * (0 if self._rope_cache is None else self._rope_cache[0].shape[0]), 1024)
            pos = torch.arange(size, device=self.device)[None]
            dummy = torch.empty(1, dtype=self.dtype, device=self.device)
            cos, sin = self.rotary(dummy, pos)
            self._rope_cache = (cos[0], sin[0])
        cos, sin = self._rope_cache
        return cos[positions][:, None, :], sin[positions][:, None, :]

    def _slots(self, block_tables: torch.Tensor) -> torch.Tensor:
        """(B, max_blocks) block ids -> (B, max_blocks * bs) token slots."""
        offsets = torch.arange(self.block_size, device=block_tables.device)
        return (block_tables[:, :, None] * self.block_size + offsets).flatten(1)

    def _piece(self, piece: str, x: torch.Tensor, *args):
        """A piece of layers.py: compiled for a single row under --perf-compile, eager otherwise."""
        return self.compiled.run(piece, x, *args) if self.compiled else PIECES[piece](x, *args, linear=self.linear)

    def _qkv(self, w: LayerWeights, x: torch.Tensor, cos, sin) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._piece("qkv", x, w, cos, sin, self.eps, (self.n_heads, self.n_kv, self.head_dim))

    def _mlp_residual(self, w: LayerWeights, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        return self._piece("mlp_residual", x, attn, w, self.eps)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool
    ) -> torch.Tensor:
        # q: (B, nh, Tq, d); k, v: (B, n_kv, Tk, d). GQA: each KV head serves nh / n_kv query heads.
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, scale=self.head_dim**-0.5, enable_gqa=self.n_heads != self.n_kv
        )

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """(T, H) final hidden states -> (T, vocab) logits."""
        if self.lm_head_t is None or (x.shape[0] == 1 and self.compiled):
            return self._piece("final_logits", x, self.final_norm, self.lm_head, self.eps)
        return rms_norm(x, self.final_norm, self.eps) @ self.lm_head_t

    def _write_kv(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k_cache[layer].view(-1, self.n_kv, self.head_dim).index_copy_(0, slots, k)
        self.v_cache[layer].view(-1, self.n_kv, self.head_dim).index_copy_(0, slots, v)

    def _group_kv(self, layer: int, g: DecodeGroup) -> tuple[torch.Tensor, torch.Tensor]:
        """A decode group's K, V as (rows, n_kv, ctx, d). One row on consecutive blocks (a lone sequence
        in a fresh pool, as in every batch-1 case) is a view of the pool itself: no copy. At batch 1 and
        ctx 512 on `qwen3-0.6b` the gather copied 117 MB of K/V a step only for attention to read it again."""
        if g.first_block is None:
            keys, values = self._read_kv(layer, g.tables, g.buffers)
        else:
            keys, values = self._pool_view(layer, g.first_block, g.tables.shape[1])
        return keys[:, : g.ctx].transpose(1, 2), values[:, : g.ctx].transpose(1, 2)

    def _pool_view(self, layer: int, first: int, blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
        """K, V of `blocks` consecutive blocks from `first`, (1, blocks * bs, n_kv, d): views, no copy."""
        shape, span = (1, -1, self.n_kv, self.head_dim), slice(first, first + blocks)
        return self.k_cache[layer][span].view(shape), self.v_cache[layer][span].view(shape)

    def _read_kv(
        self, layer: int, tables: torch.Tensor, out: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, width) block ids -> K, V of shape (B, width * bs, n_kv, d), into `out` when given."""
        flat = tables.flatten()
        shape = (tables.shape[0], -1, self.n_kv, self.head_dim)
        if out is None:
            return self.k_cache[layer].index_select(0, flat).view(shape), self.v_cache[layer].index_select(
                0, flat
            ).view(shape)
        torch.index_select(self.k_cache[layer], 0, flat, out=out[0])
        torch.index_select(self.v_cache[layer], 0, flat, out=out[1])
        return out[0].view(shape), out[1].view(shape)

    # --- the two kinds of step -------------------------------------------------------------
    def prefill(self, chunks: list[PrefillChunk]) -> list[int]:
        """Greedy next token of each chunk's sequence."""
        return self.prefill_logits(chunks).argmax(dim=-1).tolist()

    def decode(self, token_ids: list[int], positions: list[int], block_tables: list[list[int]]) -> list[int]:
        """Greedy next token of each of B sequences."""
        return self.decode_logits(token_ids, positions, block_tables).argmax(dim=-1).tolist()

    @torch.inference_mode()
    def prefill_logits(self, chunks: list[PrefillChunk], all_positions: bool = False) -> torch.Tensor:
        """Packed prefill of several sequences: linears over all tokens at once, attention per sequence.
        Logits of each chunk's last token, (len(chunks), vocab); of every token with all_positions."""
        ids = torch.tensor([t for c in chunks for t in c.token_ids], device=self.device)
        positions = torch.tensor([c.start_pos + i for c in chunks for i in range(len(c.token_ids))], device=self.device)
        tables = [torch.tensor(c.block_table, device=self.device) for c in chunks]
        slot_ids = torch.cat(
            [
                self._slots(t[None])[0, c.start_pos : c.start_pos + len(c.token_ids)]
                for c, t in zip(chunks, tables, strict=True)
            ]
        )
        cos, sin = self._rope(positions, max(c.start_pos + len(c.token_ids) - 1 for c in chunks))
        bounds = torch.tensor([0] + [len(c.token_ids) for c in chunks]).cumsum(0).tolist()
        x = self.embed[ids]  # (T, H)
        for layer, w in enumerate(self.layers):
            q, k, v = self._qkv(w, x, cos, sin)
            self._write_kv(layer, slot_ids, k, v)
            outs = [
                self._prefill_attention(layer, c, t, q[a:b], k[a:b], v[a:b])
                for c, t, a, b in zip(chunks, tables, bounds, bounds[1:], strict=False)
            ]
            x = self._mlp_residual(w, x, torch.cat(outs))
        return self._logits(x if all_positions else x[[b - 1 for b in bounds[1:]]])

    def _prefill_attention(
        self, layer: int, chunk: PrefillChunk, table: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        """q, k, v: (n_new, heads, d) of this chunk's own tokens."""
        n_new, total = len(chunk.token_ids), chunk.start_pos + len(chunk.token_ids)
        q = q.transpose(0, 1)[None]  # (1, nh, n_new, d)
        if chunk.start_pos == 0:  # nothing cached: attend over the fresh K/V, no read-back
            out = self._attend(q, k.transpose(0, 1)[None], v.transpose(0, 1)[None], None, causal=True)
        else:  # cached prefix: query i (position start + i) sees keys 0 .. start + i
            first = consecutive_from(chunk.block_table)
            if first is None:
                keys, values = self._read_kv(layer, table[None])
            else:
                keys, values = self._pool_view(layer, first, len(chunk.block_table))
            keys, values = keys[:, :total].transpose(1, 2), values[:, :total].transpose(1, 2)  # (1, n_kv, total, d)
            mask = torch.ones(n_new, total, dtype=torch.bool, device=self.device).tril(diagonal=chunk.start_pos)
            out = self._attend(q, keys, values, mask, causal=False)
        return out[0].transpose(0, 1).reshape(n_new, -1)

    def _gather_buffers(self, blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Reused K/V gather buffers: a fresh multi-MB tensor per layer costs page faults on CPU."""
        need = blocks * self.block_size * self.n_kv * self.head_dim
        if self._gather is None or self._gather[0].numel() < need:
            self._gather = tuple(torch.empty(need, dtype=self.dtype, device=self.device) for _ in range(2))
        shape = (blocks, self.block_size, self.n_kv, self.head_dim)
        return self._gather[0][:need].view(shape), self._gather[1][:need].view(shape)

    def _decode_groups(self, positions: list[int], block_tables: list[list[int]]) -> list[DecodeGroup]:
        """Under --perf-compile on CPU, a step of many rows is one group read through their block tables
        (flex_decode.py); with the C decode attention, one group in batch order read in place; else
        length groups, each gathered or, a lone row, read in place."""
        if self.flex is not None and self.flex.problem is None and worth_it(positions):
            mask = self.flex.block_mask(positions, block_tables)
            return [whole_batch(positions, block_tables, self.block_size, self.device, mask)]
        if self.kv_in_c:  # one group, each row read in place through its table over its own length
            return [in_place(positions, block_tables, self.block_size, self.device)]
        return plan_groups(positions, block_tables, self.block_size, self.device, self._gather_buffers)

    def _decode_attention(self, layer: int, q: torch.Tensor, g: DecodeGroup, out: torch.Tensor | None) -> torch.Tensor:
        """One group's attention, (rows, heads * d), written into `out` at the group's rows when given."""
        if g.block_mask is not None:
            o = self.flex.attend(q, self.k_cache[layer], self.v_cache[layer], g.block_mask)
            if o is not None:
                return o
        if self.kv_in_c:  # the whole step in batch order (decode_groups.in_place)
            return kv_attention.attend(q, self.k_cache[layer], self.v_cache[layer], g.tables, g.lengths)
        rows_q = q if g.index is None else q.index_select(0, g.index)
        keys, values = self._group_kv(layer, g)  # (b, n_kv, ctx, d)
        o = self._attend(rows_q[:, :, None], keys, values, g.mask, causal=False).reshape(len(g.tables), -1)
        return o if out is None else out.index_copy_(0, g.index, o)

    @torch.inference_mode()
    def decode_logits(self, token_ids: list[int], positions: list[int], block_tables: list[list[int]]) -> torch.Tensor:
        """(B, vocab) logits after one token for each of B sequences, in batch order; sequence b attends
        to its positions 0 .. positions[b]."""
        if self.graphs is not None:
            captured = self.graphs.decode_logits(token_ids, positions, block_tables)
            if captured is not None:
                return captured
        if self.row_step is not None and len(token_ids) == 1:
            first = consecutive_from(block_tables[0][: positions[0] // self.block_size + 1])
            if first is not None:
                return self.row_step.logits(token_ids[0], positions[0], first)
        batch, bs = len(token_ids), self.block_size
        pos = torch.tensor(positions, device=self.device)
        write = torch.tensor(
            [block_tables[b][p // bs] * bs + p % bs for b, p in enumerate(positions)], device=self.device
        )
        groups = self._decode_groups(positions, block_tables)
        cos, sin = self._rope(pos, max(positions))
        x = self.embed[torch.tensor(token_ids, device=self.device)]  # (B, H)
        for layer, w in enumerate(self.layers):
            q, k, v = self._qkv(w, x, cos, sin)
            self._write_kv(layer, write, k, v)
            out = None if groups[0].index is None else q.new_empty(batch, self.n_heads * self.head_dim)
            for g in groups:
                out = self._decode_attention(layer, q, g, out)
            x = self._mlp_residual(w, x, out)
        return self._logits(x)

    # --- swap --------------------------------------------------------------------------------
    def _copy_blocks(self, src_k, src_v, dst_k, dst_v, pairs: list[tuple[int, int]]) -> None:
        """Whole blocks, all layers: dst[:, d] = src[:, s] for each (s, d)."""
        if not pairs:
            return
        src = torch.tensor([s for s, _ in pairs], device=src_k.device)
        dst = torch.tensor([d for _, d in pairs], device=dst_k.device)
        non_blocking = copy_may_overlap(src_k.device, dst_k.device)
        dst_k.index_copy_(1, dst, src_k.index_select(1, src).to(dst_k.device, non_blocking=non_blocking))
        dst_v.index_copy_(1, dst, src_v.index_select(1, src).to(dst_v.device, non_blocking=non_blocking))

    def swap_out(self, pairs: list[tuple[int, int]]) -> None:
        self._copy_blocks(self.k_cache, self.v_cache, self.k_cpu, self.v_cpu, pairs)

    def swap_in(self, pairs: list[tuple[int, int]]) -> None:
        self._copy_blocks(self.k_cpu, self.v_cpu, self.k_cache, self.v_cache, pairs)
