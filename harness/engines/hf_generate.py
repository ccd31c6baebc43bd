"""`hf-generate`: transformers' model.generate, one request at a time. The naive baseline."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from harness.engines.base import BaseEngine, GenerateResult, RequestOutput
from harness.engines.hf_common import StepRecorder, fill_output, generate_kwargs, trim_at_eos
from harness.engines.work import sequential_work
from harness.timing import now
from harness.workloads import Request


class HFGenerateEngine(BaseEngine):
    name = "hf-generate"
    counts_flops = True  # harness/engines/flops.py

    @torch.inference_mode()
    def generate(self, requests: Sequence[Request]) -> GenerateResult:
        start = now(self.device)
        outputs = []
        for req in requests:
            out = RequestOutput(req.request_id, len(req.prompt_ids), arrival_s=start)
            ids = torch.tensor([req.prompt_ids], dtype=torch.long, device=self.device)
            recorder = StepRecorder(self.device)
            seq = self.clock.run(
                lambda ids=ids, req=req, rec=recorder: self.model.generate(
                    ids,
                    max_new_tokens=req.max_new_tokens,
                    streamer=rec,
                    **generate_kwargs(self.config, self.eos_token_id),
                )
            )
            tokens = trim_at_eos(seq[0, ids.shape[1] :].tolist(), self.eos_token_id, self.config.ignore_eos)
            fill_output(out, tokens, recorder.step_times, now(self.device))
            outputs.append(out)
        return GenerateResult(outputs, now(self.device) - start, work=sequential_work(outputs))
