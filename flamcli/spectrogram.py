"""The spectrogram flam shows: a log-mel picture of a file at bounded resolution, for the
detection plot and `flam review`'s pages.

It is a picture, not a model input: the model's own log-mel (:mod:`flamcli.models.frontend`)
must match the published weights' numerics bit for bit, while this one must stay cheap on hours
of audio (torchaudio's transform, power pooled into at most ``max_columns`` columns as the file
streams past), so the two are kept apart on purpose.
"""

from __future__ import annotations

import math

import numpy as np
import torch


class Spectrogram:
    """A log-mel picture of a file at bounded resolution (≤ ``max_columns``), built on the fly."""

    def __init__(self, sample_rate: int, duration_hint: float, max_columns: int = 3000,
                 n_mels: int = 64):
        import torchaudio

        self.sample_rate = sample_rate
        self.column_seconds = max(0.02, duration_hint / max_columns)
        n_fft = 1024 if sample_rate > 24_000 else 512
        self.hop = n_fft // 2
        self.transform = torchaudio.transforms.MelSpectrogram(
            sample_rate, n_fft=n_fft, hop_length=self.hop, n_mels=n_mels, center=False,
            f_max=sample_rate / 2,
        )
        self.n_mels = n_mels
        self.sums = np.zeros((0, n_mels), dtype=np.float64)
        self.counts = np.zeros(0, dtype=np.int64)

    def add(self, samples: np.ndarray, start: int, own: int) -> None:
        """Add the frames that start in ``samples[:own]`` (later samples only complete them),
        so consecutive overlapping windows tile the file without gaps or double counting."""
        samples = samples[: own + self.transform.n_fft]
        if len(samples) < self.transform.n_fft:
            return
        with torch.no_grad():
            power = self.transform(torch.from_numpy(samples)).T.numpy()  # [frames, mels]
        power = power[: max(1, math.ceil(own / self.hop))]
        times = (start + self.hop * np.arange(len(power)) + self.transform.n_fft / 2)
        columns = (times / self.sample_rate / self.column_seconds).astype(np.int64)
        size = int(columns.max()) + 1
        if size > len(self.counts):
            self.sums = np.pad(self.sums, ((0, size - len(self.counts)), (0, 0)))
            self.counts = np.pad(self.counts, (0, size - len(self.counts)))
        np.add.at(self.sums, columns, power)
        np.add.at(self.counts, columns, 1)

    def image(self) -> np.ndarray:
        """[mels, columns] in dB; empty columns stay at the floor."""
        mean = self.sums / np.maximum(self.counts, 1)[:, None]
        return self._decibels(mean)

    def sampled_image(self, chunks: np.ndarray) -> np.ndarray:
        """[mels, columns] in dB from one short chunk of samples per column [columns, samples]
        (a few frames each, in one batched transform): `flam review`'s picture of a long range."""
        with torch.no_grad():
            power = self.transform(torch.from_numpy(np.ascontiguousarray(chunks))).mean(dim=-1)
        return self._decibels(power.numpy())

    @staticmethod
    def _decibels(power: np.ndarray) -> np.ndarray:
        return (10 * np.log10(np.maximum(power, 1e-10))).T.astype(np.float32)
