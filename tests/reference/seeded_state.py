"""A seeded random state dict with the OpenFLAM v1-base key names, shapes and dtypes.

Pure torch/numpy: no upstream code. It is used three times: by ``make_golden.py`` (hand-run, in
a separate venv with upstream ``openflam``) to produce ``tests/data/openflam_golden.npz``, by
``tests/test_openflam_parity.py`` (default suite) to rebuild the very same weights for flam, and
run as a script by ``bench/bench_openflam.py`` to write the checkpoint both sides time::

    python tests/reference/seeded_state.py --seed 0 -o open_flam_oct17.pth   # prints sizes as JSON

* Every tensor is drawn from its own ``torch.Generator`` seeded with
  ``zlib.crc32(f"{seed}/{key}")``, so a tensor depends only on its key, shape and the seed, never
  on module or file order.
* Scales keep activations tame: Linear/conv/embedding weights N(0, 0.02²), biases N(0, 0.02²),
  LayerNorm weights 1 + N(0, 0.1²), relative-position bias tables N(0, 0.5²) (large enough that a
  wrong index or window mask shows up in the outputs), bn0 running stats in the dB range of the
  golden inputs with a positive running_var.
* Deterministic tensors are real, as in the published checkpoint: STFT conv kernels, ``melW``,
  ``relative_position_index``, shifted-window ``attn_mask``; ``bn0.num_batches_tracked`` is a
  plain count. They are computed with flam's own functions here; ``make_golden.py`` checks them
  against upstream's values.
* The per-text heads' last biases put β near −8 and α = exp(·) near 10, like the paper's init.
  ``aed_logit_scale`` is a small non-zero value (the published one is 0) so that a model that
  ignores it fails the parity test.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

KEYS_FILE = Path(__file__).resolve().parents[1] / "data" / "openflam-v1-base-keys.txt"

SAMPLE_RATE = 48_000
CLIP_SAMPLES = 480_000
AED_LOGIT_SCALE = 0.05

# Three prompts: two short ones of different lengths (padding), one over 77 tokens
# (truncation). Upstream crashes on a single prompt (its heads .squeeze() to 0-d), so always use
# at least two.
PROMPTS = [
    "a dog barking",
    "Hello world",
    "A high-pitched electronic beeping alarm, while people talk and laugh in the background "
    "of a crowded, echoing train station; footsteps, rolling suitcases, an announcement over a "
    "loudspeaker, a door slamming, pigeons flapping, a whistle, and rain on the glass roof "
    "above the platform, for ten long seconds, then a train arrives: brakes squeal, doors "
    "hiss open, a child shouts, music leaks from headphones, a coffee machine grinds beans "
    "and somebody drops a set of keys on the concrete floor.",
]

_DTYPES = {"float32": torch.float32, "int64": torch.int64}


def read_key_list(source: str | Path | Iterable[str] = KEYS_FILE) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """Parse ``key<TAB>[shape]<TAB>dtype`` lines (``#`` comments and blank lines skipped)."""
    if isinstance(source, (str, Path)) and "\n" not in str(source):
        lines: Iterable[str] = Path(source).read_text(encoding="utf-8").splitlines()
    elif isinstance(source, str):
        lines = source.splitlines()
    else:
        lines = source
    entries = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        dims = tuple(int(d) for d in shape.strip("[]").split(",") if d.strip())
        entries.append((key, dims, _DTYPES[dtype]))
    return entries


def _generator(key: str, seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}/{key}".encode("utf-8")))


def _normal(shape, gen, std: float, mean: float = 0.0) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.float32).normal_(mean, std, generator=gen)


