"""The serving timeline in Chrome's Trace Event Format (harness/trace.py), checked against the format's
rules and against the engine's own record of what each request did."""

import json
from collections import Counter

import pytest

from harness.engines import EngineConfig
from harness.engines.manual import ManualEngine
from harness.engines.paged.engine import PagedEngine
from harness.models import build_model
from harness.specs import get_spec
from harness.trace import chrome_trace, timeline
from harness.workloads import WORKLOADS


@pytest.fixture(scope="module")
def tiny():
    return build_model(get_spec("tiny"), seed=0)


def valid_events(trace: dict) -> list[dict]:
    """The format's rules: every event named, typed, placed (pid, tid) and timed; complete events with a
    duration; no two slices of one track overlapping."""
    events = json.loads(json.dumps(trace))["traceEvents"]
    tracks: dict = {}
    for e in events:
        assert {"name", "ph", "pid", "tid"} <= e.keys()
        assert e["ph"] in ("X", "i", "M")
        if e["ph"] != "M":
            assert e["ts"] >= 0
        if e["ph"] == "X":
            assert e["dur"] >= 0
            tracks.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
    for slices in tracks.values():
        slices.sort()
        assert all(a[1] <= b[0] + 1e-3 for a, b in zip(slices, slices[1:], strict=False)), "overlapping slices"
    return events


def test_a_paged_round_under_preemption_is_one_slice_per_request_state(tiny):
    engine = PagedEngine(tiny, EngineConfig(max_num_seqs=16, trace=True), num_blocks=28)
    result = engine.generate(WORKLOADS["prefix16"].requests(tiny.spec.vocab_size))
    assert result.steps
    assert result.work["preemptions"] > 0
    events = valid_events(chrome_trace(result.outputs, result.steps, result.start_s, "case"))
    per_request = Counter((e["tid"] - 1, e["name"]) for e in events if e["pid"] == 1)
    steps_of = Counter(rid for s in result.steps for rid in s.tokens)
    preempted = Counter(rid for s in result.steps for rid, _ in s.preempted)
    for out in result.outputs:
        rid = out.request_id
        assert per_request[(rid, "prefill")] + per_request[(rid, "decode")] == steps_of[rid]
        assert per_request[(rid, "preempted")] + per_request[(rid, "swapped")] == preempted[rid]
        assert per_request[(rid, "arrival")] == per_request[(rid, "first token")] == per_request[(rid, "finished")] == 1
    engine_steps = [e for e in events if e["pid"] == 2 and e["ph"] == "X"]
    assert len(engine_steps) == len(result.steps) == result.work["steps"]
    assert (
        sum(e["args"]["tokens"] for e in engine_steps) == result.work["prefill_tokens"] + result.work["decode_tokens"]
    )
    drawn = timeline(result.outputs, result.steps, result.start_s)
    assert len(drawn["requests"]) == len(result.outputs)
    assert len(drawn["preempted"]) == sum(preempted.values())


def test_an_engine_without_steps_gives_its_stamps(tiny):
    result = ManualEngine(tiny, EngineConfig()).generate(WORKLOADS["mixed16"].requests(tiny.spec.vocab_size)[:3])
    events = valid_events(chrome_trace(result.outputs, None, min(o.arrival_s for o in result.outputs)))
    names = Counter(e["name"] for e in events if e["pid"] == 1 and e["ph"] == "X")
    assert names == {"queued + prefill": 3, "decode": 3}
    assert not [e for e in events if e["pid"] == 2 and e["ph"] == "X"]


def test_untraced_rounds_record_no_steps(tiny):
    result = PagedEngine(tiny, EngineConfig(), num_blocks=64).generate(WORKLOADS["mixed16"].requests(512)[:2])
    assert result.steps is None
