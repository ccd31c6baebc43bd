"""Finding engines: built in, by entry point (group `llm_perf_suite.engines`), or by
`--perf-engine-module package.module:Class`. Later sources override earlier ones of the same name."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points

import torch

from harness.engines import BUILTIN_ENGINES, EngineSource, import_target

ENTRY_POINT_GROUP = "llm_perf_suite.engines"


def engine_sources(engine_modules: list[str] | tuple[str, ...] = ()) -> dict[str, EngineSource]:
    sources = {n: EngineSource(n, t, "builtin") for n, t in BUILTIN_ENGINES.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist else "?"
        sources[ep.name] = EngineSource(ep.name, ep.value, f"entry point ({dist})")
    for target in engine_modules:
        cls = import_target(target)
        name = cls.name or target.rpartition(":")[2]
        sources[name] = EngineSource(name, target, "--perf-engine-module")
    return sources


@dataclass(frozen=True)
class EngineAvailability:
    name: str
    origin: str
    available: bool
    reason: str = ""


def discover(
    engine_modules: list[str] | tuple[str, ...] = (), device: torch.device | None = None
) -> list[EngineAvailability]:
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for source in engine_sources(engine_modules).values():
        try:
            cls = import_target(source.target)
        except Exception as exc:  # an engine that cannot be imported is listed with the reason, not fatal
            rows.append(EngineAvailability(source.name, source.origin, False, f"cannot import {source.target}: {exc}"))
            continue
        reason = cls.unavailable_reason(device)
        rows.append(EngineAvailability(source.name, source.origin, reason is None, reason or ""))
    return rows
