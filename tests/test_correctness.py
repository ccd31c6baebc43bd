"""The output check's rules on hand-made logits: HF's choice at every step, near-ties within the dtype's
margin, where a mismatch is reported; then on `tiny` against transformers' own generate."""

import pytest
import torch

from harness.correctness.check import TOKEN_MARGIN, check_logits, verify_tokens
from harness.correctness.reference import GreedyReference
from harness.engines.base import RequestOutput
from harness.models import build_model
from harness.specs import get_spec
from harness.workloads import Request

VOCAB = 50


def forced(gaps_at=None, best=None):
    """A teacher-forced function: at every position the engine's own token is best, except where
    gaps_at says by how much another token (best[pos], default 49) beat it."""
    gaps_at, best = gaps_at or {}, best or {}

    def logits(req, tokens):
        rows = torch.zeros(len(tokens), VOCAB)
        for p, t in enumerate(tokens):
            rows[p, t] = 5.0
            if p in gaps_at:
                rows[p, best.get(p, 49)] = 5.0 + gaps_at[p]
        return rows

    return logits


def out(tokens, error=None):
    return RequestOutput(0, 3, list(tokens), error=error)


REQ = Request((1, 2, 3), 4)


def test_an_output_that_is_hfs_choice_at_every_step_passes():
    assert verify_tokens([REQ], [out([10, 11, 12, 13])], forced()) is None


def test_the_first_token_off_hfs_path_is_located():
    m = verify_tokens([REQ], [out([10, 11, 12, 13])], forced({2: 0.7, 3: 0.9}, {2: 44}))
    assert (m.request_index, m.position, m.expected, m.got) == (0, 2, (44,), (12, 13))
    assert "0.7 below" in m.detail


def test_wrong_lengths_and_failed_requests_are_mismatches():
    assert "wrong length" in verify_tokens([REQ], [out([10, 11, 12])], forced()).detail
    assert "the engine failed it: too big" in verify_tokens([REQ], [out([], error="too big")], forced()).detail
    assert "0 outputs for 1 requests" in verify_tokens([REQ], [], forced()).detail


def test_a_near_tie_is_accepted_only_within_the_margin():
    ties = []
    logits = forced({1: 5e-5})  # a float32-sized near-tie at step 1
    assert verify_tokens([REQ], [out([10, 11, 12, 13])], logits, TOKEN_MARGIN["float32"], ties) is None
    assert ties == [(0, 1, pytest.approx(5e-5, rel=0.05))]  # float32 rounding of 5 + 5e-5
    assert verify_tokens([REQ], [out([10, 11, 12, 13])], logits, 1e-6) is not None  # a tighter margin refuses it
    assert (
        verify_tokens([REQ], [out([10, 11, 12, 13])], forced({1: 5e-5, 3: 0.2}), TOKEN_MARGIN["float32"]).position == 3
    )


def test_verification_uses_hf_logits_on_the_engines_own_prefix(tiny):
    reference = GreedyReference(tiny)
    req = Request(tuple(range(5, 25)), 12)
    good = list(reference.for_request(req).tokens)  # transformers' own generate
    assert verify_tokens([req], [out(good)], reference.teacher_forced_logits, TOKEN_MARGIN["float32"]) is None
    bad = good[:6] + [(good[6] + 1) % tiny.spec.vocab_size] + good[7:]
    m = verify_tokens([req], [out(bad)], reference.teacher_forced_logits, TOKEN_MARGIN["float32"])
    assert m.position == 6
    assert m.expected == (good[6],)


def test_repeated_rounds_are_verified_once_and_their_near_ties_kept(tiny):
    from harness.correctness import OutputChecker

    checker = OutputChecker(tiny)
    req = Request(tuple(range(5, 25)), 12, request_id=7)
    good = RequestOutput(7, 20, list(checker.reference.for_request(req).tokens))
    assert checker.tokens_problem("x", [req], [good], "round 1") is None
    spent = checker.seconds
    assert checker.tokens_problem("x", [req], [good], "round 2") is None
    assert checker.seconds - spent < spent  # no second forward
    bad = RequestOutput(7, 20, good.token_ids[:3] + [0] * 9)
    assert "round 3: request 0 (id 7) at token 3" in checker.tokens_problem("x", [req], [bad], "round 3")


def test_logits_within_tolerance_pass_and_the_first_bad_row_is_named():
    want = [torch.zeros(4, 10), torch.full((3, 10), 10.0)]
    assert check_logits([w + 1e-6 for w in want], want, 1e-4) is None
    got = [want[0], want[1].clone()]
    got[1][2, 7] += 0.5
    m = check_logits(got, want, 1e-4)
    assert (m.request_index, m.position) == (1, 2)
    assert m.tolerance == pytest.approx(1e-4 * 10.0)  # relative to the row's largest |logit|


