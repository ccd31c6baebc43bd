"""The engine registry: built-in engines by name, imported only when asked for."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from harness.engines.base import (
    BaseEngine,
    Engine,
    EngineConfig,
    GenerateResult,
    RequestOutput,
    StepCase,
    as_engine_class,
)
from harness.errors import PerfSuiteError, UnknownNameError

__all__ = [
    "BUILTIN_ENGINES",
    "BaseEngine",
    "Engine",
    "EngineConfig",
    "EngineSource",
    "GenerateResult",
    "RequestOutput",
    "StepCase",
    "load_engine_class",
]

# name -> "module:Class". Appending keeps benchmark ids stable.
BUILTIN_ENGINES: dict[str, str] = {
    "hf-generate": "harness.engines.hf_generate:HFGenerateEngine",
    "manual": "harness.engines.manual:ManualEngine",
    "static-batch": "harness.engines.static_batch:StaticBatchEngine",
    "paged": "harness.engines.paged.engine:PagedEngine",
    "transformers-cb": "harness.engines.transformers_cb:TransformersCBEngine",
    "vllm": "harness.engines.vllm_engine:VLLMEngine",
    "openai": "harness.engines.openai_engine:OpenAIEngine",
}


@dataclass(frozen=True)
class EngineSource:
    name: str
    target: str  # "package.module:Class"
    origin: str  # "builtin", "entry point <dist>", "--perf-engine-module"


def import_target(target: str) -> type:
    module_name, _, attr = target.partition(":")
    if not attr:
        raise PerfSuiteError(f"engine {target!r} must look like package.module:Class")
    try:
        return as_engine_class(getattr(importlib.import_module(module_name), attr))
    except (ImportError, AttributeError) as exc:
        raise PerfSuiteError(f"cannot load engine {target!r}: {exc}") from None


def load_engine_class(name: str, sources: dict[str, EngineSource] | None = None) -> type:
    sources = sources if sources is not None else {n: EngineSource(n, t, "builtin") for n, t in BUILTIN_ENGINES.items()}
    if name not in sources:
        raise UnknownNameError("engine", name, list(sources))
    return import_target(sources[name].target)
