"""Model configuration: one dataclass tree describes every FLAM model flam can build.

A config round-trips through ``config.json`` (see :func:`FlamConfig.to_dict` /
:func:`FlamConfig.from_dict`), so a model directory is self-describing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FrontendConfig:
    """Waveform → log-mel front end (STFT as convolution, Slaney mel, dB, BatchNorm)."""

    sample_rate: int = 48_000
    window_seconds: float = 10.0
    n_fft: int = 1024
    hop_length: int = 480
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 14_000.0

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def stft_frames(self) -> int:
        # Centred STFT: one frame per hop plus the frame centred on the last sample.
        return self.window_samples // self.hop_length + 1


# Towers of conv blocks + GRU, whose fields are channels and frames.
CONV_TOWERS = ("cnn", "sfx")


@dataclass
class AudioEncoderConfig:
    """The audio tower: ``htsat`` (a Swin transformer over the folded log-mel image, the
    published architecture), ``cnn`` (conv blocks + GRU, :mod:`flamcli.models.cnn`) or ``sfx``
    (the pretrained aisfx sound-effects CNN + GRU, :mod:`flamcli.models.sfx`).

    The HTSAT fields are ignored by ``cnn`` and ``sfx``, and the CNN fields (``channels``,
    ``frames``, ``dropout``, ``freq_masks``, ``freq_mask_bins``) by ``htsat``; ``sfx`` has no
    frequency masking.
    """

    kind: str = "htsat"
    spec_size: int = 256
    freq_ratio: int = 4
    patch_size: int = 4
    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 12, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 8
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1
    channels: tuple[int, ...] = ()
    frames: int = 32
    dropout: float = 0.0
    # SpecAugment's frequency masking, in training only (cnn): this many bands of up to
    # freq_mask_bins mel bins each are blanked per clip (PANNs: 2 bands of up to 8 of 64 bins).
    freq_masks: int = 0
    freq_mask_bins: int = 8

    @property
    def out_dim(self) -> int:
        if self.kind in CONV_TOWERS:
            return self.channels[-1]
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def final_grid(self) -> int:
        return self.spec_size // self.patch_size // 2 ** (len(self.depths) - 1)

    @property
    def frames_per_window(self) -> int:
        if self.kind in CONV_TOWERS:
            return self.frames
        # Each time chunk of the fold contributes one frame per final-grid column.
        return self.freq_ratio * self.final_grid


@dataclass
class TextEncoderConfig:
    """BERT/RoBERTa-style transformer encoder (HF-compatible parameter names)."""

    kind: str = "roberta"  # "roberta" (position ids from padding_idx + 1) or "bert" (from 0)
    vocab_size: int = 50_265
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    max_length: int = 77
    pooling: str = "pooler"  # "pooler" (tanh dense on the first token) or "mean"
    lowercase: bool = False  # lower-case queries before tokenising (training captions were)


@dataclass
class FlamConfig:
    name: str = "flam"
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    embed_dim: int = 512
    # Initial values from the paper (§3.6): α ≈ 10, β ≈ −8 added to the default bias init.
    alpha_init: float = 2.302585092994046  # log(10)
    beta_init: float = -8.0
    # The model's default threshold on its frame probabilities, for `flam detect` and `flam
    # ground`: the calibrated boundary 0.5, unless refusal vs recall measured on held-out data
    # chose another operating point (bench/ground_presence.py; recorded in the model card).
    presence_threshold: float = 0.5

    @property
    def frames_per_window(self) -> int:
        return self.audio.frames_per_window

    @property
    def frame_seconds(self) -> float:
        return self.frontend.window_seconds / self.frames_per_window

    def validate(self) -> None:
        a, f, t = self.audio, self.frontend, self.text
        self._check_numbers()
        if not 0 <= f.f_min < f.f_max <= f.sample_rate / 2:
            raise ValueError("frontend: need 0 ≤ f_min < f_max ≤ sample_rate / 2")
        if f.hop_length > f.n_fft or f.window_samples < f.n_fft:
            raise ValueError("frontend: need hop_length ≤ n_fft ≤ the window's samples")
        if t.kind not in ("roberta", "bert") or t.pooling not in ("pooler", "mean"):
            raise ValueError("text: kind must be roberta or bert and pooling pooler or mean")
        if t.hidden_size % t.num_heads:
            raise ValueError("text: hidden_size must be a multiple of num_heads")
        if not isinstance(t.lowercase, bool):
            raise ValueError(f"text: lowercase must be true or false, not {t.lowercase!r}")
        if a.kind not in ("htsat",) + CONV_TOWERS:
            raise ValueError(f"audio kind must be htsat, cnn or sfx, not {a.kind!r}")
        if a.kind in CONV_TOWERS:
            if not a.channels or min(a.channels) < 2 or a.frames < 1:
                raise ValueError(f"a {a.kind} audio tower needs channels (each ≥ 2) and "
                                 "frames ≥ 1")
            if f.window_samples % self.frames_per_window:
                raise ValueError("window samples must be a multiple of the frame count")
            if a.freq_masks < 0 or not 1 <= a.freq_mask_bins <= f.n_mels:
                raise ValueError(f"freq_masks must be ≥ 0 and freq_mask_bins 1–{f.n_mels} "
                                 "(the mel bins)")
            return
        if a.spec_size % a.freq_ratio or f.n_mels != a.spec_size // a.freq_ratio:
            raise ValueError(
                f"n_mels ({f.n_mels}) must equal spec_size / freq_ratio ({a.spec_size}/{a.freq_ratio})"
            )
        if a.final_grid < a.freq_ratio or a.final_grid % a.freq_ratio:
            # Final grid rows are (time chunk, mel part) pairs: every chunk needs whole rows.
            raise ValueError("final grid must be a positive multiple of freq_ratio")
        if len(a.depths) != len(a.num_heads):
            raise ValueError("depths and num_heads must have the same length")
        if f.window_samples % self.frames_per_window:
            raise ValueError("window samples must be a multiple of the frame count")

    def _check_numbers(self) -> None:
        """Every size a whole number ≥ 1 and every real finite, by name: a hand-edited
        config.json with "64" or -1 would otherwise fail deep inside torch, or, like a
        threshold of 7, silently detect nothing."""
        import math

        allowed_zero = {"freq_masks", "pad_token_id"}
        for part in (self.frontend, self.audio, self.text, self):
            for item in dataclasses.fields(part):
                value, name = getattr(part, item.name), item.name
                if item.type in ("int", "tuple[int, ...]"):
                    values = value if isinstance(value, tuple) else (value,)
                    low = 0 if name in allowed_zero else 1
                    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= low
                               for v in values):
                        raise ValueError(f"{name}: need whole numbers ≥ {low}, not {value!r}")
                elif item.type == "float":
                    if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                            and math.isfinite(value)):
                        raise ValueError(f"{name} must be a finite number, not {value!r}")
        if self.frontend.window_seconds <= 0:
            raise ValueError("window_seconds must be > 0")
        if not 0 < self.presence_threshold < 1:
            raise ValueError(f"presence_threshold must be between 0 and 1, not "
                             f"{self.presence_threshold!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def missing_fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        """The fields ``data`` leaves out, dotted (``audio.dropout``), with the defaults
        :meth:`from_dict` gives them: a config.json from an older flam, or written by hand."""
        missing = {}
        for section, kind in (("frontend", FrontendConfig), ("audio", AudioEncoderConfig),
                              ("text", TextEncoderConfig)):
            given = data.get(section)
            if not isinstance(given, dict):
                continue
            for f in dataclasses.fields(kind):
                if f.name not in given and f.default is not dataclasses.MISSING:
                    missing[f"{section}.{f.name}"] = f.default
        for f in dataclasses.fields(cls):
            if f.name not in data and f.name not in ("frontend", "audio", "text") \
                    and f.default is not dataclasses.MISSING:
                missing[f.name] = f.default
        return missing

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FlamConfig":
        def build(kind, values):
            names = {f.name for f in dataclasses.fields(kind)}
            unknown = set(values) - names
            if unknown:
                raise ValueError(f"unknown {kind.__name__} keys: {sorted(unknown)}")
            return kind(**values)

        data = dict(data)
        frontend = build(FrontendConfig, data.pop("frontend", {}))
        audio_values = dict(data.pop("audio", {}))
        for key in ("depths", "num_heads", "channels"):
            if key in audio_values:
                audio_values[key] = tuple(audio_values[key])
        audio = build(AudioEncoderConfig, audio_values)
        text = build(TextEncoderConfig, data.pop("text", {}))
        config = build(cls, {**data, "frontend": frontend, "audio": audio, "text": text})
        config.validate()
        return config


def openflam_v1_base_config() -> FlamConfig:
    """The published OpenFLAM v1-base architecture (HTSAT-base + RoBERTa-base)."""
    return FlamConfig(name="openflam-v1-base")


def debug_config() -> FlamConfig:
    """A tiny architecture of the same shape, built in code in well under a second.

    16 kHz, 10 s windows, 32 frames of 0.3125 s like the real model, so every code path
    (windowing, stitching, frame times) is exercised with realistic geometry.
    """
    return FlamConfig(
        name="debug",
        frontend=FrontendConfig(
            sample_rate=16_000, n_fft=512, hop_length=160, n_mels=16, f_min=50.0, f_max=8_000.0
        ),
        audio=AudioEncoderConfig(
            spec_size=64, freq_ratio=4, patch_size=4, embed_dim=16,
            depths=(1, 1), num_heads=(2, 2), window_size=4, drop_path_rate=0.0,
        ),
        text=TextEncoderConfig(
            kind="roberta", vocab_size=260, hidden_size=32, num_layers=2, num_heads=2,
            intermediate_size=64, max_position_embeddings=80, type_vocab_size=1,
            pad_token_id=1, max_length=77, lowercase=True,
        ),
        embed_dim=32,
    )


def flam_tiny_config() -> FlamConfig:
    """flam-tiny, the bundled model: a small CNN audio tower at 16 kHz and the frozen
    all-MiniLM-L6-v2.

    Audio: 64 mel bins at 16 kHz with a 20 ms hop, five conv blocks of 16–256 channels and a
    bidirectional GRU (about 2 M parameters, 8 MiB in fp32), with the real model's geometry:
    10 s windows, 32 frames of 0.3125 s. This is the architecture training starts from; the shipped
    model was then fine-tuned with ``flam train --frames 64`` (0.156 s frames, the conv stack's
    own time resolution), which changes no weight (models/flam-tiny/README.md). A conv tower
    learns from a few hundred clips on two CPU cores much faster than a Swin transformer of the
    same cost (docs/flam-tiny-history.md, run 1 vs run 2). Text: all-MiniLM-L6-v2 (BERT, 6 layers, 384
    wide, uncased WordPiece, mean pooling), kept frozen in training. β starts at −4, about the
    log prior odds of a description in a 16-clip batch (one clip, a third of its frames),
    instead of the paper's −8 for 512 clips: near −8 the SED loss barely pushes negatives below
    cosine 0, the calibrated boundary.
    """
    return FlamConfig(
        name="flam-tiny",
        frontend=FrontendConfig(
            sample_rate=16_000, n_fft=640, hop_length=320, n_mels=64, f_min=50.0, f_max=8_000.0
        ),
        audio=AudioEncoderConfig(kind="cnn", channels=(16, 32, 64, 128, 256), frames=32),
        text=TextEncoderConfig(
            kind="bert", vocab_size=30_522, hidden_size=384, num_layers=6, num_heads=12,
            intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2,
            layer_norm_eps=1e-12, pad_token_id=0, max_length=77, pooling="mean", lowercase=True,
        ),
        embed_dim=256,
        beta_init=-4.0,
    )


def flam_sfx_config() -> FlamConfig:
    """flam-sfx: the pretrained aisfx sound-effects CNN (Ma & Lerch, ISMIR 2022; CC BY 4.0) as
    the audio tower, at its own front end (44.1 kHz, 96 HTK mel bands, 23.2 ms hop), with 50
    frames of 0.2 s per 10 s window and a bidirectional GRU; the frozen all-MiniLM-L6-v2 as
    the text tower, as in flam-tiny. The conv blocks come from the converted aisfx weights
    (``python -m flamcli.models.sfx convert``); the rest is trained by flam.
    """
    tiny = flam_tiny_config()
    return FlamConfig(
        name="flam-sfx",
        frontend=FrontendConfig(
            sample_rate=44_100, n_fft=2048, hop_length=1024, n_mels=96, f_min=0.0,
            f_max=22_050.0,
        ),
        audio=AudioEncoderConfig(kind="sfx", channels=(64, 128, 256, 512), frames=50),
        text=tiny.text,
        embed_dim=256,
        beta_init=-4.0,
    )
