"""Golden outputs of the pretrained aisfx 0.1.2 sound-effects CNN (run BY HAND).

aisfx (Ma & Lerch, ISMIR 2022; code MIT, weights CC BY 4.0) is imported ONLY here, in its own
virtual environment; flam never imports, vendors or copies it. This script runs aisfx's own code
end to end (its librosa spectrogram, its normalisation, its blocking, its weight loader, its
CrossNet/EmbeddingNet) on three short committed clips and writes the numbers to
``tests/data/aisfx_golden.npz`` (see tests/reference/README.md, section "aisfx").

Build the venv and run (from the repository root; ~10 s on 2 CPU cores)::

    python3.11 -m venv /tmp/aisfx-venv
    /tmp/aisfx-venv/bin/pip install torch==2.14.1
    /tmp/aisfx-venv/bin/pip install --only-binary=:all: numpy==1.23.2 librosa==0.9.2 \
        numba==0.57.1 llvmlite==0.40.1 scipy==1.10.1 scikit-learn==1.2.2 resampy==0.4.3 \
        soundfile==0.14.0 tqdm==4.62.3 setuptools==80.9.0
    /tmp/aisfx-venv/bin/pip install --no-deps /tmp/aisfx/aisfx-0.1.2-py2.py3-none-any.whl
    /tmp/aisfx-venv/bin/python tests/reference/make_aisfx_golden.py

``--make-clips`` first (re)writes the 44.1 kHz FLAC clips in ``tests/data/aisfx_clips/`` from the
repository's example audio (``CLIPS`` below); by default the committed clips are read as they
are. Those FLAC files ARE the inputs: aisfx reads them with ``librosa.load(sr=44100)``, which
does not resample a 44.1 kHz file, and flam must read the same samples with soundfile.

Two deviations from ``aisfx.inference.main``, both deliberate:

* aisfx's librosa path returns the log-mel as [n_mels, time] (librosa's layout), while its
  ``blocking`` and the network expect [time, n_mels] (what its Essentia path returns).
  ``main`` does not transpose, so on the librosa path it would block and convolve mel bins as
  if they were frames. Here the librosa output is transposed to [time, 96] first.
* torch >= 2.6 refuses the checkpoint under the default ``weights_only=True`` because the
  pickle holds numpy int64 scalars (the dataset dictionary). Instead of ``weights_only=False``
  the three numpy globals they need are allow-listed with ``torch.serialization.safe_globals``
  around aisfx's own ``load_weights`` (still the restricted unpickler: no arbitrary code runs).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import inspect
import sys
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CLIP_DIR = REPO / "tests" / "data" / "aisfx_clips"
OUT = REPO / "tests" / "data" / "aisfx_golden.npz"

CHECKPOINT_SHA256 = "499ea75909c932a2f94c35fa722fa4fabc5bcb7e84917209cc5f7402627b7eb5"

SR = 44100
# aisfx.inference constants (checked against the module below).
SPEC_BLOCK, SPEC_HOP, N_MELS, F_MIN, F_MAX = 2048, 1024, 96, 0, 22050
EMB_BLOCK, EMB_HOP_MULT = 100, 0.5

# (output name, source in the repo, start in seconds, length in samples at 44.1 kHz or None =
# to the end). The whole source is resampled once to 44.1 kHz (scipy resample_poly), then cut.
CLIPS = (
    # first 'dog barks' event of dog_park.tsv (onset 4.000 s); 3.5-7.5 s = 176,400 samples
    # -> 173 frames -> 2 full blocks, the partial third one dropped
    ("dog_park_3.5-7.5s.flac", "examples/dog_park.flac", 3.5, 176_400),
    # whole file, 3.05 s -> 134,707 samples -> 132 frames -> 1 block
    ("cat.flac", "examples/sounds/cat.mp3", 0.0, None),
    # 0.3 s + 204,000 samples (to 4.926 s) -> exactly 200 frames -> 3 blocks, nothing dropped
    ("dog_0.3-4.926s.flac", "examples/sounds/dog.mp3", 0.3, 204_000),
)


def make_clips() -> None:
    from scipy.signal import resample_poly

    CLIP_DIR.mkdir(parents=True, exist_ok=True)
    for name, source, start_s, length in CLIPS:
        y, sr = sf.read(REPO / source, dtype="float64", always_2d=True)
        y = y.mean(axis=1)
        g = gcd(SR, sr)
        y = resample_poly(y, SR // g, sr // g)  # Kaiser window (5.0), scipy's default
        start = int(round(start_s * SR))
        y = y[start:] if length is None else y[start:start + length]
        assert length is None or len(y) == length, (name, len(y))
        pcm = np.clip(np.round(y * 32768.0), -32768, 32767).astype(np.int16)
        assert np.abs(y).max() < 0.999, name  # no clipping
        sf.write(CLIP_DIR / name, pcm, SR, subtype="PCM_16", format="FLAC")
        back, sr_back = sf.read(CLIP_DIR / name, dtype="int16")
        assert sr_back == SR and np.array_equal(back, pcm), name
        print(f"wrote {name}: {len(pcm)} samples ({len(pcm) / SR:.3f} s) from {source} "
              f"[{start_s:.3f} s, {(start + len(pcm)) / SR:.3f} s of the 44.1 kHz resample]")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_model():
    import numpy.core.multiarray
    from aisfx import inference

    path = inference.get_path_modelWeights()
    assert sha256_file(Path(path)) == CHECKPOINT_SHA256, path
    # The checkpoint is a pickled (state_dict, ds_dict) tuple; ds_dict holds numpy scalars, which
    # torch's default weights_only unpickler rejects. Allow-list exactly the three globals they
    # need (numpy's scalar reconstructor, np.dtype, the int64 dtype class) and
    # let aisfx's own load_weights do the loading (no weights_only=False, no arbitrary code).
    allowed = [numpy.core.multiarray.scalar, np.dtype, type(np.dtype(np.int64))]
    with torch.serialization.safe_globals(allowed):
        weights, ds_dict = inference.load_weights("cpu")
    model = inference.load_bestModel(weights, ds_dict, "cpu")  # strict load_state_dict, eval()
    return model, weights, ds_dict


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--make-clips", action="store_true",
                        help="rewrite tests/data/aisfx_clips/*.flac from the example audio first")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.make_clips:
        make_clips()

    import librosa
    import scipy
    import aisfx  # noqa: F401
    from aisfx import inference
    from aisfx.preprocessing import blocking, compute_hopSize, spectrogram_normalize
    from aisfx.spectrogram.spectrogram_librosa import compute_spectrogram

    assert (inference.SAMPLE_RATE, inference.SPEC_BLOCK_LENGTH, inference.SPEC_HOP_LENGTH,
            inference.MEL_BINS, inference.F_MIN, inference.F_MAX, inference.EMB_BLOCK_LENGTH) \
        == (SR, SPEC_BLOCK, SPEC_HOP, N_MELS, F_MIN, F_MAX, EMB_BLOCK)

    stft_sig = inspect.signature(librosa.stft).parameters
    mel_sig = inspect.signature(librosa.feature.melspectrogram).parameters
    out: dict[str, np.ndarray] = {
        "librosa_version": np.array(librosa.__version__),
        "numpy_version": np.array(np.__version__),
        "torch_version": np.array(torch.__version__),
        "aisfx_version": np.array(importlib.metadata.version("aisfx")),
        "scipy_version": np.array(scipy.__version__),
        "soundfile_version": np.array(sf.__version__),
        "libsndfile_version": np.array(sf.__libsndfile_version__),
        "checkpoint_sha256": np.array(CHECKPOINT_SHA256),
        # librosa 0.9.2 defaults that compute_spectrogram relies on (it passes neither)
        "librosa_stft_pad_mode": np.array(str(stft_sig["pad_mode"].default)),
        "librosa_stft_center": np.array(str(stft_sig["center"].default)),
        "librosa_stft_window": np.array(str(stft_sig["window"].default)),
        "librosa_melspectrogram_pad_mode": np.array(str(mel_sig["pad_mode"].default)),
        "librosa_melspectrogram_center": np.array(str(mel_sig["center"].default)),
        "librosa_melspectrogram_n_fft": np.array(int(mel_sig["n_fft"].default)),
        "sample_rate": np.array(SR),
        "spec_params": np.array([SPEC_BLOCK, SPEC_HOP, N_MELS, F_MIN, F_MAX]),
        "spec_norm_min_max": np.array([0.0, 9.457798957824707]),  # spec_norm='original'
        "emb_block_hop": np.array([EMB_BLOCK, compute_hopSize(EMB_BLOCK, EMB_HOP_MULT,
                                                              np.zeros((EMB_BLOCK + 1, 1)))]),
    }
    # The mel basis compute_spectrogram gets from librosa.feature.melspectrogram (same call).
    mel_basis = librosa.filters.mel(sr=SR, n_fft=SPEC_BLOCK, n_mels=N_MELS, fmin=F_MIN,
                                    fmax=F_MAX, htk=True, norm=1.0)
    out["mel_basis"] = mel_basis.astype(np.float32)
    row_sums = mel_basis.astype(np.float64).sum(axis=1)
    print(f"librosa {librosa.__version__}: stft pad_mode={out['librosa_stft_pad_mode']} "
          f"center={out['librosa_stft_center']}; mel basis {mel_basis.shape} {mel_basis.dtype}, "
          f"row sums {row_sums.min():.7f}..{row_sums.max():.7f}, "
          f"empty rows {int((mel_basis.max(axis=1) == 0).sum())}, "
          f"min nonzero bins per row {int((mel_basis > 0).sum(axis=1).min())}")

    model, weights, ds_dict = load_model()
    net = model.embedding_net
    print(f"aisfx model: {sum(v.numel() for v in weights.values())} numbers, "
          f"{len(ds_dict)} dataset heads; pool_type={net.pool_type}")

    names = [c[0] for c in CLIPS]
    out["names"] = np.array(names)
    wholes = []
    for i, name in enumerate(names):
        path = CLIP_DIR / name
        info = sf.info(str(path))
        assert info.samplerate == SR and info.channels == 1 and info.subtype == "PCM_16", info
        pcm, _ = sf.read(path, dtype="int16")

        # aisfx's own librosa spectrogram: [n_mels, time] (librosa's layout) ...
        raw = compute_spectrogram(str(path), sr=SR, block_size=SPEC_BLOCK, hop_size=SPEC_HOP,
                                  n_mels=N_MELS, f_min=F_MIN, f_max=F_MAX)
        assert raw.shape == (N_MELS, 1 + len(pcm) // SPEC_HOP), raw.shape
        # ... TRANSPOSED to [time, n_mels] (aisfx bug: inference.main feeds it untransposed on
        # the librosa path; blocking() and EmbeddingNet expect [time, freq], as Essentia gives).
        spec = spectrogram_normalize(raw.T, spec_norm="original")
        assert spec.dtype == np.float32 and spec.shape[1] == N_MELS
        spec = np.ascontiguousarray(spec)

        # Per-block embeddings exactly as aisfx.inference.main does after the spectrogram.
        blocks_emb = inference.model_get_embedding(spec, EMB_HOP_MULT, True, model, "cpu")
        blocks_emb = blocks_emb.numpy()
        blocks = blocking(spec, block_size=EMB_BLOCK,
                          hop_size=compute_hopSize(EMB_BLOCK, EMB_HOP_MULT, spec),
                          drop_partial_block=True)
        assert blocks_emb.shape == (len(blocks), 512)

        # Whole clip as one block, with the frame features captured from aisfx's own forward:
        # conv_block4's output [1, 512, T//8, 12], then EmbeddingNet's torch.mean over dim=3.
        captured = {}
        hook = net.conv_block4.register_forward_hook(lambda m, inp, o: captured.update(x=o))
        with torch.no_grad():
            whole = model.get_embedding(torch.from_numpy(spec[None])).numpy()[0]
        hook.remove()
        frames = torch.mean(captured["x"], dim=3)[0].numpy()
        assert frames.shape == (512, len(spec) // 8), frames.shape

        # Cross-checks: the same frames from aisfx's blocks called one by one; max over time
        # is the embedding; block 0 equals spec[:100] fed alone.
        with torch.no_grad():
            x = torch.unsqueeze(torch.from_numpy(spec[None]), 1)
            x = net.conv_block1(x, pool_size=(2, 2), pool_type=net.pool_type)
            x = net.conv_block2(x, pool_size=(2, 2), pool_type=net.pool_type)
            x = net.conv_block3(x, pool_size=(2, 2), pool_type=net.pool_type)
            x = net.conv_block4(x, pool_size=(1, 1), pool_type=net.pool_type)
            frames2 = torch.mean(x, dim=3)[0].numpy()
            first = model.get_embedding(torch.from_numpy(spec[None, :EMB_BLOCK])).numpy()[0]
        assert np.array_equal(frames, frames2)
        assert np.array_equal(frames.max(axis=1), whole)
        d_first = float(np.abs(blocks_emb[0] - first).max())
        assert d_first < 1e-5, d_first
        assert np.isfinite(blocks_emb).all() and np.isfinite(frames).all()
        assert np.abs(whole).max() > 0 and np.abs(blocks_emb).max(axis=1).min() > 0

        starts = np.arange(len(blocks)) * compute_hopSize(EMB_BLOCK, EMB_HOP_MULT, spec)
        out.update({
            f"clip{i}_name": np.array(name),
            f"clip{i}_num_samples": np.array(len(pcm)),
            f"clip{i}_pcm_sha256": np.array(
                hashlib.sha256(pcm.astype("<i2").tobytes()).hexdigest()),
            f"clip{i}_spec": spec.astype(np.float32),
            f"clip{i}_block_starts": starts,
            f"clip{i}_blocks_embedding": blocks_emb.astype(np.float32),
            f"clip{i}_frames": frames.astype(np.float32),
            f"clip{i}_whole_embedding": whole.astype(np.float32),
        })
        wholes.append(whole)
        print(f"clip{i} {name}: {len(pcm)} samples, spec {spec.shape} "
              f"[{spec.min():.3f}, {spec.max():.3f}], blocks {blocks_emb.shape} "
              f"(starts {starts.tolist()}), frames {frames.shape}, "
              f"whole |e|={np.linalg.norm(whole):.3f} "
              f"max={whole.max():.3f} zeros={int((whole == 0).sum())}; "
              f"block0 vs spec[:100] alone: {d_first:.2g}")

    # The same frames with every weight of the embedding net rounded to fp16 (conv weights,
    # BatchNorm affine and running statistics), computed in fp32: flam ships the tower in fp16
    # storage, and the default test suite checks the shipped weights against these.
    rounded = {k: (v.half().float() if v.is_floating_point() else v)
               for k, v in net.state_dict().items()}
    net.load_state_dict(rounded)
    for i, name in enumerate(names):
        spec = out[f"clip{i}_spec"]
        captured = {}
        hook = net.conv_block4.register_forward_hook(lambda m, inp, o: captured.update(x=o))
        with torch.no_grad():
            model.get_embedding(torch.from_numpy(spec[None]))
        hook.remove()
        out[f"clip{i}_frames_fp16_weights"] = torch.mean(captured["x"], dim=3)[0].numpy()
        change = np.abs(out[f"clip{i}_frames_fp16_weights"] - out[f"clip{i}_frames"]).max()
        print(f"clip{i}: fp16-rounded weights move the frames by at most {change:.3g} "
              f"(largest frame value {np.abs(out[f'clip{i}_frames']).max():.3g})")

    w = np.stack(wholes)
    cos = (w @ w.T) / np.outer(np.linalg.norm(w, axis=1), np.linalg.norm(w, axis=1))
    print("cosine between whole-clip embeddings:\n" + np.array2string(cos, precision=4))
    assert (cos[~np.eye(len(w), dtype=bool)] < 0.9999).all(), "embeddings identical across clips"

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, {len(out)} arrays)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