def _deterministic(key: str, shape: tuple[int, ...]) -> torch.Tensor | None:
    """The recomputable tensors, computed with flam's functions (imported lazily)."""
    from flamcli.models.config import FrontendConfig
    from flamcli.models.frontend import slaney_mel_matrix, stft_kernels
    from flamcli.models.htsat import relative_position_index, shifted_window_mask

    if key.endswith("stft.conv_real.weight") or key.endswith("stft.conv_imag.weight"):
        real, imag = stft_kernels(shape[2])
        return real if "conv_real" in key else imag
    if key.endswith("logmel_extractor.melW"):
        return slaney_mel_matrix(FrontendConfig())
    if key.endswith("relative_position_index"):
        return relative_position_index(int(math.isqrt(shape[0])))
    if key.endswith("attn_mask"):
        n_windows, tokens, _ = shape
        window = int(math.isqrt(tokens))
        grid = window * int(math.isqrt(n_windows))
        return shifted_window_mask(grid, grid, window, window // 2)
    return None


def _random(key: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    name = key.rsplit(".", 1)[-1]
    parent = key.rsplit(".", 2)[-2] if key.count(".") >= 1 else ""
    if key == "logit_scale_a":
        return torch.tensor(math.log(1 / 0.07), dtype=torch.float32)
    if key == "aed_logit_scale":
        return torch.tensor(AED_LOGIT_SCALE, dtype=torch.float32)
    if key.endswith("bn0.running_mean"):
        return _normal(shape, gen, std=5.0, mean=-20.0)
    if key.endswith("bn0.running_var"):
        return 100.0 + 200.0 * torch.rand(shape, generator=gen)
    if key.endswith("bn0.weight"):
        return _normal(shape, gen, std=0.1, mean=1.0)
    if key.endswith("relative_position_bias_table"):
        return _normal(shape, gen, std=0.5)
    if key.startswith("fc_per_text_logit_bias.2.bias"):
        return _normal(shape, gen, std=0.1, mean=-8.0)
    if key.startswith("fc_per_text_logit_scale.2.bias"):
        return _normal(shape, gen, std=0.1, mean=math.log(10.0))
    if key.startswith("fc_per_text_logit_") and key.endswith(".2.weight"):
        return _normal(shape, gen, std=0.1)  # so α, β differ visibly between prompts
    is_norm = "norm" in parent.lower() or parent in ("bn0",)
    if name == "weight" and is_norm:
        return _normal(shape, gen, std=0.1, mean=1.0)
    return _normal(shape, gen, std=0.02)


def seeded_state_dict(key_list_path_or_lines: str | Path | Iterable[str] = KEYS_FILE,
                      seed: int = 0) -> dict[str, torch.Tensor]:
    """Random OpenFLAM v1-base weights, seeded per key; deterministic tensors real."""
    state: dict[str, torch.Tensor] = {}
    for key, shape, dtype in read_key_list(key_list_path_or_lines):
        if key.endswith("num_batches_tracked"):
            tensor = torch.tensor(100_000, dtype=torch.int64)
        else:
            tensor = _deterministic(key, shape)
            if tensor is None:
                tensor = _random(key, shape, _generator(key, seed))
        tensor = tensor.to(dtype).contiguous()
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{key}: built {tuple(tensor.shape)}, key list says {shape}")
        state[key] = tensor
    return state


def state_checksums(state: dict[str, torch.Tensor]) -> np.ndarray:
    """Per-key float64 sums of |x| (in key order): detects generator drift in the test."""
    return np.array([t.double().abs().sum().item() for t in state.values()], dtype=np.float64)


def golden_waveforms(seed: int = 0) -> np.ndarray:
    """Two deterministic 10 s, 48 kHz clips [2, 480000] float32 (numpy PCG64 noise + tones).

    Clip 0: noise, a 440 Hz tone for the first 5 s, a rising chirp throughout.
    Clip 1: quieter noise, 3 kHz beeps (0.5 s on every 2 s) and one second of exact silence
    (7-8 s), which exercises the dB floor (amin 1e-10).
    """
    rng = np.random.default_rng(seed)
    t = np.arange(CLIP_SAMPLES, dtype=np.float64) / SAMPLE_RATE
    clip0 = (0.05 * rng.standard_normal(CLIP_SAMPLES)
             + 0.3 * np.sin(2 * np.pi * 440.0 * t) * (t < 5.0)
             + 0.2 * np.sin(2 * np.pi * (200.0 * t + 300.0 * t**2)))
    clip1 = (0.02 * rng.standard_normal(CLIP_SAMPLES)
             + 0.4 * np.sin(2 * np.pi * 3000.0 * t) * ((t % 2.0) < 0.5))
    clip1[(t >= 7.0) & (t < 8.0)] = 0.0
    return np.stack([clip0, clip1]).astype(np.float32)


def main(argv=None) -> int:
    """Write the seeded state dict as an OpenFLAM-style checkpoint (torch.save, as upstream's);
    print its weight bytes and parameter count as JSON."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    state = seeded_state_dict(KEYS_FILE, seed=args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.output)
    print(json.dumps({
        "weight_bytes": sum(t.numel() * t.element_size() for t in state.values()),
        "parameters": sum(t.numel() for t in state.values() if t.is_floating_point())}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
