"""FLAM model definition, configs and loading."""

from .config import FlamConfig, debug_config, openflam_v1_base_config
from .flam import FlamModel, ModelInfo, TextEmbedding, calibrated_probability
from .registry import ModelLoadError, list_models, load_model
from .storage import save_model

__all__ = [
    "FlamConfig", "FlamModel", "ModelInfo", "ModelLoadError", "TextEmbedding",
    "calibrated_probability", "debug_config", "list_models", "load_model",
    "openflam_v1_base_config", "save_model",
]
