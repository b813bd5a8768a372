"""Which device a run uses: the one home of ``auto``/``cpu``/``cuda``/``cuda:N`` and of the
"is CUDA there?" check, shared by model loading, training and the CLI's ``--device``."""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A device name that is not one, or CUDA asked for where there is none; one line."""


def resolve_device(value: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None) → CUDA when available, else the CPU; ``cpu``, ``cuda``, ``cuda:N`` or a
    :class:`torch.device` as given, once checked that it exists here."""
    if value is None or value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(value, torch.device):
        device = value
    else:
        text = str(value)
        if text != "cpu" and text != "cuda" and not (text.startswith("cuda:") and text[5:].isdigit()):
            raise DeviceError(f"{text!r} is not auto, cpu, cuda or cuda:N")
        device = torch.device(text)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{value}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"{value}: this machine has {torch.cuda.device_count()} CUDA "
                              "device(s)")
    elif device.type != "cpu":
        raise DeviceError(f"{value}: flam runs on the CPU or CUDA")
    return device
