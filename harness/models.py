"""Build a model from a spec (seeded random weights, offline) or load a local HF checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import psutil
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, PretrainedConfig, Qwen3Config

from harness.errors import ModelTooLargeError, PerfSuiteError
from harness.roofline import canonical_dtype
from harness.specs import ModelSpec

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one says which option asked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PerfSuiteError(
            f"--perf-device {name} was asked for, but torch sees no CUDA device "
            f"(torch {torch.__version__}); use --perf-device cpu or auto"
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


# Seeded random weights as transformers initialises them (normal, std 0.02) give a degenerate model.
# With a tied head the residual stream is dominated by the current token's embedding, the head scores
# that same token highest, and greedy decoding repeats it whatever came before (on `tiny`, changing
# a prompt token changed the output of 0 of 8 prompts). With an untied head the model settles into
# repeating one context-chosen token. A token test on either cannot see attention or KV-cache bugs.
# Value-only rescaling (shapes, FLOPs and bytes unchanged, so timing does not move) fixes both:
# - attention made sharp: its logits get a standard deviation of about attn_logit_sd (a trained
#   model's heads attend to a few tokens, not to a near-uniform average);
# - the current token's share of the residual stream set by embed_scale: small under a tied head (so
#   the head does not echo it; the final norm's weight grows by as much, keeping HF's logit scale),
#   larger under an untied head (so each new token moves the next prediction).
# Chosen over a grid of both on tiny, small and a 4-layer Llama shape, measured in the README ("Test
# models"; `python -m harness model-check` prints the figures).


@dataclass(frozen=True)
class ContextInit:
    embed_scale: float
    attn_logit_sd: float


CONTEXT_INIT = {True: ContextInit(embed_scale=0.1, attn_logit_sd=9.0), False: ContextInit(2.0, 36.0)}  # by tied head


@torch.no_grad()
def make_context_sensitive(model: torch.nn.Module, init: ContextInit) -> None:
    """Rescale a freshly initialised Qwen3/Llama model in place (see CONTEXT_INIT)."""
    inner, config = model.model, model.config
    inner.embed_tokens.weight.mul_(init.embed_scale)
    if config.tie_word_embeddings:
        inner.norm.weight.mul_(1 / init.embed_scale)
    # q.k / sqrt(d) has sd ~1 after Qwen3's q/k RMSNorms, and ~std^2 x hidden for Llama's plain
    # projections of a unit-RMS input (std: the init's normal std); scale q and k alike to reach the target.
    plain_sd = config.initializer_range**2 * config.hidden_size
    for layer in inner.layers:
        attn = layer.self_attn
        if getattr(attn, "q_norm", None) is not None:
            q, k, factor = attn.q_norm.weight, attn.k_norm.weight, init.attn_logit_sd**0.5
        else:
            q, k, factor = attn.q_proj.weight, attn.k_proj.weight, (init.attn_logit_sd / plain_sd) ** 0.25
        q.mul_(factor)
        k.mul_(factor)


@dataclass(frozen=True)
class LoadedModel:
    spec: ModelSpec
    model: torch.nn.Module
    device: torch.device
    dtype: str


def build_model(
    spec: ModelSpec,
    *,
    dtype: str = "float32",
    device: str | torch.device = "cpu",
    seed: int = 0,
    context_sensitive: bool = True,
) -> LoadedModel:
    """A model of `spec`'s shape with seeded random weights whose greedy output depends on the whole
    context (make_context_sensitive). Timing does not depend on the values."""
    device, dtype = torch.device(device), canonical_dtype(dtype)
    _check_fits(spec, dtype, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(hf_config(spec), dtype=torch.float32)
    if context_sensitive:  # False: transformers' own init, kept only to measure what the rescaling changes
        make_context_sensitive(model, CONTEXT_INIT[spec.tie_embeddings])
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


def model_for(
    spec: ModelSpec, *, dtype: str = "float32", device: str | torch.device = "cpu", seed: int = 0
) -> LoadedModel:
    """The model a spec names: its trained checkpoint where it has one (converted once, cached:
    harness/checkpoints.py), else seeded random weights of its shape."""
    if spec.source is None:
        return build_model(spec, dtype=dtype, device=device, seed=seed)
    from harness.checkpoints import checkpoint

    folder = checkpoint(spec.name, spec.source)
    loaded = load_model(str(folder), dtype=dtype, device=device)
    return LoadedModel(dataclasses.replace(spec, path=str(folder)), loaded.model, loaded.device, loaded.dtype)
