"""`transformers-cb`: transformers' own continuous batching (paged cache, its own scheduler).

Requests go to a persistent ContinuousBatchingManager, created and warmed up in prepare() (untimed),
so a round times serving, not start-up. Timestamps come from the manager (time.perf_counter clock).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from transformers import GenerationConfig

from harness.engines.base import BaseEngine, EngineConfig, GenerateResult, RequestOutput
from harness.errors import PerfSuiteError
from harness.models import LoadedModel
from harness.timing import now
from harness.workloads import Request

RESULT_TIMEOUT_S = 1.0


class TransformersCBEngine(BaseEngine):
    name = "transformers-cb"

    def __init__(self, loaded: LoadedModel, config: EngineConfig) -> None:
        super().__init__(loaded, config)
        self._manager = None
        self._sized_for: tuple[int, int, int] = (0, 0, 0)
        self._ids = itertools.count()

    @staticmethod
    def unavailable_reason(device: torch.device) -> str | None:
        from transformers import GenerationMixin  # every causal LM's generate() comes from here

        if not hasattr(GenerationMixin, "init_continuous_batching"):
            import transformers

            return f"transformers {transformers.__version__} has no continuous batching (needs >= 4.56)"
        return None

    def prepare(self, requests: Sequence[Request]) -> None:
        """Start (or resize) the manager for this workload, outside the timed region."""
        from transformers.generation.continuous_batching.continuous_api import WorkloadHints

        need = (max(len(r.prompt_ids) for r in requests), max(r.max_new_tokens for r in requests), len(requests))
        if self._manager is not None and all(n <= h for n, h in zip(need, self._sized_for, strict=True)):
            return
        self.close()
        gen = GenerationConfig(
            do_sample=False,
            max_new_tokens=need[1],
            pad_token_id=0,
            eos_token_id=None if self.config.ignore_eos else self.spec.eos_token_id,
        )
        hints = WorkloadHints(max_prompt_length=need[0], max_generated_length=need[1], num_requests=need[2])
        self._manager = self.model.init_continuous_batching(generation_config=gen, workload_hints=hints)
        self._manager.warmup()
        self._manager.start()
        self._sized_for = need

    def close(self) -> None:
        if self._manager is not None:
            self._manager.stop(block=True, timeout=5)
            self._manager = None

    def generate(self, requests: Sequence[Request]) -> GenerateResult:
        self.prepare(requests)
        start = now(self.device)
        ids = {}
        for req in requests:
            rid = f"r{next(self._ids)}"
            ids[rid] = req
            self._manager.add_request(
                list(req.prompt_ids), request_id=rid, max_new_tokens=req.max_new_tokens, record_timestamps=True
            )
        results = {}
        while len(results) < len(ids):
            res = self._manager.get_result(timeout=RESULT_TIMEOUT_S)
            if res is None:
                if not self._manager.is_running():
                    raise PerfSuiteError("transformers continuous batching stopped before finishing the requests")
                continue
            if res.is_finished():
                results[res.request_id] = res
        outputs = [self._output(ids[rid], results[rid], start) for rid in ids]
        return GenerateResult(outputs, now(self.device) - start)

    def _output(self, req: Request, res, start: float) -> RequestOutput:
        out = RequestOutput(
            req.request_id,
            len(req.prompt_ids),
            list(res.generated_tokens),
            arrival_s=start,
            error=None if res.error is None else str(res.error),
        )
        stamps = res.timestamps or []
        out.first_token_s = stamps[0] if stamps else None
        out.finish_s = stamps[-1] if stamps else res.lifespan[1]
        return out
