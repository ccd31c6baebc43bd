"""FLOPs and bytes per phase, roofline bounds, MBU and MFU: every metric defined once, here.

Plain arithmetic on a ModelSpec; no torch. Conventions:
- a multiply-add is 2 FLOPs (Kaplan et al. 2020, "Scaling Laws", sec. 2.1: C_forward ~ 2N per token);
- causal attention costs 2 * d_attn FLOPs per (query, key) pair for QK^T and as much again for
  attn @ V (Kaplan et al. table 1; PaLM, Chowdhery et al. 2022, appendix B);
- decode moves weights + KV read + KV write (Pope et al. 2022, "Efficiently Scaling Transformer
  Inference", sec. 2: decode is bound by loading weights and the KV cache);
- the embedding table is gathered one row per token, not streamed; the output projection (tied
  or not) is streamed once per forward; activations are not counted (small next to weights);
- roofline: time >= max(FLOPs / peak FLOP/s, bytes / peak bandwidth) (Williams et al. 2009).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import PerfSuiteError
from harness.specs import ModelSpec

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


def canonical_dtype(name: str) -> str:
    """A dtype's full name ("bf16" -> "bfloat16"); an unknown one is an error listing the valid names."""
    name = DTYPE_ALIASES.get(name, name)
    if name not in DTYPE_BYTES:
        raise PerfSuiteError(f"unknown dtype {name!r}; valid: {', '.join([*DTYPE_BYTES, *DTYPE_ALIASES])}")
    return name


def dtype_bytes(dtype: str) -> int:
    return DTYPE_BYTES[dtype]


def layer_matmul_params(spec: ModelSpec) -> int:
    """Weights of one decoder layer that take part in matmuls: q, k, v, o and the SwiGLU MLP."""
    h, d = spec.hidden_size, spec.head_dim
    attn = h * spec.num_heads * d * 2 + h * spec.num_kv_heads * d * 2  # q_proj + o_proj, k_proj + v_proj
    return attn + 3 * h * spec.intermediate_size  # gate, up, down


def layer_norm_params(spec: ModelSpec) -> int:
    return 2 * spec.hidden_size + (2 * spec.head_dim if spec.qk_norm else 0)


def param_count(spec: ModelSpec) -> int:
    embed = spec.vocab_size * spec.hidden_size
    layers = spec.num_layers * (layer_matmul_params(spec) + layer_norm_params(spec))
    head = 0 if spec.tie_embeddings else embed
    return embed + layers + spec.hidden_size + head


def streamed_weight_params(spec: ModelSpec) -> int:
    """Parameters read in full by one forward: every layer, the final norm, the output projection."""
    layers = spec.num_layers * (layer_matmul_params(spec) + layer_norm_params(spec))
    return layers + spec.hidden_size + spec.vocab_size * spec.hidden_size


def weight_bytes(spec: ModelSpec, dtype: str) -> int:
    return streamed_weight_params(spec) * dtype_bytes(dtype)


def kv_bytes_per_token(spec: ModelSpec, dtype: str) -> int:
    """K and V, every layer, every KV head: 2 * layers * n_kv * head_dim * bytes."""
    return 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * dtype_bytes(dtype)


def _linear_flops(spec: ModelSpec, tokens: int, logits_rows: int) -> int:
    return (
        2 * spec.num_layers * layer_matmul_params(spec) * tokens + 2 * spec.vocab_size * spec.hidden_size * logits_rows
    )


def _attention_flops(spec: ModelSpec, query_key_pairs: int) -> int:
    return 4 * spec.num_layers * spec.num_heads * spec.head_dim * query_key_pairs


@dataclass(frozen=True)
class PhaseCost:
    flops: float
    bytes: float

    @property
    def arith_intensity(self) -> float:
        return self.flops / self.bytes

    def __add__(self, other: PhaseCost) -> PhaseCost:
        return PhaseCost(self.flops + other.flops, self.bytes + other.bytes)


