"""`manual`: the tutorial's loop. One prefill forward, then one decode forward per token on the HF
KV cache, clocking the prefill and every decode step."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from contextlib import nullcontext

import torch
from transformers import DynamicCache

from harness.engines import onednn
from harness.engines.base import BaseEngine, EngineConfig, GenerateResult, RequestOutput, StepCase
from harness.engines.hf_common import cache_keyword
from harness.engines.kept import KeptLogits
from harness.engines.paged.matvec import RowLinearMode
from harness.engines.work import sequential_work
from harness.models import LoadedModel
from harness.timing import now
from harness.workloads import Request


def crop_to(cache: DynamicCache, length: int) -> None:
    # A negative argument means "remove that many tokens" in both transformers 4 and 5 (5 refuses a
    # positive one); crop(0) would empty the cache in 4, so it is never called with 0.
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


class ManualEngine(BaseEngine):
    name = "manual"
    counts_flops = True  # harness/engines/flops.py

    def __init__(self, loaded: LoadedModel, config: EngineConfig) -> None:
        super().__init__(loaded, config)
        self.vocab_size = loaded.spec.vocab_size
        self.cache_keyword = cache_keyword(self.model)
        self.row_mode = RowLinearMode() if config.compile and self.device.type == "cpu" else self._linear_mode()
        self.kept = KeptLogits()

    def _linear_mode(self):
        """float32 on CPU: HF's F.linear calls through oneDNN (onednn.py), not the BLAS."""
        return onednn.LinearMode() if onednn.available(self.device, self.model.dtype) else nullcontext()

    def _mode_for(self, ids: torch.Tensor):
        """row_mode, or none where each product of this forward is one row that `onednn.linear` would
        hand to the BLAS anyway: a mode costs a Python call for every op the model runs."""
        if isinstance(self.row_mode, onednn.LinearMode) and ids.numel() == 1 and onednn.one_row_on_blas():
            return nullcontext()
        return self.row_mode

    def _last_logits(self, ids: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        """(B, T) ids -> (B, vocab) logits of the last position only, as generate computes them."""
        with torch.inference_mode(), self._mode_for(ids):
            kv = {self.cache_keyword: cache}
            return self.model(input_ids=ids, **kv, use_cache=True, logits_to_keep=1).logits[:, -1]

    def _forward(self, ids: torch.Tensor, cache: DynamicCache, keep_as: int | None = None) -> torch.Tensor:
        """(B, T) ids -> (B,) greedy next ids; under keep_logits, their logits kept as request keep_as's."""
        logits = self._last_logits(ids, cache)
        if self.keep_logits and keep_as is not None:
            self.kept.add([keep_as], logits)
        return logits.argmax(dim=-1)

    def teacher_forced_logits(self, requests: Sequence[Request], continuations: Sequence[Sequence[int]]) -> list:
        """Per request, (len(continuation), vocab) float32 logits through this engine's own loop (prefill,
        then one cached decode forward per token), fed the given continuation instead of its own picks."""
        kept = self.kept.take(requests, continuations)
        if kept is not None:  # generate ran this very loop on these tokens, keeping its logits
            return kept
        result = []
        for req, cont in zip(requests, continuations, strict=True):
            cache = DynamicCache(config=self.model.config)
            rows = [self._last_logits(torch.tensor([req.prompt_ids], device=self.device), cache)]
            for token in cont[:-1]:
                rows.append(self._last_logits(torch.tensor([[token]], device=self.device), cache))
            result.append(torch.cat(rows).float().cpu())
        return result

    def _generate_one(self, req: Request, start: float, step_ms: list[float]) -> tuple[RequestOutput, float]:
        out = RequestOutput(req.request_id, len(req.prompt_ids), arrival_s=start)
        cache = DynamicCache(config=self.model.config)
        ids = torch.tensor([req.prompt_ids], dtype=torch.long, device=self.device)
        t0 = now(self.device)
        next_id = self.clock.run(lambda: self._forward(ids, cache, req.request_id))
        out.first_token_s = now(self.device)
        prefill_ms = (out.first_token_s - t0) * 1e3
        out.token_ids.append(int(next_id[0]))
        while len(out.token_ids) < req.max_new_tokens and not self._stopped(out.token_ids[-1]):
            t_step = now(self.device)
            next_id = self.clock.run(lambda n=next_id: self._forward(n[:, None], cache, req.request_id))
            out.token_ids.append(int(next_id[0]))  # int() waits for the device
            out.finish_s = now(self.device)
            step_ms.append((out.finish_s - t_step) * 1e3)
        out.finish_s = out.finish_s or out.first_token_s
        if self.keep_logits:
            self.kept.finish(req.request_id, req.prompt_ids, out.token_ids)
        return out, prefill_ms

    def _stopped(self, token: int) -> bool:
        return not self.config.ignore_eos and token == self.eos_token_id

    def generate(self, requests: Sequence[Request]) -> GenerateResult:
        start = now(self.device)
        outputs, prefill_ms, step_ms = [], [], []
        for req in requests:
            out, ms = self._generate_one(req, start, step_ms)
            outputs.append(out)
            prefill_ms.append(ms)
        phases = {"prefill_ms": statistics.mean(prefill_ms)}
        if step_ms:
            phases["decode_ms_per_token"] = statistics.median(step_ms)
        work = sequential_work(outputs)
        return GenerateResult(outputs, now(self.device) - start, phase_ms=phases, step_ms=step_ms, work=work)

    def _random_ids(self, batch_size: int, length: int, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.randint(1, self.vocab_size, (batch_size, length), generator=gen).to(self.device)

    def prefill_case(self, batch_size: int, prompt_len: int, seed: int = 0) -> StepCase:
        ids = self._random_ids(batch_size, prompt_len, seed)
        return StepCase(run=lambda: self.clock.run(lambda: self._forward(ids, DynamicCache(config=self.model.config))))

    def decode_case(self, batch_size: int, context_len: int, seed: int = 0) -> StepCase:
        """One decode step on a cache holding context_len tokens; setup crops the step's token back off."""
        cache = DynamicCache(config=self.model.config)
        next_ids = self._forward(self._random_ids(batch_size, context_len, seed), cache)[:, None]
        return StepCase(
            run=lambda: self.clock.run(lambda: self._forward(next_ids, cache)),
            setup=lambda: crop_to(cache, context_len),
        )
