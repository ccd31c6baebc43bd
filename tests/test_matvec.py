"""--perf-compile: the paged engine's compiled single-row step equals the eager one to the last bits of a
sum's order; it is used for one row on CPU only, and a step that cannot be compiled falls back loudly."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from harness.engines import EngineConfig
from harness.engines.hf_generate import HFGenerateEngine
from harness.engines.manual import ManualEngine
from harness.engines.paged import model_runner
from harness.engines.paged.engine import PagedEngine
from harness.engines.paged.flex_decode import FlexDecode
from harness.engines.paged.matvec import PIECES, CompiledRow, RowLinearMode, row_times_weight
from harness.workloads import mixed_requests


class Fake:
    """Stands for a compiled piece: raises, or returns the eager answer plus one."""

    def __init__(self, fails: bool) -> None:
        self.fails, self.calls = fails, 0

    def __call__(self, x, *args):
        self.calls += 1
        if self.fails:
            raise RuntimeError("no C++ compiler")
        return PIECES["final_logits"](x, *args) + 1.0


def compiled_with(fake: Fake) -> CompiledRow:
    row = CompiledRow()
    row._compiled = dict.fromkeys(PIECES, fake)
    return row


ARGS = (torch.ones(8), torch.randn(5, 8), 1e-6)  # final norm, LM head, eps


def test_row_times_weight_is_f_linear():
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(1, 64, generator=gen), torch.randn(300, 64, generator=gen)
    torch.testing.assert_close(row_times_weight(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)


def test_only_a_single_row_goes_to_the_compiled_piece():
    fake = Fake(fails=False)
    row = compiled_with(fake)
    rows = torch.randn(3, 8)
    assert torch.equal(row.run("final_logits", rows, *ARGS), PIECES["final_logits"](rows, *ARGS))
    assert fake.calls == 0
    one = rows[:1]
    assert torch.equal(row.run("final_logits", one, *ARGS), PIECES["final_logits"](one, *ARGS) + 1.0)
    assert fake.calls == 1


def test_a_step_that_cannot_be_compiled_warns_once_and_runs_eagerly():
    fake = Fake(fails=True)
    row = compiled_with(fake)
    x = torch.randn(1, 8)
    with pytest.warns(RuntimeWarning, match="no C.. compiler"):
        assert torch.equal(row.run("final_logits", x, *ARGS), PIECES["final_logits"](x, *ARGS))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(row.run("final_logits", x, *ARGS), PIECES["final_logits"](x, *ARGS))
    assert fake.calls == 1
    assert "no C++ compiler" in row.problem


def test_only_cpu_with_the_flag_compiles(tiny):
    assert PagedEngine(tiny, EngineConfig()).runner.compiled is None
    assert PagedEngine(tiny, EngineConfig()).runner.flex is None
    assert isinstance(PagedEngine(tiny, EngineConfig(compile=True)).runner.compiled, CompiledRow)
    assert isinstance(PagedEngine(tiny, EngineConfig(compile=True)).runner.flex, FlexDecode)
    assert not isinstance(ManualEngine(tiny, EngineConfig()).row_mode, RowLinearMode)
    assert isinstance(ManualEngine(tiny, EngineConfig(compile=True)).row_mode, RowLinearMode)


def test_the_mode_routes_a_single_bias_free_row_only():
    mode = RowLinearMode()
    mode._kernel = lambda x, w: F.linear(x, w) + 1.0
    w, b = torch.randn(5, 8), torch.randn(5)
    one, rows = torch.randn(1, 1, 8), torch.randn(1, 3, 8)
    with mode:
        routed = F.linear(one, w)
        as_is = [F.linear(rows, w), F.linear(one, w, b), torch.nn.functional.linear(rows, w, bias=b)]
    assert routed.shape == (1, 1, 5)
    torch.testing.assert_close(routed, F.linear(one, w) + 1.0)
    for got, want in zip(as_is, [F.linear(rows, w), F.linear(one, w, b), F.linear(rows, w, b)], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # not the kernel's (+1): oneDNN's product


@pytest.mark.slow
def test_the_compiled_engine_keeps_hf_greedy_tokens(tiny, monkeypatch):
    reqs = mixed_requests(3, (1, 40), (1, 20), tiny.spec.vocab_size, seed=31)
    expected = [o.token_ids for o in HFGenerateEngine(tiny, EngineConfig()).generate(reqs).outputs]
    engine = PagedEngine(tiny, EngineConfig(compile=True))
    for req, want in zip(reqs, expected, strict=True):  # one at a time: every decode step is a single row
        assert engine.generate([req]).outputs[0].token_ids == want
    assert engine.runner.compiled.problem is None
    calls = []
    monkeypatch.setattr(model_runner, "worth_it", lambda positions: len(positions) > 1)  # 3 rows suffice
    attend = engine.runner.flex.attend
    monkeypatch.setattr(engine.runner.flex, "attend", lambda q, *a: calls.append(len(q)) or attend(q, *a))
    together = [o.token_ids for o in engine.generate(reqs).outputs]  # several rows: through the tables
    assert together == expected
    assert max(calls) == len(reqs)  # steps of all three rows went through the tables
    assert engine.runner.flex.problem is None
    manual = ManualEngine(tiny, EngineConfig(compile=True))
    assert [o.token_ids for o in manual.generate(reqs).outputs] == expected
    assert manual.row_mode.problem is None
