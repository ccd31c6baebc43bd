"""The check that an engine admits requests at their arrival times (tests/test_arrivals.py and
tests/test_vllm_real.py use it; tests/mutants.py has an engine it refuses)."""

import time

from harness.workloads import Request


def arrival_problems(engine, loaded) -> list[str]:
    """Six requests, arriving over 0.2 s, with at most two in flight (the engine's config): what the
    engine got wrong. Each must start no earlier than it arrives, no more than two may run at once,
    and the tokens must still be HF greedy's."""
    from harness.correctness import OutputChecker
    from harness.workloads import mixed_requests

    offsets = [0.0, 0.0, 0.0, 0.1, 0.15, 0.2]
    base = mixed_requests(6, (4, 24), (3, 12), loaded.spec.vocab_size, seed=5)
    requests = [
        Request(r.prompt_ids, r.max_new_tokens, request_id=r.request_id, arrival_offset_s=t)
        for r, t in zip(base, offsets, strict=True)
    ]
    start = time.perf_counter()
    result = engine.generate(requests)
    problems = [OutputChecker(loaded).tokens_problem(engine.name, requests, result.outputs, "arrivals")]
    for req, out in zip(requests, result.outputs, strict=True):
        if out.arrival_s < start + req.arrival_offset_s:
            problems.append(f"request {req.request_id} admitted before it arrived")
        if not out.arrival_s <= out.first_token_s <= out.finish_s or len(out.token_times) != len(out.token_ids):
            problems.append(f"request {req.request_id}: timestamps out of order or missing")
    intervals = sorted((o.arrival_s, o.finish_s) for o in result.outputs)
    most = max(sum(a <= t < f for a, f in intervals) for t, _ in intervals)
    if most > 2 or result.metrics.get("max_running_seqs", result.metrics.get("max_in_flight", 0)) > 2:
        problems.append(f"{most} requests in flight at once, cap 2")
    return [p for p in problems if p]
