"""Deliberately broken engines. The suite's own output check must refuse every one of them
(tests/test_mutants.py): a check that lets any of them be timed is the bug.

Paged variants replace one part of the paged engine (its runner or block manager) with a broken one.
Plug-in variants are written only against the public engine protocol (harness.engines), as an
outside engine would be.
"""

from __future__ import annotations

import dataclasses

import torch
from transformers import DynamicCache

from harness.engines import EngineConfig, GenerateResult, RequestOutput
from harness.engines.hf_common import cache_keyword
from harness.engines.paged.block_manager import BlockManager
from harness.engines.paged.decode_groups import DecodeGroup
from harness.engines.paged.engine import PagedEngine
from harness.engines.paged.model_runner import PagedModelRunner
from harness.models import LoadedModel
from harness.timing import now

# --- paged variants ----------------------------------------------------------------------------


class ZeroAttentionRunner(PagedModelRunner):
    def _attend(self, q, k, v, mask, causal):
        return torch.zeros_like(q)  # (B, nh, Tq, d): the attention output, gone


class SwappedRowsRunner(PagedModelRunner):
    def _decode_groups(self, positions, block_tables):
        groups = super()._decode_groups(positions, block_tables)
        for g in groups:  # the first two rows of a group read each other's KV
            if len(g.tables) >= 2:
                g.tables = g.tables[[1, 0, *range(2, len(g.tables))]]
        return groups


class RopeOffByOneRunner(PagedModelRunner):
    _shift = 0

    def _rope(self, positions, max_position):
        return super()._rope(positions + self._shift, max_position + self._shift)

    def decode_logits(self, token_ids, positions, block_tables):
        self._shift = 1  # decode rotates the new token one position too far; prefill is right
        try:
            return super().decode_logits(token_ids, positions, block_tables)
        finally:
            self._shift = 0


class ReorderedRaggedRunner(PagedModelRunner):
    """The bug this suite shipped: one length group holding the whole batch, sorted longest first, was
    taken as if in batch order (queries and positions in batch order, block tables sorted)."""

    def _decode_groups(self, positions, block_tables):
        groups = super()._decode_groups(positions, block_tables)
        if self.kv_in_c:  # one group in batch order, read in place: its tables sorted, its lengths not
            g, order = groups[0], sorted(range(len(positions)), key=lambda b: -positions[b])
            return [DecodeGroup(None, g.tables[order], g.ctx, None, None, lengths=g.lengths)]
        if len(groups) == 1 and groups[0].index is not None:
            g = groups[0]
            mask = None
            if g.mask is not None:
                pos = torch.tensor(positions, device=g.mask.device)
                mask = (torch.arange(g.ctx, device=g.mask.device)[None] <= pos[:, None])[:, None, None, :]
            groups = [DecodeGroup(None, g.tables, g.ctx, mask, g.buffers, lengths=[p + 1 for p in positions])]
        return groups


class StaleBlockManager(BlockManager):
    """Frees every block of a finished sequence at once, even one another sequence still shares, and
    hands freed blocks out first: a block is reused while it still holds someone's KV."""

    def free(self, seq):
        for block_id in seq.block_table:
            block = self.blocks[block_id]
            if block.ref_count > 1:
                self.shared_extra_refs -= block.ref_count - 1
            block.ref_count = 0
            if block_id not in self.free_block_ids:
                self.free_block_ids.appendleft(block_id)
        seq.block_table = []
        seq.num_cached_tokens = 0


class OwnTokensPrefixManager(BlockManager):
    """Shares a cached block by its own tokens alone, whatever came before them."""

    def _register(self, block, chain):
        super()._register(block, chain[-self.block_size :])

    def _cached(self, chain):
        return super()._cached(chain[-self.block_size :])


class ZeroAttentionPaged(PagedEngine):
    name = "mutant-zero-attention"
    runner_class = ZeroAttentionRunner


class SwappedRowsPaged(PagedEngine):
    name = "mutant-swapped-rows"
    runner_class = SwappedRowsRunner


class RopeOffByOnePaged(PagedEngine):
    name = "mutant-rope-off-by-one"
    runner_class = RopeOffByOneRunner


