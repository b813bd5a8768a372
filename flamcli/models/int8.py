"""Opt-in int8 inference (``--precision int8``): every Linear layer's GEMM in 8-bit integers.

Dynamic quantisation of the audio side, as ``torch.ao.quantization.quantize_dynamic`` does it and through the same
kernels (FBGEMM on x86, QNNPACK elsewhere): each weight is rounded once to int8 with one scale
per output channel; each call's activations are rounded to 8 bits with a scale taken from their
own range; the products accumulate in int32 and come back as float32. Nothing is calibrated and
no weight file changes. Convolutions, attention, normalisation and the scorer stay float32.

On FBGEMM, ``reduce_range`` keeps activations to 7 bits: on CPUs without VNNI (plain AVX2)
FBGEMM sums pairs of u8×s8 products in int16, which can saturate at 8 bits; with 7 bits it
cannot, so the answer does not depend on which x86 CPU ran it. This is torch's own default for
x86. QNNPACK has no such pairs and uses all 8 bits.

The approximation is measured in docs/benchmarks.md ("int8 mode") on flam-tiny's validation
split and on OpenFLAM's architecture; it is off by default.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .linear import Linear

PRECISIONS = ("fp32", "int8")


class PrecisionError(ValueError):
    """The asked precision cannot run here (unknown name, no int8 engine, not on the CPU)."""


def int8_engine() -> str | None:
    """The quantised engine torch offers on this machine: FBGEMM on x86, QNNPACK on ARM."""
    engines = torch.backends.quantized.supported_engines
    for engine in ("fbgemm", "qnnpack"):
        if engine in engines:
            return engine
    return None


def check_precision(precision: str, device: torch.device | str | None = None) -> None:
    """Raises :class:`PrecisionError` when ``precision`` cannot run on ``device`` (None or
    "auto": int8 picks the CPU)."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "int8":
        if device not in (None, "auto") and torch.device(device).type != "cpu":
            raise PrecisionError("int8 runs on the CPU only (leave --device at auto or cpu; "
                                 "on a GPU, fp32 detection runs in bfloat16 already)")
        if int8_engine() is None:
            raise PrecisionError("int8: this torch build has no quantised CPU engine "
                                 "(FBGEMM or QNNPACK)")


def pack_int8_weight(weight: torch.Tensor, bias: torch.Tensor | None, engine: str):
    """Symmetric per-output-channel int8 weight, packed for ``quantized::linear_dynamic``."""
    weight = weight.detach().float().cpu()
    scales = (weight.abs().amax(dim=1).clamp_min(1e-12) / 127.0).double()
    zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine  # the packed object remembers its engine
    try:
        with warnings.catch_warnings():
            # torch 2.10+ flags quantised tensor types as deprecated in favour of torchao; the
            # kernels are the ones quantize_dynamic uses, and flam pins its torch.
            warnings.simplefilter("ignore", UserWarning)
            qweight = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
            bias = None if bias is None else bias.detach().float().cpu()
            return torch.ops.quantized.linear_prepack(qweight, bias)
    finally:
        torch.backends.quantized.engine = previous


def quantize_int8(model: nn.Module) -> int:
    """Give every :class:`Linear` of a FLAM model's audio side (on the CPU) an int8 copy of its
    weight, used whenever it runs without gradients; returns how many. The float weights stay,
    so training, ``state_dict`` and saving are unchanged.

    The text side stays fp32: it runs once per query, so int8 would buy no detection speed,
    and its error would shift every frame of that query alike (α·cos, with α up to ~50). Any
    other module is quantised whole.
    """
    engine = int8_engine()
    if engine is None:
        raise PrecisionError("this torch build has no quantised CPU engine")
    parts = [getattr(model, name) for name in ("audio_branch", "audio_projection")
             if isinstance(getattr(model, name, None), nn.Module)] or [model]
    count = 0
    for module in (m for part in parts for m in part.modules()):
        if isinstance(module, Linear):
            if module.weight.device.type != "cpu":
                raise PrecisionError("int8 runs on the CPU only")
            module.int8_weight = pack_int8_weight(module.weight, module.bias, engine)
            module.int8_reduce_range = engine == "fbgemm"
            count += 1
    if hasattr(model, "info"):
        model.info.precision = "int8"
    return count
