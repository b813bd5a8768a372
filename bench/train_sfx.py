#!/usr/bin/env python3
"""Train flam-sfx on two CPU cores: the pretrained aisfx conv blocks frozen and cached.

The conv blocks cost about 17 GFLOP per 10 s window at 44.1 kHz (about 0.3 s on one core),
three times that to train through, so training them on the fly would give a few clips per
second. With the blocks frozen their output ([512, 53] per window) is a pure function of the
mixture: ``pool`` renders a fixed set of on-the-fly mixtures (flam's own synthesis, recipe and
audio augmentation) and caches those features; ``fit`` trains everything after them (frame
pooling, GRU, projections, the text projection and FLAM's α/β heads; the MiniLM text tower
stays frozen) at thousands of clips per second, with fresh caption rewording each time a
mixture is drawn. ``init`` assembles the untrained model.

    python -m flamcli.models.sfx convert /tmp/aisfx/aisfx-0.1.2-py2.py3-none-any.whl -o /tmp/sfx-tower
    python bench/train_sfx.py init --text-from models/flam-tiny \\
        --tower /tmp/sfx-tower -o /tmp/flam-sfx-init
    python bench/train_sfx.py pool --init /tmp/flam-sfx-init --data train4.csv --recipe recipe.json \\
        --start 0 --count 3000 -o pool-0.pt          # one process per core, disjoint ranges
    python bench/train_sfx.py fit --init /tmp/flam-sfx-init --pools pool-*.pt --data train4.csv \\
        -o run-sfx1 --steps 3000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MINILM_LICENCE = ("Text tower: all-MiniLM-L6-v2 © the sentence-transformers authors, Apache-2.0 "
                  "(https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2).")


def cmd_init(args) -> int:
    from flamcli.models.config import flam_sfx_config
    from flamcli.models.flam import FlamModel, ModelInfo
    from flamcli.models.storage import NOTICE_FILE, load_flam_directory, save_model
    from flamcli.models.sfx import AISFX_NOTICE, TOWER_FILE
    from safetensors.torch import load_file

    config = flam_sfx_config()
    # The MiniLM text tower (and its tokenizer) of a flam-tiny folder: the bundled one, or the
    # untrained start of `python tools/flam_tiny.py init`.
    donor = load_flam_directory(Path(args.text_from))
    if donor.config.text != config.text:
        raise SystemExit(f"{args.text_from}: its text tower is not flam-sfx's (MiniLM)")
    state = {k: v for k, v in donor.state_dict().items() if k.startswith("text_branch.")}
    state.update(load_file(str(Path(args.tower) / TOWER_FILE)))
    torch.manual_seed(args.seed)
    model = FlamModel(config, donor.tokenizer)
    missing, unexpected = model.load_state_dict(state, strict=False)
    pretrained_missing = [k for k in missing if k.startswith(("text_branch.", "audio_branch.blocks."))]
    if pretrained_missing or unexpected:
        raise SystemExit(f"weights do not fit: missing {pretrained_missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    model.info = ModelInfo(name="flam-sfx", source="untrained start")
    save_model(model.eval(), args.output,
               card=f"# flam-sfx (untrained start)\n\n{AISFX_NOTICE}\n\n{MINILM_LICENCE}\n")
    (Path(args.output) / NOTICE_FILE).write_text(AISFX_NOTICE + "\n", encoding="utf-8")
    print(args.output)
    return 0


def _open_training_data(args, model, seed: int, augment):
    from flamcli.synth import SedRecipe
    from flamcli.training.data import open_data

    recipe = None
    if args.recipe:
        recipe = SedRecipe.load(args.recipe)
        recipe.sample_rate, recipe.duration = model.sample_rate, model.config.frontend.window_seconds
        recipe.validate()
    return open_data(args.data, model.sample_rate, model.config.frontend.window_seconds,
                     seed=seed, augment=augment, recipe=recipe)


def cmd_pool(args) -> int:
    """Render mixtures ``start … start+count-1`` and cache the frozen blocks' features."""
    from flamcli.models.registry import load_model
    from flamcli.training.data import Augment

    torch.set_num_threads(args.threads)
    model = load_model(args.init, device="cpu").eval()
    # Audio augmentation is baked into the pool; caption rewording is left to `fit`.
    data = _open_training_data(args, model, args.seed,
                               Augment(tag_rate=0.0, phrase_rate=0.0,
                                       downsample_rate=args.downsample_rate))
    out = Path(args.output)
    features, items = [], []
    started = time.perf_counter()
    for first in range(args.start, args.start + args.count, args.batch):
        examples = data.batch(first, min(args.batch, args.start + args.count - first))
        waves = torch.from_numpy(np.stack([e.audio for e in examples]))
        with torch.inference_mode():
            features.append(model.audio_branch.conv_features(waves).to(torch.float16))
        items += [{"labels": e.labels, "negatives": e.negatives, "id": e.id} for e in examples]
        done = len(items)
        rate = done / (time.perf_counter() - started)
        print(f"pool {out.name}: {done}/{args.count} ({rate:.2f} mixtures/s)",
              file=sys.stderr, flush=True)
    tmp = out.with_suffix(".partial")
    torch.save({"features": torch.cat(features), "items": items, "seed": args.seed,
                "start": args.start, "data": str(args.data)}, tmp)
    tmp.replace(out)
    return 0


