"""The judge's parameters, read once from `[tool.perf]` in pyproject.toml.

Every number that changes a verdict lives here, with its default; `docs/options.md` lists the keys.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from harness.errors import ConfigError

NORMALISE_MODES = ("run", "case", "off")  # machine-speed correction of the stored gate (baseline/speed.py)


@dataclass(frozen=True)
class Thresholds:
    """What counts as a change worth a verdict, and how sure the judge must be.

    threshold: the stored gate's smallest change that matters (a fraction of the metric), per case kind
    (groups) or per case name (cases) where set. ab_threshold: the same for `harness ab`, whose
    interleaved rounds resolve smaller changes. latency_threshold: serving latency rows. alpha: the
    family-wise error allowed in each direction (the chance that any row of a comparison is called a
    regression when nothing changed). large_drop: the stored gate fails a drop larger than this on a
    case's own test at alpha, whatever the multiplicity adjustment would ask. strict: an inconclusive
    row fails the run too (exit 12)."""

    default: float = 0.05
    alpha: float = 0.01
    groups: dict[str, float] = field(default_factory=dict)
    cases: dict[str, float] = field(default_factory=dict)
    normalise: str = "case"
    ab_threshold: float = 0.02
    latency_threshold: float = 0.10
    large_drop: float = 0.20
    strict: bool = False

    def __post_init__(self) -> None:
        if self.normalise not in NORMALISE_MODES:
            raise ConfigError(f"normalise must be one of {', '.join(NORMALISE_MODES)}, got {self.normalise!r}")
        named = [("threshold", self.default), ("ab_threshold", self.ab_threshold)]
        named += [("latency_threshold", self.latency_threshold), ("large_drop", self.large_drop)]
        for name, value in [*named, *self.groups.items(), *self.cases.items()]:
            if not 0 <= value < 1:
                raise ConfigError(f"threshold {name!r} must be a fraction in [0, 1), got {value}")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha}")

    def for_case(self, name: str, group: str) -> float:
        return self.cases.get(name, self.groups.get(group, self.default))

    @classmethod
    def from_pyproject(cls, path: str | Path = "pyproject.toml", **overrides) -> Thresholds:
        """[tool.perf] of a pyproject.toml; defaults where the file or a key is missing. A bad value, or a
        key this version does not know, is a ConfigError naming the file."""
        path = Path(path)
        perf = {}
        if path.exists():
            try:
                perf = tomllib.loads(path.read_text()).get("tool", {}).get("perf", {})
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: [tool.perf] cannot be read: {exc}") from None
        try:
            return cls(**{**_keyword_values(perf), **overrides})
        except ConfigError as exc:
            raise ConfigError(f"{path}: [tool.perf] {exc}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{path}: [tool.perf] cannot be read: {exc}") from None


KEYS = {  # [tool.perf] key -> (Thresholds field, how to read it, what it sets)
    "threshold": ("default", float, "the stored gate's smallest change that matters, a fraction"),
    "alpha": ("alpha", float, "each direction's family-wise error: the chance any row is called changed when none is"),
    "normalise": ("normalise", str, "the stored gate's machine-speed correction: case, run or off"),
    "ab_threshold": ("ab_threshold", float, "`llm-perf ab`'s smallest change that matters"),
    "latency_threshold": ("latency_threshold", float, "serving latency rows' smallest change that matters"),
    "large_drop": ("large_drop", float, "a larger drop fails on the row's own test, whatever the adjustment"),
    "strict": ("strict", bool, "an inconclusive row fails too (exit 12)"),
    "groups": ("groups", lambda d: {k: float(v) for k, v in d.items()}, "a table: `threshold` per case kind"),
    "cases": ("cases", lambda d: {k: float(v) for k, v in d.items()}, "a table: `threshold` per case name"),
}
assert {f for f, _, _ in KEYS.values()} == {f.name for f in fields(Thresholds)}


def _keyword_values(perf: dict) -> dict:
    unknown = sorted(set(perf) - set(KEYS))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(KEYS)}")
    return {KEYS[k][0]: KEYS[k][1](v) for k, v in perf.items() if k in KEYS}
