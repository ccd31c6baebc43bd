"""A complete engine plug-in: greedy decoding on transformers' KV cache, one request at a time.

Run it through the suite:
    pytest perf_tests --perf-engine-module examples.greedy_loop_engine:GreedyLoopEngine --perf-engines greedy-loop
"""

import torch
from transformers import DynamicCache

from harness.engines import EngineConfig, GenerateResult, RequestOutput
from harness.engines.hf_common import cache_keyword
from harness.models import LoadedModel
from harness.timing import now


class GreedyLoopEngine:
    name = "greedy-loop"

    def __init__(self, loaded: LoadedModel, config: EngineConfig) -> None:
        self.model, self.device = loaded.model, loaded.device  # built once, outside the timed region

    @torch.inference_mode()
    def generate(self, requests) -> GenerateResult:
        start = now(self.device)  # now() synchronises the device before reading the clock
        outputs, keyword = [], cache_keyword(self.model)
        for req in requests:
            out = RequestOutput(req.request_id, len(req.prompt_ids), arrival_s=start)
            cache = DynamicCache(config=self.model.config)
            ids = torch.tensor([req.prompt_ids], device=self.device)
            for _ in range(req.max_new_tokens):  # ignore_eos: exactly max_new_tokens tokens
                logits = self.model(input_ids=ids, **{keyword: cache}, use_cache=True).logits
                ids = logits[:, -1:].argmax(dim=-1)
                out.token_ids.append(int(ids))
                out.first_token_s = out.first_token_s or now(self.device)
            out.finish_s = now(self.device)
            outputs.append(out)
        return GenerateResult(outputs, now(self.device) - start)
