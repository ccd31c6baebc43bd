"""Correctness, kept apart from timing: the HF reference, the probe workload, and the checks that keep
a fast wrong engine from being timed. OutputChecker ties them together for one loaded model."""

from __future__ import annotations

import time
from collections.abc import Sequence

from harness.correctness.check import (
    LOGIT_TOLERANCE,
    TOKEN_MARGIN,
    check_logits,
    check_tokens,
    verify_rest_with,
)
from harness.correctness.probe import probe_requests
from harness.correctness.reference import GreedyReference
from harness.engines.base import RequestOutput
from harness.models import LoadedModel
from harness.workloads import Request

__all__ = ["OutputChecker", "probe_requests"]


class OutputChecker:
    """Checks one model's engines against HF greedy. References are computed on first use, outside any
    timed region, and cached for the session (`seconds` is what the check itself has cost)."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.reference = GreedyReference(loaded)
        self.margin = TOKEN_MARGIN[loaded.dtype]
        self.logit_tolerance = LOGIT_TOLERANCE[loaded.dtype]
        self.seconds = 0.0
        self.near_ties: list[tuple[str, int, int, float]] = []  # (where, request, position, gap) accepted

    def tokens_problem(
        self, engine: str, requests: Sequence[Request], outputs: Sequence[RequestOutput], where: str
    ) -> str | None:
        start = time.perf_counter()
        ties: list[tuple[int, int, float]] = []
        try:
            mismatch = check_tokens(
                requests,
                outputs,
                self.reference.for_requests(requests),
                self.margin,
                verify_rest_with(self.reference.teacher_forced_logits, self.margin),
                ties,
            )
        finally:
            self.seconds += time.perf_counter() - start
        self.near_ties += [(where, *tie) for tie in ties]
        return None if mismatch is None else mismatch.describe(engine, where)

    def logits_problem(self, engine_name: str, engine: object, requests: Sequence[Request]) -> str | None:
        """Teacher-forced logits against HF's, for engines that can give them (teacher_forced_logits)."""
        forced = getattr(engine, "teacher_forced_logits", None)
        if forced is None:
            return None
        start = time.perf_counter()
        try:
            continuations = [
                r.tokens[: q.max_new_tokens]
                for r, q in zip(self.reference.for_requests(requests), requests, strict=True)
            ]
            want = [self.reference.teacher_forced_logits(q, c) for q, c in zip(requests, continuations, strict=True)]
            mismatch = check_logits(forced(requests, continuations), want, self.logit_tolerance)
        finally:
            self.seconds += time.perf_counter() - start
        return None if mismatch is None else mismatch.describe(engine_name)

    def probe_problem(self, engine_name: str, engine: object) -> str | None:
        """The fast first gate before an engine's first timed case: the probe workload's tokens (and
        logits where the engine gives them) against HF's."""
        requests = probe_requests(self.reference.loaded.spec.vocab_size)
        prepare = getattr(engine, "prepare", None)
        if prepare is not None:
            prepare(requests)
        problem = self.tokens_problem(engine_name, requests, engine.generate(requests).outputs, "the probe workload")
        return problem or self.logits_problem(engine_name, engine, requests)
