"""FLAM training (``flam train``): losses, the cross-rank ring, data and the training loop."""

from .losses import (TEXT_SLOTS_PER_CLIP, FlamLoss, LossConfig, LossInputs, LossOutput, TextSlots,
                     build_text_slots, normalise_caption, text_id)

__all__ = ["TEXT_SLOTS_PER_CLIP", "FlamLoss", "LossConfig", "LossInputs", "LossOutput",
           "TextSlots", "build_text_slots", "normalise_caption", "text_id"]
