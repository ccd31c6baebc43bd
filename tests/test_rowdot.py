"""The C one-row product (harness/engines/rowdot.py): F.linear's results to float32 rounding on every
shape (row counts and lengths that are not multiples of its blocks included), the same bits whatever
the thread count, built once per machine, and no kernel, with the reason, where the compiler fails."""

import subprocess

import pytest
import torch
import torch.nn.functional as F

from harness.engines import onednn, rowdot

built = pytest.mark.skipif(rowdot.kernel() is None, reason=f"no C kernel here: {rowdot.problem()}")


@built
@pytest.mark.parametrize("out_features", [1, 3, 7, 8, 9, 15, 4097])  # blocks of 8 rows and tails
@pytest.mark.parametrize("in_features", [1, 15, 16, 17, 33, 1024])
def test_the_kernel_gives_f_linear_in_float64_to_float32_rounding(out_features, in_features):
    torch.manual_seed(out_features * 1000 + in_features)
    x, w = torch.randn(1, in_features), torch.randn(out_features, in_features)
    got = rowdot.row_times_weight(x, w)
    want = F.linear(x.double(), w.double())
    assert got.shape == (1, out_features)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * in_features**0.5)


@built
@pytest.mark.parametrize(
    ("broken", "out_features", "in_features"),
    [
        ("    for (; k < K; k++) s[0] += w[k] * x[k];\n", 3, 17),  # the row's tail past 16 lanes dropped
        ("    for (long n = ROWS * blocks; n < N; n++) y[n] = one_row(w + n * K, x, K);\n", 9, 16),  # the last rows
        (  # a block's rows' tails past 16 lanes dropped
            "    for (; k < K; k++)\n        for (int r = 0; r < ROWS; r++) s[r][0] += w[r * stride + k] * x[k];\n",
            8,
            17,
        ),
    ],
)
def test_a_kernel_that_skips_work_fails_the_same_comparison(tmp_path, monkeypatch, broken, out_features, in_features):
    import ctypes

    assert broken in rowdot.SOURCE
    monkeypatch.setattr(rowdot, "SOURCE", rowdot.SOURCE.replace(broken, ""))
    fn = ctypes.CDLL(str(rowdot._build(tmp_path))).row_times_weight
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_long] * 2 + [ctypes.c_int]
    torch.manual_seed(0)
    x, w = torch.randn(1, in_features), torch.randn(out_features, in_features)
    got = torch.zeros(1, out_features)
    fn(w.data_ptr(), x.data_ptr(), got.data_ptr(), out_features, in_features, 1)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(
            got.double(), F.linear(x.double(), w.double()), rtol=1e-5, atol=1e-5 * in_features**0.5
        )


@built
def test_each_output_sums_in_one_order_whatever_the_thread_count():
    torch.manual_seed(0)
    x, w = torch.randn(1, 1000), torch.randn(999, 1000)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = rowdot.row_times_weight(x, w)
        torch.set_num_threads(max(2, threads))
        several = rowdot.row_times_weight(x, w)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, several)


@pytest.mark.parametrize(
    ("x", "w", "takes"),
    [
        (torch.ones(1, 8), torch.ones(4, 8), True),
        (torch.ones(1, 1, 8), torch.ones(4, 8), True),
        (torch.ones(2, 8), torch.ones(4, 8), False),  # several rows: oneDNN's
        (torch.ones(1, 8, dtype=torch.bfloat16), torch.ones(4, 8, dtype=torch.bfloat16), False),
        (torch.ones(1, 8), torch.ones(8, 4).t(), False),  # a transposed weight would be copied first
        (torch.ones(1, 8), torch.ones(4, 9), False),
        (torch.ones(1, 8), torch.empty(4, 8, device="meta"), False),  # the kernel reads CPU memory only
    ],
)
def test_the_kernel_takes_one_float32_row_and_a_contiguous_weight_only(x, w, takes):
    assert rowdot.fits(x, w) == takes


@built
def test_the_library_is_built_once_a_cpu_and_reused(tmp_path, monkeypatch):
    first = rowdot._build(tmp_path)
    compiles = []
    real_run = subprocess.run

    def run(cmd, **kwargs):
        compiles.append(cmd) if "--version" not in cmd else None
        return real_run(cmd, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    assert rowdot._build(tmp_path) == first
    assert compiles == []
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary left behind
    monkeypatch.setattr(rowdot, "_cpu", lambda: "model name : another CPU\nflags : sse2\n")
    assert rowdot._build(tmp_path) != first  # -march=native: never loaded on a CPU it was not built for
    assert len(compiles) == 1


def test_without_a_compiler_there_is_no_kernel_and_the_reason_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("LLM_PERF_CACHE", str(tmp_path))
    monkeypatch.setattr(rowdot, "_problem", [])
    rowdot.kernel.cache_clear()
    try:
        assert rowdot.kernel() is None
        assert "no-such-cc" in rowdot.problem()
        x, w = torch.randn(1, 8), torch.randn(4, 8)
        torch.testing.assert_close(onednn.linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)  # oneDNN's
        if not onednn.one_row_on_blas():
            assert onednn.library(torch.device("cpu"), torch.float32) == "onednn"
            assert "no-such-cc" in onednn.described(torch.device("cpu"), torch.float32)  # the header says why
    finally:
        rowdot.kernel.cache_clear()
