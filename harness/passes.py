"""Each case's rounds spread over the run: `--perf-passes N`.

On a shared machine the host's speed wanders over seconds and minutes, and a case timed in one
window carries that window's luck: most of a case's run-to-run spread is its own, not the machine
speed the whole run shares (docs/measurements.md, "The stored gate"). With N passes, pytest's own
pass times each case's first share of rounds; after every case has run, N - 1 later passes time the
rest case by case (every other pass in reverse order), so a case's median is drawn from N moments of
the run. A later pass times a warm-up round, the reference forward and the case's share of rounds;
its outputs are checked as the first pass's are, and the case is then recorded again from all of
its rounds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.timer import Timing

PassRound = tuple[Callable[[], object], Callable[[], object] | None, Callable[[], object] | None]


@dataclass
class LaterPasses:
    """One case's later passes. `make` returns (one round, its untimed set-up, what to call after the
    pass); `check` looks at what the pass's rounds produced (a problem, or None); `finish` records the
    case again from the later passes' round seconds and reference times."""

    name: str
    benchmark: object  # pytest-benchmark's fixture: its stats get the later rounds
    rounds: int  # timed rounds per later pass
    make: Callable[[], PassRound]
    reference: Callable[[], list[float]]
    check: Callable[[], str | None]
    finish: Callable[[list[float], list[float]], None]
    rounds_s: list[float] = field(default_factory=list)
    reference_ms: list[float] = field(default_factory=list)
    problem: str | None = None


def run_later_passes(cases: list[LaterPasses], passes: int, time_pass: Callable) -> list[str]:
    """Passes 2..N over `cases` (pass 1 ran in pytest's order; even passes go in reverse), then each
    case recorded again. `time_pass(run, setup, rounds)` times one pass: a list of round seconds.
    Returns the problems, one line per case that failed; a failed case is not recorded again and its
    benchmark is marked in error, so its numbers never count."""
    for k in range(2, passes + 1):
        for case in cases if k % 2 else cases[::-1]:
            if case.problem is None:
                _one_pass(case, time_pass)
    problems = []
    for case in cases:
        if case.problem is None:
            _pool(case.benchmark, case.rounds_s)
            case.finish(case.rounds_s, case.reference_ms)
        else:
            case.benchmark.has_error = True
            problems.append(f"{case.name}: {case.problem}")
    return problems


def _one_pass(case: LaterPasses, time_pass: Callable) -> None:
    run, setup, after = case.make()
    try:
        case.reference_ms += case.reference()
        case.rounds_s += time_pass(run, setup, case.rounds)
        case.problem = case.check()
    except Exception as exc:  # noqa: BLE001 - an engine that breaks in a later pass fails its case, not the run
        case.problem = f"{type(exc).__name__} in a later pass: {exc}"
    finally:
        if after is not None:
            after()


def _pool(benchmark, later_s: list[float]) -> None:
    """pytest-benchmark's statistics of the case, from the first pass's rounds and the later ones."""
    from pytest_benchmark.stats import Stats

    stats = Stats()
    for seconds in [*benchmark.stats.stats.data, *later_s]:
        stats.update(seconds)
    benchmark.stats.stats = stats


def merged(timing: Timing, rounds_s: list[float], reference_ms: list[float]) -> Timing:
    """A case's first-pass timing with its later passes' reference forwards (their rounds are in pytest-benchmark's
    stats; rounds_run, memory and GPU samples stay the first pass's, which the energy figure covers)."""
    return dataclasses.replace(timing, reference_ms=timing.reference_ms + [round(ms, 4) for ms in reference_ms])