class ReorderedRaggedPaged(PagedEngine):
    name = "mutant-reordered-ragged"
    runner_class = ReorderedRaggedRunner


class StaleBlockPaged(PagedEngine):
    name = "mutant-stale-block"
    block_manager_class = StaleBlockManager


class OwnTokensPrefixPaged(PagedEngine):
    name = "mutant-own-tokens-prefix"
    block_manager_class = OwnTokensPrefixManager


PAGED_MUTANTS = [
    ZeroAttentionPaged,
    SwappedRowsPaged,
    RopeOffByOnePaged,
    ReorderedRaggedPaged,
    StaleBlockPaged,
    OwnTokensPrefixPaged,
]


class IgnoresArrivalsPaged(PagedEngine):
    """Takes every request at t=0 whatever its arrival time, with no concurrency cap (right tokens,
    wrong load: tests/test_arrivals.py refuses it)."""

    name = "mutant-ignores-arrivals"

    def generate(self, requests):
        self.config = dataclasses.replace(self.config, max_concurrency=0)
        return super().generate([dataclasses.replace(r, arrival_offset_s=0.0) for r in requests])


class KeepsPrefixCacheManager(BlockManager):
    """Never forgets its cached blocks: a round reads the prefixes the previous round left behind."""

    def reset_prefix_cache(self):
        pass


class WarmPrefixCachePaged(PagedEngine):
    """Right tokens, but every round after the first starts with a warm prefix cache: less work than the
    first, so its rounds are not the same work (tests/test_workloads.py refuses it)."""

    name = "mutant-warm-prefix-cache"
    block_manager_class = KeepsPrefixCacheManager


# --- work variants: right tokens, other work (the work gate, tests/test_work.py) ----------------


class RecomputesOneMoreBlockManager(BlockManager):
    """A preempted sequence, admitted again, computes one block more than the prefix cache already
    holds: the same tokens and KV, 16 more tokens of prefill after each preemption that hit the cache."""

    def allocate(self, seq):
        super().allocate(seq)
        if seq.output_ids and seq.num_cached_tokens >= self.block_size:  # only a preempted one has outputs here
            seq.num_cached_tokens -= self.block_size
            self.prefix_hit_tokens -= self.block_size


class RecomputesMorePaged(PagedEngine):
    name = "paged"  # stands in for the real one under --perf-engine-module: the same case ids
    block_manager_class = RecomputesOneMoreBlockManager


class UnsteadyWorkPaged(PagedEngine):
    """Right tokens, but its counters differ from one identical round to the next (a counter that leaks
    state between rounds): the bench notes it and the gate refuses to compare them."""

    name = "paged"
    rounds = 0

    def counted_work(self):
        UnsteadyWorkPaged.rounds += 1
        work = super().counted_work()
        return {**work, "steps": work["steps"] + UnsteadyWorkPaged.rounds}


class ProjectsTwiceRunner(PagedModelRunner):
    """Every layer projects Q, K and V a second time and keeps the second: the same tokens, the same
    scheduler counters, more arithmetic (the flops counter, harness/engines/flops.py). A lone row's
    decode step runs its layers in C (row_step.py), without _qkv: there it does the same work."""

    def _qkv(self, w, x, cos, sin):
        super()._qkv(w, x, cos, sin)
        return super()._qkv(w, x, cos, sin)


class ProjectsTwicePaged(PagedEngine):
    name = "paged"
    runner_class = ProjectsTwiceRunner


class UnsteadyFlopsRunner(ProjectsTwiceRunner):
    twice = False

    def _qkv(self, w, x, cos, sin):
        return super()._qkv(w, x, cos, sin) if self.twice else PagedModelRunner._qkv(self, w, x, cos, sin)


class UnsteadyFlopsPaged(PagedEngine):
    """Projects Q, K and V a second time in every other round (work that depends on earlier calls): the
    same tokens and scheduler counters, and a flops count that differs between identical rounds."""

    name = "paged"
    runner_class = UnsteadyFlopsRunner

    def generate(self, requests):
        self.runner.twice = not self.runner.twice
        return super().generate(requests)


# --- plug-in variants, public protocol only ----------------------------------------------------


