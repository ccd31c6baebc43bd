"""Models and engines, built once outside any timed region, and the output check of each engine.

One model is in memory at a time: switching models frees the last one, its engines and its HF
reference (the engines' parity results stay: they hold for this seed). An engine is checked against
HF greedy on the probe workload before its first timed case (parity_problem), and every round of its
generate cases afterwards (check_rounds).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from harness import roofline
from harness.cases import Case, CaseKind, build_cases, get_kind
from harness.correctness import OutputChecker
from harness.correctness.store import CheckStore, model_key
from harness.engines import EngineSource, GenerateResult, load_engine_class
from harness.models import LoadedModel, load_model, model_for
from harness.settings import PerfOptions
from harness.specs import ModelSpec, get_spec
from harness.text_workloads import tokenizer_at
from harness.workloads import WORKLOADS, Request


class EngineCache:
    def __init__(
        self, options: PerfOptions, sources: dict[str, EngineSource], device: torch.device, dtype: str
    ) -> None:
        self.options, self.sources, self.device, self.dtype = options, sources, device, dtype
        self._model: tuple[str, LoadedModel] | None = None
        self._engines: dict[tuple[str, str, int | None, float], object] = {}
        self._parity: dict[tuple[str, str], str | None] = {}
        self._checker: OutputChecker | None = None
        self.check_seconds = 0.0  # what the output checks of models already let go have cost

    # --- models --------------------------------------------------------------------------------
    def model_names(self) -> list[str]:
        if self.options.model_path:
            return [ModelSpec.from_pretrained(self.options.model_path).name]
        for name in self.options.models:
            get_spec(name)  # unknown names fail here, listing the valid ones
        return list(self.options.models)

    def model(self, name: str) -> LoadedModel:
        if self._model is None or self._model[0] != name:
            parity = dict(self._parity)  # keyed by (model, engine) on this session's seed: still true
            self.close()
            self._parity = parity
            if self.options.model_path:
                loaded = load_model(self.options.model_path, dtype=self.dtype, device=self.device)
            else:
                loaded = model_for(get_spec(name), dtype=self.dtype, device=self.device, seed=self.options.seed)
            self._model = (name, loaded)
        return self._model[1]

    # --- engines -------------------------------------------------------------------------------
    def engine_class(self, name: str) -> type:
        return load_engine_class(name, self.sources)

    def engine_ok(self, name: str, kind: CaseKind) -> bool:
        """Step kinds need the engine's own `<kind>_case` method; every engine can run the others."""
        return not kind.step or hasattr(self.engine_class(name), f"{kind.name}_case")

    def unavailable_reason(self, name: str) -> str | None:
        return self.engine_class(name).unavailable_reason(self.device)

    def cases(self, kind: str) -> list[Case]:
        """The cases of one kind this run's options ask for (the plugin's parametrisation, the A/B worker's list)."""
        opts = self.options
        return build_cases(
            kind,
            opts.tier,
            self.model_names(),
            list(opts.engines) if opts.engines else None,
            list(opts.batch_sizes) if opts.batch_sizes else None,
            self.engine_ok,
            opts.loads(),
            list(opts.workloads) if opts.workloads else None,
            [name for name, source in self.sources.items() if source.origin != "builtin"],
        )

    def load_problem(self, case: Case) -> str | None:
        """Why the engine cannot take the case's load: requests arriving over time need an engine that
        admits them as they arrive (takes_arrivals); every engine takes them all at once."""
        if case.load.at_once or self.engine_class(case.engine).takes_arrivals:
            return None
        return "it takes every request at once; --request-rate/--max-concurrency need an engine that takes arrivals"

    def requests(self, case: Case) -> list[Request]:
        loaded = self.model(case.model)
        needs = case.workload and getattr(WORKLOADS.get(case.workload), "needs_tokenizer", False)
        tokenizer = self.tokenizer(loaded) if needs else None
        return get_kind(case.kind).requests(case, loaded.spec.vocab_size, self.options.seed, tokenizer)

    def tokenizer(self, loaded: LoadedModel):
        """The model's own tokenizer: a trained spec's or --perf-model-path's checkpoint; None for seeded
        random weights, which have none."""
        return tokenizer_at(loaded.spec.path)

    def kv_bytes(self, case: Case) -> int | None:
        """KV memory for a kind compared at equal memory, when --perf-kv-cache-mem is not given: what
        static-batch reserves for the same requests (its largest batch of --perf-max-batch-size requests in
        request order, each holding the batch's padded length). The arrival times do not enter it, so
        every rate of a sweep gets the same pool and runs on one engine. Engines that size their own KV pool (paged)
        get exactly that, so their gain is what they do with the same memory: more sequences per step,
        less waste."""
        from harness.engines.static_batch import arrival_batches, contiguous_kv_tokens

        if not get_kind(case.kind).equal_kv_memory or self.options.kv_cache_mem is not None:
            return None
        loaded = self.model(case.model)
        tokens = contiguous_kv_tokens(arrival_batches(self.requests(case), self.options.max_batch_size))
        return tokens * roofline.kv_bytes_per_token(loaded.spec, loaded.dtype)

    def engine_keys(self) -> list[tuple[str, str, int | None, float]]:
        return list(self._engines)

    def release_engines(self, keys) -> None:
        """Close and forget these engines (the next case that needs one builds it again)."""
        for key in keys:
            self._engines.pop(key).close()

    def engine(self, case: Case):
        """The case's engine, built once per (model, engine, KV memory, injected slowdown)."""
        kv_bytes = self.kv_bytes(case)
        slowdown = self.options.slowdown_for(f"test_{case.kind}[{case.id}]")
        key = (case.model, case.engine, kv_bytes, slowdown)
        if key not in self._engines:
            config = self.options.engine_config(slowdown=slowdown)
            if kv_bytes is not None:
                config = dataclasses.replace(config, kv_cache_mem=float(kv_bytes))
            self._engines[key] = self.engine_class(case.engine)(self.model(case.model), config)
        return self._engines[key]

    # --- the output check ----------------------------------------------------------------------
    def checker(self, model_name: str) -> OutputChecker:
        loaded = self.model(model_name)
        if self._checker is None or self._checker.reference.loaded is not loaded:
            self._checker = OutputChecker(loaded, CheckStore(model_key(loaded)))
        return self._checker

    def check_seconds_total(self) -> float:
        return self.check_seconds + (self._checker.seconds if self._checker else 0.0)

    def parity_problem(self, case: Case) -> str | None:
        """None when the engine's greedy tokens (and logits, where it gives them) on the probe workload
        equal HF's; else the first difference, described. Checked once per (model, engine), before any
        of its cases is timed."""
        key = (case.model, case.engine)
        if not self.options.parity:
            return None
        if key not in self._parity:
            self._parity[key] = self.checker(case.model).probe_problem(case.engine, self.engine(case))
        return self._parity[key]

    def check_rounds(self, case: Case, requests: Sequence[Request], rounds: list[GenerateResult]) -> str | None:
        """Every round the case ran (warm-up and timed) against HF greedy for the same requests."""
        if not self.options.parity:
            return None
        checker = self.checker(case.model)
        for i, result in enumerate(rounds):
            where = f"round {i + 1} of {len(rounds)} of {case.id}"
            problem = checker.tokens_problem(case.engine, requests, result.outputs, where)
            if problem:
                return problem
        return None

    def close(self) -> None:
        """Release engines (threads, pools: transformers-cb's manager), the model and its reference."""
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
        self._parity.clear()
        if self._checker is not None:
            self.check_seconds += self._checker.seconds
            self._checker = None
        self._model = None