def cmd_fit(args) -> int:
    from flamcli.models.registry import load_model, save_model
    from flamcli.training.data import Augment, reword_labels
    from flamcli.training.losses import FlamLoss, LossConfig, build_text_slots
    from flamcli.training.batch import loss_inputs
    from flamcli.training.trainer import TextCache, lr_factor

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    model = load_model(args.init, device="cpu")
    if args.dropout is not None:
        model.config.audio.dropout = args.dropout
        model.audio_branch.dropout.p = args.dropout
    pools = [torch.load(p, weights_only=True) for p in args.pools]
    features = torch.cat([p["features"] for p in pools])
    items = [item for p in pools for item in p["items"]]
    print(f"{len(items)} cached mixtures", file=sys.stderr)
    data = _open_training_data(args, model, 0, None)  # for the manifest's tags and phrasings
    augment = Augment(tag_rate=args.tag_rate, phrase_rate=args.phrase_rate, downsample_rate=0)
    for p in model.text_branch.parameters():
        p.requires_grad_(False)
    for p in model.audio_branch.blocks.parameters():
        p.requires_grad_(False)
    text_cache = TextCache(model)
    model.train()
    model.audio_branch.blocks.eval()  # frozen BatchNorm statistics (unused: features are cached)
    loss_fn = FlamLoss(LossConfig(global_loss="sigmoid", sed_weight=200.0))
    params = [p for p in model.parameters() if p.requires_grad] + list(loss_fn.parameters())
    decay = [p for p in params if p.ndim >= 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": [p for p in params if p.ndim < 2],
                                    "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, args.warmup, args.steps))
    window = model.config.frontend.window_seconds

    step_seconds = model.config.frontend.hop_length * 2 ** (len(model.config.audio.channels) - 1) \
        / model.sample_rate  # one conv step: 8 hops, 186 ms

    def rolled(features: torch.Tensor, labels: dict, shift: int):
        """The cached steps rolled by ``shift`` along time, and the labels with them: a
        mixture the pool did not hold (the event elsewhere in its background), for free."""
        if shift == 0:
            return features, labels
        span = features.shape[-1] * step_seconds
        offset = shift * step_seconds
        moved: dict[str, list] = {}
        for text, intervals in labels.items():
            out = moved.setdefault(text, [])
            for onset, offset_ in intervals:
                a, b = onset + offset, offset_ + offset
                for lo, hi in ((a, b), (a - span, b - span)):  # the part that wrapped round
                    lo, hi = max(lo, 0.0), min(hi, span)
                    if hi > lo:
                        out.append([lo, hi])
        return torch.roll(features, shift, dims=-1), moved

    def embed(steps: torch.Tensor):
        steps = steps.float()
        if args.feature_noise:
            steps = steps * (1 + args.feature_noise * torch.randn_like(steps))
        frames_features = model.audio_branch.temporal(steps)
        frames = F.normalize(model.audio_projection(frames_features), dim=-1)
        global_ = F.normalize(model.audio_projection(frames_features.mean(dim=1)), dim=-1)
        return frames, global_

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    metrics = open(out / "metrics.jsonl", "w", encoding="utf-8")
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    for step in range(args.steps):
        picks = rng.choice(len(items), size=args.batch, replace=False)
        labels, negatives, unlabelled, batch_features = [], [], [], []
        for index in picks:
            item = items[int(index)]
            shift = int(rng.integers(features.shape[-1])) if args.roll else 0
            steps, item_labels = rolled(features[int(index)], item["labels"], shift)
            batch_features.append(steps)
            reworded, fits = reword_labels(item_labels, rng, augment, data.tags, data.phrasings)
            labels.append(reworded)
            negatives.append(item["negatives"])
            unlabelled.append(fits)
        slots = build_text_slots(labels, negatives, model.frames_per_window, window,
                                 unlabelled=unlabelled)
        inputs = loss_inputs(model, torch.stack(batch_features), slots, text_cache, embed=embed)
        result = loss_fn(inputs, model.logit_scale_a, None)
        result.total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        row = {"step": step + 1, "loss": float(result.total.detach()),
               **{k: float(v) for k, v in result.parts.items()},
               "lr": scheduler.get_last_lr()[0]}
        metrics.write(json.dumps(row) + "\n")
        if (step + 1) % 50 == 0:
            metrics.flush()
            rate = (step + 1) * args.batch / (time.perf_counter() - started)
            print(f"step {step + 1}/{args.steps} loss {row['loss']:.4f} "
                  f"{' '.join(f'{k} {v:.4f}' for k, v in row.items() if k not in ('step', 'loss', 'lr'))} "
                  f"{rate:.0f} clips/s", file=sys.stderr, flush=True)
        if args.save_every and (step + 1) % args.save_every == 0 and step + 1 < args.steps:
            model.eval()
            save_model(model, out / f"step-{step + 1}", card=_card(args, step + 1, len(items)))
            model.train()
            model.audio_branch.blocks.eval()
    metrics.close()
    model.eval()
    save_model(model, out, card=_card(args, args.steps, len(items)))
    print(out)
    return 0


def _card(args, step: int, pool_size: int) -> str:
    from flamcli.models.sfx import AISFX_NOTICE

    return (f"# flam-sfx (bench/train_sfx.py fit, step {step})\n\n"
            f"Frozen aisfx conv blocks; {pool_size} cached mixtures of {args.data}; "
            f"lr {args.lr}, batch {args.batch}, tag rate {args.tag_rate}, phrase rate "
            f"{args.phrase_rate}, feature noise {args.feature_noise}, dropout {args.dropout}, "
            f"roll {args.roll}.\n\n"
            f"{AISFX_NOTICE}\n\n{MINILM_LICENCE}\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="untrained flam-sfx: aisfx blocks + MiniLM")
    init.add_argument("--text-from", required=True,
                      help="a flam-tiny folder whose MiniLM text tower flam-sfx shares "
                           "(models/flam-tiny, or `python tools/flam_tiny.py init`'s output)")
    init.add_argument("--tower", required=True, help="folder of `python -m flamcli.models.sfx convert`")
    init.add_argument("-o", "--output", required=True)
    init.add_argument("--seed", type=int, default=0)
    pool = sub.add_parser("pool", help="cache the frozen blocks' features of rendered mixtures")
    fit = sub.add_parser("fit", help="train everything after the frozen blocks on cached pools")
    for p in (pool, fit):
        p.add_argument("--init", required=True, help="the model to start from")
        p.add_argument("--data", required=True, help="the training corpus manifest")
        p.add_argument("--recipe", help="a `flam synth recipe sed` file (augmentation)")
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("-o", "--output", required=True)
    pool.add_argument("--start", type=int, default=0)
    pool.add_argument("--count", type=int, required=True)
    pool.add_argument("--batch", type=int, default=8)
    pool.add_argument("--seed", type=int, default=0)
    pool.add_argument("--downsample-rate", type=float, default=0.3)
    fit.add_argument("--pools", nargs="+", required=True)
    fit.add_argument("--steps", type=int, default=3000)
    fit.add_argument("--batch", type=int, default=64)
    fit.add_argument("--lr", type=float, default=1e-3)
    fit.add_argument("--warmup", type=int, default=100)
    fit.add_argument("--weight-decay", type=float, default=0.01)
    fit.add_argument("--tag-rate", type=float, default=0.5)
    fit.add_argument("--phrase-rate", type=float, default=0.3)
    fit.add_argument("--feature-noise", type=float, default=0.0,
                     help="multiplicative Gaussian noise on the cached features (std)")
    fit.add_argument("--dropout", type=float, default=None)
    fit.add_argument("--roll", action="store_true",
                     help="roll each drawn mixture's steps and labels by a random shift")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--save-every", type=int, default=0)
    args = parser.parse_args(argv)
    return {"init": cmd_init, "pool": cmd_pool, "fit": cmd_fit}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
