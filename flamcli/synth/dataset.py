"""On-the-fly synthesis for training: the ``flam synth`` generator as an IterableDataset.

Its own module so that ``flam synth`` itself never has to import torch.
"""

from __future__ import annotations

import logging

import torch
import torch.utils.data

from .corpus import Clip
from .mixing import AudioBank, bank_notes, check_bank, make_mixture
from .recipe import Recipe


class SynthDataset(torch.utils.data.IterableDataset):
    """Mixtures made on the fly (no files): the same generator as ``flam synth``.

    Yields dicts with ``audio`` (float32 tensor), ``labels`` (label → intervals in seconds),
    ``negatives``, ``id`` and ``plan``. With DataLoader workers each takes every
    ``num_workers``-th index, so a seed gives the same stream whatever the worker count.
    """

    def __init__(self, clips: list[Clip] | AudioBank, recipe: Recipe, seed: int = 0,
                 count: int | None = None, start: int = 0):
        recipe.validate()
        self.bank = clips if isinstance(clips, AudioBank) else AudioBank.load(clips, recipe)[0]
        check_bank(self.bank, recipe)
        for note in bank_notes(self.bank, recipe):
            logging.getLogger(__name__).warning(note)
        self.recipe, self.seed, self.count, self.start = recipe, seed, count, start

    def __len__(self) -> int:
        if self.count is None:
            raise TypeError("an endless SynthDataset has no length")
        return self.count

    def __iter__(self):
        import torch

        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        index = self.start + worker
        stop = None if self.count is None else self.start + self.count
        while stop is None or index < stop:
            mixture = make_mixture(self.bank, self.recipe, self.seed, index)
            yield {"id": mixture.id, "audio": torch.from_numpy(mixture.audio),
                   "labels": mixture.labels, "negatives": mixture.plan["negatives"],
                   "plan": mixture.plan}
            index += workers
