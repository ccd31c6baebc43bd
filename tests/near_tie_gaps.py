"""How far below HF's best each engine's tokens score, shipped engines and the mutants alike: the
figures behind the low-precision margins (harness/correctness/calibrate.py). Not a test; run it:

    python tests/near_tie_gaps.py DEVICE DTYPE [MODEL] [ENGINE,ENGINE,...]
    python tests/near_tie_gaps.py cuda bfloat16 small

For each engine: the largest (HF's best logit - the engine token's logit) / max(1, |best|) over the
probe workload and a batching case (8 requests, 64-token prompts, 32 new tokens), with HF's one
forward in the same dtype as the judge. A correct engine's figure is its rounding; a broken one's is
the size of its bug. The margin must sit between the two.
"""

import sys

import mutants
import torch

from harness.cases import Case
from harness.correctness.calibrate import relative_token_gaps
from harness.correctness.probe import probe_requests

SHIPPED = ["hf-generate", "manual", "static-batch", "paged"]
MUTANTS = [*mutants.PAGED_MUTANTS, *mutants.PLUGIN_MUTANTS]


def largest_gap(cache, model: str, engine: str) -> float:
    reference, worst = cache.checker(model).reference, 0.0
    probe = Case("generate", model, engine)
    batch = Case("batching", model, engine, batch_size=8, prompt_len=64, new_tokens=32)
    for case, requests in ((probe, probe_requests(cache.model(model).spec.vocab_size)), (batch, cache.requests(batch))):
        for req, out in zip(requests, cache.engine(case).generate(requests).outputs, strict=True):
            if len(out.token_ids) != req.max_new_tokens:
                return float("inf")
            logits = reference.teacher_forced_logits(req, list(out.token_ids))
            worst = max(worst, float(relative_token_gaps(logits, list(out.token_ids)).max()))
    return worst


def main(argv: list[str]) -> None:
    device, dtype = argv[0], argv[1]
    model = argv[2] if len(argv) > 2 else "small"
    engines = argv[3].split(",") if len(argv) > 3 else [*SHIPPED, *(m.name for m in MUTANTS)]
    torch.backends.cuda.matmul.allow_tf32 = False
    cache = mutants.mutant_cache(model, dtype, device, kv_cache_mem=256 << 20)
    for engine in engines:
        print(f"{device} {dtype} {model} {engine:32s} largest gap {largest_gap(cache, model, engine):.4g}", flush=True)


if __name__ == "__main__":  # run as a script, tests/ is on sys.path (mutants)
    main(sys.argv[1:])
