"""The tutorial's two roofline tables, from the simplified or the detailed cost model."""

from __future__ import annotations

from harness import roofline
from harness.roofline import canonical_dtype
from harness.specs import get_gpu, get_spec

SIZE_SPECS = ("qwen3-0.6b", "llama-7b", "llama-13b", "llama-70b")


def _peaks(gpu: str | None, dtype: str, device: str) -> tuple[str, float, float | None]:
    """(label, bandwidth bytes/s, FLOP/s or None) of a named GPU or of this machine."""
    if gpu:
        g = get_gpu(gpu)
        tflops = g.peak_tflops.get(dtype)
        return f"{g.key} (datasheet)", g.peak_bw_gbps * 1e9, tflops and tflops * 1e12
    from harness.hardware import probe
    from harness.models import resolve_device

    hw = probe(resolve_device(device), dtype)
    peaks = hw.peaks()
    return f"{hw.name} ({peaks.bw_source} bandwidth, {peaks.flops_source} FLOP/s)", peaks.bw_bytes_s, peaks.flops_s


def text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:>{w}}}" if i else f"{{:<{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), fmt.format(*["-" * w for w in widths]), *[fmt.format(*r) for r in rows]]


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The same table as markdown (report.md)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *["| " + " | ".join(r) + " |" for r in rows]]


def roofline_tables(
    model: str, gpu: str | None, dtype: str, prompt_len: int, simple: bool, device: str = "auto"
) -> list[str]:
    spec, dtype = get_spec(model), canonical_dtype(dtype)
    if simple:
        params = roofline.param_count(spec)
        prefill, decode = roofline.simple_cost(params, prompt_len, dtype), roofline.simple_cost(params, 1, dtype)
    else:
        prefill = roofline.prefill_cost(spec, dtype, 1, prompt_len)
        decode = roofline.decode_cost(spec, dtype, 1, prompt_len)
    mode = (
        "simplified: FLOPs = 2 x params x tokens, bytes = params"
        if simple
        else "detailed: per-layer matmuls + causal attention; bytes = streamed weights + KV (+ embedding rows)"
    )
    lines = [f"Prefill vs decode: {model}, {dtype}, prompt {prompt_len} tokens ({mode})"]
    lines += text_table(
        ["phase", "tokens", "GFLOPs", "GB moved", "FLOPs/byte"],
        [
            [name, str(tokens), f"{c.flops / 1e9:.2f}", f"{c.bytes / 1e9:.2f}", f"{c.arith_intensity:.1f}"]
            for name, tokens, c in (("prefill", prompt_len, prefill), ("decode", 1, decode))
        ],
    )
    lines.append("")
    size_dtype = "float16"
    if simple:
        label, bw = "tutorial's 2 TB/s", roofline.SIMPLE_BW_BYTES_S
        sizes = [
            (name, roofline.simple_cost(p, 1, size_dtype).bytes) for name, p in roofline.SIMPLE_MODEL_SIZES.items()
        ]
    else:
        label, bw, _ = _peaks(gpu, size_dtype, device)
        sizes = [(name, roofline.decode_cost(get_spec(name), size_dtype, 1, prompt_len).bytes) for name in SIZE_SPECS]
    lines.append(f"Decode bound at batch 1, {size_dtype}, {bw / 1e12:.2f} TB/s ({label}): time >= bytes / bandwidth")
    lines += text_table(
        ["model", "GB per token", "ms per token", "tokens/s upper bound"],
        [[name, f"{b / 1e9:.1f}", f"{b / bw * 1e3:.1f}", f"{bw / b:.0f}"] for name, b in sizes],
    )
    return lines
