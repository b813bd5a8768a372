#!/usr/bin/env python3
"""Run a bench script or flam command with flam-sfx's frozen conv features memoised on disk.

Every flam-sfx variant trained by bench/train_sfx.py shares the frozen aisfx conv blocks, and
those are almost all of its cost (about 0.35 s per 10 s window on one core). Evaluating a
variant on the grounding sets (hours of audio) would repeat that work for every variant.
This wrapper makes ``SfxEncoder.conv_features`` look each window up by the SHA-1 of its
samples in CACHE first, so the blocks run once per window across variants and processes;
everything after them (GRU, projections, heads, detection, metrics) runs as usual.

    python bench/with_feature_memo.py /work/memo -- bench/ground_presence.py --model RUN ...
    python bench/with_feature_memo.py /work/memo -- -m flamcli eval sed ...

Only valid while the blocks are the converted aisfx weights unchanged (a fine-tuned tower
would need its own cache folder): the cache is keyed by the blocks' weights too.
"""

from __future__ import annotations

import hashlib
import runpy
import sys
from pathlib import Path

import numpy as np
import torch


def install(cache: Path) -> None:
    from flamcli.models.sfx import SfxEncoder

    original = SfxEncoder.conv_features
    cache.mkdir(parents=True, exist_ok=True)
    weight_keys: dict[int, str] = {}

    def blocks_key(encoder) -> str:
        if id(encoder) not in weight_keys:
            digest = hashlib.sha1()
            for name, tensor in sorted(encoder.blocks.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().float().numpy().tobytes())
            weight_keys[id(encoder)] = digest.hexdigest()[:12]
        return weight_keys[id(encoder)]

    def memoised(self, waveform: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or self.training:
            return original(self, waveform)
        folder = cache / blocks_key(self)
        folder.mkdir(exist_ok=True)
        rows = waveform.detach().float().cpu().numpy()
        paths = [folder / f"{hashlib.sha1(row.tobytes()).hexdigest()}.npy" for row in rows]
        missing = [i for i, p in enumerate(paths) if not p.is_file()]
        if missing:
            fresh = original(self, waveform[missing]).cpu().numpy().astype(np.float16)
            for i, features in zip(missing, fresh):
                tmp = paths[i].with_suffix(".partial.npy")
                np.save(tmp, features)
                tmp.replace(paths[i])
        out = np.stack([np.load(p) for p in paths]).astype(np.float32)
        return torch.from_numpy(out).to(waveform.device)

    SfxEncoder.conv_features = memoised


def main() -> int:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        raise SystemExit(__doc__)
    install(Path(sys.argv[1]))
    target, rest = sys.argv[3], sys.argv[4:]
    if target == "-m":
        sys.argv = [rest[0], *rest[1:]]
        runpy.run_module(rest[0], run_name="__main__", alter_sys=True)
    else:
        sys.argv = [target, *rest]
        sys.path.insert(0, str(Path(target).resolve().parent))
        runpy.run_path(target, run_name="__main__")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
