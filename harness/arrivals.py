"""Requests arriving over time: the load a serving case offers, and the queue an engine admits them from.

A Load is three numbers, as `vllm bench serve` has them: a request rate (requests/s; inf sends every
request at t=0), a burstiness (the shape of the gamma distribution of the gaps between arrivals: 1
is a Poisson process, below 1 burstier, above 1 steadier; the mean gap stays 1/rate) and a
concurrency cap (at most that many requests in flight; a request that has arrived waits for a slot,
and its TTFT counts from when it is admitted, as a client that sends it then would measure). The
arrival schedule is drawn from the case's seed, so every round offers the same schedule: fixed work.

An engine that takes arrivals (`takes_arrivals = True`: paged, static-batch, vllm) runs its loop
through an ArrivalQueue; the suite refuses a finite load for one that does not.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.errors import ConfigError
from harness.workloads import Request


@dataclass(frozen=True)
class Load:
    request_rate: float = math.inf
    burstiness: float = 1.0
    max_concurrency: int = 0  # 0: no cap

    def __post_init__(self) -> None:
        if not self.request_rate > 0:
            raise ConfigError(f"--request-rate must be > 0 (inf: every request at once), got {self.request_rate}")
        if not self.burstiness > 0:
            raise ConfigError(f"--burstiness must be > 0 (1: Poisson arrivals), got {self.burstiness}")
        if self.max_concurrency < 0:
            raise ConfigError(f"--max-concurrency must be >= 1 (0: no cap), got {self.max_concurrency}")

    @property
    def at_once(self) -> bool:
        """Every request at t=0 with no cap: the load every engine can take."""
        return math.isinf(self.request_rate) and not self.max_concurrency

    def suffix(self) -> str:
        """What a case id gains under this load ("" for the default, so stored ids keep matching)."""
        out = "" if math.isinf(self.request_rate) else f"-rate{self.request_rate:g}"
        out += "" if self.burstiness == 1 or math.isinf(self.request_rate) else f"-burst{self.burstiness:g}"
        return out + (f"-conc{self.max_concurrency}" if self.max_concurrency else "")

    def recorded(self) -> dict[str, float]:
        """What a case's extra_info keeps of its load (nothing for the default)."""
        if self.at_once:
            return {}
        return {
            "request_rate": None if math.isinf(self.request_rate) else self.request_rate,  # JSON has no inf
            "burstiness": self.burstiness,
            "max_concurrency": self.max_concurrency,
        }

    def offsets(self, n: int, seed: int) -> list[float]:
        """Arrival times (seconds after the round starts) of n requests: the first at 0, then gaps drawn
        from a gamma distribution of shape burstiness and mean 1/rate."""
        if math.isinf(self.request_rate):
            return [0.0] * n
        rng = np.random.default_rng(seed)
        gaps = rng.gamma(self.burstiness, 1.0 / (self.request_rate * self.burstiness), size=max(n - 1, 0))
        return [0.0, *np.cumsum(gaps).tolist()][:n]


AT_ONCE = Load()  # every request at t=0, no cap: the default, and the only load a plain engine takes


class ArrivalQueue:
    """Admits requests whose arrival time has come, while fewer than the cap are in flight.

    `start` is the round's start on time.perf_counter's clock; `admit(in_flight)` returns the
    (index, request, admitted_at) that may start now, in arrival order (each request's arrival_offset_s
    after `start`). An engine calls it between stretches of work (steps, batches, finished calls) with
    what is in flight then. Between two calls the slots the last one left free are all the queue knows
    were free: of the requests that arrived in between, that many count from their arrival; the others
    and any the last call held back waited for a slot, and count from the call that admits them."""

    def __init__(self, requests: Sequence[Request], max_concurrency: int, start: float) -> None:
        order = sorted(range(len(requests)), key=lambda i: (requests[i].arrival_offset_s, i))
        self.pending = [(i, requests[i], start + requests[i].arrival_offset_s) for i in order]
        self.cap = max_concurrency or math.inf
        self._last = -math.inf  # when admit() last ran
        self._taken = 0  # slots in use when it returned

    def __bool__(self) -> bool:
        return bool(self.pending)

    def admit(self, in_flight: int) -> list[tuple[int, Request, float]]:
        """Requests that may start now. Each comes with the time it counts from: its arrival time, or,
        for one that waited for a slot, now (when a slot opened: a client would send it then)."""
        t = time.perf_counter()
        free = self.cap - self._taken  # slots free since the last call (requests finish only in steps)
        out = []
        while self.pending and self.pending[0][2] <= t and in_flight + len(out) < self.cap:
            i, req, arrived = self.pending.pop(0)
            waited = arrived <= self._last or free <= 0
            free -= 0 if waited else 1
            out.append((i, req, t if waited else arrived))
        self._last, self._taken = t, in_flight + len(out)
        return out

    def refused(self) -> None:
        """A request the last admit() returned was refused at once by the engine (too long for it): it
        never took its slot."""
        self._taken -= 1

    def wait_for_next(self, in_flight: int) -> None:
        """Sleep until the next request arrives, when nothing is in flight (an idle engine has nothing to do)."""
        if self.pending and not in_flight:
            time.sleep(max(0.0, self.pending[0][2] - time.perf_counter()))
