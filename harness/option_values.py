"""How the suite's option values are read from text: each parser gives a value or a ConfigError that
says what was wanted. The experiments' slowdown injection is read from the environment here too."""

from __future__ import annotations

from collections.abc import Callable

from harness.errors import ConfigError


def csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def int_csv(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in csv(value))
    except ValueError:
        raise ConfigError(f"--perf-batch-sizes wants comma-separated integers, got {value!r}") from None


def rates(value: str) -> tuple[float, ...]:
    """--request-rate 0.5,1,2,inf -> (0.5, 1.0, 2.0, inf): one rate, or a ladder (a sweep), in the given order."""
    try:
        rates = tuple(float(v) for v in csv(value))
    except ValueError:
        raise ConfigError(f"--request-rate wants numbers (requests/s) or inf, comma-separated, got {value!r}") from None
    if not rates:
        raise ConfigError("--request-rate got no rate")
    if len({f"{r:g}" for r in rates}) != len(rates):  # as case ids spell them (Load.suffix)
        raise ConfigError(f"--request-rate lists a rate twice: {value!r}")
    return rates


def number(flag: str, kind: type = int) -> Callable[[str], object]:
    def parse(value: str):
        try:
            return kind(value)
        except ValueError:
            raise ConfigError(f"{flag} wants {'an integer' if kind is int else 'a number'}, got {value!r}") from None

    return parse


def at_least_one(flag: str) -> Callable[[str], int]:
    """An integer of 1 or more (a count of passes, of rounds)."""

    def parse(value: str) -> int:
        n = number(flag)(value)
        if n < 1:
            raise ConfigError(f"{flag} wants an integer of 1 or more, got {value!r}")
        return n

    return parse


SLO_METRICS = ("ttft", "tpot", "e2el")


def slos(values: list[str]) -> tuple[tuple[str, float], ...]:
    """--goodput ttft:2000 tpot:200 -> (("ttft", 2000.0), ("tpot", 200.0)): vLLM's spelling, ms."""
    out = []
    for item in values:
        name, _, ms = item.partition(":")
        if name not in SLO_METRICS:
            raise ConfigError(
                f"--goodput {item!r}: the metric must be one of {', '.join(SLO_METRICS)} (e.g. ttft:2000)"
            )
        try:
            limit = float(ms)
        except ValueError:
            raise ConfigError(f"--goodput {item!r}: the limit must be milliseconds, e.g. {name}:200") from None
        if not limit > 0:
            raise ConfigError(f"--goodput {item!r}: the limit must be > 0 ms")
        out.append((name, limit))
    return tuple(out)


SLOWDOWN_ENV = "PERF_INJECT_SLOWDOWN"  # experiments: slow engine work by this fraction...
CASE_ENV = "PERF_INJECT_CASE"  # ...in the cases whose name contains this (all cases when unset)


def injection(env) -> tuple[float, str]:
    """(fraction, case pattern) asked for by the environment; (0.0, "") when unset."""
    raw = env.get(SLOWDOWN_ENV, "").strip()
    if not raw:
        return 0.0, ""
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{SLOWDOWN_ENV}={raw!r} is not a number (try 0.10 for 10% slower)") from None
    if not 0 <= value < 10:
        raise ConfigError(f"{SLOWDOWN_ENV}={value} must be in [0, 10)")
    return value, env.get(CASE_ENV, "").strip()
