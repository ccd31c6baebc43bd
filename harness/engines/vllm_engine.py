"""`vllm`: vLLM's offline LLM engine, when vllm is installed and a CUDA GPU is present.

Untested in this repository's CI (no GPU, no vllm there): its cases are skipped with the reason
everywhere else. Spec-built models are saved to a temporary folder first (vLLM loads from disk);
no tokenizer is needed (token ids in, token ids out).
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Sequence

import torch

from harness.engines.base import EngineConfig, GenerateResult, RequestOutput
from harness.models import LoadedModel
from harness.timing import now
from harness.workloads import Request


class VLLMEngine:
    name = "vllm"
    own_forward = True  # its forward is its own code, not HF's: the gate's reference forward can correct it

    @staticmethod
    def unavailable_reason(device: torch.device) -> str | None:
        if importlib.util.find_spec("vllm") is None:
            return "vllm is not installed"
        if device.type != "cuda":
            return f"vllm needs a CUDA GPU; this run is on {device}"
        return None

    def __init__(self, loaded: LoadedModel, config: EngineConfig) -> None:
        from vllm import LLM

        self.config, self.device = config, loaded.device
        path = loaded.spec.path
        if path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="llm-perf-vllm-")
            loaded.model.save_pretrained(self._tmp.name)
            path = self._tmp.name
        self.llm = LLM(
            model=path,
            dtype=loaded.dtype,
            skip_tokenizer_init=True,
            max_num_seqs=config.max_num_seqs,
            gpu_memory_utilization=0.5,
            seed=0,
        )

    def generate(self, requests: Sequence[Request]) -> GenerateResult:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r in requests]
        params = [
            SamplingParams(
                temperature=0.0, max_tokens=r.max_new_tokens, ignore_eos=self.config.ignore_eos, detokenize=False
            )
            for r in requests
        ]
        start = now(self.device)
        results = self.llm.generate(prompts, params, use_tqdm=False)
        finish = now(self.device)
        outputs = []
        for req, res in zip(requests, results, strict=True):
            metrics = getattr(res, "metrics", None)
            first = getattr(metrics, "first_token_time", None)
            outputs.append(
                RequestOutput(
                    req.request_id,
                    len(req.prompt_ids),
                    list(res.outputs[0].token_ids),
                    arrival_s=start,
                    first_token_s=first if first else finish,
                    finish_s=finish,
                )
            )
        return GenerateResult(outputs, finish - start)
