"""One decoder layer of one row (batch-1 decode) in C: the paged engine's step where its products are
rowdot.py's C kernel.

With the products in C, what bounded batch-1 decode on the AMD EPYC hosts was what surrounds them: the
norms, RoPE, the K/V write, attention, the residuals and Python around 40-60 small torch ops a layer,
0.2-0.4 ms a layer against products of 0.5-2 ms (docs/measurements.md, decode against the read bound).
Here a whole layer is one call: RMSNorm, the stacked Q/K/V product, Qwen3's q/k norms, RoPE, the new
token's K and V written into the pool, grouped-query attention of the one query over the row's
consecutive cache slots (kv_attention.py's), the output product and residual, RMSNorm, the stacked
gate/up product, SiLU times up, the down product and residual. Each step follows transformers' modeling_qwen3 /
modeling_llama in its order of operations (RMSNorm in float32, weight applied after; RoPE in its
rotate-half form; softmax over scaled scores); sums run in other orders than torch's, so results
differ in the last bits, as the C product's do (the output check's float32 tolerance is calibrated
on the same path).

Under torch's FlopCounterMode (harness/engines/flops.py) the same C layer runs as the torch op
`llm_perf::row_decode_layer`, whose formula (`layer_flops`) is the arithmetic of its products and
attention: a change in what the layer computes is counted where it runs.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from harness.engines import kv_attention, rowdot

LAYER_SOURCE = r"""
#include <math.h>
#include <string.h>

static void rms_norm_row(const float *x, const float *w, float *out, long n, float eps) {
    float s[LANES] = {0};
    long i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) s[j] += x[i + j] * x[i + j];
    for (; i < n; i++) s[0] += x[i] * x[i];
    float r = 1.0f / sqrtf(lane_sum(s) / (float)n + eps);
    for (i = 0; i < n; i++) out[i] = w[i] * (x[i] * r);
}

/* the rotate-half RoPE of one head's d values, in place: v * cos + rotate_half(v) * sin */
static void rope(float *v, const float *cos, const float *sin, long d) {
    long half = d / 2;
    for (long i = 0; i < half; i++) {
        float a = v[i], b = v[i + half];
        v[i] = a * cos[i] + (-b) * sin[i];
        v[i + half] = b * cos[i + half] + a * sin[i + half];
    }
}

/* w: input_norm, qkv, o, q_norm (or 0), k_norm (or 0), post_norm, gate_up, down; dims: H, heads,
   kv heads, head dim, intermediate. x (H): the row's hidden state, updated in place. kc, vc: this
   layer's pool from the row's first slot, (ctx, kv heads, head dim); slot ctx - 1 is written here.
   scratch: at least 2H + (2 heads + 2 kv heads) head dim + 3 intermediate + heads ctx floats. */
void row_decode_layer(const float *const *w, float *x, float *scratch, float *kc, float *vc,
                      const float *cos, const float *sin, long ctx, const long *dims, float eps, int threads) {
    long H = dims[0], nh = dims[1], nkv = dims[2], d = dims[3], I = dims[4], nq = nh * d, nk = nkv * d;
    float *h = scratch, *qkv = h + H, *att = qkv + nq + 2 * nk, *y = att + nq, *gu = y + H, *act = gu + 2 * I;
    float *p = act + I, *q = qkv, *k = qkv + nq, *kslot = kc + (ctx - 1) * nk, *vslot = vc + (ctx - 1) * nk;
    rms_norm_row(x, w[0], h, H, eps);
    row_times_weight(w[1], h, qkv, nq + 2 * nk, H, threads);
    for (long g = 0; g < nh; g++) {
        if (w[3]) rms_norm_row(q + g * d, w[3], q + g * d, d, eps);
        rope(q + g * d, cos, sin, d);
    }
    for (long g = 0; g < nkv; g++) {
        if (w[4]) rms_norm_row(k + g * d, w[4], kslot + g * d, d, eps);
        else memcpy(kslot + g * d, k + g * d, d * sizeof(float));
        rope(kslot + g * d, cos, sin, d);
    }
    memcpy(vslot, k + nk, nk * sizeof(float));
    long table = 0, length = ctx, attention_dims[4] = {nh, nkv, d, ctx};  /* the row's slots as one block */
    paged_decode_attention(q, kc, vc, &table, &length, att, p, 1, 1, ctx, attention_dims, threads);
    row_times_weight(w[2], att, y, H, nq, threads);
    for (long i = 0; i < H; i++) x[i] += y[i];
    rms_norm_row(x, w[5], h, H, eps);
    row_times_weight(w[6], h, gu, 2 * I, H, threads);
    for (long i = 0; i < I; i++) act[i] = gu[i] / (1.0f + expf(-gu[i])) * gu[I + i];
    row_times_weight(w[7], act, y, H, I, threads);
    for (long i = 0; i < H; i++) x[i] += y[i];
}
"""


@functools.cache
def kernel():
    """The compiled row_decode_layer (a ctypes function), or None where it cannot be built
    (rowdot.problem() says why)."""
    return build(rowdot.SOURCE, "rowlayer")


def build(product_source: str, name: str):
    """row_decode_layer over the products of `product_source` (rowdot.SOURCE, or a variant of it for
    experiments), built as `name`."""
    c = ctypes
    args = [c.c_void_p] * 7 + [c.c_long, c.c_void_p, c.c_float, c.c_int]
    return rowdot.load(product_source + kv_attention.ATTENTION_SOURCE + LAYER_SOURCE, name, "row_decode_layer", args)


def layer_flops(ctx: int, dims: list[int]) -> int:
    """The layer's products and attention, 2 operations per multiply-add, as torch's FlopCounterMode
    counts the same layer written in torch ops (its norms and activations are not counted)."""
    hidden, heads, kv_heads, head_dim, intermediate = dims
    products = hidden * (heads + 2 * kv_heads) * head_dim + heads * head_dim * hidden + 3 * hidden * intermediate
    return 2 * products + kv_attention.attention_flops(heads, ctx, head_dim)


@torch.library.custom_op("llm_perf::row_decode_layer", mutates_args=("x",))
def counted_layer(x: torch.Tensor, pointers: list[int], ctx: int, dims: list[int], eps: float, threads: int) -> None:
    """The C layer as a torch op, so FlopCounterMode sees it; pointers: weights' array, scratch, kc, vc,
    cos, sin (the order of row_decode_layer's arguments). It also writes the K/V pool and the scratch
    through those pointers, which its schema cannot say: an op to run eagerly under the counter only,
    never to trace or compile."""
    weights, scratch, kc, vc, cos, sin = pointers
    kernel()(weights, x.data_ptr(), scratch, kc, vc, cos, sin, ctx, (ctypes.c_long * 5)(*dims), eps, threads)


def _counted_flops(x_shape, pointers, ctx, dims, *args, out_shape=None, **kwargs) -> int:
    return layer_flops(ctx, dims)


FLOP_FORMULAS = {torch.ops.llm_perf.row_decode_layer: _counted_flops}
