"""Average the weights of models from one fine-tuning chain ("model soup"), for measuring.

    python bench/average_weights.py /tmp/soup-67 /work/runs/run6 /work/runs/run7
    python bench/presence_separation.py --model /tmp/soup-67 --folder tune-ground-400

Floating-point tensors (weights and BatchNorm statistics) are averaged; integer ones (batch
counters) come from the last model, as do config.json and tokenizer.json. Only models of one
architecture that continue each other make sense to average.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def average(models: list[Path]) -> dict[str, torch.Tensor]:
    states = [load_file(str(m / "model.safetensors")) for m in models]
    keys = set(states[0])
    for model, state in zip(models, states):
        if set(state) != keys:
            raise SystemExit(f"{model}: not the same architecture as {models[0]}")
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = (sum(s[key].double() for s in states) / len(states)).to(first.dtype)
        else:
            out[key] = states[-1][key]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output", type=Path)
    ap.add_argument("models", type=Path, nargs="+", help="model directories")
    args = ap.parse_args(argv)
    weights = average(args.models)
    args.output.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(args.output / "model.safetensors"))
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(args.models[-1] / name, args.output / name)
    print(f"{args.output}: the mean of {len(args.models)} models")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
