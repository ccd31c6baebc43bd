"""Build a model from a spec (seeded random weights, offline) or load a local HF checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

import psutil
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, PretrainedConfig, Qwen3Config

from harness.errors import ModelTooLargeError, PerfSuiteError
from harness.specs import ModelSpec

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


def canonical_dtype(name: str) -> str:
    name = DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        raise PerfSuiteError(f"unknown dtype {name!r}; valid: {', '.join([*DTYPES, *DTYPE_ALIASES])}")
    return name


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one says which option asked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PerfSuiteError(
            f"--device {name} was asked for, but torch sees no CUDA device "
            f"(torch {torch.__version__}); use --device cpu or auto"
        )
    if name.split(":")[0] not in ("cpu", "cuda"):
        raise PerfSuiteError(f"unknown device {name!r}; valid: auto, cpu, cuda")
    return torch.device(name)


def default_dtype(device: torch.device) -> str:
    return "bfloat16" if device.type == "cuda" else "float32"


def hf_config(spec: ModelSpec) -> PretrainedConfig:
    common = dict(
        num_hidden_layers=spec.num_layers,
        hidden_size=spec.hidden_size,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.head_dim,
        intermediate_size=spec.intermediate_size,
        vocab_size=spec.vocab_size,
        tie_word_embeddings=spec.tie_embeddings,
        max_position_embeddings=spec.max_position,
        rms_norm_eps=spec.rms_norm_eps,
        rope_theta=spec.rope_theta,
        eos_token_id=spec.eos_token_id,
        bos_token_id=None,
        pad_token_id=0,
    )
    cls = Qwen3Config if spec.arch == "qwen3" else LlamaConfig
    return cls(**common)


def _check_fits(spec: ModelSpec, dtype: str, device: torch.device) -> None:
    from harness.roofline import param_count  # roofline is torch-free; imported late to keep this cheap

    # Building happens in float32 on the host first, then moves: both must fit.
    host_need = param_count(spec) * 4
    host_free = psutil.virtual_memory().available
    dev_need = param_count(spec) * torch.tensor([], dtype=DTYPES[dtype]).element_size()
    dev_free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else host_free
    for where, need, free in (("host", host_need, host_free), (str(device), dev_need, dev_free)):
        if need > 0.9 * free:
            raise ModelTooLargeError(
                f"model {spec.name!r} needs {need / 2**30:.1f} GiB on {where} to build but only "
                f"{free / 2**30:.1f} GiB is free; its roofline math works without building it "
                f"(python -m harness roofline --model {spec.name})"
            )


@dataclass(frozen=True)
class LoadedModel:
    spec: ModelSpec
    model: torch.nn.Module
    device: torch.device
    dtype: str


def build_model(
    spec: ModelSpec, *, dtype: str = "float32", device: str | torch.device = "cpu", seed: int = 0
) -> LoadedModel:
    """A model of `spec`'s shape with seeded random weights. Timing does not depend on the values."""
    device, dtype = torch.device(device), canonical_dtype(dtype)
    _check_fits(spec, dtype, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(hf_config(spec), dtype=torch.float32)
    model = model.to(device=device, dtype=DTYPES[dtype]).eval()
    model.requires_grad_(False)
    return LoadedModel(spec, model, device, dtype)


def load_model(path: str, *, dtype: str = "float32", device: str | torch.device = "cpu") -> LoadedModel:
    """A real checkpoint from a local folder (HF format). local_files_only: never downloads."""
    spec = ModelSpec.from_pretrained(path)
    device, dtype = torch.device(device), canonical_dtype(dtype)
    _check_fits(spec, dtype, device)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], local_files_only=True)
    model = model.to(device).eval()
    model.requires_grad_(False)
    return LoadedModel(spec, model, device, dtype)