class _GreedyLoop:
    """A correct greedy loop on the HF forward; each variant breaks one thing."""

    name = "greedy-loop-control"

    def __init__(self, loaded: LoadedModel, config: EngineConfig) -> None:
        self.model, self.device = loaded.model, loaded.device
        self.cache_keyword = cache_keyword(self.model)

    def _prompt(self, prompt_ids):
        return list(prompt_ids)

    def _cache(self, request_id: int) -> DynamicCache:
        return DynamicCache(config=self.model.config)

    def _next(self, ids: list[int], cache: DynamicCache) -> int:
        x = torch.tensor([ids], device=self.device)
        return int(self.model(input_ids=x, **{self.cache_keyword: cache}, use_cache=True).logits[0, -1].argmax())

    def _step(self, tokens: list[int], cache: DynamicCache) -> int:
        return self._next(tokens[-1:], cache)

    @torch.inference_mode()
    def generate(self, requests) -> GenerateResult:
        start = now(self.device)
        outputs = []
        for req in requests:
            out = RequestOutput(req.request_id, len(req.prompt_ids), arrival_s=start)
            cache = self._cache(req.request_id)
            out.token_ids.append(self._next(self._prompt(req.prompt_ids), cache))
            out.first_token_s = now(self.device)
            while len(out.token_ids) < req.max_new_tokens:
                out.token_ids.append(self._step(out.token_ids, cache))
            out.finish_s = now(self.device)
            outputs.append(out)
        return GenerateResult(outputs, now(self.device) - start)


class DropsPromptHead(_GreedyLoop):
    name = "mutant-drops-prompt-head"

    def _prompt(self, prompt_ids):
        return list(prompt_ids[-12:])  # a truncation bug: only the prompt's last 12 tokens are read


class DriftsAfter16(_GreedyLoop):
    """Right for 16 tokens; then its cache "fills" and it restarts from the last 16 tokens only."""

    name = "mutant-drifts-after-16"

    def _step(self, tokens, cache):
        if len(tokens) >= 16:
            return self._next(tokens[-16:], DynamicCache(config=self.model.config))
        return super()._step(tokens, cache)


class StaleAcrossRounds(_GreedyLoop):
    """Keeps each request id's KV cache from one generate call to the next and appends to it: right
    the first time it sees a request id, wrong every time after. A one-shot probe cannot see it."""

    name = "mutant-stale-across-rounds"

    def __init__(self, loaded, config) -> None:
        super().__init__(loaded, config)
        self._caches: dict[int, DynamicCache] = {}

    def _cache(self, request_id):
        return self._caches.setdefault(request_id, DynamicCache(config=self.model.config))


PLUGIN_MUTANTS = [DropsPromptHead, DriftsAfter16, StaleAcrossRounds]


def mutant_cache(model: str, dtype: str = "float32", device: str = "cpu", kv_cache_mem: float = 64 * 2**20):
    """The engine cache of a suite run with every mutant (and the correct _GreedyLoop) registered, as
    --perf-engine-module would register them."""
    from harness.bench import PerfSession
    from harness.engines.registry import engine_sources
    from harness.settings import PerfOptions

    modules = [f"mutants:{cls.__name__}" for cls in [*PAGED_MUTANTS, *PLUGIN_MUTANTS, _GreedyLoop]]
    options = PerfOptions(
        models=(model,), device=device, dtype=dtype, engine_modules=tuple(modules), kv_cache_mem=kv_cache_mem
    )
    return PerfSession(options, engine_sources=engine_sources(modules)).cache


def suite_refusal(cache, engine: str, batch_size: int = 4, prompt_len: int = 32) -> str | None:
    """What the suite says of an engine before timing (the probe) or after it (two timed rounds of
    a batching case), called as the benchmark cases call it (harness/bench.py)."""
    from harness.cases import Case

    model = cache.options.models[0]
    problem = cache.parity_problem(Case("generate", model, engine))
    if problem:
        return problem
    case = Case("batching", model, engine, batch_size=batch_size, prompt_len=prompt_len, new_tokens=32)
    requests = cache.requests(case)
    return cache.check_rounds(case, requests, [cache.engine(case).generate(requests) for _ in range(2)])
