"""Synthetic, frame-labelled mixtures from a corpus of real clips (``flam synth``)."""

from .corpus import Clip, CorpusError, Skipped, index_directory, read_manifest, write_manifest
from .mixing import AudioBank, Mixture, frame_targets, make_mixture, plan_ground, plan_sed, render
from .recipe import RECIPES, GroundRecipe, Recipe, RecipeError, SedRecipe
from .runner import SynthError, SynthSummary, rerender, synthesize

__all__ = [
    "AudioBank", "Clip", "CorpusError", "GroundRecipe", "Mixture", "RECIPES", "Recipe",
    "RecipeError", "SedRecipe", "Skipped", "SynthDataset", "SynthError", "SynthSummary",
    "frame_targets", "index_directory", "make_mixture", "plan_ground", "plan_sed",
    "read_manifest", "render", "rerender", "synthesize", "write_manifest",
]


def __getattr__(name):
    # SynthDataset needs torch; importing it lazily keeps `flam synth` start-up fast.
    if name == "SynthDataset":
        from .dataset import SynthDataset

        return SynthDataset
    raise AttributeError(name)
