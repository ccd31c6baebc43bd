"""`paged`: the vLLM-style engine. step() = schedule -> run -> postprocess."""

from __future__ import annotations

import itertools
from collections.abc import Sequence as Seq

import psutil
import torch

from harness import roofline
from harness.arrivals import ArrivalQueue
from harness.engines.base import BaseEngine, EngineConfig, GenerateResult, RequestOutput, StepCase
from harness.engines.kept import KeptLogits
from harness.engines.paged.block_manager import BlockManager
from harness.engines.paged.forced import forced_logits
from harness.engines.paged.model_runner import PagedModelRunner, PrefillChunk
from harness.engines.paged.scheduler import ScheduledBatch, Scheduler, SchedulerConfig
from harness.engines.paged.sequence import Sequence
from harness.engines.work import COUNTERS, Work
from harness.errors import PerfSuiteError
from harness.models import LoadedModel
from harness.timing import now
from harness.trace import StepEvent
from harness.workloads import Request

DEFAULT_KV_FRACTION = {"cuda": 0.5, "cpu": 0.1}  # of free memory, when --perf-kv-cache-mem is not given


class RequestTooLargeError(PerfSuiteError):
    pass


def kv_pool_bytes(kv_cache_mem: float | None, device: torch.device) -> int:
    """--perf-kv-cache-mem: bytes when > 1, else a fraction of the device's free memory."""
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else psutil.virtual_memory().available
    if kv_cache_mem is None:
        return int(DEFAULT_KV_FRACTION[device.type] * free)
    if kv_cache_mem <= 0:
        raise PerfSuiteError(f"--perf-kv-cache-mem must be positive, got {kv_cache_mem}")
    return int(kv_cache_mem * free) if kv_cache_mem <= 1 else int(kv_cache_mem)