def test_margins_widen_to_hfs_own_disagreement_in_every_dtype():
    """The checker measures HF against itself once, then each margin is twice what it is sized to or the
    dtype's fixed floor, whichever is more: the token margin to how far the top logits' order moved, the
    logit tolerance to how far any logit moved."""
    from harness.correctness import OutputChecker
    from harness.correctness.calibrate import CALIBRATION_FACTOR
    from harness.correctness.check import LOGIT_TOLERANCE

    loaded = build_model(get_spec("tiny"), dtype="bfloat16", seed=0)
    checker = OutputChecker(loaded)
    checker.calibrate()
    c = checker.calibration
    assert c.logit_diff > 0  # bfloat16 rounding is visible
    assert 0 < c.order_shift <= 2 * c.logit_diff  # the triangle inequality
    widened = CALIBRATION_FACTOR * max(c.token_gap, c.order_shift), CALIBRATION_FACTOR * max(c.token_gap, c.logit_diff)
    assert checker.margin == max(TOKEN_MARGIN["bfloat16"], widened[0])
    assert checker.logit_tolerance == max(LOGIT_TOLERANCE["bfloat16"], widened[1])
    assert checker.unusable is None
    exact = OutputChecker(build_model(get_spec("tiny"), seed=0))
    exact.calibrate()
    assert exact.calibration is not None
    assert exact.margin == max(TOKEN_MARGIN["float32"], CALIBRATION_FACTOR * exact.calibration.token_noise)


def test_the_token_margin_follows_the_order_of_the_top_logits_not_their_values():
    """A shift every logit shares moves no token's rank: the order figure ignores it, however large,
    and sees a runner-up pulled up against the best by exactly how far it moved."""
    from harness.correctness.calibrate import order_shift

    want = torch.tensor([[4.0, 3.0, 1.0, 0.5, 0.0, -1.0, -2.0]])
    assert order_shift(want + 0.3, want) == pytest.approx(0.0, abs=1e-6)
    pulled = want.clone()
    pulled[0, 1] += 0.2  # the runner-up moves 0.2 towards the best
    assert order_shift(pulled, want) == pytest.approx(0.2 / 4.0)
    below = want.clone()
    below[0, 6] += 3.0  # outside the top 5: no near-tie it could flip
    assert order_shift(below, want) == pytest.approx(0.0)


def test_a_broken_engine_within_the_old_vocabulary_wide_margin_is_refused(tiny, monkeypatch):
    """The Intel case in bfloat16: HF's logits move by 0.035 x |logit| somewhere in the vocabulary but
    its top logits' order by far less; a token 0.062 below HF's best (mutant-drifts-after-16) passed a
    margin of twice the first and is refused by one of twice the second (or the 0.05 floor)."""
    import harness.correctness as correctness
    from harness.correctness.calibrate import SelfDisagreement

    loaded = build_model(get_spec("tiny"), dtype="bfloat16", seed=0)
    monkeypatch.setattr(
        correctness, "hf_self_disagreement", lambda reference, forced=None: SelfDisagreement(0.007, 0.035, 0.016)
    )
    checker = correctness.OutputChecker(loaded)
    checker.calibrate()
    assert checker.margin == pytest.approx(TOKEN_MARGIN["bfloat16"])
    assert checker.logit_tolerance == pytest.approx(0.1)
    assert checker.margin < 0.062 < 2 * 0.035


def test_a_cpu_whose_float32_rounds_wider_widens_the_margin_instead_of_refusing(tiny, monkeypatch):
    """The Intel case: HF's own float32 paths disagree by 0.00323 x |logit|, more than the fixed 0.00305;
    calibrated, the tolerance is twice that, and a correct engine's logits within it pass."""
    import harness.correctness as correctness
    from harness.correctness.calibrate import SelfDisagreement
    from harness.correctness.check import LOGIT_TOLERANCE

    monkeypatch.setattr(
        correctness, "hf_self_disagreement", lambda reference, forced=None: SelfDisagreement(0.0, 0.00323, 0.001)
    )
    checker = correctness.OutputChecker(tiny)
    checker.calibrate()
    assert checker.logit_tolerance == pytest.approx(0.00646)
    assert checker.logit_tolerance > LOGIT_TOLERANCE["float32"]
    assert checker.unusable is None


def test_a_model_too_noisy_to_check_is_refused_whatever_the_engine(tiny, monkeypatch):
    """When HF disagrees with itself by as much as a broken engine would (qwen3-0.6b's shape in bfloat16:
    0.74 x |logit|), the check says it cannot vouch, for HF's own tokens too, rather than pass anything."""
    import harness.correctness as correctness
    from harness.correctness.calibrate import SelfDisagreement

    loaded = build_model(get_spec("tiny"), dtype="bfloat16", seed=0)
    monkeypatch.setattr(
        correctness, "hf_self_disagreement", lambda reference, forced=None: SelfDisagreement(0.5, 0.742, 0.5)
    )
    checker = correctness.OutputChecker(loaded)
    req = Request(tuple(range(5, 25)), 6)
    good = list(checker.reference.for_request(req).tokens)
    problem = checker.tokens_problem("hf-generate", [req], [out(good)], "the probe workload")
    assert "cannot tell a broken engine from a correct one" in problem
    assert "--perf-dtype float32" in problem
