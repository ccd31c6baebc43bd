"""oneDNN's linear on CPU (harness/engines/onednn.py): F.linear's results to float32 rounding, taken
by paged and manual in float32 only, one row on the BLAS (Intel) or the C kernel (elsewhere), and
F.linear again, with one warning, where oneDNN fails."""

import pytest
import torch
import torch.nn.functional as F

from harness.engines import onednn, rowdot

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")


@pytest.fixture(autouse=True)
def _fresh():
    onednn._problem.clear()
    yield
    onednn._problem.clear()


@pytest.mark.parametrize("shape", [(1, 64), (7, 64), (2, 5, 64), (0, 64)])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_gives_f_linear_to_float32_rounding(shape, bias):
    torch.manual_seed(0)
    x, w = torch.randn(shape), torch.randn(48, 64)
    b = torch.randn(48) if bias else None
    got, want = onednn.linear(x, w, b), F.linear(x, w, b)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_linear_is_onednn_for_float32_and_f_linear_otherwise(monkeypatch):
    calls = []
    real = onednn._onednn_linear
    monkeypatch.setattr(onednn, "_onednn_linear", lambda *a: calls.append(a[0].dtype) or real(*a))
    onednn.linear(torch.randn(2, 8), torch.randn(4, 8))
    onednn.linear(torch.randn(2, 8, dtype=torch.bfloat16), torch.randn(4, 8, dtype=torch.bfloat16))
    assert calls == [torch.float32]
    assert onednn.available(torch.device("cpu"), torch.float32)
    assert not onednn.available(torch.device("cpu"), torch.bfloat16)
    assert not onednn.available(torch.device("meta"), torch.float32)


@pytest.mark.parametrize(
    ("intel", "kernel_built", "one_row_on", "library"),
    [
        (True, True, "blas", "onednn, one row on the blas"),
        (False, True, "c", "onednn, one row in c"),
        (False, False, "onednn", "onednn"),
    ],
)
def test_one_row_goes_to_the_blas_on_an_intel_cpu_and_to_the_c_kernel_elsewhere(
    intel, kernel_built, one_row_on, library, monkeypatch
):
    calls = []
    real, real_row = onednn._onednn_linear, rowdot.row_times_weight
    monkeypatch.setattr(onednn, "_onednn_linear", lambda *a: calls.append(("onednn", *a[0].shape)) or real(*a))
    monkeypatch.setattr(
        rowdot, "row_times_weight", lambda x, w, bias=None: calls.append(("c", *x.shape)) or real_row(x, w, bias)
    )
    monkeypatch.setattr(onednn, "one_row_on_blas", lambda: intel)
    if not kernel_built:
        monkeypatch.setattr(rowdot, "kernel", lambda: None)
    elif one_row_on == "c" and rowdot.kernel() is None:
        pytest.skip(f"no C kernel here: {rowdot.problem()}")
    w = torch.randn(4, 8)
    for shape in [(1, 8), (8,), (1, 1, 8), (2, 8), (1, 2, 8)]:
        x = torch.randn(shape)
        torch.testing.assert_close(onednn.linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)
    several = [("onednn", 2, 8), ("onednn", 1, 2, 8)]
    one_rows = [] if one_row_on == "blas" else [(one_row_on, 1, 8), (one_row_on, 8), (one_row_on, 1, 1, 8)]
    assert calls == [*one_rows, *several]
    cpu = torch.device("cpu")
    assert onednn.library(cpu, torch.float32) == library
    assert onednn.library(cpu, torch.bfloat16) == "blas"


@pytest.mark.parametrize(("vendor", "expected"), [("GenuineIntel", True), ("AuthenticAMD", False), ("", False)])
def test_the_one_row_rule_follows_the_cpu_vendor_where_the_blas_is_mkl(vendor, expected, monkeypatch):
    monkeypatch.setattr(onednn, "cpu_vendor", lambda: vendor)
    onednn.one_row_on_blas.cache_clear()
    try:
        assert onednn.one_row_on_blas() == (expected and torch.backends.mkl.is_available())
    finally:
        onednn.one_row_on_blas.cache_clear()


def test_a_failing_onednn_warns_once_and_falls_back_to_f_linear(monkeypatch):
    def refuses(*args):
        raise RuntimeError("no primitive for this shape")

    monkeypatch.setattr(onednn, "_onednn_linear", refuses)
    x, w = torch.randn(3, 8), torch.randn(4, 8)
    with pytest.warns(RuntimeWarning, match="oneDNN's linear is unavailable .*no primitive"):
        torch.testing.assert_close(onednn.linear(x, w), F.linear(x, w))
    assert not onednn.available(torch.device("cpu"), torch.float32)


def test_inside_the_mode_hf_modules_run_their_linear_layers_on_onednn(monkeypatch):
    calls = []
    real = onednn._onednn_linear
    monkeypatch.setattr(onednn, "_onednn_linear", lambda *a: calls.append(tuple(a[1].shape)) or real(*a))
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    x = torch.randn(3, 8)
    with torch.inference_mode():
        want = mlp(x)
        assert calls == []  # outside the mode: the BLAS
        with onednn.LinearMode():
            got = mlp(x)
    assert calls == [(16, 8), (4, 16)]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("dtype", "expected"), [("float32", "onednn"), ("bfloat16", "blas")])
def test_paged_and_manual_take_onednn_in_float32_only(dtype, expected):
    from harness.engines import EngineConfig
    from harness.engines.manual import ManualEngine
    from harness.engines.paged.engine import PagedEngine
    from harness.models import build_model
    from harness.specs import get_spec

    loaded = build_model(get_spec("tiny"), dtype=dtype)
    runner = PagedEngine(loaded, EngineConfig()).runner
    manual = ManualEngine(loaded, EngineConfig())
    took = "onednn" if runner.linear is onednn.linear else "blas"
    assert took == expected
    assert isinstance(manual.row_mode, onednn.LinearMode) == (expected == "onednn")
    assert (runner.lm_head_t is None) == (expected == "onednn")  # the BLAS's transposed head only without it


@pytest.mark.parametrize("intel", [False, True])
def test_manual_leaves_the_mode_out_of_a_one_row_forward_only_where_the_blas_takes_it(intel, monkeypatch):
    from harness.engines import EngineConfig
    from harness.engines.manual import ManualEngine
    from harness.models import build_model
    from harness.specs import get_spec

    monkeypatch.setattr(onednn, "one_row_on_blas", lambda: intel)
    manual = ManualEngine(build_model(get_spec("tiny"), dtype="float32"), EngineConfig())
    assert manual._mode_for(torch.ones(2, 3)) is manual.row_mode
    assert (manual._mode_for(torch.ones(1, 1)) is manual.row_mode) != intel


def test_under_perf_compile_manuals_products_of_several_rows_go_to_onednn(monkeypatch):
    from harness.engines.paged.matvec import RowLinearMode

    calls = []
    real = onednn._onednn_linear
    monkeypatch.setattr(onednn, "_onednn_linear", lambda *a: calls.append(tuple(a[0].shape)) or real(*a))
    x, w = torch.randn(3, 8), torch.randn(4, 8)
    with torch.inference_mode(), RowLinearMode():
        got = F.linear(x, w)
    assert calls == [(3, 8)]
    torch.testing.assert_close(got, F.linear(x, w), rtol=1e-5, atol=1e-5)
