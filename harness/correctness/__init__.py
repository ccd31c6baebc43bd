"""Correctness, kept apart from timing: the HF reference, the probe workload, and the checks that keep
a fast wrong engine from being timed. OutputChecker ties them together for one loaded model."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import torch

from harness.correctness.calibrate import CALIBRATION_FACTOR, SelfDisagreement, hf_self_disagreement
from harness.correctness.check import LOGIT_TOLERANCE, TOKEN_MARGIN, check_logits, verify_tokens
from harness.correctness.probe import probe_for, probe_requests
from harness.correctness.reference import LOGIT_BUDGET, GreedyReference
from harness.correctness.store import CheckStore
from harness.engines.base import RequestOutput
from harness.engines.kept import keeping_logits
from harness.models import LoadedModel
from harness.workloads import Request

__all__ = ["OutputChecker", "probe_for", "probe_requests"]


def _fixed(logits):
    """A teacher_forced lookup that answers with logits already computed."""
    return lambda req, have: logits


class OutputChecker:
    """Checks one model's engines against HF greedy, outside any timed region (`seconds` is what the
    check itself has cost). An output already verified (the same prompt, the same tokens: every round
    of a deterministic engine) is not verified again."""

    def __init__(self, loaded: LoadedModel, store: CheckStore | None = None) -> None:
        self.reference = GreedyReference(loaded)
        self.store = store  # HF's side kept on disk between runs (store.py); None: this process only
        self.margin = TOKEN_MARGIN[loaded.dtype]
        self.vocab_size = loaded.model.get_output_embeddings().weight.shape[0]
        self.logit_tolerance = LOGIT_TOLERANCE[loaded.dtype]
        self.seconds = 0.0
        self.near_ties: list[tuple[str, int, int, float]] = []  # (where, request, position, gap) accepted
        self._verified = store.verified if store else {}  # (prompt, tokens) -> accepted (position, gap)
        self.calibration: SelfDisagreement | None = None  # HF's own disagreement, measured before the first check
        self._calibrated = False
        self.unusable: str | None = None  # why the check cannot vouch for any engine (calibrate.py)
        self._probe_logits: dict[tuple, torch.Tensor] = {}  # (prompt, tokens) -> HF's teacher-forced logits

    def calibrate(self) -> None:
        """Widen the margins to CALIBRATION_FACTOR x HF's own disagreement on this machine (calibrate.py),
        measured once per model before its first check, in every dtype: in float32 the fixed margins are
        the floor, and a CPU whose kernels round differently widens them instead of refusing a correct
        engine."""
        if self._calibrated:
            return
        self._calibrated = True
        cached = self.store.calibration if self.store else None
        self.calibration = (
            SelfDisagreement(**cached) if cached else hf_self_disagreement(self.reference, self._probe_logits)
        )
        if self.store and not cached:
            self.store.calibration = dataclasses.asdict(self.calibration)
            self.store.save_if_changed()
        self.margin = max(self.margin, CALIBRATION_FACTOR * self.calibration.token_noise)
        self.logit_tolerance = max(self.logit_tolerance, CALIBRATION_FACTOR * self.calibration.logit_noise)
        self.unusable = self.calibration.too_noisy(self.reference.loaded.dtype, self.margin)

    def tokens_problem(
        self, engine: str, requests: Sequence[Request], outputs: Sequence[RequestOutput], where: str
    ) -> str | None:
        start = time.perf_counter()
        try:
            self.calibrate()
            if self.unusable:
                return f"engine {engine}, {where}: {self.unusable}"
            if len(outputs) != len(requests):
                return verify_tokens(requests, outputs, self.reference.teacher_forced_logits).describe(engine, where)
            forced: dict[tuple, object] = {}
            for i, (req, out) in enumerate(zip(requests, outputs, strict=True)):
                key = self._key(req, out)
                if key not in self._verified or out.error is not None:
                    ties: list[tuple[int, int, float]] = []
                    if key not in forced:
                        forced = self._prefetch(requests[i:], outputs[i:])
                    lookup = _fixed(forced[key]) if key in forced else self.reference.teacher_forced_logits
                    mismatch = verify_tokens([req], [out], lookup, self.margin, ties, self.vocab_size)
                    if mismatch is not None:
                        return dataclasses.replace(mismatch, request_index=i).describe(engine, where)
                    self._verified[key] = [(pos, gap) for _, pos, gap in ties]
                self.near_ties += [(where, i, pos, gap) for pos, gap in self._verified[key]]
            return None
        finally:
            if self.store:
                self.store.save_if_changed()
            self.seconds += time.perf_counter() - start

    def _prefetch(self, requests: Sequence[Request], outputs: Sequence[RequestOutput]) -> dict[tuple, object]:
        """HF's teacher-forced logits, by _key, of the next outputs not yet verified, in batched forwards:
        each distinct output once (a batching case's requests are alike), as many as LOGIT_BUDGET holds.
        Outputs that fail before any logit is needed (a wrong length, a failed request) are left out."""

        def checkable(req: Request, out: RequestOutput) -> bool:
            tokens, vocab = out.token_ids, self.vocab_size
            return out.error is None and len(tokens) == req.max_new_tokens and all(0 <= t < vocab for t in tokens)

        todo: dict[tuple, tuple[Request, list[int]]] = {}
        room = max(1, LOGIT_BUDGET // self.vocab_size)
        for req, out in zip(requests, outputs, strict=True):
            key = self._key(req, out)
            if key in self._verified or key in todo or not checkable(req, out):
                continue
            if todo and len(out.token_ids) > room:
                break
            todo[key] = (req, list(out.token_ids))
            room -= len(out.token_ids)
        logits = self.reference.teacher_forced_many(list(todo.values()))
        return dict(zip(todo, logits, strict=True))

    @staticmethod
    def _key(req: Request, out: RequestOutput) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (tuple(req.prompt_ids), tuple(out.token_ids))

    def logits_problem(
        self, engine_name: str, engine: object, requests: Sequence[Request], continuations: Sequence[Sequence[int]]
    ) -> str | None:
        """Teacher-forced logits against HF's, for engines that can give them (teacher_forced_logits), on
        continuations already verified to be HF greedy's."""
        forced = engine.teacher_forced_logits
        if forced is None:
            return None
        start = time.perf_counter()
        try:
            self.calibrate()
            if self.unusable:
                return f"engine {engine_name}: {self.unusable}"
            want = self._probe_reference(requests, continuations)
            mismatch = check_logits(forced(requests, continuations), want, self.logit_tolerance)
        finally:
            self.seconds += time.perf_counter() - start
        return None if mismatch is None else mismatch.describe(engine_name)

    def _probe_reference(self, requests: Sequence[Request], continuations: Sequence[Sequence[int]]) -> list:
        """HF's teacher-forced logits of the probe's outputs, each computed once per checker (one per
        model): every engine that gives HF's tokens asks for the same ones."""
        pairs = list(zip(requests, continuations, strict=True))
        keys = [(tuple(req.prompt_ids), tuple(cont)) for req, cont in pairs]
        todo = {key: pair for key, pair in zip(keys, pairs, strict=True) if key not in self._probe_logits}
        self._probe_logits.update(zip(todo, self.reference.teacher_forced_many(list(todo.values())), strict=True))
        return [self._probe_logits[key] for key in keys]

    def probe_problem(self, engine_name: str, engine: object) -> str | None:
        """The fast first gate before an engine's first timed case: the probe workload's tokens (and
        logits where the engine gives them) against HF's. The engine is asked to keep the logits it picks
        its tokens from (BaseEngine.keep_logits), which an engine that can uses to answer the logits
        check without running the probe a second time."""
        requests = probe_for(self.reference.loaded.spec)
        engine.prepare(requests)
        with keeping_logits(engine):
            outputs = engine.generate(requests).outputs
            problem = self.tokens_problem(engine_name, requests, outputs, "the probe workload")
            return problem or self.logits_problem(engine_name, engine, requests, [o.token_ids for o in outputs])
