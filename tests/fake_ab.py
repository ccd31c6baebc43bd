"""One parametric fake of a side's worker (harness/ab/worker.py) for the A/B's tests: the protocol's
answers, with the time of each case's unit of work set by the test (a planted effect) and noise drawn
from a seeded generator: a lean per process pair (drawn when a sweep launches it) and a spread per
round."""

from __future__ import annotations

import math
import random
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class FakeSide:
    label: str
    spec: str = "fake"


@dataclass
class FakeWorker:
    """`unit_s[case]`: one unit of work's seconds; `refuse[case]`: why an open fails; `tokens[case]`:
    the work a unit does (default 10); `flops[case]`: what a counting close reports (none: nothing, as
    a side that cannot count; a list: one count per counting close in turn, None a failed one);
    `lean`: this process's own speed (log), drawn at launch."""

    label: str
    unit_s: dict[str, float]
    rng: random.Random
    round_sd: float = 0.0
    lean: float = 0.0
    refuse: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)
    skip: bool = False
    flops: dict[str, int] = field(default_factory=dict)
    log: list[tuple] = field(default_factory=list)  # every command, in order
    journal: list[tuple] = field(default_factory=list)  # (side, command) of both sides of the pair, in order
    _reply: dict | None = None
    _case: str | None = None
    _listed: bool = False

    @property
    def side(self) -> FakeSide:
        return FakeSide(self.label)

    def send(self, cmd: str, **kw) -> None:
        self.log.append((cmd, kw))
        self.journal.append((self.label, cmd))
        self._reply = getattr(self, f"_{cmd}")(**kw)

    def read(self) -> dict:
        reply, self._reply = self._reply, None
        return reply

    def ask(self, cmd: str, **kw) -> dict:
        self.send(cmd, **kw)
        return self.read()

    def _cases(self) -> dict:
        self._listed = True
        return {"cases": list(self.unit_s)}

    def _prepare(self, check: bool) -> dict:
        assert self._listed, "prepare before cases"
        return {"prepared": len(self.unit_s) if check else 0}

    def _open(self, case: str, check: bool) -> dict:
        assert self._listed, "open before cases"
        assert self._case is None, "open with a case open"
        if case in self.refuse:  # a failed check, or (skip) an engine this side does not have
            return {"skip" if self.skip else "error": self.refuse[case]}
        self._case = case
        return {"tokens": self.tokens.get(case, 10), "warm_s": self.unit_s[case]}

    def _round(self, reps: int) -> dict:
        assert self._case is not None, "a round with no case open"
        noise = math.exp(self.lean + self.rng.gauss(0, self.round_sd))
        return {"seconds": reps * self.unit_s[self._case] * noise}

    def _close(self, count: bool = False) -> dict:
        case, self._case = self._case, None
        if not count or case not in self.flops:
            return {}
        held = self.flops[case]  # a list (shared by the launcher's pairs): one count per counting close
        n = held.pop(0) if isinstance(held, list) else held
        return {} if n is None else {"flops": n}  # None: a count that failed


@dataclass
class FakeLauncher:
    """Sweeps' `launch`: a fresh [base, head] pair per sweep, each process with a lean drawn from
    N(0, pair_sd); the head's unit of each case in `slower` takes that factor longer. Keeps every
    pair it made."""

    unit_s: dict[str, float]
    slower: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    pair_sd: float = 0.0
    round_sd: float = 0.0
    refuse: dict[str, dict[str, str]] = field(default_factory=dict)  # side -> case -> why
    tokens: dict[str, dict[str, float]] = field(default_factory=dict)  # side -> case -> tokens
    flops: dict[str, dict[str, int | list]] = field(default_factory=dict)  # side -> case -> flops (FakeWorker)
    head_cases: list[str] | None = None  # the head's own case list, where it differs
    skip: bool = False  # a refused open is an engine the side lacks ("skip"), not a failure ("error")
    pairs: list[list[FakeWorker]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    @contextmanager
    def __call__(self, base, head, suite, args, base_first, rng):
        journal: list[tuple] = []
        head_s = {
            c: s * self.slower.get(c, 1.0) for c, s in self.unit_s.items() if c in (self.head_cases or self.unit_s)
        }
        pair = [
            FakeWorker(label, units, self.rng, self.round_sd, self.rng.gauss(0, self.pair_sd),
                       dict(self.refuse.get(label, {})), dict(self.tokens.get(label, {})), self.skip,
                       dict(self.flops.get(label, {})), journal=journal)
            for label, units in (("base", dict(self.unit_s)), ("head", head_s))
        ]  # fmt: skip
        self.pairs.append(pair)
        yield pair
