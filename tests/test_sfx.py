"""The aisfx sound-effects CNN port (flamcli.models.sfx): front end, network, conversion.

The goldens (tests/data/aisfx_golden.npz) were made by aisfx 0.1.2's own code in a separate
environment (tests/reference/make_aisfx_golden.py); flam never imports aisfx. The converted
weights (tests/data/aisfx/, CC BY 4.0, see the NOTICE there) are flam's own conversion.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from flamcli.models.config import flam_sfx_config
from flamcli.models.sfx import (AISFX_SPEC_MAX, SfxEncoder, SfxFrontend, aisfx_tower_state,
                                htk_unit_sum_mel_matrix)

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "aisfx_golden.npz"


def hz_to_htk_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def test_mel_bands_are_htk_triangles_summing_to_one():
    bank = htk_unit_sum_mel_matrix(1025, 0.0, 22050.0, 96, 44100).numpy()
    assert bank.shape == (1025, 96)
    np.testing.assert_allclose(bank.sum(axis=0), 1.0, rtol=1e-5)
    # Band 40 by hand: HTK mel edges equally spaced between 0 and 22,050 Hz, a triangle on
    # the FFT bin frequencies, then scaled to unit sum.
    edges = np.linspace(0, hz_to_htk_mel(22050.0), 98)
    hz = 700.0 * (10 ** (edges / 2595.0) - 1.0)
    freqs = np.linspace(0, 22050.0, 1025)
    lower, centre, upper = hz[40], hz[41], hz[42]
    tri = np.maximum(0, np.minimum((freqs - lower) / (centre - lower),
                                   (upper - freqs) / (upper - centre)))
    np.testing.assert_allclose(bank[:, 40], tri / tri.sum(), rtol=1e-4, atol=1e-7)


def test_frontend_is_level_invariant_and_scaled_like_aisfx():
    config = flam_sfx_config().frontend
    frontend = SfxFrontend(config)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((1, 44100)).astype(np.float32))
    quiet, loud = frontend(0.01 * x), frontend(0.9 * x)
    torch.testing.assert_close(quiet, loud, rtol=1e-5, atol=1e-5)  # peak-normalised first
    assert quiet.shape == (1, 44100 // 1024 + 1, 96)
    # log10(1e4·x + 1) / max: 0 for silence, and the largest values of a full-scale noise
    # stay within aisfx's training range (the scaling maps that range onto 0…1).
    silent = frontend(torch.zeros(1, 44100))
    assert float(silent.abs().max()) == 0.0
    assert 0.3 < float(loud.max()) < 1.0
    assert AISFX_SPEC_MAX == pytest.approx(9.457798957824707)


def _checkpoint_bytes(extra_global=None) -> bytes:
    """A pickle shaped like aisfx's checkpoint: (state dict, {dataset: (np.int64, classes)})."""
    torch.manual_seed(0)
    state = {}
    for block, (cin, cout) in enumerate([(1, 4), (4, 8)], start=1):
        prefix = f"embedding_net.conv_block{block}."
        state[prefix + "conv1.weight"] = torch.randn(cout, cin, 3, 3)
        state[prefix + "bn1.running_mean"] = torch.randn(cout)
    state["fc.0.0.weight"] = torch.randn(4, 8)
    datasets = {"prosfx": (np.int64(0), 78)}
    buffer = io.BytesIO()
    payload = (state, datasets) if extra_global is None else (state, datasets, extra_global)
    torch.save(payload, buffer)
    return buffer.getvalue()


def test_conversion_keeps_the_embedding_net_under_flam_names():
    out = aisfx_tower_state(_checkpoint_bytes())
    assert sorted(out) == ["audio_branch.blocks.0.bn1.running_mean",
                           "audio_branch.blocks.0.conv1.weight",
                           "audio_branch.blocks.1.bn1.running_mean",
                           "audio_branch.blocks.1.conv1.weight"]
    assert out["audio_branch.blocks.1.conv1.weight"].shape == (8, 4, 3, 3)


class _RunsCode:
    def __reduce__(self):
        import os
        return (os.getcwd, ())


def test_conversion_refuses_a_pickle_that_runs_code():
    with pytest.raises(pickle.UnpicklingError):
        aisfx_tower_state(_checkpoint_bytes(extra_global=_RunsCode()))


@pytest.fixture(scope="module")
def golden():
    return np.load(GOLDEN, allow_pickle=False)


@pytest.fixture(scope="module")
def aisfx_encoder(golden):
    """flam's tower with aisfx's weights as flam converts them, in fp16 storage
    (``python -m flamcli.models.sfx convert WHEEL -o tests/data/aisfx --fp16``)."""
    from safetensors.torch import load_file

    shipped = load_file(str(DATA / "aisfx" / "sfx-tower.safetensors"))
    assert shipped and all(v.dtype == torch.float16 for v in shipped.values()
                           if v.is_floating_point())
    config = flam_sfx_config()
    encoder = SfxEncoder(config.frontend, config.audio).eval()
    state = {k.removeprefix("audio_branch."): v.float() if v.is_floating_point() else v
             for k, v in shipped.items()}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    assert not unexpected
    assert missing and all(k.startswith(("gru.", "norm.", "feature_norm.")) for k in missing)
    return encoder


