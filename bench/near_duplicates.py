"""Does a clip added to training sound like a validation clip of the same caption?

    cd /work/corpus-data3 && python bench/near_duplicates.py --validation val.csv \
        --added train-more.csv --since train.csv --out bench/results/near-duplicates.json

Sources reuse recordings: tuxpaint-stamps-default's white cow is byte for byte megaglest's
Mudchute cow. `build_corpus.py` drops byte-identical copies, but a re-encoded, trimmed or
resampled copy of a validation clip put into training would leak the held-out sound. For every
clip of ``--added`` that is not in ``--since``, and every validation clip with the same label
(first caption; the manifests are `flam synth index` / `split` CSVs), this slides the shorter clip's log-mel spectrogram (16 kHz, 64 bands, 20 ms
hop, first 30 s) over the longer one and keeps the best Pearson correlation. A copy scores
close to 1 (re-encoding changes little); different recordings of one kind of sound stay well
below. ``--threshold`` (default 0.9) marks suspects; the exit code is 1 when there are any.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from benchlib import write_result
from flamcli.audio import resample
from flamcli.synth.corpus import read_manifest

HERE = Path(__file__).resolve().parent


RATE = 16000


class LogMel:
    def __init__(self):
        self.transform = torchaudio.transforms.MelSpectrogram(RATE, n_fft=1024, hop_length=320,
                                                              n_mels=64)
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, path: str) -> torch.Tensor:
        if path not in self.cache:
            audio, rate = sf.read(path, dtype="float32", always_2d=True)
            mono = resample(audio.mean(axis=1)[: rate * 30], rate, RATE)
            spec = self.transform(torch.from_numpy(np.ascontiguousarray(mono)))
            self.cache[path] = torch.log(spec + 1e-4)
        return self.cache[path]


def best_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Highest Pearson correlation of the shorter spectrogram against any stretch of the longer."""
    if a.shape[1] > b.shape[1]:
        a, b = b, a
    flat = a.flatten()
    flat = (flat - flat.mean()) / (flat.std() + 1e-6)
    windows = b.unfold(1, a.shape[1], 1).permute(1, 0, 2).reshape(-1, flat.numel())
    windows = (windows - windows.mean(1, keepdim=True)) / (windows.std(1, keepdim=True) + 1e-6)
    return float((windows @ flat).max() / flat.numel())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--validation", type=Path, required=True, help="validation manifest")
    parser.add_argument("--added", type=Path, required=True,
                        help="training manifest with the new clips")
    parser.add_argument("--since", type=Path,
                        help="older training manifest: only clips not in it are checked")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    before = {clip.path for clip in read_manifest(args.since)} if args.since else set()
    added = [clip for clip in read_manifest(args.added) if clip.path not in before]
    validation = read_manifest(args.validation)
    root = args.validation.resolve().parent  # paths in the result, relative to the corpus
    spectrogram = LogMel()
    pairs = []
    with torch.no_grad():
        for new in added:
            for held_out in validation:
                if held_out.label == new.label:
                    score = best_correlation(spectrogram(new.path), spectrogram(held_out.path))
                    pairs.append({"label": new.label,
                                  "added": str(Path(new.path).relative_to(root)),
                                  "validation": str(Path(held_out.path).relative_to(root)),
                                  "correlation": round(score, 4)})
    pairs.sort(key=lambda p: -p["correlation"])
    suspects = [p for p in pairs if p["correlation"] >= args.threshold]
    result = {"added_clips": len(added), "same_label_pairs": len(pairs),
              "threshold": args.threshold, "suspects": suspects,
              "max_correlation": pairs[0]["correlation"] if pairs else None, "pairs": pairs}
    if args.out:
        write_result(args.out, result)
    print(f"{len(added)} added clips, {len(pairs)} same-label pairs with validation, "
          f"highest correlation {result['max_correlation']}, {len(suspects)} at or above "
          f"{args.threshold}", file=sys.stderr)
    return 1 if suspects else 0


if __name__ == "__main__":
    sys.exit(main())
