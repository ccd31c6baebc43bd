"""The paged engine's single-row step on CPU, compiled (`--perf-compile`).

A decode step at batch 1 multiplies one row by every weight matrix, so it is bound by how fast the
weights are read. Eagerly the engines hand that product to MKL on an Intel CPU and to the C kernel of
rowdot.py elsewhere (onednn.py), both reading at about a plain sum's rate. Here it is written as a
multiply-and-sum over the row and compiled by TorchInductor with what surrounds it: each piece of a
layer (norm and q/k/v with RoPE; output projection, MLP and residuals) and the LM head is compiled
whole, so the small operations between the products fuse with them. On the AMD EPYC host the
compiled step took 0.92-1.12x the time of the eager one with the C kernel: no steady gain
(docs/measurements.md, decode against the read bound; `python -m experiments.decode_bound`).

Compiled with dynamic shapes: one compile per process and piece (seconds; TorchInductor caches them
on disk) serves every layer of every model. It needs a C++ compiler; where compiling fails, a warning
says why and the engine runs the same pieces eagerly with F.linear.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from harness.engines import onednn
from harness.engines.paged import layers


def row_times_weight(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """F.linear for x of one row: (1, in) x (out, in) -> (1, out), one reduction over `in` per output,
    reading w once. The sum runs in another order than the BLAS's, so results differ in the last bits
    (the output check's float32 tolerance is calibrated from such differences between HF's own paths)."""
    return (w * x).sum(-1)[None]


PIECES = {"qkv": layers.qkv, "mlp_residual": layers.mlp_residual, "final_logits": layers.final_logits}


class CompiledRow:
    """run(piece, *args): the named piece of layers.py compiled with row_times_weight, for a single row
    on CPU; eagerly with `eager_linear` for anything else, or once compiling has failed."""

    def __init__(self, eager_linear=F.linear) -> None:
        self.eager_linear = eager_linear
        self._compiled = {
            name: torch.compile(functools.partial(fn, linear=row_times_weight), dynamic=True, fullgraph=True)
            for name, fn in PIECES.items()
        }
        self.problem: str | None = None

    def run(self, piece: str, x: torch.Tensor, *args):
        if x.dim() == 2 and x.shape[0] == 1 and x.device.type == "cpu" and self.problem is None:
            try:
                return self._compiled[piece](x, *args)
            except Exception as exc:  # noqa: BLE001 - no compiler, or inductor cannot build here: say so once
                self.problem = f"--perf-compile: the compiled step is unavailable ({type(exc).__name__}: {exc})"
                warnings.warn(self.problem + "; running it eagerly", RuntimeWarning, stacklevel=2)
        return PIECES[piece](x, *args, linear=self.eager_linear)


class RowLinearMode(TorchFunctionMode):
    """For engines that run HF's own modules (`manual` under --perf-compile): inside this mode, F.linear
    of a single row on CPU, without bias, is the compiled row_times_weight, any other F.linear oneDNN's
    (onednn.py); everything else runs as it would. One compile per process serves every weight."""

    def __init__(self) -> None:
        super().__init__()
        self._kernel = torch.compile(row_times_weight, dynamic=True, fullgraph=True)
        self.problem: str | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and self.problem is None and _one_row(args, kwargs):
            x, w = args[0], args[1]
            try:
                return self._kernel(x.reshape(1, -1), w).reshape(*x.shape[:-1], w.shape[0])
            except Exception as exc:  # noqa: BLE001 - as CompiledRow.run: say so once, then run eagerly
                self.problem = f"--perf-compile: the compiled product is unavailable ({type(exc).__name__}: {exc})"
                warnings.warn(self.problem + "; using F.linear", RuntimeWarning, stacklevel=2)
        return onednn.linear(*args, **kwargs) if func is F.linear else func(*args, **kwargs)


def _one_row(args: tuple, kwargs: dict) -> bool:
    if len(args) < 2 or kwargs.get("bias") is not None or (len(args) > 2 and args[2] is not None):
        return False
    x = args[0]
    return x.device.type == "cpu" and x.numel() == x.shape[-1]
