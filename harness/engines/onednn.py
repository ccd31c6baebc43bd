"""Linear layers on CPU through oneDNN instead of the BLAS; one row through MKL on an Intel CPU and
through the suite's C kernel elsewhere.

F.linear of a float32 CPU tensor goes to the BLAS torch was built with (MKL in the x86 wheels). MKL
is Intel's library and picks its kernels by CPU vendor. On an AMD EPYC host its products ran at half
of oneDNN's speed or less, from one row to hundreds. On an Intel Xeon its one-row product read the
weights as fast as a plain sum (1.1-1.5x oneDNN's rate on the models' own weights), while oneDNN
stayed ahead from 8 rows up on the large ones (docs/measurements.md, decode against the read bound).
So: oneDNN, the op TorchInductor itself emits for CPU linear layers, for every product of several
rows. A one-row product (batch-1 decode) stays on MKL on an Intel CPU; elsewhere it goes to the C
kernel of rowdot.py, which (with four weight rows a block, before eight) read the models' weights at
86-93% of a sum's rate, 1.10-1.30x oneDNN's (on oneDNN where that kernel could not be built).

`linear` is F.linear's drop-in for the paged engine: that choice for float32 on CPU where torch has
oneDNN, F.linear for anything else or once oneDNN has failed (a warning says why, once). oneDNN's and
the kernel's sums run in other orders than the BLAS's, so results differ in the last bits; the output
check's float32 tolerance is calibrated from such differences between HF's own paths, through this
same `linear`.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from harness.engines import rowdot
from harness.hardware import cpu_vendor

_problem: list[str] = []  # oneDNN failed once in this process: F.linear from then on
_on_torch = threading.local()  # .depth > 0 inside on_torch() on this thread: F.linear, whatever the device


@contextlib.contextmanager
def on_torch():
    """Inside it, `linear` is F.linear: for counting a unit's operations (harness/engines/flops.py), as
    neither the C kernel nor oneDNN's op is one torch's counter has a formula for. On this thread only,
    as the counter counts only its own."""
    _on_torch.depth = getattr(_on_torch, "depth", 0) + 1
    try:
        yield
    finally:
        _on_torch.depth -= 1


def counting() -> bool:
    """Whether this thread is inside on_torch(): flops.py is counting, so the suite's C kernels run as
    the torch ops it can see (kv_attention.py, row_layer.py)."""
    return getattr(_on_torch, "depth", 0) > 0


def available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `linear` takes the oneDNN path for weights of this device and dtype."""
    on_cpu = device.type == "cpu" and dtype == torch.float32
    return on_cpu and torch.backends.mkldnn.is_available() and not (_problem or counting())


@functools.cache
def one_row_on_blas() -> bool:
    """Whether a one-row product stays on the BLAS: on an Intel CPU, where torch's BLAS is MKL."""
    return torch.backends.mkl.is_available() and cpu_vendor() == "GenuineIntel"


def library(device: torch.device, dtype: torch.dtype) -> str:
    """Which library `linear` multiplies with for weights of this device and dtype, in words."""
    if not available(device, dtype):
        return "blas"
    if one_row_on_blas():
        return "onednn, one row on the blas"
    return "onednn, one row in c" if rowdot.kernel() is not None else "onednn"


def described(device: torch.device, dtype: torch.dtype) -> str:
    """library() for a run's header: what multiplies the engines' weights and, where the C kernel could
    not be built, why."""
    how = library(device, dtype)
    if how == "onednn" and rowdot.problem():
        return f"{how} ({rowdot.problem()})"
    return how


def _onednn_linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, w, bias, "none", [], "")


def linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, w, bias), computed by oneDNN for float32 CPU tensors (one row: the module text)."""
    one_row = x.numel() == x.shape[-1]
    if available(x.device, x.dtype) and w.dtype == x.dtype and not (one_row and one_row_on_blas()):
        if one_row and rowdot.fits(x, w) and rowdot.kernel() is not None:
            return rowdot.row_times_weight(x, w, bias)
        try:
            return _onednn_linear(x, w, bias)
        except (RuntimeError, AttributeError) as exc:  # a build without oneDNN, or an op it refuses
            _problem.append(f"oneDNN's linear is unavailable ({type(exc).__name__}: {exc})")
            warnings.warn(_problem[0] + "; using F.linear", RuntimeWarning, stacklevel=2)
    return F.linear(x, w, bias)


class LinearMode(TorchFunctionMode):
    """For engines that run HF's own modules (`manual`): inside this mode every F.linear goes to
    `linear` (or the `fn` given); everything else runs as it would. HF's reference, computed outside
    it, keeps the BLAS."""

    def __init__(self, fn=None) -> None:
        super().__init__()
        self.fn = fn or linear

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.linear:
            return self.fn(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))