def prefill_cost(spec: ModelSpec, dtype: str, batch_size: int, prompt_len: int) -> PhaseCost:
    """One forward over B prompts of N tokens, causal; logits for the last position only."""
    tokens = batch_size * prompt_len
    pairs = batch_size * prompt_len * (prompt_len + 1) // 2
    flops = _linear_flops(spec, tokens, batch_size) + _attention_flops(spec, pairs)
    kv_write = tokens * kv_bytes_per_token(spec, dtype)
    embed_rows = tokens * spec.hidden_size * dtype_bytes(dtype)
    return PhaseCost(flops, weight_bytes(spec, dtype) + kv_write + embed_rows)


def decode_cost(spec: ModelSpec, dtype: str, batch_size: int, context_len: int) -> PhaseCost:
    """One decode step: B new tokens, each attending to `context_len` cached tokens and itself."""
    pairs = batch_size * (context_len + 1)
    flops = _linear_flops(spec, batch_size, batch_size) + _attention_flops(spec, pairs)
    kv = kv_bytes_per_token(spec, dtype)
    moved = weight_bytes(spec, dtype) + batch_size * context_len * kv + batch_size * kv
    return PhaseCost(flops, moved + batch_size * spec.hidden_size * dtype_bytes(dtype))


def generation_cost(spec: ModelSpec, dtype: str, prompt_len: int, new_tokens: int, batch_size: int = 1) -> PhaseCost:
    """A whole generation: one prefill (which yields the first token), then new_tokens - 1 decode steps."""
    cost = prefill_cost(spec, dtype, batch_size, prompt_len)
    for step in range(1, new_tokens):
        cost = cost + decode_cost(spec, dtype, batch_size, prompt_len + step - 1)
    return cost


def requests_cost(spec: ModelSpec, dtype: str, lengths: list[tuple[int, int]]) -> PhaseCost:
    """Work of serving the (prompt_len, new_tokens) requests one at a time, without batching.

    Weights are streamed once per forward of each request: serving_cost refines this for batched engines.
    """
    total = PhaseCost(0.0, 0.0)
    for prompt_len, new_tokens in lengths:
        total = total + generation_cost(spec, dtype, prompt_len, new_tokens)
    return total


