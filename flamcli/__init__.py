"""flam: find when a described sound happens in audio (FLAM frame-wise language-audio model).

Library first: ``load_model`` gives a model, ``detect`` gives events and frame scores. The
``flam`` command line is a thin layer over these. Names are imported lazily so that
``import flamcli`` (and ``flam --version``) does not pay for importing torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "flamcli.models.registry",
    "list_models": "flamcli.models.registry",
    "save_model": "flamcli.models.storage",
    "ModelLoadError": "flamcli.models.registry",
    "detect": "flamcli.detection",
    "iter_detect": "flamcli.detection",
    "Detector": "flamcli.detection",
    "DetectionSettings": "flamcli.settings",
    "SettingsError": "flamcli.settings",
    "Event": "flamcli.events",
    "FileResult": "flamcli.detection",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'flamcli' has no attribute {name!r}")
