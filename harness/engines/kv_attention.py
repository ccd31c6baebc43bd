"""Decode attention over the paged pool in C, each row reading its keys and values through its own
block table, in place.

Torch's attention wants each row's K/V as one tensor, so the paged engine copied each length group's
blocks out of the pool before attending, padded to the group's longest context. In a profile of paged
on `mixed64` (`small`, float32, the AMD EPYC) that copy took 14% of the time and the attention 19%,
against 52% for every product of the run. Here one call attends a group's rows where their K/V lie:
for each row and K/V head, the scores of the head's queries against each of the row's keys, a
softmax, and the weighted sum of its values, reading each key and value once for all the queries
that share it (grouped-query attention), over the row's own length, not the group's. Rows and heads
are spread over torch.get_num_threads() threads.

The same attention serves the batch-1 layer of row_layer.py. Sums run in another order than torch's
attention, so results differ in the last bits (the output check's tolerance is calibrated on the
same path). Under torch's FlopCounterMode (harness/engines/flops.py) it runs as the torch op
`llm_perf::paged_decode_attention`, counted as torch counts attention, over each row's own keys.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from harness.engines import onednn, rowdot

ATTENTION_SOURCE = r"""
#include <math.h>
#include <string.h>

/* e^x for x <= 0 (a softmax's shifted scores), within 1 ulp down to -87 and 0 below (where e^x is
   under float's smallest normal): x = n ln2 + r, |r| <= ln2 / 2, e^r by its Taylor polynomial to r^7,
   times 2^n built in the exponent bits. Arithmetic only, so a loop of it vectorizes (libm's expf does
   not). */
