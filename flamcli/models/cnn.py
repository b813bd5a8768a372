"""A compact convolutional audio tower (``audio.kind = "cnn"``) for small, CPU-trained models.

A Swin transformer trained from scratch on a few hundred clips learns slowly: it has no
built-in notion that a sound shifted in time or pitch is the same sound. A stack of 3×3
convolutions has that prior, which is why DCASE's baselines for small SED corpora are CRNNs.
Layout: log-mel → BatchNorm over mel bins → conv blocks (two 3×3 conv + BatchNorm + ReLU,
then average pooling; time is pooled only in the first three blocks) → mean over the
remaining mel rows → average pooling to ``frames`` frames → a bidirectional GRU for
context across frames. Output: [B, frames, channels[-1]].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import AudioEncoderConfig, FrontendConfig
from .frontend import LogmelTower

# Three halvings of the STFT frame rate (50/s at flam-tiny's 20 ms hop → 6.25/s) stay finer
# than the 3.2 output frames per second.
TIME_POOLED_BLOCKS = 3


class ConvBlock(nn.Module):
    """Two 3×3 conv (no bias) + BatchNorm + ReLU, then pooling: average with a partial last
    window kept (flam-tiny's tower), or max with it dropped (aisfx's, as published)."""

    def __init__(self, channels_in: int, channels_out: int, pool: tuple[int, int],
                 max_pool: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.pool = pool
        self.max_pool = max_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        if self.max_pool:
            return F.max_pool2d(x, self.pool) if self.pool != (1, 1) else x
        return F.avg_pool2d(x, self.pool, ceil_mode=True)


def mask_frequency_bands(x: torch.Tensor, bands: int, max_bins: int) -> torch.Tensor:
    """SpecAugment's frequency masking of a normalised log-mel [B, 1, time, mels]: each clip
    gets ``bands`` bands of 0…max_bins mel bins set to 0 (the normalised mean).

    Frequency only: a time mask would blank frames whose labels still say the event sounds.
    A held-out recording of a class differs from the training ones mostly in its spectrum
    (another dog, another microphone), and hiding bands makes the tower use all of it.
    """
    n_mels = x.shape[-1]
    keep = torch.ones(x.shape[0], n_mels, dtype=torch.bool, device=x.device)
    bins = torch.arange(n_mels, device=x.device)
    for _ in range(bands):
        width = torch.randint(0, max_bins + 1, (x.shape[0], 1), device=x.device)
        start = (torch.rand(x.shape[0], 1, device=x.device) * (n_mels - width + 1)).long()
        keep &= ~((bins >= start) & (bins < start + width))
    return x * keep[:, None, None, :].to(x.dtype)


class CNNEncoder(LogmelTower):
    """[B, samples] → frame features [B, frames, channels[-1]]."""

    def __init__(self, frontend: FrontendConfig, config: AudioEncoderConfig):
        super().__init__(frontend)
        self.config = config
        blocks, previous = [], 1
        for i, width in enumerate(config.channels):
            pool = (2 if i < TIME_POOLED_BLOCKS else 1, 2)
            blocks.append(ConvBlock(previous, width, pool))
            previous = width
        self.blocks = nn.ModuleList(blocks)
        self.dropout = nn.Dropout(config.dropout)
        self.gru = nn.GRU(previous, previous // 2, batch_first=True, bidirectional=True)
        self.norm = nn.LayerNorm(previous)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = self.logmel(waveform)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # [B, 1, time, mels]
        if self.training and self.config.freq_masks:
            x = mask_frequency_bands(x, self.config.freq_masks, self.config.freq_mask_bins)
        for block in self.blocks:
            x = block(x)
        x = x.mean(dim=3)  # [B, C, time]
        x = F.adaptive_avg_pool1d(x, self.config.frames).transpose(1, 2)  # [B, frames, C]
        x = self.dropout(x)
        context, _ = self.gru(x)
        return self.norm(x + context)
