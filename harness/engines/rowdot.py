"""The one-row product (batch-1 decode) in a few lines of C, built once per machine and CPU.

A decode step at batch 1 multiplies one row by every weight matrix, so its speed is the speed at which
the weights are read. On the AMD EPYC hosts oneDNN's one-row product read the models' weights at
68-80% of a plain sum's rate and MKL's at about half; this kernel, with four weight rows a block, read
them at 86-93% of it, 1.10-1.30x oneDNN's rate (docs/measurements.md, decode against the read bound;
`python -m experiments.gemv_bandwidth`). Each output is a dot product of the row with one weight row;
here ROWS (8) weight rows share each load of the row, so nearly every load is of weights, as in a sum.
Eight rather than four made paged's batch-1 step on `smollm2-135m` 1.04-1.07x faster and left
`qwen3-0.6b`'s as it was (`python -m experiments.decode_bound --variants paged,paged-rows4`). Each
output sums in one order whatever the block: for rows of a multiple of 16 values (every model's), the
same bits; for other lengths the compiler may fuse multiply-adds differently from one block size to
another, so the last bit can differ.

The C source below is compiled by the machine's C compiler (`$CC`, else `cc`) with OpenMP and
-march=native into the cache folder (`<cache>/kernels/`, see harness/checkpoints.py), named by a digest
of the source, the flags, the compiler's version and the CPU's model and instruction-set flags: built
once per machine, never loaded on a CPU it was not built for. With GCC the OpenMP runtime is the one
torch already loaded (the same soname); each call runs on torch.get_num_threads() threads. Where there
is no compiler or the build fails, `kernel()` is None, `problem()` says why (the run's header shows it),
and the engines multiply through oneDNN (harness/engines/onednn.py).

Each output's sum runs in 16 lanes over the row, then across the lanes, in one thread: another order
than oneDNN's, so results differ in the last bits; the output check calibrates float32 on the same
path (correctness/store.py keys its files by onednn.library()).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from harness.checkpoints import cache_root

ROWS = 8  # the weight rows each block of row_times_weight computes at once, sharing each load of the row
SOURCE = (
    f"#define ROWS {ROWS}\n"
    + r"""
#define LANES 16

static float lane_sum(const float *s) {
    float t = 0.0f;
    for (int j = 0; j < LANES; j++) t += s[j];
    return t;
}

static float one_row(const float *restrict w, const float *restrict x, long K) {
    float s[LANES] = {0};
    long k = 0;
    for (; k + LANES <= K; k += LANES)
        for (int j = 0; j < LANES; j++) s[j] += w[k + j] * x[k + j];
    for (; k < K; k++) s[0] += w[k] * x[k];
    return lane_sum(s);
}

/* ROWS rows `stride` floats apart, each of K values, times x */
static void rows_apart(const float *restrict w, long stride, const float *restrict x, float *restrict y, long K) {
    float s[ROWS][LANES] = {{0}};
    long k = 0;
    for (; k + LANES <= K; k += LANES)
        for (int j = 0; j < LANES; j++) {
            float xv = x[k + j];
            for (int r = 0; r < ROWS; r++) s[r][j] += w[r * stride + k + j] * xv;
        }
    for (; k < K; k++)
        for (int r = 0; r < ROWS; r++) s[r][0] += w[r * stride + k] * x[k];
    for (int r = 0; r < ROWS; r++) y[r] = lane_sum(s[r]);
}

/* y[n] = sum_k w[n * K + k] * x[k] for n < N: ROWS rows at a time, blocks of rows over `threads` */
void row_times_weight(const float *restrict w, const float *restrict x, float *restrict y, long N, long K,
                      int threads) {
    long blocks = N / ROWS;
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (long b = 0; b < blocks; b++) rows_apart(w + ROWS * b * K, K, x, y + ROWS * b, K);
    for (long n = ROWS * blocks; n < N; n++) y[n] = one_row(w + n * K, x, K);
}
"""
)

FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]
_problem: list[str] = []


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CC", "cc"))


def _cpu() -> str:
    """What -march=native compiles for: the CPU's model and instruction-set flags (a library built for
    another CPU could stop this process with an illegal instruction)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def _build(folder: Path, source: str = "", name: str = "rowdot") -> Path:
    """The shared library for this source (SOURCE when none is given), flags, compiler and CPU, built into
    `folder` as `<name>-<digest>.so` unless it is there."""
    source = source or SOURCE
    cc = _compiler()
    version = subprocess.run([*cc, "--version"], capture_output=True, text=True, check=True, timeout=60).stdout
    digest = hashlib.sha256(repr((source, FLAGS, cc, version, _cpu())).encode()).hexdigest()[:16]
    target = folder / f"{name}-{digest}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        src, out = Path(tmp) / f"{name}.c", Path(tmp) / f"{name}.so"
        src.write_text(source)
        subprocess.run([*cc, *FLAGS, str(src), "-o", str(out)], capture_output=True, text=True, check=True, timeout=120)
        os.replace(out, target)  # atomic: a process beside this one sees the whole file or none
    return target


def load(source: str, name: str, function: str, argtypes: list) -> Callable | None:
    """`function` of the library built from `source` (a ctypes function returning nothing), or None where
    it cannot be built (problem() says why)."""
    try:
        fn = getattr(ctypes.CDLL(str(_build(cache_root() / "kernels", source, name))), function)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:  # ValueError: an unparsable $CC
        detail = getattr(exc, "stderr", "") or str(exc)
        cc = os.environ.get("CC", "cc")
        what = "one-row product" if name == "rowdot" else f"kernel {name}"
        _problem.append(f"the C {what} could not be built with {cc}: {detail.strip()[:300]}")
        return None
    fn.restype = None
    fn.argtypes = argtypes
    return fn


@functools.cache
def kernel():
    """The compiled row_times_weight (a ctypes function), or None where it cannot be built (problem())."""
    return build(SOURCE, "rowdot")


def build(source: str, name: str):
    """row_times_weight of `source` (SOURCE, or a variant of it for experiments) built as `name`."""
    c = ctypes
    return load(source, name, "row_times_weight", [c.c_void_p] * 3 + [c.c_long] * 2 + [c.c_int])


def problem() -> str | None:
    """Why kernel() is None, once it has been asked for."""
    return _problem[0] if _problem else None


def fits(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether row_times_weight takes this product: one float32 row and a contiguous float32 2-D weight
    on CPU."""
    return (
        x.device.type == w.device.type == "cpu"
        and x.dtype == w.dtype == torch.float32
        and w.dim() == 2
        and w.is_contiguous()
        and x.numel() == x.shape[-1] == w.shape[1]
    )


def row_times_weight(
    x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, built: Callable | None = None
) -> torch.Tensor:
    """F.linear(x, w, bias) for one float32 row x (shape (..., in), one row in all) through the C kernel
    (kernel(), or `built`: a variant from build()): shape (..., out). The caller checks fits() and that
    the kernel exists first."""
    x = x.contiguous()
    y = torch.empty(*x.shape[:-1], w.shape[0], dtype=x.dtype, device=x.device)
    (built or kernel())(w.data_ptr(), x.data_ptr(), y.data_ptr(), w.shape[0], w.shape[1], torch.get_num_threads())
    return y if bias is None else y + bias
