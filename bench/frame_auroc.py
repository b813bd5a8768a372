#!/usr/bin/env python3
"""Frame-level ROC area of a model on three kinds of mixtures, to tell memorising from
generalising: the cached pool it was trained on (bench/train_sfx.py fit), fresh mixtures of
the same training clips, and mixtures of held-out clips (a `flam synth sed` folder).

Every caption present in the drawn mixtures is scored against every frame of every mixture
(a frame is positive where the caption's event sounds); the number is the probability that a
positive frame outscores a negative one.

    python bench/frame_auroc.py --model RUN --pool pool-0.pt            # trained-on mixtures
    python bench/frame_auroc.py --model RUN --fresh train4.csv --recipe R  # new mixtures, same clips
    python bench/frame_auroc.py --model RUN --folder val-sed-44100        # held-out clips
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F


def roc_area(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann–Whitney: the chance a positive outscores a negative, a tie counting half."""
    values, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # average rank of each tie group
    positive = labels.astype(bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def frame_targets(labels: list[dict], captions: list[str], frames: int, seconds: float):
    index = {c: i for i, c in enumerate(captions)}
    step = seconds / frames
    target = np.zeros((len(labels), len(captions), frames), dtype=bool)
    for n, item in enumerate(labels):
        for caption, intervals in item.items():
            for onset, offset in intervals:
                target[n, index[caption], int(onset / step):int(np.ceil(offset / step))] = True
    return target


def main(argv=None) -> int:
    from flamcli.models.registry import load_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pool", help="a pool file of bench/train_sfx.py (flam-sfx models)")
    source.add_argument("--fresh", help="a training manifest: new on-the-fly mixtures")
    source.add_argument("--folder", help="a `flam synth sed` folder")
    parser.add_argument("--recipe", help="with --fresh: the training recipe")
    parser.add_argument("--first", type=int, default=50_000,
                        help="with --fresh: the first mixture index (beyond any pool)")
    parser.add_argument("-n", type=int, default=60, help="mixtures (default 60)")
    args = parser.parse_args(argv)

    model = load_model(args.model, device="cpu").eval()
    seconds = model.config.frontend.window_seconds
    with torch.inference_mode():
        if args.pool:
            pool = torch.load(args.pool, weights_only=True)
            labels = [item["labels"] for item in pool["items"][:args.n]]
            steps = pool["features"][:args.n].float()
            frames = F.normalize(model.audio_projection(model.audio_branch.temporal(steps)), dim=-1)
        else:
            if args.fresh:
                import train_sfx
                from flamcli.training.data import Augment

                data = train_sfx._open_training_data(
                    argparse.Namespace(recipe=args.recipe, data=args.fresh), model, 0,
                    Augment(tag_rate=0.0, phrase_rate=0.0, downsample_rate=0.0))
                examples = data.batch(args.first, args.n)
            else:
                from flamcli.training.data import FolderData

                data = FolderData(args.folder, sample_rate=model.sample_rate,
                                  window_seconds=seconds)
                examples = [data.raw(i) for i in range(min(args.n, len(data)))]
            labels = [e.labels for e in examples]
            audio = torch.from_numpy(np.stack([e.audio for e in examples]))
            frames = model.embed_audio_frames(audio)
        captions = sorted({c for item in labels for c in item})
        probabilities = model.frame_probabilities(frames, model.encode_text(captions)).numpy()
    target = frame_targets(labels, captions, model.frames_per_window, seconds)
    result = {"model": args.model, "source": args.pool or args.fresh or args.folder,
              "mixtures": len(labels), "captions": len(captions),
              "frame_auroc": round(roc_area(target.ravel(), probabilities.ravel()), 4),
              "mean_p_positive": round(float(probabilities[target].mean()), 4),
              "mean_p_negative": round(float(probabilities[~target].mean()), 4)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
