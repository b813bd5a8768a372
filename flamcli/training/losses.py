"""FLAM training objectives (the FLAM paper, Wu et al. 2025, §3.2–3.3 and appendix C.2–C.3).

Total loss  L = λ_global·L_global + λ_SED·L_SED + λ_prior·L_prior   (defaults 1, 200, 1).

* **SED** (Eq. 4): binary cross-entropy of ℓ(n,t,y) = α(y)·⟨a(n,t), e(y)⟩ + sg[β(y)] against
  the frame target of description y in clip n, over every (valid clip, unique description of
  the batch, frame) triple; masked sum / (#valid clip–text pairs × T). β is detached: the SED
  loss trains α (and the towers), never the β head.
* **Prior** (Eq. 10): BCE of σ(β(y)) against ȳ(y), the fraction of positive frames of y over
  all valid clips of the (whole, multi-rank) batch; mean over unique valid descriptions.
* **Global**: ``sigmoid`` (SigLIP: BCE over every clip × description pair of
  exp(s)·⟨g(n), e(y)⟩ + b, positive iff y describes clip n, sum / #valid clips; s is the model's
  ``logit_scale_a``, b a learnable bias owned by :class:`FlamLoss`, initialised to SigLIP's −10)
  or ``infonce`` (symmetric CLIP cross-entropy with temperature exp(s); a clip with several
  descriptions has a uniform target over them) or ``none``.

Union-of-descriptions labelling: the texts of a batch (each clip's labels and negative queries)
are deduplicated into text slots, 5 per audio clip, padded and masked. A description not
annotated for a clip is negative on all of that clip's frames; negative queries are all-zero.

Distributed (``group`` given, see :mod:`flamcli.training.ring`): each rank holds its own clips
and text slots; text embeddings travel round a ring and every rank scores its local frames
against each block in turn. A remote slot whose text also sits locally, or on an earlier rank,
is masked, so each (clip, unique description) pair counts exactly once and the sum of the
ranks' losses equals the single-process loss over the whole batch (tested to 1e-5).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

TEXT_SLOTS_PER_CLIP = 5


def normalise_caption(text: str) -> str:
    """The deduplication key of a description: whitespace collapsed, case folded."""
    return " ".join(str(text).split()).casefold()


def text_id(text: str) -> int:
    """A stable 62-bit id of a description (equal for equal deduplication keys)."""
    digest = hashlib.blake2b(normalise_caption(text).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 62) - 1)


@dataclass
class TextSlots:
    """A batch's deduplicated descriptions and every clip's targets against them."""

    texts: list[str]  # unique descriptions, len ≤ capacity
    ids: torch.Tensor  # [C] int64, −1 for padding
    text_mask: torch.Tensor  # [C] bool
    audio_mask: torch.Tensor  # [N] bool: clips whose descriptions did not fit are masked
    targets: torch.Tensor  # [N, C, T] float in [0, 1] (fraction of each frame active)
    present: torch.Tensor  # [N, C] float: 1 where the description labels the clip
    dropped_clips: int = 0
    # [N, K] int64 ids (−1 padding) of descriptions that fit clip n without labelling it (its
    # events' tags and captions): those (clip, description) pairs are left out of the SED
    # and sigmoid terms instead of counting as negatives.
    unlabelled_ids: torch.Tensor | None = None

    @property
    def capacity(self) -> int:
        return int(self.ids.numel())


def build_text_slots(labels: list[dict[str, list]], negatives: list[list[str]], n_frames: int,
                     duration: float, capacity: int | None = None,
                     valid: list[bool] | None = None,
                     unlabelled: list[list[str]] | None = None) -> TextSlots:
    """Union-of-descriptions labelling of one (local) batch.

    ``labels[n]`` maps description → [[onset, offset], …] seconds; ``negatives[n]`` are
    descriptions absent from clip n. Slots are filled in clip order; a clip whose new
    descriptions would overflow ``capacity`` (default 5 per clip) is masked instead (the
    reference's "text slots fill first" rule). ``valid[n]`` False marks a padding clip.
    ``unlabelled[n]``: descriptions that fit clip n but are not among its labels (e.g. the tag
    "music" of its piano when another clip is labelled "music"); never negatives for clip n.
    """
    from ..synth.mixing import frame_targets

    n = len(labels)
    capacity = TEXT_SLOTS_PER_CLIP * n if capacity is None else capacity
    valid = [True] * n if valid is None else list(valid)
    keys: dict[str, int] = {}
    texts: list[str] = []
    audio_mask = torch.zeros(n, dtype=torch.bool)
    dropped = 0
    for i in range(n):
        if not valid[i]:
            continue
        mine = [t for t in list(labels[i]) + list(negatives[i]) if normalise_caption(t)]
        new = []
        for text in mine:
            key = normalise_caption(text)
            if key not in keys and key not in {normalise_caption(x) for x in new}:
                new.append(text)
        if len(texts) + len(new) > capacity:
            dropped += 1
            continue
        for text in new:
            keys[normalise_caption(text)] = len(texts)
            texts.append(text)
        audio_mask[i] = True
    ids = torch.full((capacity,), -1, dtype=torch.long)
    ids[: len(texts)] = torch.tensor([text_id(t) for t in texts], dtype=torch.long)
    text_mask = ids >= 0
    targets = torch.zeros(n, capacity, n_frames)
    present = torch.zeros(n, capacity)
    for i in range(n):
        if not audio_mask[i]:
            continue
        # Merge labels that deduplicate to the same slot (e.g. "Dog" and "dog").
        merged: dict[int, list] = {}
        for text, intervals in labels[i].items():
            if normalise_caption(text) in keys and intervals:
                merged.setdefault(keys[normalise_caption(text)], []).extend(intervals)
        for column, intervals in merged.items():
            frames = frame_targets({"x": intervals}, ["x"], n_frames, duration)[:, 0]
            targets[i, column] = torch.from_numpy(frames)
            present[i, column] = 1.0
    unlabelled_ids = None
    if unlabelled is not None:
        rows = []
        for i in range(n):
            own = {normalise_caption(t) for t in labels[i]}
            rows.append(sorted({text_id(t) for t in unlabelled[i]
                                if normalise_caption(t) and normalise_caption(t) not in own}))
        width = max([len(r) for r in rows] + [1])
        unlabelled_ids = torch.full((n, width), -1, dtype=torch.long)
        for i, row in enumerate(rows):
            unlabelled_ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
    return TextSlots(texts, ids, text_mask, audio_mask, targets, present, dropped, unlabelled_ids)


def _pair_include(block_ids: torch.Tensor, keep: torch.Tensor, n_clips: int,
                  unlabelled_ids: torch.Tensor | None) -> torch.Tensor:
    """[N, C] pairs of local clips × one text block that count: ``keep`` minus the pairs
    whose description fits the clip without labelling it."""
    include = keep[None, :].expand(n_clips, -1)
    if unlabelled_ids is not None:
        fits = (block_ids[None, :, None] == unlabelled_ids[:, None, :]).any(-1)
        include = include & ~(fits & (block_ids >= 0)[None, :])
    return include


@dataclass
class LossConfig:
    global_loss: str = "sigmoid"  # sigmoid | infonce | none
    global_weight: float = 1.0
    sed_weight: float = 200.0  # [code] λ_SED
    prior_weight: float = 1.0  # [code] λ_prior
    sigmoid_bias_init: float = -10.0  # SigLIP's b init
    max_logit_scale: float = 100.0  # CLIP's clamp of exp(s)
    checkpoint_blocks: bool = True  # recompute each block's logits in backward (memory)

    def validate(self) -> None:
        if self.global_loss not in ("sigmoid", "infonce", "none"):
            raise ValueError("global_loss must be sigmoid, infonce or none")
        for name in ("global_weight", "sed_weight", "prior_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0")


@dataclass
class LossInputs:
    """One rank's side of a batch: audio, its text slots and the text heads' outputs."""

    frames: torch.Tensor  # [N, T, D] normalised
    audio_global: torch.Tensor  # [N, D] normalised
    text_embeddings: torch.Tensor  # [C, D] normalised (padding rows arbitrary, e.g. 0)
    alpha: torch.Tensor  # [C] per-text scale α (>0)
    beta: torch.Tensor  # [C] per-text bias β
    slots: TextSlots


@dataclass
class LossOutput:
    total: torch.Tensor  # this rank's share; the ranks' shares sum to the full loss
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # weighted shares, detached


def _loss_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)  # fp32 maths (fp64 stays fp64)


def _block_terms(frames, audio_global, audio_mask, targets, present, block, include,
                 global_scale, global_bias, with_sigmoid: bool):
    """Masked sums of one (local frames × one text block) pairing: (SED sum, sigmoid sum).

    ``block`` is [C, D + 2]: embeddings, α, β (β used detached). ``targets``/``present`` are
    None for a remote block: every pair is negative there.
    """
    dim = frames.shape[-1]
    dtype = _loss_dtype(frames)
    emb = block[:, :dim].to(dtype)
    alpha = block[:, dim].to(dtype)
    beta = block[:, dim + 1].detach().to(dtype)  # stop-gradient: SED never trains β
    weight = (include & audio_mask[:, None]).to(dtype)  # [N, C]
    cosine = torch.einsum("ntd,cd->nct", frames.to(dtype), emb)
    logits = alpha[None, :, None] * cosine + beta[None, :, None]
    if targets is None:
        bce = F.softplus(logits)  # −log σ(−ℓ)
    else:
        bce = F.binary_cross_entropy_with_logits(logits, targets.to(dtype), reduction="none")
    sed = (bce.sum(-1) * weight).sum()
    if not with_sigmoid:
        return sed, sed.new_zeros(())
    glogits = global_scale.to(dtype) * (audio_global.to(dtype) @ emb.T) + global_bias.to(dtype)
    if present is None:
        gl = F.softplus(glogits)
    else:
        gl = F.binary_cross_entropy_with_logits(glogits, present.to(dtype), reduction="none")
    return sed, (gl * weight).sum()


class FlamLoss(nn.Module):
    """SED + prior + global loss; owns the sigmoid loss's learnable bias."""

    def __init__(self, config: LossConfig | None = None):
        super().__init__()
        self.config = config or LossConfig()
        self.config.validate()
        self.global_bias = nn.Parameter(torch.tensor(float(self.config.sigmoid_bias_init)))

    def forward(self, inputs: LossInputs, logit_scale: torch.Tensor, group=None) -> LossOutput:
        from . import ring

        cfg = self.config
        slots = inputs.slots
        world = ring.world_size(group)
        device = inputs.frames.device
        n_frames = inputs.frames.shape[1]
        dtype = _loss_dtype(inputs.frames)
        audio_mask = slots.audio_mask.to(device)
        text_mask = slots.text_mask.to(device)
        ids = slots.ids.to(device)
        targets = slots.targets.to(device)
        present = slots.present.to(device)

        # Small integer/count bookkeeping, gathered from every rank (no gradients).
        all_ids = ring.all_gather_plain(ids, group)  # [G, C]
        all_mask = all_ids >= 0
        canonical = ring.canonical_slots(all_ids)  # [G, C] first occurrence over ranks
        rank = ring.rank(group)
        local_valid = audio_mask.to(dtype)
        positive_frames = (targets * local_valid[:, None, None]).sum(dim=(0, 2))  # [C]
        stats = torch.stack([local_valid.sum(), local_valid.new_tensor(0.0)])
        all_pos = ring.all_gather_plain(positive_frames.to(torch.float64), group)  # [G, C]
        clips_global = ring.all_reduce_plain(stats.to(torch.float64), group)[0]

        # The (local clip, description) pairs of each hop's text block: every local slot, then
        # the canonical remote slots that are not local; minus the unlabelled matches.
        unlabelled = None if slots.unlabelled_ids is None else slots.unlabelled_ids.to(device)
        includes = []
        for hop in range(world):
            owner = (rank - hop) % world
            keep = text_mask if hop == 0 else (canonical[owner]
                                               & ~torch.isin(all_ids[owner], ids[text_mask]))
            includes.append(_pair_include(all_ids[owner], keep, len(audio_mask), unlabelled))
        local_pairs = sum((inc & audio_mask[:, None]).sum() for inc in includes)
        pairs = ring.all_reduce_plain(local_pairs.to(torch.float64).reshape(1), group)[0]
        unique_texts = canonical.sum().to(torch.float64)

        parts: dict[str, torch.Tensor] = {}
        total = inputs.frames.new_zeros((), dtype=dtype)
        scale = logit_scale.exp().clamp(max=cfg.max_logit_scale)
        with_sigmoid = cfg.global_loss == "sigmoid" and cfg.global_weight > 0

        # -- SED (+ sigmoid global) through the ring --------------------------------------
        sed_sum = total.new_zeros(())
        sig_sum = total.new_zeros(())
        if cfg.sed_weight > 0 or with_sigmoid:
            block = torch.cat([inputs.text_embeddings, inputs.alpha[:, None],
                               inputs.beta.detach()[:, None]], dim=1)
            for hop in range(world):
                if hop > 0:
                    block = ring.ring_pass(block, group)
                include = includes[hop]
                tgt, pres = (targets, present) if hop == 0 else (None, None)
                args = (inputs.frames, inputs.audio_global, audio_mask, tgt, pres, block,
                        include, scale, self.global_bias, with_sigmoid)
                if cfg.checkpoint_blocks and torch.is_grad_enabled():
                    sed, sig = checkpoint(_block_terms, *args, use_reentrant=False)
                else:
                    sed, sig = _block_terms(*args)
                sed_sum = sed_sum + sed
                sig_sum = sig_sum + sig
            if cfg.sed_weight > 0:
                sed_loss = sed_sum / (pairs.clamp(min=1) * n_frames).to(dtype)
                parts["sed"] = cfg.sed_weight * sed_loss
            if with_sigmoid:
                parts["global"] = cfg.global_weight * sig_sum / clips_global.clamp(min=1).to(dtype)

        # -- prior (local β only; targets gathered) ------------------------------------------
        if cfg.prior_weight > 0:
            same = all_ids[rank][:, None, None] == all_ids[None, :, :]  # [C, G, C]
            same = same & all_mask[None] & text_mask[:, None, None]
            prior_target = (same.to(torch.float64) * all_pos[None]).sum(dim=(1, 2))
            prior_target = (prior_target / (clips_global.clamp(min=1) * n_frames)).clamp(0, 1)
            beta = inputs.beta.to(dtype)
            bce = F.binary_cross_entropy_with_logits(beta, prior_target.to(dtype),
                                                     reduction="none")
            prior = (bce * canonical[rank].to(dtype)).sum() / unique_texts.clamp(min=1).to(dtype)
            parts["prior"] = cfg.prior_weight * prior

        # -- InfoNCE (gathers the small global embeddings, with gradients) -------------------
        if cfg.global_loss == "infonce" and cfg.global_weight > 0:
            parts["global"] = cfg.global_weight * self._infonce(inputs, scale, group, canonical,
                                                                 all_ids, dtype)

        for value in parts.values():
            total = total + value
        return LossOutput(total, {k: v.detach() for k, v in parts.items()})

    def _infonce(self, inputs: LossInputs, scale, group, canonical, all_ids, dtype):
        """Symmetric InfoNCE over every clip × unique description of the whole batch."""
        from . import ring

        slots = inputs.slots
        device = inputs.frames.device
        rank = ring.rank(group)
        g_audio = ring.all_gather_grad(inputs.audio_global.to(dtype), group)  # [G·N, D]
        g_text = ring.all_gather_grad(inputs.text_embeddings.to(dtype), group)  # [G·C, D]
        audio_mask = ring.all_gather_plain(slots.audio_mask.to(device), group).reshape(-1)
        # Positive ids per clip, gathered: clip m is positive for id y iff y ∈ pos_ids[m].
        pos_ids = torch.where(slots.present.to(device) > 0, slots.ids.to(device)[None, :],
                              torch.full_like(slots.present, -1, dtype=torch.long, device=device))
        pos_ids = ring.all_gather_plain(pos_ids, group)  # [G, N, C]
        pos_ids = pos_ids.reshape(-1, pos_ids.shape[-1])
        flat_ids = all_ids.reshape(-1)
        keep_text = canonical.reshape(-1)  # unique descriptions of the whole batch
        positive = (pos_ids[:, :, None] == flat_ids[None, None, :]).any(1)  # [G·N, G·C]
        positive = positive & (flat_ids >= 0)[None, :]
        logits = scale.to(dtype) * g_audio @ g_text.T
        n_local = len(slots.audio_mask)
        c_local = len(slots.ids)
        neg_inf = torch.finfo(dtype).min
        # audio → text: local clips' rows over all unique descriptions
        rows = slice(rank * n_local, (rank + 1) * n_local)
        row_logits = logits[rows].masked_fill(~keep_text[None, :], neg_inf)
        row_pos = positive[rows] & keep_text[None, :]
        row_ok = audio_mask[rows] & row_pos.any(1)
        row_target = row_pos.to(dtype) / row_pos.sum(1, keepdim=True).clamp(min=1)
        a2t = -(row_target * F.log_softmax(row_logits, dim=1)).sum(1)
        a2t = (a2t * row_ok.to(dtype)).sum()
        # text → audio: local canonical descriptions' columns over all valid clips
        cols = slice(rank * c_local, (rank + 1) * c_local)
        col_logits = logits[:, cols].T.masked_fill(~audio_mask[None, :], neg_inf)
        col_pos = positive[:, cols].T & audio_mask[None, :]
        col_ok = keep_text[cols] & col_pos.any(1)
        col_target = col_pos.to(dtype) / col_pos.sum(1, keepdim=True).clamp(min=1)
        t2a = -(col_target * F.log_softmax(col_logits, dim=1)).sum(1)
        t2a = (t2a * col_ok.to(dtype)).sum()
        # Global counts for the means.
        n_rows = (audio_mask & (positive & keep_text[None, :]).any(1)).sum()
        n_cols = (keep_text & (positive & audio_mask[:, None]).any(0)).sum()
        return 0.5 * (a2t / n_rows.clamp(min=1).to(dtype) + t2a / n_cols.clamp(min=1).to(dtype))
