"""Linear layers on CPU through oneDNN instead of the BLAS.

F.linear of a float32 CPU tensor goes to the BLAS torch was built with (MKL in the x86 wheels). On the
AMD EPYC development host MKL's kernels ran at half of oneDNN's speed or less, from one row to
hundreds (docs/measurements.md, decode against the read bound). oneDNN's linear is the op
TorchInductor itself emits for CPU linear layers.

`linear` is F.linear's drop-in for the paged engine: oneDNN for float32 on CPU where torch has it,
F.linear for anything else or once oneDNN has failed (a warning says why, once). The sum runs in
another order than the BLAS's, so results differ in the last bits; the output check's float32
tolerance is calibrated from such differences between HF's own paths.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_problem: list[str] = []  # oneDNN failed once in this process: F.linear from then on


def available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `linear` takes the oneDNN path for weights of this device and dtype."""
    return device.type == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available() and not _problem


def _onednn_linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, w, bias, "none", [], "")


def linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, w, bias), computed by oneDNN for float32 CPU tensors."""
    if available(x.device, x.dtype) and w.dtype == x.dtype:
        try:
            return _onednn_linear(x, w, bias)
        except (RuntimeError, AttributeError) as exc:  # a build without oneDNN, or an op it refuses
            _problem.append(f"oneDNN's linear is unavailable ({type(exc).__name__}: {exc})")
            warnings.warn(_problem[0] + "; using F.linear", RuntimeWarning, stacklevel=2)
    return F.linear(x, w, bias)


class LinearMode(TorchFunctionMode):
    """For engines that run HF's own modules (`manual`): inside this mode every F.linear goes to
    `linear`; everything else runs as it would. HF's reference, computed outside it, keeps the BLAS."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.linear:
            return linear(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))
