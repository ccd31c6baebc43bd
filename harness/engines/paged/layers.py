"""The decoder's pieces as plain functions over the HF model's own weight tensors: RMSNorm, RoPE and
one layer's weights. Each follows transformers' modeling_qwen3 / modeling_llama in its order of
operations, so the paged forward's greedy tokens match HF's.

Q, K and V are one product over their weights stacked by rows, as are the MLP's gate and up (as
vLLM's QKVParallelLinear and MergedColumnParallelLinear do): each output is the same dot product (a
library may split a longer product's sums differently, so the last bits may differ), and a decode
step makes 4 products a layer instead of 7, each longer, which the CPU's kernels read faster
(docs/measurements.md, decode at batch 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Linear = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # F.linear, or matvec.row_times_weight


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # Zhang & Sennrich 2019; computed in float32 as transformers' Qwen3RMSNorm/LlamaRMSNorm do.
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # RoPE (Su et al. 2021), the rotate-half form used by Llama and Qwen. x: (T, heads, d); cos/sin: (T, 1, d)
    return x * cos + rotate_half(x) * sin


@dataclass
class LayerWeights:
    input_norm: torch.Tensor
    qkv_proj: torch.Tensor  # q_proj, k_proj and v_proj stacked by rows; each is a view of its rows
    o_proj: torch.Tensor
    q_norm: torch.Tensor | None
    k_norm: torch.Tensor | None
    post_norm: torch.Tensor
    gate_up_proj: torch.Tensor  # gate_proj and up_proj stacked by rows, likewise
    down_proj: torch.Tensor
    # each module's own weight, a view of the stacked rows: what experiments/ (decode_bound's
    # unstacked variant, the regression patches) multiply by one at a time
    q_proj: torch.Tensor
    k_proj: torch.Tensor
    v_proj: torch.Tensor
    gate_proj: torch.Tensor
    up_proj: torch.Tensor


def stack_rows(modules: list[torch.nn.Module]) -> torch.Tensor:
    """One (rows, in) tensor holding these modules' weights one after another. Each module's weight
    becomes a view of its own rows, so HF's modules read the same memory and nothing is held twice.
    Idempotent: modules whose weights already lie so in one tensor return that tensor."""
    weights = [m.weight for m in modules]
    stacked = getattr(modules[0], "_rows_stacked", None)
    if stacked is not None and all(w.untyped_storage().data_ptr() == stacked.data_ptr() for w in weights):
        return stacked
    with torch.no_grad():
        stacked = torch.cat([w.detach() for w in weights])
        start = 0
        for w in weights:
            w.data = stacked[start : start + w.shape[0]]
            start += w.shape[0]
    modules[0]._rows_stacked = stacked
    return stacked


def layer_weights(layer) -> LayerWeights:
    attn, mlp = layer.self_attn, layer.mlp
    q_norm = getattr(attn, "q_norm", None)
    k_norm = getattr(attn, "k_norm", None)
    qkv = stack_rows([attn.q_proj, attn.k_proj, attn.v_proj])
    gate_up = stack_rows([mlp.gate_proj, mlp.up_proj])
    return LayerWeights(
        layer.input_layernorm.weight,
        qkv,
        attn.o_proj.weight,
        None if q_norm is None else q_norm.weight,
        None if k_norm is None else k_norm.weight,
        layer.post_attention_layernorm.weight,
        gate_up,
        mlp.down_proj.weight,
        attn.q_proj.weight,
        attn.k_proj.weight,
        attn.v_proj.weight,
        mlp.gate_proj.weight,
        mlp.up_proj.weight,
    )


def qkv(
    x: torch.Tensor, w: LayerWeights, cos, sin, eps: float, heads: tuple[int, int, int], linear: Linear = F.linear
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(T, H) -> q (T, nh, d), k and v (T, n_kv, d), RoPE applied; heads = (nh, n_kv, d)."""
    n_heads, n_kv, head_dim = heads
    h = rms_norm(x, w.input_norm, eps)
    q, k, v = linear(h, w.qkv_proj).split([n_heads * head_dim, n_kv * head_dim, n_kv * head_dim], dim=-1)
    q, k, v = q.reshape(-1, n_heads, head_dim), k.reshape(-1, n_kv, head_dim), v.reshape(-1, n_kv, head_dim)
    if w.q_norm is not None:  # Qwen3: RMSNorm over head_dim before RoPE
        q, k = rms_norm(q, w.q_norm, eps), rms_norm(k, w.k_norm, eps)
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def mlp_residual(x: torch.Tensor, attn: torch.Tensor, w: LayerWeights, eps: float, linear: Linear = F.linear):
    """The rest of a layer after attention: output projection, residual, SwiGLU MLP, residual."""
    x = x + linear(attn, w.o_proj)
    h = rms_norm(x, w.post_norm, eps)
    gate, up = linear(h, w.gate_up_proj).chunk(2, dim=-1)
    return x + linear(F.silu(gate) * up, w.down_proj)


def final_logits(x: torch.Tensor, norm: torch.Tensor, head: torch.Tensor, eps: float, linear: Linear = F.linear):
    return linear(rms_norm(x, norm, eps), head)
