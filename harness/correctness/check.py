"""Checks of an engine's outputs against the HF reference: tokens for every engine, logits for those
that can give them. Pure comparison; the references come from harness/correctness/reference.py.

Tokens: equal to HF greedy, token for token, except at a genuine near-tie. Two implementations that
sum in a different order may pick differently where the top two logits are closer than their
rounding (vLLM's own tests allow this with log-probabilities): where the engine's token scored within
TOKEN_MARGIN of the reference's best logit at the first difference, the difference is accepted, and
the rest of that request is then checked against HF's logits on the engine's own prefix (teacher
forcing), so every token is still checked. float32's margin is 1e-4: on mixed64 with `small`, HF's
own batched generate (static-batch) and paged both differ from HF's one-at-a-time generate at one
token of 8,734, where the reference's top two logits are 2.3e-5 apart.

Logits: teacher-forced logits must equal HF's within LOGIT_TOLERANCE x max(1, largest |logit|).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from harness.correctness.reference import ReferenceTokens
from harness.engines.base import RequestOutput
from harness.workloads import Request

# Largest logit gap (reference best minus the engine's token) accepted as a near-tie. float32 is exact.
TOKEN_MARGIN = {"float32": 1e-4, "bfloat16": 0.25, "float16": 0.05}
# Relative tolerance of teacher-forced logits against HF's (x max(1, largest |logit|) of the row).
LOGIT_TOLERANCE = {"float32": 1e-4, "bfloat16": 0.1, "float16": 0.02}

# (request, tokens, start) -> first position >= start whose token is not HF's choice (within the margin)
# given the engine's own earlier tokens, or None
VerifyRest = Callable[[Request, Sequence[int], int], int | None]


@dataclass(frozen=True)
class Mismatch:
    """The first place an engine's output departs from the reference."""

    request_index: int
    request_id: int
    position: int
    expected: tuple[int, ...]  # the reference's tokens from `position` (a few)
    got: tuple[int, ...]
    expected_len: int
    got_len: int
    detail: str = ""

    def describe(self, engine: str, where: str) -> str:
        text = (
            f"engine {engine} differs from HF greedy on {where}: request {self.request_index} "
            f"(id {self.request_id}) at token {self.position}: expected {list(self.expected)} "
            f"(of {self.expected_len} tokens), got {list(self.got)} (of {self.got_len})"
        )
        return text + (f"; {self.detail}" if self.detail else "")


def _first_difference(want: Sequence[int], have: Sequence[int]) -> int | None:
    for pos, (a, b) in enumerate(zip(want, have, strict=False)):
        if a != b:
            return pos
    return None if len(want) == len(have) else min(len(want), len(have))


def check_tokens(
    requests: Sequence[Request],
    outputs: Sequence[RequestOutput],
    references: Sequence[ReferenceTokens],
    margin: float = 0.0,
    verify_rest: VerifyRest | None = None,
    near_ties: list[tuple[int, int, float]] | None = None,
) -> Mismatch | None:
    """None when every request's tokens are HF's greedy tokens (near-ties within `margin` allowed, and
    appended to `near_ties` as (request index, position, gap))."""
    if len(outputs) != len(requests):
        return Mismatch(
            -1, -1, 0, (), (), len(requests), len(outputs), f"{len(outputs)} outputs for {len(requests)} requests"
        )
    for i, (req, out, ref) in enumerate(zip(requests, outputs, references, strict=True)):
        want, have = ref.tokens[: req.max_new_tokens], out.token_ids
        pos = _first_difference(want, have)
        if out.error is not None:
            return Mismatch(i, req.request_id, 0, want[:5], (), len(want), 0, f"the engine failed it: {out.error}")
        if pos is None:
            continue
        mismatch = Mismatch(
            i, req.request_id, pos, tuple(want[pos : pos + 5]), tuple(have[pos : pos + 5]), len(want), len(have)
        )
        if len(have) != len(want) or pos >= len(want):
            return mismatch
        gap = ref.gap(pos, have[pos])
        if gap is None or gap > margin or verify_rest is None:
            why = (
                "not among the reference's top choices"
                if gap is None
                else f"{gap:.3g} below the reference's best logit"
            )
            return Mismatch(**{**mismatch.__dict__, "detail": f"the engine's token scored {why} (margin {margin})"})
        if near_ties is not None:
            near_ties.append((i, pos, gap))
        later = verify_rest(req, have, pos + 1)  # a near-tie: the rest must follow HF on the engine's own prefix
        if later is not None:
            return Mismatch(
                i,
                req.request_id,
                later,
                (),
                tuple(have[later : later + 5]),
                len(want),
                len(have),
                f"after an accepted near-tie at token {pos}, token {later} is not HF's choice on the engine's own "
                "prefix",
            )
    return None


def verify_rest_with(teacher_forced: Callable[[Request, Sequence[int]], torch.Tensor], margin: float) -> VerifyRest:
    """A VerifyRest from a teacher-forced logits function (the HF reference's)."""

    def verify(req: Request, tokens: Sequence[int], start: int) -> int | None:
        logits = teacher_forced(req, tokens)  # (n, vocab): row j predicts tokens[j]
        chosen = logits.gather(1, torch.tensor(tokens, dtype=torch.long)[:, None])[:, 0]
        short = (logits.max(dim=-1).values - chosen > margin).nonzero()
        later = [int(p) for p in short[:, 0] if int(p) >= start]
        return later[0] if later else None

    return verify


@dataclass(frozen=True)
class LogitMismatch:
    request_index: int
    position: int
    max_abs_diff: float
    tolerance: float

    def describe(self, engine: str) -> str:
        return (
            f"engine {engine}'s teacher-forced logits differ from HF's: request {self.request_index}, token "
            f"{self.position}: max |difference| {self.max_abs_diff:.3g} > tolerance {self.tolerance:.3g}"
        )


def check_logits(got: Sequence[torch.Tensor], want: Sequence[torch.Tensor], tolerance: float) -> LogitMismatch | None:
    """Each request's (n, vocab) logits within tolerance x max(1, largest |reference logit| of the row)."""
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if g.shape != w.shape:
            return LogitMismatch(i, 0, float("inf"), tolerance)
        diff = (g.float() - w).abs().amax(dim=-1)  # (n,)
        allowed = tolerance * w.abs().amax(dim=-1).clamp(min=1.0)
        bad = (diff > allowed).nonzero()
        if len(bad):
            pos = int(bad[0, 0])
            return LogitMismatch(i, pos, float(diff[pos]), float(allowed[pos]))
    return None
