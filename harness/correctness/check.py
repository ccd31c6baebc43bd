"""Checks of an engine's outputs against HF: tokens for every engine, logits for those that can
give them. Pure comparison; HF's logits come from harness/correctness/reference.py.

Tokens: an engine's output is HF greedy exactly when every token it produced is HF's best choice
given the prompt and the engine's own earlier tokens (greedy decoding is a function of the prefix,
so by induction the whole output is HF's). That is checked with one causal HF forward over prompt +
output per request (teacher forcing), far cheaper than generating HF's tokens one step at a time,
and it names the first token where the engine left HF's path. Near-ties: two implementations that
sum in a different order may pick differently where the top two logits are closer than their
rounding (vLLM's own tests allow this with log-probabilities). A token is accepted when it scored
within TOKEN_MARGIN x max(1, |HF's best logit|) of HF's best logit there; the tokens after it are
checked the same way, on the engine's own prefix. On mixed64 with `small` in float32, HF's own
batched generate (static-batch) and paged both take the runner-up at one token of 8,734, where HF's
top two logits are 2.3e-5 apart.

Logits: teacher-forced logits must equal HF's within LOGIT_TOLERANCE x max(1, largest |logit|).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from harness.engines.base import RequestOutput
from harness.workloads import Request

# Largest gap between HF's best logit and the engine's token accepted as a near-tie, relative to the
# size of the logits (x max(1, |HF's best logit|)), like the logit tolerance below. In bfloat16 and
# float16 these are floors: the checker widens both to the model's own measured rounding (calibrate.py).
TOKEN_MARGIN = {"float32": 5e-4, "bfloat16": 0.05, "float16": 0.01}
# Tolerance of teacher-forced logits against HF's, x max(1, largest |logit| of the row). float32:
# HF's own cached decode loop (the `manual` engine) differs from HF's one-forward logits by up to
# 3.1e-4 on qwen3-0.6b (28 layers; logits up to ~3), 1e-5 or less on tiny and small.
LOGIT_TOLERANCE = {"float32": 1e-3, "bfloat16": 0.1, "float16": 0.02}

# (request, tokens) -> (len(tokens), vocab) logits: row p predicts tokens[p] from the prompt and tokens[:p]
TeacherForced = Callable[[Request, Sequence[int]], torch.Tensor]


@dataclass(frozen=True)
class Mismatch:
    """The first place an engine's output departs from the reference."""

    request_index: int
    request_id: int
    position: int
    expected: tuple[int, ...]  # HF's choice at `position`
    got: tuple[int, ...]
    expected_len: int
    got_len: int
    detail: str = ""

    def describe(self, engine: str, where: str) -> str:
        text = (
            f"engine {engine} differs from HF greedy on {where}: request {self.request_index} "
            f"(id {self.request_id}) at token {self.position}: expected {list(self.expected)}, got "
            f"{list(self.got)} (the engine returned {self.got_len} of {self.expected_len} tokens)"
        )
        return text + (f"; {self.detail}" if self.detail else "")


def verify_tokens(
    requests: Sequence[Request],
    outputs: Sequence[RequestOutput],
    teacher_forced: TeacherForced,
    margin: float = 0.0,
    near_ties: list[tuple[int, int, float]] | None = None,
    vocab_size: int | None = None,
) -> Mismatch | None:
    """None when every request's output is HF greedy's (near-ties within `margin` allowed, and appended
    to `near_ties` as (request index, position, gap)); else where it first is not. A token outside
    [0, vocab_size) (a server's placeholder for ids it did not send) is a mismatch, not a crash."""
    if len(outputs) != len(requests):
        return Mismatch(
            -1, -1, 0, (), (), len(requests), len(outputs), f"{len(outputs)} outputs for {len(requests)} requests"
        )
    for i, (req, out) in enumerate(zip(requests, outputs, strict=True)):
        have, want_len = list(out.token_ids), req.max_new_tokens
        if out.error is not None:
            return Mismatch(i, req.request_id, 0, (), (), want_len, 0, f"the engine failed it: {out.error}")
        if len(have) != want_len:
            pos = min(len(have), want_len)
            return Mismatch(i, req.request_id, pos, (), tuple(have[pos : pos + 5]), want_len, len(have), "wrong length")
        bad = [p for p, t in enumerate(have) if t < 0 or (vocab_size is not None and t >= vocab_size)]
        if bad:
            pos, detail = bad[0], f"token {have[bad[0]]} is outside the vocabulary (no token ids? see --perf-no-parity)"
            return Mismatch(i, req.request_id, pos, (), tuple(have[pos : pos + 5]), want_len, len(have), detail)
        logits = teacher_forced(req, have)  # (n, vocab): row p is HF's view of position p given have[:p]
        best = logits.max(dim=-1)
        gaps = best.values - logits.gather(1, torch.tensor(have, dtype=torch.long)[:, None])[:, 0]
        allowed = margin * best.values.abs().clamp(min=1.0)
        for pos in (gaps > 0).nonzero()[:, 0].tolist():
            gap = float(gaps[pos])
            if gap > float(allowed[pos]):
                return Mismatch(
                    i,
                    req.request_id,
                    pos,
                    (int(best.indices[pos]),),
                    tuple(have[pos : pos + 5]),
                    want_len,
                    len(have),
                    f"HF's choice after the engine's first {pos} tokens; the engine's token scored {gap:.3g} below "
                    f"it (near-tie margin {float(allowed[pos]):.2g})",
                )
            if near_ties is not None:
                near_ties.append((i, pos, gap))
    return None


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