def _clips(golden):
    for i, name in enumerate(golden["names"]):
        audio, rate = sf.read(DATA / "aisfx_clips" / str(name), dtype="float32")
        assert rate == 44100
        yield i, torch.from_numpy(audio)[None]


def test_frontend_matches_aisfx(golden):
    frontend = SfxFrontend(flam_sfx_config().frontend)
    for i, audio in _clips(golden):
        ours = frontend(audio)[0].numpy()
        theirs = golden[f"clip{i}_spec"]
        assert ours.shape == theirs.shape
        # Values 0…1; measured difference ≤ 7.3e-6 (pocketfft vs numpy's FFT in float32).
        # A reflect pad instead of librosa 0.9.2's zero pad, or Slaney instead of HTK bands,
        # moves them by 1e-2 or more.
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
        np.testing.assert_allclose(np.asarray(golden["mel_basis"]).T,
                                   htk_unit_sum_mel_matrix(1025, 0.0, 22050.0, 96, 44100).numpy(),
                                   rtol=0, atol=5e-6)  # librosa computes its basis in float32


def test_tower_reproduces_aisfx_embeddings(golden, aisfx_encoder):
    """Same weights on both sides (aisfx's, rounded to fp16 as flam ships them; the golden
    script rounds them the same way before running aisfx's own network). Measured difference
    about 7e-6 on frames up to 4.7: float32 FFT and summation order. The bound, 1e-4 of the
    largest frame value, is 15× that and 50× below what rounding the weights to fp16 moves
    the frames (5e-3 of it): a wrong pad, filterbank, scale or pooling would fail."""
    for i, audio in _clips(golden):
        with torch.inference_mode():
            steps = aisfx_encoder.conv_features(audio)[0]  # [512, steps]
        frames = golden[f"clip{i}_frames_fp16_weights"]
        assert steps.shape == frames.shape == golden[f"clip{i}_frames"].shape
        scale = float(np.abs(frames).max())
        np.testing.assert_allclose(steps.numpy(), frames, rtol=0, atol=1e-4 * scale)
        # fp16 storage is close to aisfx's fp32 network too (its published embeddings)
        pooled = steps.max(dim=1).values.numpy()  # aisfx's time max-pool: its clip embedding
        whole = golden[f"clip{i}_whole_embedding"].reshape(-1)
        np.testing.assert_allclose(pooled, whole, rtol=0, atol=1e-2 * scale)
        cosine = float(pooled @ whole / np.linalg.norm(pooled) / np.linalg.norm(whole))
        assert cosine > 0.9999
        # and aisfx's per-block embeddings (100-frame blocks, hop 50) from flam's front end
        spec = SfxFrontend(flam_sfx_config().frontend)(audio)
        for block, start in enumerate(golden[f"clip{i}_block_starts"]):
            x = spec[:, int(start):int(start) + 100][:, None]
            with torch.inference_mode():
                for layer in aisfx_encoder.blocks:
                    x = layer(x)
            ours = x.mean(dim=3).max(dim=2).values[0].numpy()
            theirs = golden[f"clip{i}_blocks_embedding"][block]
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-2 * scale)


def test_flam_train_trains_an_sfx_tower_end_to_end(train_data, tmp_path):
    """`flam train --config` with audio.kind "sfx" (small widths here): every block of the
    tower gets a gradient and moves, and the saved model loads and scores audio."""
    import dataclasses
    import json

    from flamcli.models.config import FrontendConfig, debug_config
    from flamcli.models.registry import load_model
    from flamcli.training.trainer import TrainConfig, train

    config = debug_config()
    config.frontend = FrontendConfig(sample_rate=16_000, n_fft=512, hop_length=256, n_mels=16,
                                     f_min=0.0, f_max=8_000.0)
    config.audio = dataclasses.replace(config.audio, kind="sfx", channels=(4, 8, 8), frames=25)
    config.validate()
    config_file = tmp_path / "sfx.json"
    config_file.write_text(json.dumps(config.to_dict()))
    mix, _ = train_data
    first, second = tmp_path / "one", tmp_path / "two"
    for out, steps in ((first, 1), (second, 3)):
        train(TrainConfig(data=str(mix), output=str(out), config=str(config_file),
                          max_steps=steps, batch_size=2, device="cpu", seed=3),
              log=lambda message: None)
    a, b = load_model(first), load_model(second)
    assert a.config.audio.kind == "sfx" and a.frames_per_window == 25
    for name, tensor in a.state_dict().items():
        if name.startswith("audio_branch.blocks.") and name.endswith("conv1.weight"):
            assert not torch.equal(tensor, b.state_dict()[name]), name
    with torch.inference_mode():
        frames = b.embed_audio_frames(torch.randn(1, b.window_samples) * 0.1)
    assert frames.shape == (1, 25, b.config.embed_dim) and torch.isfinite(frames).all()
