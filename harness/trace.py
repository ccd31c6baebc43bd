"""A serving round as a timeline you can open: Chrome's Trace Event Format (the JSON Perfetto UI and
chrome://tracing read). One track per request (queued, prefill, each decode step, preempted,
swapped, and the client's arrival, first-token and finish stamps), and one track of the engine's
steps with the requests each carried and its tokens. Engines that record their steps (StepEvent:
`paged`) give the engine events; every engine gives the per-request stamps. Torch-free.

Format: https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU (complete events
"X" with ts and dur in microseconds, instant events "i", metadata "M" naming processes and threads).
"""

from __future__ import annotations

from dataclasses import dataclass, field

REQUESTS, ENGINE = 1, 2  # the trace's two processes


@dataclass
class StepEvent:
    """One engine step: when, which kind, the requests it carried (request id -> tokens computed), and
    the requests it preempted ((request id, "recompute" or "swap")) or swapped back in."""

    start: float
    end: float
    is_prefill: bool
    tokens: dict[int, int]
    preempted: list[tuple[int, str]] = field(default_factory=list)
    swapped_in: list[int] = field(default_factory=list)


def _us(t: float, t0: float) -> float:
    return round((t - t0) * 1e6, 1)


def _slice(name: str, start: float, end: float, t0: float, tid: int, pid: int = REQUESTS, **args) -> dict:
    event = {"name": name, "ph": "X", "ts": _us(start, t0), "dur": max(_us(end, t0) - _us(start, t0), 0.0)}
    return {**event, "pid": pid, "tid": tid, **({"args": args} if args else {})}


def _instant(name: str, t: float, t0: float, tid: int) -> dict:
    return {"name": name, "ph": "i", "s": "t", "ts": _us(t, t0), "pid": REQUESTS, "tid": tid}


def _names(outputs) -> list[dict]:
    meta = [{"name": "process_name", "ph": "M", "pid": p, "tid": 0, "args": {"name": n}}
            for p, n in ((REQUESTS, "requests"), (ENGINE, "engine"))]  # fmt: skip
    meta.append({"name": "thread_name", "ph": "M", "pid": ENGINE, "tid": 0, "args": {"name": "steps"}})
    for o in outputs:
        meta.append({"name": "thread_name", "ph": "M", "pid": REQUESTS, "tid": o.request_id + 1,
                     "args": {"name": f"request {o.request_id}"}})  # fmt: skip
    return meta


def request_states(request_id: int, arrival: float, steps: list[StepEvent]) -> list[tuple[str, float, float]]:
    """(state, start, end) of one request from the engine's steps: queued until its first step, a slice
    per step it was in, and preempted (or swapped) from a preemption until it next ran."""
    states, waiting_since, waiting_as = [], arrival, "queued"
    for step in steps:
        if request_id in step.tokens:
            if waiting_since is not None and step.start > waiting_since:
                states.append((waiting_as, waiting_since, step.start))
            waiting_since = None
            states.append(("prefill" if step.is_prefill else "decode", step.start, step.end))
        for rid, how in step.preempted:
            if rid == request_id:
                waiting_since, waiting_as = step.start, "swapped" if how == "swap" else "preempted"
    return states


def chrome_trace(outputs, steps: list[StepEvent] | None, t0: float, label: str = "") -> dict:
    """The round's trace (the JSON object). `outputs`: RequestOutputs; `steps`: the engine's, or None."""
    events = _names(outputs)
    for o in outputs:
        tid = o.request_id + 1
        if steps:
            events += [_slice(s, a, b, t0, tid) for s, a, b in request_states(o.request_id, o.arrival_s, steps)]
        elif o.first_token_s is not None:  # the stamps alone: waiting and prefill cannot be told apart
            events.append(_slice("queued + prefill", o.arrival_s, o.first_token_s, t0, tid))
            events.append(_slice("decode", o.first_token_s, o.finish_s or o.first_token_s, t0, tid))
        events.append(_instant("arrival", o.arrival_s, t0, tid))
        if o.first_token_s is not None:
            events.append(_instant("first token", o.first_token_s, t0, tid))
        if o.finish_s is not None:
            events.append(_instant("finished", o.finish_s, t0, tid))
    for s in steps or []:
        kind = "prefill" if s.is_prefill else "decode"
        events.append(
            _slice(kind, s.start, s.end, t0, 0, ENGINE, requests=sorted(s.tokens), tokens=sum(s.tokens.values()))
        )
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"case": label}}


def timeline(outputs, steps: list[StepEvent] | None, t0: float) -> dict:
    """What the report draws (ms from the round's start): each request's arrival, first token and finish,
    and the intervals it spent preempted or swapped."""
    waits = []
    for o in outputs:
        for state, a, b in request_states(o.request_id, o.arrival_s, steps or []):
            if state in ("preempted", "swapped"):
                waits.append([o.request_id, round((a - t0) * 1e3, 3), round((b - t0) * 1e3, 3)])

    def ms(t: float | None) -> float | None:
        return None if t is None else round((t - t0) * 1e3, 3)

    rows = [[o.request_id, ms(o.arrival_s), ms(o.first_token_s), ms(o.finish_s)] for o in outputs]
    return {"requests": rows, "preempted": waits}
