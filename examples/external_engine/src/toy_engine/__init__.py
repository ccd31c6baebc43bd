"""toy-greedy: greedy decoding, one request at a time, on transformers' KV cache.

An engine is a class with a `name`, a constructor taking (loaded model, EngineConfig) and
`generate(requests) -> GenerateResult`; everything else is optional (docs/engines.md in the suite).
The suite builds it once, outside any timing, checks its tokens against HF greedy and times
`generate` on every round of the case."""

import torch
from transformers import DynamicCache

from harness.engines import GenerateResult, RequestOutput
from harness.engines.hf_common import cache_keyword
from harness.timing import now

EXTRA_FORWARD_EVERY = 0  # the template's A/B demo: a forward thrown away every n tokens (0: never)


class ToyGreedyEngine:
    name = "toy-greedy"

    def __init__(self, loaded, config) -> None:
        self.model, self.device = loaded.model, loaded.device
        self.cache_keyword = cache_keyword(self.model)  # `cache` on newer transformers, `past_key_values` before

    @torch.inference_mode()
    def generate(self, requests) -> GenerateResult:
        start = now(self.device)  # now() waits for the device before reading the clock
        outputs = []
        for req in requests:
            out = RequestOutput(req.request_id, len(req.prompt_ids), arrival_s=start)
            cache = DynamicCache(config=self.model.config)
            ids = torch.tensor([req.prompt_ids], device=self.device)
            for step in range(req.max_new_tokens):  # the suite's fixed-length workloads: ignore EOS
                logits = self.model(input_ids=ids, **{self.cache_keyword: cache}, use_cache=True).logits
                if EXTRA_FORWARD_EVERY and step % EXTRA_FORWARD_EVERY == 0:
                    self.model(input_ids=ids[:, -1:], use_cache=False)
                ids = logits[:, -1:].argmax(dim=-1)
                out.token_ids.append(int(ids))
                out.first_token_s = out.first_token_s or now(self.device)
            out.finish_s = now(self.device)
            outputs.append(out)
        return GenerateResult(outputs, now(self.device) - start)
