"""The output check's rules on hand-made references: exact tokens, near-ties within the dtype's margin,
teacher-forced verification after a near-tie, and where a mismatch is reported."""

import pytest
import torch

from harness.correctness.check import TOKEN_MARGIN, check_logits, check_tokens
from harness.correctness.reference import TOP_K, GreedyReference, ReferenceTokens
from harness.engines.base import RequestOutput
from harness.workloads import Request


def ref(tokens, gaps):
    """A reference whose step i had `tokens[i]` best and a runner-up (token + 1000) `gaps[i]` below it."""
    ids = torch.tensor([[t, t + 1000] + [9000 + j for j in range(TOP_K - 2)] for t in tokens])
    logits = torch.tensor([[5.0, 5.0 - g] + [0.0] * (TOP_K - 2) for g in gaps])
    return ReferenceTokens(tuple(tokens), ids, logits)


def out(tokens, error=None):
    return RequestOutput(0, 3, list(tokens), error=error)


REQ = Request((1, 2, 3), 4)


def test_equal_tokens_pass_and_a_wrong_token_is_located():
    r = ref([10, 11, 12, 13], [1.0] * 4)
    assert check_tokens([REQ], [out([10, 11, 12, 13])], [r]) is None
    m = check_tokens([REQ], [out([10, 11, 99, 13])], [r])
    assert (m.request_index, m.position, m.expected[0], m.got[0]) == (0, 2, 12, 99)
    assert "not among the reference's top choices" in m.detail


def test_wrong_lengths_and_failed_requests_are_mismatches():
    r = ref([10, 11, 12, 13], [1.0] * 4)
    assert check_tokens([REQ], [out([10, 11, 12])], [r]).position == 3
    assert "the engine failed it: too big" in check_tokens([REQ], [out([], error="too big")], [r]).detail
    assert "0 outputs for 1 requests" in check_tokens([REQ], [], [r]).detail


def test_a_near_tie_is_accepted_only_within_the_margin_and_the_rest_is_verified():
    r = ref([10, 11, 12, 13], [1.0, 5e-5, 1.0, 1.0])  # step 1 is a float32-sized near-tie
    engine = out([10, 1011, 40, 41])  # picked the runner-up at step 1, then went its own way
    verified = []

    def verify_ok(req, tokens, start):
        verified.append(start)
        return None

    ties = []
    assert check_tokens([REQ], [engine], [r], TOKEN_MARGIN["float32"], verify_ok, ties) is None
    assert verified == [2]
    assert ties == [(0, 1, pytest.approx(5e-5, rel=0.02))]  # float32 rounding of 5 - 5e-5
    assert check_tokens([REQ], [engine], [r], 1e-5, verify_ok) is not None  # a tighter margin refuses it
    m = check_tokens([REQ], [engine], [r], TOKEN_MARGIN["float32"], lambda req, tokens, start: 3)
    assert m.position == 3
    assert "after an accepted near-tie at token 1" in m.detail


def test_verification_after_a_near_tie_uses_hf_logits_on_the_engines_own_prefix(tiny):
    from harness.correctness.check import verify_rest_with

    reference = GreedyReference(tiny)
    req = Request(tuple(range(5, 25)), 12)
    good = list(reference.for_request(req).tokens)
    verify = verify_rest_with(reference.teacher_forced_logits, TOKEN_MARGIN["float32"])
    assert verify(req, good, 0) is None
    bad = good[:6] + [(good[6] + 1) % tiny.spec.vocab_size] + good[7:]
    assert verify(req, bad, 0) == 6


def test_logits_within_tolerance_pass_and_the_first_bad_row_is_named():
    want = [torch.zeros(4, 10), torch.full((3, 10), 10.0)]
    assert check_logits([w + 1e-6 for w in want], want, 1e-4) is None
    got = [want[0], want[1].clone()]
    got[1][2, 7] += 0.5
    m = check_logits(got, want, 1e-4)
    assert (m.request_index, m.position) == (1, 2)
    assert m.tolerance == pytest.approx(1e-4 * 10.0)  # relative to the row's largest |logit|
