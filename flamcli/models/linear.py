"""Linear layers through oneDNN on the CPU.

PyTorch's nn.Linear calls MKL's sgemm on the CPU. On AMD CPUs MKL takes its AVX2 path, while
oneDNN (shipped inside PyTorch, the kernels torch.compile's CPU backend uses) dispatches on
the ISA alone and runs AVX-512 brgemm kernels: on the AVX-512 AMD EPYC bench machine the
same fp32 GEMMs run about 2.4x faster (docs/benchmarks.md). Both are IEEE fp32 with fp32
accumulation; only the summation order differs (~1e-6 relative). oneDNN also applies a GELU
or a residual add in the GEMM's epilogue, saving a pass over the activations.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from torch import nn

#: Set FLAM_ONEDNN_LINEAR=0 to use nn.Linear's default (MKL) path, e.g. to compare the two.
ONEDNN_LINEAR = os.environ.get("FLAM_ONEDNN_LINEAR", "1") != "0"


@functools.cache
def _onednn_linear_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn,
                                                                 "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state-dict keys) that runs inference on oneDNN.

    ``forward(x, activation="gelu")`` is ``gelu(linear(x))`` and ``forward(x, residual=r)`` is
    ``linear(x) + r``, fused into the GEMM when oneDNN runs it. oneDNN's op has no backward, so
    anything that may need gradients, any other device or dtype, takes the ordinary path.
    """

    def reset_parameters(self) -> None:
        # On the meta device (the loader's build) there is nothing to initialise: the loaded
        # weights replace these.
        if not self.weight.is_meta:
            super().reset_parameters()

    def forward(self, x: torch.Tensor, activation: str | None = None,
                residual: torch.Tensor | None = None) -> torch.Tensor:
        if activation not in (None, "gelu") or (activation and residual is not None):
            raise ValueError("Linear fuses either activation='gelu' or a residual, not both")
        if self._use_onednn(x, residual):
            if residual is not None:
                return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.weight,
                                                                 self.bias, "add")
            # "none" selects the exact erf GELU, like F.gelu's default.
            attr, algorithm = ("gelu", "none") if activation else ("none", "")
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, attr, [],
                                                      algorithm)
        out = F.linear(x, self.weight, self.bias)
        if activation:
            out = F.gelu(out)
        return out if residual is None else out + residual

    def _use_onednn(self, x: torch.Tensor, residual: torch.Tensor | None) -> bool:
        tensors = [x, self.weight] + ([] if residual is None else [residual])
        out_shape = (*x.shape[:-1], self.out_features)
        return (ONEDNN_LINEAR and x.dim() >= 2 and x.numel() > 0
                and (residual is None or residual.shape == out_shape)  # no broadcasting
                and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
                and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
                and torch.backends.mkldnn.enabled and _onednn_linear_available())
