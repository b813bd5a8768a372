"""The FLAM model: audio tower + text tower + projections + per-text logit scale and bias.

Frame-wise logit (FLAM Eq. 5): ℓ(t, y) = α(y)·⟨a(t), e(y)⟩ + β(y), with a and e L2-normalised.
Calibrated (unbiased) frame probability (Eq. 7): s = σ(ℓ) / (σ(ℓ) + σ(β(y))), boundary 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .config import FlamConfig
from .linear import Linear
from .cnn import CNNEncoder
from .htsat import HTSATEncoder
from .sfx import SfxEncoder
from .text import TextEncoder, TextTokenizer


def projection(inp: int, out: int) -> nn.Sequential:
    return nn.Sequential(Linear(inp, out), nn.ReLU(), Linear(out, out))


def text_head(hidden: int, init_bias: float) -> nn.Sequential:
    head = nn.Sequential(Linear(hidden, hidden), nn.GELU(), Linear(hidden, 1))
    with torch.no_grad():  # the paper adds its init to PyTorch's default bias init (§3.6)
        head[2].bias.add_(init_bias)
    return head


@dataclass
class TextEmbedding:
    """Everything the frame scorer needs about a set of texts, computed once per run."""

    texts: list[str]
    embeddings: torch.Tensor  # [C, D], L2-normalised
    scale: torch.Tensor  # α, [C]
    bias: torch.Tensor  # β, [C]

    def to(self, device) -> "TextEmbedding":
        return TextEmbedding(self.texts, self.embeddings.to(device), self.scale.to(device),
                             self.bias.to(device))


@dataclass
class ModelInfo:
    """Where a loaded model came from; recorded with every result."""

    name: str
    source: str = "built-in"
    revision: str | None = None
    licence: str | None = None
    extra: dict = field(default_factory=dict)
    precision: str = "fp32"  # "int8" after flamcli.models.int8.quantize_int8

    def as_dict(self) -> dict:
        out = {"name": self.name, "source": self.source}
        if self.revision:
            out["revision"] = self.revision
        if self.licence:
            out["licence"] = self.licence
        if self.precision != "fp32":  # fp32 records stay as they were before int8 existed
            out["precision"] = self.precision
        return out


def calibrated_probability(cosine: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                           unbiased: bool = True) -> torch.Tensor:
    """Frame probabilities from cosines [..., C, T] and per-text α, β [C].

    Unbiased: p/(p + σ(β)) with p = σ(α·cos + β), evaluated in log space so that very negative
    β (σ(β) underflows in float32 below about −88) stays exact. Approximate: σ(α·cos).
    """
    scale = scale[:, None].float()
    bias = bias[:, None].float()
    cosine = cosine.float()
    if not unbiased:
        return torch.sigmoid(scale * cosine)
    log_p = F.logsigmoid(scale * cosine + bias)
    log_prior = F.logsigmoid(bias).expand_as(log_p)
    return torch.exp(log_p - torch.logaddexp(log_p, log_prior))


class FlamModel(nn.Module):
    def __init__(self, config: FlamConfig, tokenizer: TextTokenizer | None = None):
        super().__init__()
        config.validate()
        self.config = config
        self.tokenizer = tokenizer
        self.info = ModelInfo(name=config.name)
        hidden = config.text.hidden_size
        self.logit_scale_a = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        # Global SED scale exp(0) = 1, frozen, as in the published model.
        self.aed_logit_scale = nn.Parameter(torch.tensor(0.0), requires_grad=False)
        tower = {"cnn": CNNEncoder, "sfx": SfxEncoder}.get(config.audio.kind, HTSATEncoder)
        self.audio_branch = tower(config.frontend, config.audio)
        self.audio_projection = projection(config.audio.out_dim, config.embed_dim)
        self.text_branch = TextEncoder(config.text)
        self.text_projection = projection(hidden, config.embed_dim)
        self.fc_per_text_logit_bias = text_head(hidden, config.beta_init)
        self.fc_per_text_logit_scale = text_head(hidden, config.alpha_init)

    # -- geometry ------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.config.frontend.sample_rate

    @property
    def window_samples(self) -> int:
        return self.config.frontend.window_samples

    @property
    def frames_per_window(self) -> int:
        return self.config.frames_per_window

    @property
    def frame_seconds(self) -> float:
        return self.config.frame_seconds

    @property
    def device(self) -> torch.device:
        return self.logit_scale_a.device

    # -- audio ---------------------------------------------------------------------------------
    def embed_audio(self, waveforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, window_samples] at the model rate → (frames [B, T, D], global [B, D]), normalised.

        The global embedding projects the mean frame feature (not the mean of projections).
        """
        features = self.audio_branch(waveforms)
        frames = F.normalize(self.audio_projection(features), dim=-1)
        global_ = F.normalize(self.audio_projection(features.mean(dim=1)), dim=-1)
        return frames, global_

    def embed_audio_frames(self, waveforms: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.audio_projection(self.audio_branch(waveforms)), dim=-1)

    # -- text ----------------------------------------------------------------------------------
    def encode_text(self, texts: list[str]) -> TextEmbedding:
        """Run the text tower once per text: embeddings, α (scale) and β (bias)."""
        if self.tokenizer is None:
            raise RuntimeError("this model has no tokenizer")
        ids, mask = self.tokenizer(list(texts))
        pooled = self.text_branch(ids.to(self.device), mask.to(self.device))
        return self.text_heads(list(texts), pooled)

    def text_heads(self, texts: list[str], pooled: torch.Tensor) -> TextEmbedding:
        embeddings = F.normalize(self.text_projection(pooled), dim=-1)
        scale = torch.exp(self.fc_per_text_logit_scale(pooled).squeeze(-1)) * torch.exp(
            self.aed_logit_scale
        )
        bias = self.fc_per_text_logit_bias(pooled).squeeze(-1)
        return TextEmbedding(texts, embeddings, scale, bias)

    # -- scores --------------------------------------------------------------------------------
    def frame_probabilities(self, frames: torch.Tensor, text: TextEmbedding,
                            unbiased: bool = True) -> torch.Tensor:
        """frames [B, T, D] × texts [C] → probabilities [B, C, T] (float32)."""
        cosine = torch.einsum("btd,cd->bct", frames.float(), text.embeddings.float())
        return calibrated_probability(cosine, text.scale, text.bias, unbiased=unbiased)

    def forward(self, waveforms: torch.Tensor, texts: list[str], unbiased: bool = True):
        frames = self.embed_audio_frames(waveforms)
        return self.frame_probabilities(frames, self.encode_text(texts), unbiased=unbiased)
