"""Linear layers through oneDNN on the CPU.

PyTorch's nn.Linear calls MKL's sgemm on the CPU. On AMD CPUs MKL takes its AVX2 path, while
oneDNN (shipped inside PyTorch, the kernels torch.compile's CPU backend uses) dispatches on
the ISA alone and runs AVX-512 brgemm kernels: on the AVX-512 AMD EPYC bench machine the
same fp32 GEMMs run about 2.4x faster (docs/benchmarks.md). Both are IEEE fp32 with fp32
accumulation; only the summation order differs (~1e-6 relative). oneDNN also applies a GELU
or a residual add in the GEMM's epilogue, saving a pass over the activations.

That advantage is the CPU's, not a law: on an AVX2-only AMD EPYC oneDNN's fp32 GEMMs ran
*slower* than MKL's (61 against 77 GFLOP/s). So the path is chosen at run time, by timing both
on a GEMM of the audio tower's shape once per CPU model, instruction-set cap, thread count and
torch version, and remembering the answer in flam's cache (``kernels.json``).
``FLAM_ONEDNN_LINEAR=1`` or ``=0`` forces one path.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from torch import nn

#: FLAM_ONEDNN_LINEAR=1 forces oneDNN, =0 nn.Linear's default (MKL); unset: timed per CPU.
FORCED = {"1": True, "0": False}.get(os.environ.get("FLAM_ONEDNN_LINEAR", "").strip())
#: oneDNN must win by this much to be chosen (the timing is short and the machine may be busy).
ONEDNN_MARGIN = 1.05
#: A GEMM of HTSAT-base's shape at batch 1: 64-token windows × 64 windows, 512 → 2048 (the MLP).
PROBE_SHAPE = (4096, 512, 2048)
KERNEL_CACHE_FILE = "kernels.json"


@functools.cache
def _onednn_linear_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn,
                                                                 "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


def machine_key() -> str:
    """What decides which GEMM is faster: the CPU model, the instruction set torch and oneDNN
    may use (capped by ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS), the
    thread count and the torch version."""
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    caps = ",".join(f"{name}={os.environ.get(name, '')}" for name in
                    ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS"))
    return (f"{model}|{torch.backends.cpu.get_cpu_capability()}|{caps}|"
            f"threads={torch.get_num_threads()}|torch={torch.__version__}")


def time_gemms(shape: tuple[int, int, int] = PROBE_SHAPE, repeats: int = 5) -> dict[str, float]:
    """Best seconds of one fp32 GEMM ``[m, k] @ [k, n]`` through each path."""
    import time

    m, k, n = shape
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=generator)
    weight = torch.randn(n, k, generator=generator)
    bias = torch.randn(n, generator=generator)
    paths = {"mkl": lambda: F.linear(x, weight, bias),
             "onednn": lambda: torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")}
    best = {}
    with torch.inference_mode():
        for name, path in paths.items():
            path()  # warm up (first-call set-up, page faults)
            times = []
            for _ in range(repeats):
                began = time.perf_counter()
                path()
                times.append(time.perf_counter() - began)
            best[name] = min(times)
    return best


@functools.cache
def use_onednn() -> bool:
    """Whether :class:`Linear` runs on oneDNN on this machine (see the module docstring)."""
    if FORCED is not None:
        return FORCED and _onednn_linear_available()
    if not _onednn_linear_available():
        return False
    import json

    from ..files import flam_cache_dir, write_text_atomic

    path = flam_cache_dir() / KERNEL_CACHE_FILE
    key = machine_key()
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    entry = known.get(key)
    if not (isinstance(entry, dict) and isinstance(entry.get("onednn"), bool)):
        seconds = time_gemms()
        entry = {"onednn": seconds["onednn"] * ONEDNN_MARGIN < seconds["mkl"],
                 "seconds": {k: round(v, 6) for k, v in seconds.items()}}
        known[key] = entry
        try:
            write_text_atomic(path, json.dumps(known, indent=1) + "\n")
        except OSError:
            pass  # an unwritable cache times again next run; nothing else changes
    return entry["onednn"]


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state-dict keys) that runs inference on oneDNN.

    ``forward(x, activation="gelu")`` is ``gelu(linear(x))`` and ``forward(x, residual=r)`` is
    ``linear(x) + r``, fused into the GEMM when oneDNN runs it. oneDNN's op has no backward, so
    anything that may need gradients, any other device or dtype, takes the ordinary path.
    """

    #: Set by :func:`flamcli.models.int8.quantize_int8`: the weight packed as int8, used instead
    #: of the float one whenever no gradient is needed (``--precision int8``).
    int8_weight = None
    int8_reduce_range = True  # 7-bit activations (FBGEMM; see flamcli.models.int8)

    def reset_parameters(self) -> None:
        # On the meta device (the loader's build) there is nothing to initialise: the loaded
        # weights replace these.
        if not self.weight.is_meta:
            super().reset_parameters()

    def forward(self, x: torch.Tensor, activation: str | None = None,
                residual: torch.Tensor | None = None) -> torch.Tensor:
        if activation not in (None, "gelu") or (activation and residual is not None):
            raise ValueError("Linear fuses either activation='gelu' or a residual, not both")
        if self.int8_weight is not None and self._runs_without_grad(x, residual):
            return self._int8_forward(x, activation, residual)
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

    def _int8_forward(self, x: torch.Tensor, activation: str | None,
                      residual: torch.Tensor | None) -> torch.Tensor:
        shape = x.shape
        out = torch.ops.quantized.linear_dynamic(x.reshape(-1, shape[-1]), self.int8_weight,
                                                 self.int8_reduce_range)
        out = out.view(*shape[:-1], self.out_features)
        # The output is fresh and needs no gradient, so GELU and the residual go in place:
        # a new activation-sized buffer costs more than either.
        if activation:
            torch.ops.aten.gelu_(out)
        return out if residual is None else out.add_(residual)

    def _runs_without_grad(self, x: torch.Tensor, residual: torch.Tensor | None) -> bool:
        """Inference on the CPU in float32 with no broadcasting: the fused paths' domain."""
        tensors = [x, self.weight] + ([] if residual is None else [residual])
        out_shape = (*x.shape[:-1], self.out_features)
        return (x.dim() >= 2 and x.numel() > 0
                and (residual is None or residual.shape == out_shape)  # no broadcasting
                and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
                and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)))

    def _use_onednn(self, x: torch.Tensor, residual: torch.Tensor | None) -> bool:
        return (self._runs_without_grad(x, residual)
                and torch.backends.mkldnn.enabled and use_onednn())