static inline float exp_neg(float x) {
    float below = (float)(x >= -87.0f);  /* selects by arithmetic, not branches: so the loop vectorizes */
    x = x * below - 87.0f * (1.0f - below);
    float n = (float)(int)(x * 1.44269504089f - 0.5f);  /* round to nearest: x <= 0 */
    float r = x - n * 0.693145752f - n * 1.42860677e-6f;
    float e = 1.0f + r * (1.0f + r * (0.5f + r * (0.166666667f + r * (0.0416666667f + r * (0.00833333333f
              + r * (0.00138888889f + r * 0.000198412698f))))));
    int bits = ((int)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return e * scale * below;
}

static void softmax(float *p, long n) {
    float lanes[LANES], top = -INFINITY, total = 0.0f;
    for (int j = 0; j < LANES; j++) lanes[j] = -INFINITY;
    long t = 0;
    for (; t + LANES <= n; t += LANES)  /* the largest score, in lanes: a loop that vectorizes */
        for (int j = 0; j < LANES; j++) lanes[j] = p[t + j] > lanes[j] ? p[t + j] : lanes[j];
    for (; t < n; t++) top = p[t] > top ? p[t] : top;
    for (int j = 0; j < LANES; j++) top = lanes[j] > top ? lanes[j] : top;
    for (t = 0; t < n; t++) p[t] = exp_neg(p[t] - top);
    for (t = 0; t < n; t++) total += p[t];
    float inverse = 1.0f / total;
    for (t = 0; t < n; t++) p[t] *= inverse;
}

/* the next block of a row, asked for while this one is computed: the blocks of a row lie anywhere in the
   pool, so the hardware's prefetcher meets each block cold (1.2x on a layer's attention, K/V beyond
   the cache) */
static void prefetch_block(const float *block, long floats) {
    for (long at = 0; at < floats; at += 16) __builtin_prefetch(block + at);
}

/* scores of heads [h0, h1) of a row against its keys: the keys of a block lie nk floats apart, ROWS at a time */
static void scores(const float *kp, const long *table, const float *q, float *p, long n, long most, long h0,
                   long h1, long group, long nk, long d, long bs) {
    for (long t0 = 0; t0 < n; t0 += bs) {
        const float *k = kp + table[t0 / bs] * bs * nk;
        long t = t0, end = n < t0 + bs ? n : t0 + bs;
        if (t0 + bs < n) prefetch_block(kp + table[t0 / bs + 1] * bs * nk, bs * nk);
        for (; t + ROWS <= end; t += ROWS, k += ROWS * nk)
            for (long h = h0; h < h1; h++) rows_apart(k + (h / group) * d, nk, q + h * d, p + h * most + t, d);
        for (; t < end; t++, k += nk)
            for (long h = h0; h < h1; h++) p[h * most + t] = one_row(k + (h / group) * d, q + h * d, d);
    }
}

/* q (rows, heads, d); kp, vp: a layer's pool (slots, kv heads, d), slot = block * bs + offset;
   tables (rows, width) block ids; lengths (rows): row b attends to its positions 0 .. lengths[b] - 1;
   out (rows, heads, d); scratch: rows * heads * most floats, most >= every length;
   dims: heads, kv heads, d, bs. A row's keys and values are read slot by slot, each slot once for
   all its heads; with fewer rows than threads, a row's K/V heads are split between them. */
void paged_decode_attention(const float *q, const float *kp, const float *vp, const long *tables,
                            const long *lengths, float *out, float *scratch, long rows, long width, long most,
                            const long *dims, int threads) {
    long nh = dims[0], nkv = dims[1], d = dims[2], bs = dims[3], group = nh / nkv, nk = nkv * d;
    long parts = rows < threads ? nkv : 1;
    float scale = 1.0f / sqrtf((float)d);
    #pragma omp parallel for schedule(dynamic) num_threads(threads)
    for (long job = 0; job < rows * parts; job++) {
        long b = job / parts, n = lengths[b];
        long h0 = (job % parts) * nh / parts, h1 = (job % parts + 1) * nh / parts;
        const long *table = tables + b * width;
        float *p = scratch + b * nh * most, *o = out + b * nh * d;
        scores(kp, table, q + b * nh * d, p, n, most, h0, h1, group, nk, d, bs);
        for (long h = h0; h < h1; h++) {
            for (long t = 0; t < n; t++) p[h * most + t] *= scale;
            softmax(p + h * most, n);
        }
        for (long i = h0 * d; i < h1 * d; i++) o[i] = 0.0f;
        for (long t0 = 0; t0 < n; t0 += bs) {
            const float *v = vp + table[t0 / bs] * bs * nk;
            if (t0 + bs < n) prefetch_block(vp + table[t0 / bs + 1] * bs * nk, bs * nk);
            for (long t = t0; t < n && t < t0 + bs; t++, v += nk)
                for (long h = h0; h < h1; h++) {
                    float share = p[h * most + t];
                    const float *vh = v + (h / group) * d;
                    for (long i = 0; i < d; i++) o[h * d + i] += share * vh[i];
                }
        }
    }
}
"""


@functools.cache
def kernel():
    """The compiled paged_decode_attention (a ctypes function), or None where it cannot be built
    (rowdot.problem() says why)."""
    c = ctypes
    args = [c.c_void_p] * 7 + [c.c_long] * 3 + [c.c_void_p, c.c_int]
    return rowdot.load(rowdot.SOURCE + ATTENTION_SOURCE, "kvattention", "paged_decode_attention", args)


def takes(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether decode attention on this pool can be the C kernel's: float32 on CPU, where it builds."""
    return device.type == "cpu" and dtype == torch.float32 and kernel() is not None


def attend(q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, tables: torch.Tensor, lengths: list[int]):
    """(rows, heads * d) attention of q (rows, heads, d) over a layer's pool (blocks, bs, kv heads, d),
    row b through tables[b] over its first lengths[b] positions."""
    rows, heads, head_dim = q.shape
    out = q.new_empty(rows, heads * head_dim)
    dims = [heads, k_pool.shape[2], head_dim, k_pool.shape[1]]
    lengths_t, tables = torch.tensor(lengths, dtype=torch.long), tables.to(torch.long).contiguous()
    args = (q.contiguous(), k_pool, v_pool, tables, lengths_t, out, dims)
    if onednn.counting():
        counted(*args, sum(lengths), max(lengths))
    else:
        _call(*args, max(lengths))
    return out


def _call(q, k_pool, v_pool, tables, lengths, out, dims: list[int], most: int) -> None:
    scratch = torch.empty(q.shape[0] * q.shape[1] * most, dtype=torch.float32)
    ptrs = [t.data_ptr() for t in (q, k_pool, v_pool, tables, lengths, out, scratch)]
    kernel()(*ptrs, q.shape[0], tables.shape[1], most, (ctypes.c_long * 4)(*dims), torch.get_num_threads())


@torch.library.custom_op("llm_perf::paged_decode_attention", mutates_args=("out",))
def counted(
    q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, tables: torch.Tensor, lengths: torch.Tensor,
    out: torch.Tensor, dims: list[int], keys: int, most: int,
) -> None:  # fmt: skip
    """The kernel as a torch op, so FlopCounterMode sees it; `keys`, the sum of the lengths, is what its
    formula counts."""
    _call(q, k_pool, v_pool, tables, lengths, out, dims, most)


def attention_flops(heads: int, keys: int, head_dim: int) -> int:
    """One query a row per head against each of the row's keys, Q K^T and P V: 2 operations per
    multiply-add, as torch counts attention (flops.attention_flops)."""
    return 2 * heads * keys * 2 * head_dim


def _counted_flops(q_shape, *args, out_shape=None, **kwargs) -> int:
    dims, keys = args[5], args[6]
    return attention_flops(dims[0], keys, dims[2])


FLOP_FORMULAS = {torch.ops.llm_perf.paged_decode_attention: _counted_flops}
