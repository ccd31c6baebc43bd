"""`static-batch`: model.generate on left-padded batches; each batch runs until its longest request is done."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from harness.arrivals import ArrivalQueue
from harness.engines.base import BaseEngine, GenerateResult, RequestOutput
from harness.engines.hf_common import StepRecorder, fill_output, generate_kwargs, left_padded, trim_at_eos
from harness.engines.work import Work
from harness.timing import now
from harness.workloads import Request


def arrival_batches(requests: Sequence[Request], size: int) -> list[list[Request]]:
    """Arrival order, `size` at a time: no reordering by length (that would be a scheduler)."""
    return [list(requests[i : i + size]) for i in range(0, len(requests), size)]


def contiguous_kv_tokens(batches: Sequence[Sequence[Request]]) -> int:
    """KV token slots a static batch reserves at its peak: every request of the largest batch holds the
    batch's padded length (longest prompt + most new tokens) from the first step to the last."""
    return max(
        (len(b) * (max(len(r.prompt_ids) for r in b) + max(r.max_new_tokens for r in b)) for b in batches), default=0
    )


def contiguous_kv_utilisation(batches: Sequence[Sequence[Request]]) -> float:
    """Time-averaged share of KV slots holding data when each request of a batch reserves a contiguous
    region for the batch's padded length (P_max + N_max) for the batch's whole life, as a static batch
    does. Averaged over decode steps, so a long batch weighs more, as it holds its memory longer."""
    used = allocated = 0
    for batch in batches:
        p_max = max(len(r.prompt_ids) for r in batch)
        n_max = max(r.max_new_tokens for r in batch)
        for step in range(n_max):
            used += sum(len(r.prompt_ids) + min(step + 1, r.max_new_tokens) for r in batch)
            allocated += len(batch) * (p_max + n_max)
    return used / allocated if allocated else 0.0


class StaticBatchEngine(BaseEngine):
    name = "static-batch"
    takes_arrivals = True  # each batch takes what has arrived when the last one ends
    counts_flops = True  # harness/engines/flops.py

    @torch.inference_mode()
    def _run_batch(self, batch: list[Request], arrived: list[float]) -> list[RequestOutput]:
        ids, mask = left_padded([r.prompt_ids for r in batch], self.device)
        recorder = StepRecorder(self.device)
        max_new = max(r.max_new_tokens for r in batch)
        seqs = self.clock.run(
            lambda: self.model.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=max_new,
                streamer=recorder,
                **generate_kwargs(self.config, self.eos_token_id),
            )
        )
        finish = now(self.device)  # the whole batch returns at once
        new = seqs[:, ids.shape[1] :].tolist()
        outputs = []
        for req, row, t in zip(batch, new, arrived, strict=True):
            out = RequestOutput(req.request_id, len(req.prompt_ids), arrival_s=t)
            tokens = trim_at_eos(row[: req.max_new_tokens], self.eos_token_id, self.config.ignore_eos)
            fill_output(out, tokens, recorder.step_times, finish)
            outputs.append(out)
        self._count(ids.shape[1], len(recorder.step_times), outputs)
        return outputs

    def _count(self, width: int, forwards: int, outputs: list[RequestOutput]) -> None:
        """A batch's work: every row computed at the padded width in the prefill and at every later step,
        whether its request still needs it or not (the padding)."""
        w, rows = self.work, len(outputs)
        w.steps += forwards
        w.prefill_tokens += rows * width
        w.decode_tokens += rows * max(forwards - 1, 0)
        w.padded_tokens += sum(width - o.prompt_len + forwards - len(o.token_ids) for o in outputs)

    def generate(self, requests: Sequence[Request]) -> GenerateResult:
        """Batches of up to max_batch_size requests, each taking, in arrival order, what has arrived (and
        been let in by max_concurrency) when the last batch ends; all at once by default, so the batches
        are arrival_batches(requests). A request's TTFT counts from its arrival: waiting for earlier
        batches is part of it."""
        start = now(self.device)
        self.work = Work()
        arrivals = ArrivalQueue(requests, self.config.max_concurrency, start)
        waiting: list[tuple[int, Request, float]] = []  # arrived (and let in by the cap), not yet batched
        batches, order = [], {}
        while arrivals or waiting:
            if not waiting:
                arrivals.wait_for_next(0)
            waiting += arrivals.admit(len(waiting))
            if not waiting:  # woke a hair before the next arrival
                continue
            admitted, waiting = waiting[: self.config.max_batch_size], waiting[self.config.max_batch_size :]
            batch = [req for _, req, _ in admitted]
            for (i, _, _), out in zip(admitted, self._run_batch(batch, [t for _, _, t in admitted]), strict=True):
                order[i] = out
            batches.append(batch)
        outputs = [order[i] for i in range(len(requests))]
        metrics = {
            "kv_utilisation": contiguous_kv_utilisation(batches),
            "num_batches": float(len(batches)),
            "kv_pool_tokens": float(contiguous_kv_tokens(batches)),
            "max_running_seqs": float(max(len(b) for b in batches)),
        }
        work = self.work.report(("steps", "prefill_tokens", "decode_tokens", "padded_tokens"))
        return GenerateResult(outputs, now(self.device) - start, metrics=metrics, work=work)