class PagedEngine(BaseEngine):
    name = "paged"
    takes_arrivals = True  # generate() admits each request at its arrival time (harness/arrivals.py)
    own_forward = True  # its forward is its own code, not HF's: the gate's reference forward can correct it
    counts_flops = True  # harness/engines/flops.py
    # the parts a variant may replace (the mutation tests swap in deliberately broken ones)
    runner_class: type[PagedModelRunner] = PagedModelRunner
    block_manager_class: type[BlockManager] = BlockManager

    def __init__(self, loaded: LoadedModel, config: EngineConfig, num_blocks: int | None = None) -> None:
        super().__init__(loaded, config)
        self.block_size = config.block_size
        block_bytes = self.block_size * roofline.kv_bytes_per_token(loaded.spec, loaded.dtype)
        if num_blocks is None:
            num_blocks = kv_pool_bytes(config.kv_cache_mem, loaded.device) // block_bytes
            if config.kv_cache_mem is None:  # no sequence outgrows max_position: more blocks would sit idle
                num_blocks = min(num_blocks, config.max_batch_size * -(-loaded.spec.max_position // self.block_size))
        if num_blocks < 1:
            raise PerfSuiteError(f"KV pool too small: {config.kv_cache_mem} bytes hold no {block_bytes}-byte block")
        num_cpu_blocks = num_blocks if config.preemption == "swap" else 0
        self.runner = self.runner_class(
            loaded, num_blocks, self.block_size, num_cpu_blocks, compile=config.compile, cuda_graphs=config.cuda_graphs
        )
        self.bm = self.block_manager_class(num_blocks, self.block_size, num_cpu_blocks, config.enable_prefix_caching)
        self.scheduler = Scheduler(
            SchedulerConfig(config.max_num_seqs, config.max_num_batched_tokens, config.preemption), self.bm
        )
        self._ids = itertools.count()
        self._outputs: dict[int, RequestOutput] = {}
        self._util_sum = 0.0
        self._util_steps = 0
        self._max_running = 0
        self.work = Work()
        self.steps: list[StepEvent] | None = None  # the steps of the last generate(), when traced
        self.kept = KeptLogits()

    # --- requests ----------------------------------------------------------------------------
    def add_request(
        self, prompt_ids: Seq[int], max_new_tokens: int, priority: int = 0, request_id: int | None = None
    ) -> int:
        """Queue a request; it joins at the next step that has room. Raises if it can never fit."""
        seq_id = next(self._ids)
        need = self.bm.blocks_for(len(prompt_ids) + max_new_tokens)
        if need > self.bm.num_blocks:
            raise RequestTooLargeError(
                f"request {seq_id if request_id is None else request_id}: {len(prompt_ids)} prompt + "
                f"{max_new_tokens} new tokens need {need} KV blocks of {self.block_size} tokens, but the whole pool "
                f"has {self.bm.num_blocks}; raise --perf-kv-cache-mem or shorten the request"
            )
        seq = Sequence(seq_id, list(prompt_ids), max_new_tokens, priority, arrival=seq_id)
        self._outputs[seq_id] = RequestOutput(
            seq_id if request_id is None else request_id, len(prompt_ids), arrival_s=now(self.device)
        )
        self.scheduler.add(seq)
        return seq_id

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    # --- one iteration -----------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Schedule, run the model once, append one token per scheduled sequence; returns finished requests."""
        batch = self.scheduler.schedule()
        if batch is None:
            return []
        self._max_running = max(self._max_running, len(batch.seqs))
        self._count(batch)
        start = now(self.device) if self.steps is not None else 0.0
        next_ids = self.clock.run(lambda: self._run(batch))
        end = now(self.device)
        if self.steps is not None:
            self.steps.append(self._event(batch, start, end))
        return self._postprocess(batch, next_ids, end)

    def _event(self, batch: ScheduledBatch, start: float, end: float) -> StepEvent:
        """The step as the trace shows it (harness/trace.py): requests by their own ids."""
        rid = {seq_id: out.request_id for seq_id, out in self._outputs.items()}
        tokens = {
            rid[s.seq_id]: (len(s.token_ids) - s.num_cached_tokens if batch.is_prefill else 1) for s in batch.seqs
        }
        preempted = [(rid[seq_id], how) for seq_id, how in batch.preempted if seq_id in rid]
        return StepEvent(
            start, end, batch.is_prefill, tokens, preempted, [rid[i] for i in batch.swapped_in if i in rid]
        )

    def _count(self, batch: ScheduledBatch) -> None:
        """The step's work: one forward, its tokens, the blocks it swaps, the KV it holds."""
        w = self.work
        w.steps += 1
        if batch.is_prefill:
            w.prefill_tokens += sum(len(s.token_ids) - s.num_cached_tokens for s in batch.seqs)
        else:
            w.decode_tokens += len(batch.seqs)
        moved = len(batch.swap_in) + len(batch.swap_out)
        w.swapped_blocks += moved
        w.swap_bytes += moved * self.block_size * roofline.kv_bytes_per_token(self.spec, self.loaded.dtype)
        w.peak_kv_blocks = max(w.peak_kv_blocks, self.bm.num_used_blocks)

    def _run(self, batch: ScheduledBatch) -> list[int]:
        self.runner.swap_in(batch.swap_in)  # before swap_out: swap-out may reuse the CPU blocks just read
        self.runner.swap_out(batch.swap_out)
        if batch.is_prefill:
            logits = self.runner.prefill_logits(
                [
                    PrefillChunk(s.token_ids[s.num_cached_tokens :], s.num_cached_tokens, s.block_table)
                    for s in batch.seqs
                ]
            )
        else:
            logits = self.runner.decode_logits(
                [s.last_token for s in batch.seqs],
                [len(s) - 1 for s in batch.seqs],
                [s.block_table for s in batch.seqs],
            )
        if self.keep_logits:
            self.kept.add([s.seq_id for s in batch.seqs], logits)
        return logits.argmax(dim=-1).tolist()

    def _postprocess(self, batch: ScheduledBatch, next_ids: list[int], t: float) -> list[RequestOutput]:
        finished = []
        for seq, token in zip(batch.seqs, next_ids, strict=True):
            seq.output_ids.append(token)
            out = self._outputs[seq.seq_id]
            out.token_ids.append(token)
            out.token_times.append(t)
            if out.first_token_s is None:
                out.first_token_s = t
            if len(seq.output_ids) >= seq.max_new_tokens or (
                not self.config.ignore_eos and token == self.loaded.spec.eos_token_id
            ):
                self.scheduler.finish(seq)
                out.finish_s = t
                if self.keep_logits:
                    self.kept.finish(seq.seq_id, seq.prompt_ids, seq.output_ids)
                finished.append(self._outputs.pop(seq.seq_id))
        self._record_utilisation()
        return finished

    def _record_utilisation(self) -> None:
        if self.bm.num_used_blocks:
            used = self.bm.filled_slots(self.scheduler.running)
            self._util_sum += used / (self.bm.num_used_blocks * self.block_size)
            self._util_steps += 1

    # --- whole workloads ---------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        return {
            "kv_utilisation": self._util_sum / self._util_steps if self._util_steps else 0.0,
            "preemptions": float(self.scheduler.num_preemptions),
            "swaps": float(self.scheduler.num_swap_outs),
            "prefix_cache_hit_tokens": float(self.bm.prefix_hit_tokens),
            "kv_pool_blocks": float(self.bm.num_blocks),
            "kv_pool_tokens": float(self.bm.num_blocks * self.block_size),
            "max_running_seqs": float(self._max_running),
        }

    def _reset_metrics(self) -> None:
        self._util_sum, self._util_steps, self._max_running = 0.0, 0, 0
        self.scheduler.num_preemptions = self.scheduler.num_swap_outs = 0
        self.bm.prefix_hit_tokens = 0
        self.work = Work()

    def counted_work(self) -> dict[str, int]:
        self.work.preemptions, self.work.prefix_hit_tokens = self.scheduler.num_preemptions, self.bm.prefix_hit_tokens
        return self.work.report(tuple(COUNTERS))

    def generate(self, requests: Seq[Request]) -> GenerateResult:
        """Each request joins when it arrives (its arrival_offset_s; all at once by default) and while
        fewer than config.max_concurrency are in flight; outputs come back in request order. A request
        that can never fit gets its error in its output; the others finish."""
        if not self.has_unfinished():
            self.bm.reset_prefix_cache()  # each call does the same work: no hits on an earlier call's prompts
        self._reset_metrics()
        self.steps = [] if self.config.trace else None
        start = now(self.device)
        arrivals = ArrivalQueue(requests, self.config.max_concurrency, start)
        order: dict[int, RequestOutput] = {}
        by_request: dict[int, int] = {}
        try:
            while arrivals or self.has_unfinished():
                for i, req, t in arrivals.admit(len(self._outputs)):
                    try:
                        seq_id = self.add_request(req.prompt_ids, req.max_new_tokens, req.priority, req.request_id)
                        self._outputs[seq_id].arrival_s = t  # its arrival (or the slot the cap gave), not this step
                        by_request[req.request_id] = i
                    except RequestTooLargeError as exc:
                        arrivals.refused()
                        order[i] = RequestOutput(req.request_id, len(req.prompt_ids), arrival_s=t, error=str(exc))
                arrivals.wait_for_next(len(self._outputs))
                for out in self.step():
                    order[by_request[out.request_id]] = out
        except BaseException:
            self._abandon()
            raise
        outputs = [order[i] for i in range(len(requests))]
        result = GenerateResult(outputs, now(self.device) - start, metrics=self.metrics(), work=self.counted_work())
        result.steps, result.start_s = self.steps, start
        return result

    def _abandon(self) -> None:
        """A generate that raised part-way (a failed forward, an interrupt, a failed flops count) leaves
        nothing behind: its unfinished requests are dropped and their blocks given back."""
        for seq in self.scheduler.abort_all():
            self.kept.forget(seq.seq_id)
        self._outputs.clear()

    def teacher_forced_logits(self, requests: Seq[Request], continuations: Seq[Seq[int]]) -> list[torch.Tensor]:
        """Per request, (len(continuation), vocab) float32 logits from this engine, fed the given
        continuation: generate's own logits of these very tokens when it kept them (keep_logits), else
        one batch through the runner (forced.py)."""
        return self.kept.take(requests, continuations) or forced_logits(self, requests, continuations)

    def _allocate(self, seq: Sequence, purpose: str) -> None:
        if not self.bm.can_allocate(seq):
            raise PerfSuiteError(
                f"paged KV pool ({self.bm.num_blocks} blocks of {self.block_size}) cannot hold {purpose}; "
                f"raise --perf-kv-cache-mem"
            )
        self.bm.allocate(seq)

    # --- prefill / decode cases --------------------------------------------------------------
    def _case_seqs(self, batch_size: int, length: int, seed: int) -> list[Sequence]:
        """A step case's sequences, allocated in a pool as fresh as the first case's, whatever ran before."""
        if self.bm.num_used_blocks == 0:
            self.bm.reset_prefix_cache()
        gen = torch.Generator().manual_seed(seed)
        seqs = []
        for b in range(batch_size):
            ids = torch.randint(1, self.loaded.spec.vocab_size, (length,), generator=gen).tolist()
            seq = Sequence(-1 - b, ids, 1)
            self._allocate(seq, f"{batch_size} x {length} tokens")
            seqs.append(seq)
        return seqs

    def _release(self, seqs: list[Sequence]) -> None:
        for seq in seqs:
            self.bm.free(seq)

    def prefill_case(self, batch_size: int, prompt_len: int, seed: int = 0) -> StepCase:
        seqs = self._case_seqs(batch_size, prompt_len, seed)
        chunks = [PrefillChunk(s.prompt_ids, 0, s.block_table) for s in seqs]  # always the full prompt
        return StepCase(
            run=lambda: self.clock.run(lambda: self.runner.prefill(chunks)), teardown=lambda: self._release(seqs)
        )

    def decode_case(self, batch_size: int, context_len: int, seed: int = 0) -> StepCase:
        """B sequences holding context_len tokens of KV; each round writes the same next slot."""
        seqs = self._case_seqs(batch_size, context_len + 1, seed)
        self.runner.prefill([PrefillChunk(s.prompt_ids[:-1], 0, s.block_table) for s in seqs])
        args = ([s.prompt_ids[-1] for s in seqs], [context_len] * batch_size, [s.block_table for s in seqs])
        return StepCase(
            run=lambda: self.clock.run(lambda: self.runner.decode(*args)), teardown=lambda: self._release(seqs)
        )
