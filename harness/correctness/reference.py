"""HF's side of every check: the HF model's own forward, with no code of this suite between the model
and its logits.

- teacher_forced_logits: one causal forward over prompt + a continuation. The suite's output check
  (harness/correctness/check.py) verifies each engine token against these, and they are the
  reference for engines that can give logits.
- for_request: HF greedy decoding with transformers' `model.generate`, one request at a time, cached
  by prompt, with each step's top logits. The tests compare engines with it directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from harness.models import LoadedModel
from harness.workloads import Request

TOP_K = 5  # logits kept per step: enough to judge a near-tie between the top choices
LOGIT_BUDGET = 2**26  # float32 logits one teacher-forced forward may hold (256 MiB): positions x vocab


@dataclass(frozen=True)
class ReferenceTokens:
    """HF's greedy continuation of one prompt, with each step's top-k logits (float32, on the CPU)."""

    tokens: tuple[int, ...]
    top_ids: torch.Tensor  # (n, TOP_K) int64
    top_logits: torch.Tensor  # (n, TOP_K) float32

    def gap(self, position: int, token: int) -> float | None:
        """How far below the reference's best logit `token` scored at `position`; None when it was not
        among the reference's top TOP_K there (then it is no near-tie at any useful margin)."""
        hits = (self.top_ids[position] == token).nonzero()
        if len(hits) == 0:
            return None
        return float(self.top_logits[position, 0] - self.top_logits[position, int(hits[0, 0])])


class GreedyReference:
    """HF greedy outputs for one loaded model, cached by prompt. A request asking for fewer tokens than
    a cached continuation of the same prompt reuses it: greedy tokens for n steps are a prefix of those
    for m > n."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self._cache: dict[tuple[int, ...], ReferenceTokens] = {}
        self.tokens_generated = 0  # reference tokens computed so far: the check's own cost

    def for_request(self, req: Request) -> ReferenceTokens:
        cached = self._cache.get(req.prompt_ids)
        if cached is None or len(cached.tokens) < req.max_new_tokens:
            cached = self._generate(req.prompt_ids, req.max_new_tokens)
            self._cache[req.prompt_ids] = cached
        return cached

    def for_requests(self, requests: Sequence[Request]) -> list[ReferenceTokens]:
        return [self.for_request(r) for r in requests]

    @torch.inference_mode()
    def _generate(self, prompt: tuple[int, ...], new_tokens: int) -> ReferenceTokens:
        model, device = self.loaded.model, self.loaded.device
        ids = torch.tensor([prompt], dtype=torch.long, device=device)
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,  # ignore_eos: exactly new_tokens tokens, as every timed case asks
            output_logits=True,
            return_dict_in_generate=True,
        )
        logits = torch.cat(out.logits).float()  # (n, vocab): the raw logits of each step
        top = logits.topk(TOP_K, dim=-1)
        self.tokens_generated += new_tokens
        return ReferenceTokens(tuple(out.sequences[0, len(prompt) :].tolist()), top.indices.cpu(), top.values.cpu())

    def teacher_forced_logits(self, req: Request, continuation: Sequence[int]) -> torch.Tensor:
        """(len(continuation), vocab) float32 logits: row j predicts continuation[j] from the prompt and
        continuation[:j]. One causal forward of the HF model over the whole sequence."""
        return self.teacher_forced_many([(req, continuation)])[0]

    @torch.inference_mode()
    def teacher_forced_many(self, pairs: Sequence[tuple[Request, Sequence[int]]]) -> list[torch.Tensor]:
        """teacher_forced_logits of many (request, continuation) pairs, in as few forwards as fit: rows
        right-padded to a batch's longest, at most LOGIT_BUDGET / vocab positions a batch. Under a causal mask
        a row's real positions never see the padding after them; the padded batch only changes how the
        matrix products are blocked, which the check's margins hold."""
        max_positions = max(1, LOGIT_BUDGET // self.loaded.spec.vocab_size)
        seqs = [[*req.prompt_ids, *cont[:-1]] for req, cont in pairs]
        order = sorted(range(len(pairs)), key=lambda i: len(seqs[i]))
        out: list[torch.Tensor | None] = [None] * len(pairs)
        while order:
            width, take = len(seqs[order[-1]]), []
            while order and (len(take) + 1) * max(width, 1) <= max_positions or (order and not take):
                take.append(order.pop())
            for i, row in zip(take, self._forward([seqs[i] for i in take]), strict=True):
                out[i] = row[len(pairs[i][0].prompt_ids) - 1 : len(seqs[i])].clone()  # not a view: the batch goes
        return out

    def _forward(self, rows: list[list[int]]) -> torch.Tensor:
        """(len(rows), longest, vocab) float32 logits on the CPU, rows right-padded."""
        width, device = max(len(r) for r in rows), self.loaded.device
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, r in enumerate(rows):
            ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[b, : len(r)] = 1
        positions = torch.arange(width).expand(len(rows), width)
        logits = self.loaded.model(
            input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device), use_cache=False
        ).logits
        return logits.float().cpu()
