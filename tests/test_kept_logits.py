"""The probe's logits check answered from the logits generate picked its tokens from (keep_logits):
the same numbers the engine's own teacher forcing gives, used only for the very tokens generated, kept
only while the probe runs, and still able to refuse an engine whose logits are off."""

import pytest
import torch

from harness.correctness import OutputChecker, probe_for
from harness.engines import EngineConfig
from harness.engines.kept import KeptLogits, keeping_logits
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


def test_two_requests_alike_keep_two_answers():
    kept, same = KeptLogits(), Request((7,), 1)
    kept.add(["x", "y"], torch.tensor([[1.0], [2.0]]))
    kept.finish("x", [7], [0])
    assert kept.take([same, same], [[0], [0]]) is None  # one kept, two asked
    kept.finish("y", [7], [0])
    assert [float(t) for t in kept.take([same, same], [[0], [0]])] == [1.0, 2.0]


def test_kept_rows_are_copies():
    kept, logits = KeptLogits(), torch.tensor([[1.0]])
    kept.add(["x"], logits)
    logits += 5  # an engine reusing its output buffer
    kept.finish("x", [7], [0])
    assert float(kept.take([Request((7,), 1)], [[0]])[0]) == 1.0


class Slotted:
    __slots__ = ()


def test_the_flag_is_on_only_inside_and_what_was_kept_goes_with_it(tiny):
    engine = ManualEngine(tiny, EngineConfig())
    seen = []

    def probe_that_fails():
        with keeping_logits(engine):
            seen.append(engine.keep_logits)
            engine.kept.add(["x"], torch.zeros(1, 3))
            engine.kept.finish("x", [1], [2])
            raise RuntimeError

    with pytest.raises(RuntimeError):
        probe_that_fails()
    assert seen == [True]
    assert not engine.keep_logits
    assert engine.kept.take([Request((1,), 1)], [[2]]) is None
    with keeping_logits(Slotted()):  # an engine without the flag is left alone
        pass


def forbid_teacher_forcing(monkeypatch, engine) -> None:
    """The engine's own teacher forcing fails from here on (until monkeypatch.undo()): only kept logits answer."""

    def fail(*args, **kwargs):
        raise AssertionError("teacher forcing ran instead of the kept logits")

    if isinstance(engine, PagedEngine):
        monkeypatch.setattr(paged_engine, "forced_logits", fail)
    else:
        monkeypatch.setattr(engine, "_last_logits", fail)


@pytest.mark.parametrize("name", ENGINES)
def test_kept_logits_answer_and_are_what_teacher_forcing_gives(tiny, name, monkeypatch):
    engine = ENGINES[name](tiny, EngineConfig())
    requests = probe_for(tiny.spec)
    engine.keep_logits = True
    tokens = [o.token_ids for o in engine.generate(requests).outputs]
    engine.keep_logits = False
    forbid_teacher_forcing(monkeypatch, engine)
    kept = engine.teacher_forced_logits(requests, tokens)
    monkeypatch.undo()
    forced = engine.teacher_forced_logits(requests, tokens)  # nothing kept any more: computed
    for k, f in zip(kept, forced, strict=True):
        if name == "manual":  # the same loop on the same tokens
            assert torch.equal(k, f)
        else:  # generate's batches are not teacher forcing's: the same values up to float32 blocking
            torch.testing.assert_close(k, f, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_paged_keeps_the_right_rows_across_preemption(tiny, preemption):
    """A pool of 12 blocks cannot hold the probe at once: requests are preempted and come back, and
    each token's row is still the one it was picked from (against teacher forcing with ample memory)."""
    engine = PagedEngine(tiny, EngineConfig(preemption=preemption), num_blocks=12)
    requests = probe_for(tiny.spec)
    with keeping_logits(engine):
        result = engine.generate(requests)
        tokens = [o.token_ids for o in result.outputs]
        kept = engine.teacher_forced_logits(requests, tokens)
    assert result.metrics["preemptions"] > 0
    forced = PagedEngine(tiny, EngineConfig()).teacher_forced_logits(requests, tokens)
    for k, f in zip(kept, forced, strict=True):
        torch.testing.assert_close(k, f, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ENGINES)
def test_a_timed_generate_keeps_nothing(tiny, name):
    engine = ENGINES[name](tiny, EngineConfig())
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
    engine = PagedEngine(tiny, EngineConfig())
    forbid_teacher_forcing(monkeypatch, engine)
    assert OutputChecker(tiny).probe_problem("paged", engine) is None
    problem = OutputChecker(tiny).probe_problem("shifted", ShiftedPaged(tiny, EngineConfig()))
    assert problem is not None
    assert "logit" in problem
