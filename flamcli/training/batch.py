"""From a batch of clips to the loss's inputs: audio and text towers, padded text slots."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .losses import LossInputs, TextSlots


def encode_pooled(model, texts: list[str]) -> torch.Tensor:
    ids, mask = model.tokenizer(list(texts))
    return model.text_branch(ids.to(model.device), mask.to(model.device))


def loss_inputs(model, waveforms: torch.Tensor, slots: TextSlots,
                text_cache=None, embed=None) -> LossInputs:
    """Run both towers: frames [N, T, D], global [N, D], padded text block [C, ·].

    ``text_cache`` (a callable texts → pooled features) replaces the text encoder when the text
    tower is frozen; the projection and α/β heads still run (they may be trained). ``embed``
    replaces ``model.embed_audio`` (e.g. its torch.compile'd version).
    """
    frames, audio_global = (embed or model.embed_audio)(waveforms.to(model.device))
    capacity = slots.capacity
    texts = slots.texts
    anchor = model.logit_scale_a * 0  # keeps an all-padding block in the graph on every rank
    if texts:
        pooled = text_cache(texts) if text_cache is not None else encode_pooled(model, texts)
        heads = model.text_heads(list(texts), pooled)
        pad = capacity - len(texts)
        emb = F.pad(heads.embeddings, (0, 0, 0, pad))
        alpha = F.pad(heads.scale, (0, pad), value=1.0)
        beta = F.pad(heads.bias, (0, pad))
    else:
        dim = model.config.embed_dim
        emb = torch.zeros(capacity, dim, device=model.device) + anchor
        alpha = torch.ones(capacity, device=model.device) + anchor
        beta = torch.zeros(capacity, device=model.device) + anchor
    return LossInputs(frames, audio_global, emb, alpha, beta, slots)