def serving_weight_streams(lengths: list[tuple[int, int]], max_seqs: int, token_budget: int) -> int:
    """The fewest forwards any engine needs to serve (prompt_len, new_tokens) requests, at most `max_seqs`
    sequences per decode step and `token_budget` prompt tokens per prefill pass.

    Each request's first token comes from its prefill; its other n - 1 tokens take one decode step
    each, in order. So decode steps >= the longest request's n - 1 (they cannot overlap) and >= all
    requests' decode tokens / max_seqs (a step serves at most max_seqs); prefill passes >= all prompt
    tokens / token_budget (a prompt longer than the budget still takes one pass of its own)."""
    decode_tokens = sum(n - 1 for _, n in lengths)
    decode_steps = max(-(-decode_tokens // max_seqs), max((n - 1 for _, n in lengths), default=0))
    prompt_tokens = sum(min(p, token_budget) for p, _ in lengths)
    prefill_passes = max(-(-prompt_tokens // token_budget), 1 if lengths else 0)
    return decode_steps + prefill_passes


def serving_cost(
    spec: ModelSpec, dtype: str, lengths: list[tuple[int, int]], max_seqs: int, token_budget: int = 4096
) -> PhaseCost:
    """Least work any engine can do to serve the (prompt_len, new_tokens) requests.

    FLOPs and KV traffic are those of each request alone (batching does not change them). Weights are
    streamed once per forward: once per request token in requests_cost, but a batched engine needs
    only serving_weight_streams forwards, so the weight bytes are counted that way.
    """
    alone = requests_cost(spec, dtype, lengths)
    forwards_alone = sum(new_tokens for _, new_tokens in lengths)  # 1 prefill + (n - 1) decodes each
    streams = serving_weight_streams(lengths, max_seqs, token_budget)
    return PhaseCost(alone.flops, alone.bytes + weight_bytes(spec, dtype) * (streams - forwards_alone))


@dataclass(frozen=True)
class Peaks:
    """The machine's ceilings. bw/flops are what the bound uses; theoretical/measured are reported."""

    bw_bytes_s: float
    flops_s: float
    bw_source: str  # "nvml", "table" or "measured"
    flops_source: str
    theoretical_bw_bytes_s: float | None = None
    measured_bw_bytes_s: float | None = None
    theoretical_flops_s: float | None = None
    measured_flops_s: float | None = None


@dataclass(frozen=True)
class RooflinePoint:
    roofline_s: float
    bound: str  # "memory" or "compute"
    arith_intensity: float


def bound(cost: PhaseCost, peaks: Peaks) -> RooflinePoint:
    t_compute = cost.flops / peaks.flops_s
    t_memory = cost.bytes / peaks.bw_bytes_s
    return RooflinePoint(
        max(t_compute, t_memory), "compute" if t_compute > t_memory else "memory", cost.arith_intensity
    )


def tokens_per_s(generated_tokens: int, elapsed_s: float) -> float:
    """The one throughput definition used everywhere."""
    return generated_tokens / elapsed_s


def utilisation(cost: PhaseCost, peaks: Peaks, measured_s: float) -> dict[str, float | str]:
    """The roofline fields recorded with every case."""
    point = bound(cost, peaks)
    return {
        "roofline_ms": point.roofline_s * 1e3,
        "pct_of_roofline": point.roofline_s / measured_s,
        "bound": point.bound,
        "arith_intensity": point.arith_intensity,
        "flops": cost.flops,
        "bytes_moved": cost.bytes,
        "achieved_gbps": cost.bytes / measured_s / 1e9,
        "achieved_tflops": cost.flops / measured_s / 1e12,
        "mbu": cost.bytes / measured_s / peaks.bw_bytes_s,
        "mfu": cost.flops / measured_s / peaks.flops_s,
    }


def working_set_bytes(spec: ModelSpec, dtype: str, held_tokens: int) -> int:
    """What a case touches over and over: every streamed weight, plus the KV of the tokens it holds."""
    return weight_bytes(spec, dtype) + held_tokens * kv_bytes_per_token(spec, dtype)


def over_roofline_note(pct: float, bound_by: str, working_set: int, llc: int | None, peaks: Peaks) -> str | None:
    """Why a case shows more than 100% of its roofline (None when it does not). A bound is the most the
    machine can do only for what it measures: DRAM reads at the peak, or GEMMs at the peak."""
    if pct <= 1.0:
        return None
    if bound_by == "memory" and llc and working_set <= llc:
        return (
            f"{pct:.0%} of roofline: its working set ({working_set / 2**20:,.1f} MiB) fits in the last-level cache "
            f"({llc / 2**20:,.0f} MiB), so its reads come from cache, faster than the DRAM bandwidth of the bound"
        )
    if bound_by == "memory" and llc:
        return (
            f"{pct:.0%} of roofline: up to {llc / working_set:.0%} of its working set ({working_set / 2**20:,.0f} MiB) "
            f"can stay in the {llc / 2**20:,.0f} MiB last-level cache between steps and be read faster than DRAM; "
            f"the bound ({peaks.bw_source} bandwidth) assumes every byte comes from DRAM"
        )
    source = peaks.bw_source if bound_by == "memory" else peaks.flops_source
    return (
        f"{pct:.0%} of roofline: above the {source} {'bandwidth' if bound_by == 'memory' else 'FLOP/s'} peak; a "
        f"measured peak is the best of short trials of one kernel on this machine, which this case's kernels beat"
    )


# The tutorial's simplified estimates: FLOPs = 2 x params x tokens, bytes = every parameter once.
SIMPLE_MODEL_SIZES = {"0.6B": 0.6e9, "7B": 7e9, "13B": 13e9, "70B": 70e9}
SIMPLE_BW_BYTES_S = 2e12


def simple_cost(params: float, tokens: int, dtype: str) -> PhaseCost:
    return PhaseCost(2 * params * tokens, params * dtype_bytes(dtype))
