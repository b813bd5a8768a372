"""Waveform → normalised log-mel → folded HTSAT image.

The STFT is a pair of convolutions and the mel matrix is a tensor because that is how the
published checkpoints store them (``spectrogram_extractor.stft.conv_{real,imag}.weight``,
``logmel_extractor.melW``); computing them here keeps every key loadable strictly while a
fresh model gets the exact same values.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from .config import AudioEncoderConfig, FrontendConfig


def on_cpu(function):
    """Compute a fixed tensor on the CPU even while a model is built on the meta device (as
    the loader does, to skip random init); loading the weights then replaces it.

    Results are cached per arguments (a model has many blocks of one geometry, and every load
    builds the model again) and each call returns fresh copies, so that no two buffers share
    memory (safetensors refuses to save shared tensors).
    """
    cached = functools.lru_cache(maxsize=None)(function)

    @functools.wraps(function)
    def wrapper(*args):
        with torch.device("cpu"):
            result = cached(*args)
        if isinstance(result, tuple):
            return tuple(t.clone() for t in result)
        return result.clone()

    return wrapper


@on_cpu
def stft_kernels(n_fft: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary DFT kernels with a periodic Hann window, shape [n_fft//2+1, 1, n_fft]."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    window = 0.5 - 0.5 * torch.cos(2 * math.pi * n / n_fft)
    angle = 2 * math.pi * k * n / n_fft
    real = (torch.cos(angle) * window).float()[:, None, :]
    imag = (-torch.sin(angle) * window).float()[:, None, :]
    return real, imag


def slaney_mel_matrix(config: FrontendConfig) -> torch.Tensor:
    """[n_freqs, n_mels] Slaney-scale, Slaney-normalised filterbank (librosa's default)."""
    return _slaney_mel_matrix(config.n_fft // 2 + 1, config.f_min, config.f_max, config.n_mels,
                              config.sample_rate)


@on_cpu
def _slaney_mel_matrix(n_freqs: int, f_min: float, f_max: float, n_mels: int,
                       sample_rate: int) -> torch.Tensor:
    return torchaudio.functional.melscale_fbanks(
        n_freqs=n_freqs, f_min=f_min, f_max=f_max, n_mels=n_mels, sample_rate=sample_rate,
        norm="slaney", mel_scale="slaney",
    ).float()


class _ConvSTFT(nn.Module):
    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.conv_real = nn.Conv1d(1, n_fft // 2 + 1, n_fft, stride=hop_length, bias=False)
        self.conv_imag = nn.Conv1d(1, n_fft // 2 + 1, n_fft, stride=hop_length, bias=False)
        real, imag = stft_kernels(n_fft)
        with torch.no_grad():
            self.conv_real.weight.copy_(real)
            self.conv_imag.weight.copy_(imag)
        # Fixed transforms: never trained.
        self.conv_real.weight.requires_grad_(False)
        self.conv_imag.weight.requires_grad_(False)


class SpectrogramExtractor(nn.Module):
    """Centred, reflect-padded power spectrogram: [B, samples] → [B, 1, frames, n_fft//2+1].

    While the convolution kernels hold the exact Hann-windowed DFT (always, unless someone
    trained them), the same numbers come from an FFT at a fraction of the cost.
    """

    def __init__(self, config: FrontendConfig):
        super().__init__()
        self.stft = _ConvSTFT(config.n_fft, config.hop_length)
        self._kernels_checked: tuple | None = None  # (version, data_ptr) of a verified kernel

    def _kernels_are_dft(self) -> bool:
        weight_real, weight_imag = self.stft.conv_real.weight, self.stft.conv_imag.weight
        key = (weight_real._version, weight_real.data_ptr(), weight_imag._version,
               weight_imag.data_ptr(), weight_real.device)
        if self._kernels_checked == key:
            return True
        real, imag = stft_kernels(self.stft.n_fft)
        ok = bool(torch.allclose(weight_real.float().cpu(), real, atol=1e-6)
                  and torch.allclose(weight_imag.float().cpu(), imag, atol=1e-6))
        self._kernels_checked = key if ok else None
        return ok

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        n_fft, hop = self.stft.n_fft, self.stft.hop_length
        if not self.training and self._kernels_are_dft():
            window = torch.hann_window(n_fft, periodic=True, device=waveform.device,
                                       dtype=torch.float32)
            spec = torch.stft(waveform.float(), n_fft, hop, window=window, center=True,
                              pad_mode="reflect", return_complex=True)
            return (spec.real.square() + spec.imag.square()).transpose(1, 2)[:, None]
        x = F.pad(waveform[:, None, :], (n_fft // 2, n_fft // 2), mode="reflect")
        real = self.stft.conv_real(x)
        imag = self.stft.conv_imag(x)
        power = real.square() + imag.square()  # [B, freqs, frames]
        return power.transpose(1, 2)[:, None]


class LogmelExtractor(nn.Module):
    def __init__(self, config: FrontendConfig):
        super().__init__()
        self.register_buffer("melW", slaney_mel_matrix(config))

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(power, self.melW)
        # dB with ref 1 and amin 1e-10, no top_db clipping (the published front end).
        return 10.0 * torch.log10(mel.clamp_min(1e-10))


def normalise_and_fold(
    logmel: torch.Tensor, bn0: nn.BatchNorm2d, audio: AudioEncoderConfig
) -> torch.Tensor:
    """[B, 1, frames, mels] → BatchNorm over mel bins → bicubic time resize → fold to a square.

    Pixel (mels·k + m, τ) of the folded image is mel bin m of resized frame (T/freq_ratio)·k + τ.
    """
    x = bn0(logmel.transpose(1, 3)).transpose(1, 3)
    batch, _, _, mels = x.shape
    time_frames = audio.spec_size * audio.freq_ratio
    x = F.interpolate(x, size=(time_frames, mels), mode="bicubic", align_corners=True)
    chunk = time_frames // audio.freq_ratio
    x = x.reshape(batch, audio.freq_ratio, chunk, mels)  # [B, k, τ, m]
    x = x.permute(0, 1, 3, 2).reshape(batch, 1, audio.freq_ratio * mels, chunk)
    return x


class LogmelTower(nn.Module):
    """Base of the audio towers: waveform → log-mel (``spectrogram_extractor``,
    ``logmel_extractor``) and the BatchNorm over mel bins (``bn0``), named as in the
    published HTSAT checkpoints."""

    def __init__(self, config: FrontendConfig):
        super().__init__()
        self.spectrogram_extractor = SpectrogramExtractor(config)
        self.logmel_extractor = LogmelExtractor(config)
        self.bn0 = nn.BatchNorm2d(config.n_mels)

    def logmel(self, waveform: torch.Tensor) -> torch.Tensor:
        """[B, samples] → [B, 1, stft_frames, n_mels] log-mel in dB (before normalisation)."""
        return self.logmel_extractor(self.spectrogram_extractor(waveform))
