"""Near-tie margins sized to the model's own rounding, on this machine.

In float32 two correct implementations of one model differ by rounding far below any logit gap that
matters, and the fixed margins (check.py) usually hold; but not on every CPU: on an Intel Xeon the
seeded qwen3-0.6b's teacher-forced logits differed from HF's by 0.00323 against a fixed tolerance of
0.00305 (1e-3 x its largest |logit|), and a correct engine was refused. In bfloat16 fixed margins do
not hold at all: a seeded 28-layer model with sharp attention (qwen3-0.6b's shape) amplifies
bfloat16 rounding until HF's own cached decode loop takes a token a whole logit below HF's
one-forward best (measured: 1.0 with logits up to ~3, CPU and H200 alike), while on the 4-layer `small`
the same disagreement is 0.07-0.10 x |logit|. No fixed margin fits both. So, in every dtype, the
checker first measures how far HF disagrees with itself on the probe workload, through two HF paths
that must agree up to rounding: HF's cached decode loop (the `manual` engine) generating the probe's
tokens greedily, keeping the logits it picked them from, against HF's one forward over prompt and
tokens (teacher forcing), in three figures:

- tokens: how far below the one forward's best the loop's own tokens scored;
- order: at each position, the spread of (cached - one forward) over the one forward's top TOP_K
  tokens. A correct engine takes a runner-up only where its rounding moved the difference between
  that token and the best by more than their gap, and that movement is what this measures;
- values: the largest difference over every logit of every position.

It sets the token margin to CALIBRATION_FACTOR x the larger of the token gap and the order figure,
and the logit tolerance to CALIBRATION_FACTOR x the larger of the token gap and the values figure
(the logits check compares every logit), never below the fixed margins, which stay the floor. The
factor leaves room for engines whose paths round differently again from HF's cached loop.

The token margin was once twice the values figure, which bounds the order figure by the triangle
inequality but loosely: on the trained smollm2-135m in bfloat16 on the AMD EPYC, order 0.016 against
values 0.026, and on the Intel Xeon the looser margin (0.071) let `mutant-drifts-after-16` through
(its tokens scored up to 0.062 below HF's best). Measured on an H200 (bfloat16, `small`, values):
HF generate's probe tokens 0.014, the cached loop's logits 0.097, while hf-generate, manual,
static-batch and paged took tokens up to 0.10 below HF's best on the probe and a batching case, so a
margin from the token gap alone (0.05 floor) refused them all. Those tokens were HF generate's
batched greedy tokens (padded), a third path; on qwen3-0.6b on 2 cores that generate cost 17 s of the
calibration's 33 s, and the gap it gave never set a margin, so the loop's own tokens replaced it.
A broken engine still has to land within the margin of HF's best at every token: every mutant in
tests/mutants.py took a token 1.05 or more below it on `small` (CPU and H200); tests/test_mutants.py
holds them to it in bfloat16 on the CPU, tests/test_cuda.py on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.correctness.reference import TOP_K

CALIBRATION_FACTOR = 2.0
# A margin wider than this could let a broken engine through (the mutants' smallest gap on `small` is
# 1.05, a factor of 2 above it), so the check refuses to vouch instead: in bfloat16 the seeded
# qwen3-0.6b measures 0.74 (logits; CPU), a margin of 1.48.
MAX_MARGIN = 0.5


@dataclass(frozen=True)
class SelfDisagreement:
    """The largest disagreement of HF with itself on the probe, relative to max(1, |best logit|)."""

    token_gap: float  # how far below HF's one-forward best the cached loop's own tokens scored
    logit_diff: float  # HF's cached loop's logits against the one forward's, over the whole vocabulary
    order_shift: float  # how far the cached loop moved the one forward's top TOP_K logits against each other

    @property
    def token_noise(self) -> float:
        """What the token margin is sized to (CALIBRATION_FACTOR x it)."""
        return max(self.token_gap, self.order_shift)

    @property
    def logit_noise(self) -> float:
        """What the logit tolerance is sized to (CALIBRATION_FACTOR x it)."""
        return max(self.token_gap, self.logit_diff)

    def too_noisy(self, dtype: str, margin: float) -> str | None:
        """Why the check cannot vouch for any engine at this margin, or None."""
        if margin <= MAX_MARGIN:
            return None
        return (
            f"the output check cannot tell a broken engine from a correct one here: {self.describe(dtype)}, so "
            f"a correct engine may take a token {margin:.2g} x |logit| below HF's best (more than {MAX_MARGIN:g}); "
            "check in float32 (--perf-dtype float32), with a trained model (--perf-models smollm2-135m or "
            "--perf-model-path), or not at all (--perf-no-parity)"
        )

    def describe(self, dtype: str) -> str:
        return (
            f"in {dtype}, HF's own cached paths disagree with its one forward by up to {self.token_gap:.3g} "
            f"(tokens), {self.order_shift:.3g} (the order of the top {TOP_K} logits) and {self.logit_diff:.3g} "
            "(every logit) x max(1, |logit|) on the probe workload"
        )


def relative_token_gaps(logits: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """Per position, how far below the row's best logit the token scored, x 1 / max(1, |best|)."""
    best = logits.max(dim=-1).values
    got = logits.gather(1, torch.tensor(tokens, dtype=torch.long)[:, None])[:, 0]
    return (best - got) / best.abs().clamp(min=1.0)


def order_shift(got: torch.Tensor, want: torch.Tensor, k: int = TOP_K) -> float:
    """The largest spread, over positions, of (got - want) across want's top k tokens, x 1 / max(1, |best|):
    how far `got` moved the top logits against each other, which bounds how far below want's best a
    token that is best in `got` can score."""
    top = want.topk(min(k, want.shape[-1]), dim=-1).indices
    moved = got.float().gather(1, top) - want.gather(1, top)
    spread = moved.amax(dim=-1) - moved.amin(dim=-1)
    return float((spread / want.amax(dim=-1).abs().clamp(min=1.0)).max())


def hf_self_disagreement(reference, forced: dict | None = None) -> SelfDisagreement:
    """Measure, on the probe workload, how far HF's own paths disagree (see the module text). HF's
    teacher-forced logits it computed go into `forced` by (prompt, tokens), where given: the probe
    check asks for the same ones when an engine's tokens are the loop's."""
    from harness.correctness.probe import probe_for
    from harness.engines.base import EngineConfig
    from harness.engines.kept import keeping_logits
    from harness.engines.manual import ManualEngine

    loaded = reference.loaded
    requests = probe_for(loaded.spec)
    loop = ManualEngine(loaded, EngineConfig())
    with keeping_logits(loop):  # one pass of the loop gives its tokens and the logits it chose them from
        continuations = [list(o.token_ids) for o in loop.generate(requests).outputs]
        got = loop.teacher_forced_logits(requests, continuations)
    want = reference.teacher_forced_many(list(zip(requests, continuations, strict=True)))
    if forced is not None:
        forced.update(
            ((tuple(r.prompt_ids), tuple(c)), w) for r, c, w in zip(requests, continuations, want, strict=True)
        )
    token_gap = max(float(relative_token_gaps(w, c).max()) for w, c in zip(want, continuations, strict=True))
    logit_diff = max(
        float(((g.float() - w).abs().amax(dim=-1) / w.abs().amax(dim=-1).clamp(min=1.0)).max())
        for g, w in zip(got, want, strict=True)
    )
    shift = max(order_shift(g, w) for g, w in zip(got, want, strict=True))
    return SelfDisagreement(token_gap, logit_diff, shift)
