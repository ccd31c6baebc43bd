"""The probe's logits check answered from the logits generate picked its tokens from (keep_logits):
the same numbers the engine's own teacher forcing gives, used only for the very tokens generated, and
still able to refuse an engine whose logits are off."""

import pytest
import torch

from harness.correctness import OutputChecker, probe_for
from harness.engines import EngineConfig
from harness.engines.kept import KeptLogits
from harness.engines.manual import ManualEngine
from harness.engines.paged import engine as paged_engine
from harness.engines.paged.engine import PagedEngine
from harness.engines.paged.model_runner import PagedModelRunner
from harness.workloads import Request

ENGINES = {"manual": ManualEngine, "paged": PagedEngine}


def test_rows_are_kept_in_order_and_answer_only_for_every_request_kept():
    kept = KeptLogits()
    kept.add(["a", "b"], torch.tensor([[1.0, 0.0], [2.0, 0.0]]))
    kept.add(["a"], torch.tensor([[3.0, 0.0]]))
    kept.finish("a", [7], [0, 0])
    a, b = Request((7,), 2), Request((8,), 1)
    assert kept.take([a, b], [[0, 0], [0]]) is None  # b never finished
    assert torch.equal(kept.take([a], [[0, 0]])[0], torch.tensor([[1.0, 0.0], [3.0, 0.0]]))
    assert kept.take([a], [[0, 0]]) is None  # taken once
    kept.finish("b", [8], [0])
    assert kept.take([b], [[1]]) is None  # other tokens than generated: not an answer
    kept.clear()
    assert kept.take([b], [[0]]) is None


def probe_with_kept_logits(engine):
    requests = probe_for(engine.loaded.spec)
    engine.keep_logits = True
    outputs = engine.generate(requests).outputs
    engine.keep_logits = False
    return requests, [o.token_ids for o in outputs]


@pytest.mark.parametrize("name", ENGINES)
def test_kept_logits_are_what_teacher_forcing_gives(tiny, name):
    engine = ENGINES[name](tiny, EngineConfig())
    requests, tokens = probe_with_kept_logits(engine)
    kept = engine.teacher_forced_logits(requests, tokens)
    forced = engine.teacher_forced_logits(requests, tokens)  # nothing kept any more: computed
    for k, f in zip(kept, forced, strict=True):
        if name == "manual":  # the same loop on the same tokens
            assert torch.equal(k, f)
        else:  # generate's batches are not teacher forcing's: the same values up to float32 blocking
            torch.testing.assert_close(k, f, rtol=1e-5, atol=1e-5)


def test_a_timed_generate_keeps_nothing(tiny):
    engine = ManualEngine(tiny, EngineConfig())
    requests = probe_for(tiny.spec)
    tokens = [o.token_ids for o in engine.generate(requests).outputs]
    assert engine.kept.take(requests, tokens) is None


class ShiftedRunner(PagedModelRunner):
    """Every decode logit raised by 1.0: the same greedy tokens, logits off by far more than float32's."""

    def decode_logits(self, token_ids, positions, block_tables):
        return super().decode_logits(token_ids, positions, block_tables) + 1.0


class ShiftedPaged(PagedEngine):
    runner_class = ShiftedRunner


def test_the_probe_answers_from_kept_logits_and_still_refuses_wrong_ones(tiny, monkeypatch):
    def not_called(*args):
        raise AssertionError("the probe's logits should come from generate's")

    monkeypatch.setattr(paged_engine, "forced_logits", not_called)
    assert OutputChecker(tiny).probe_problem("paged", PagedEngine(tiny, EngineConfig())) is None
    problem = OutputChecker(tiny).probe_problem("shifted", ShiftedPaged(tiny, EngineConfig()))
    assert problem is not None
    assert "logit" in problem
