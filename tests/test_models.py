"""The FLAM module: architecture, key names, calibrated scores, save/load."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from flamcli.models.config import FlamConfig, debug_config, openflam_v1_base_config
from flamcli.models.flam import FlamModel, calibrated_probability
from flamcli.models.registry import ModelLoadError, build_debug_model, load_model
from flamcli.models.storage import save_model
from conftest import assert_same_weights

KEYS = Path(__file__).parent / "data" / "openflam-v1-base-keys.txt"


def test_base_architecture_has_exactly_the_published_state_dict():
    reference = {}
    for line in KEYS.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape, dtype = line.split("\t")
            reference[key] = (shape, dtype)
    with torch.device("meta"):
        model = FlamModel(openflam_v1_base_config())
    mine = {k: (str(list(v.shape)).replace(" ", ""), str(v.dtype).removeprefix("torch."))
            for k, v in model.state_dict().items()}
    assert mine == reference
    assert sum(v.numel() for v in model.state_dict().values()) == 196_679_901


def test_debug_model_is_deterministic_and_shaped_like_flam(debug_model):
    other = build_debug_model()
    assert_same_weights(debug_model, other)
    assert debug_model.frames_per_window == 32
    assert math.isclose(debug_model.frame_seconds, 0.3125)
    waves = torch.randn(2, debug_model.window_samples)
    with torch.no_grad():
        frames, global_ = debug_model.embed_audio(waves)
        text = debug_model.encode_text(["dog barks", "a car horn"])
        probs = debug_model.frame_probabilities(frames, text)
    assert frames.shape == (2, 32, 32) and global_.shape == (2, 32)
    assert torch.allclose(frames.norm(dim=-1), torch.ones(2, 32), atol=1e-5)
    assert probs.shape == (2, 2, 32) and ((probs > 0) & (probs < 1)).all()
    # α ≈ 10 and β ≈ −8 at initialisation (paper §3.6), on top of the default bias init
    assert ((text.scale > 5) & (text.scale < 20)).all()
    assert ((text.bias > -9.5) & (text.bias < -6.5)).all()


def test_text_is_encoded_in_one_batch_and_padding_does_not_change_it(debug_model):
    with torch.no_grad():
        together = debug_model.encode_text(["dog", "a much longer description of rain"])
        alone = debug_model.encode_text(["dog"])
    torch.testing.assert_close(together.embeddings[0], alone.embeddings[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(together.bias[0], alone.bias[0], atol=1e-5, rtol=0)


def test_unbiased_probability_matches_formula_and_is_stable():
    cos = torch.tensor([[-0.3, 0.0, 0.2, 0.9]])
    scale, bias = torch.tensor([12.0]), torch.tensor([-6.0])
    p = torch.sigmoid(scale[:, None] * cos + bias[:, None])
    expected = p / (p + torch.sigmoid(bias[:, None]))
    torch.testing.assert_close(calibrated_probability(cos, scale, bias), expected)
    # cosine 0 is the 0.5 boundary for any α, β
    for b in (-3.0, -30.0, -200.0):
        out = calibrated_probability(cos, scale, torch.tensor([b]))
        assert torch.isfinite(out).all()
        assert abs(out[0, 1].item() - 0.5) < 1e-6
    approx = calibrated_probability(cos, scale, bias, unbiased=False)
    torch.testing.assert_close(approx, torch.sigmoid(12.0 * cos))


def test_save_and_load_directory_roundtrip(tmp_path, debug_model):
    directory = save_model(debug_model, tmp_path / "m")
    assert {p.name for p in directory.iterdir()} == {
        "config.json", "model.safetensors", "tokenizer.json", "README.md"}
    loaded = load_model(directory, device="cpu")
    assert_same_weights(debug_model, loaded)
    assert loaded.tokenizer(["Dog barks"])[0].tolist() == debug_model.tokenizer(["dog barks"])[0].tolist()
    # a weights file with config and tokenizer beside it works too
    assert load_model(directory / "model.safetensors").config == loaded.config


def test_legacy_torch_checkpoint_loads_without_unpickling_code(tmp_path, debug_model):
    directory = save_model(debug_model, tmp_path / "m")
    state = {f"module.{k}": v for k, v in debug_model.state_dict().items()}
    torch.save(state, directory / "legacy.pth")
    loaded = load_model(directory / "legacy.pth")
    assert torch.equal(loaded.logit_scale_a, debug_model.logit_scale_a)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, directory / "evil.pth")
    with pytest.raises(ModelLoadError, match="cannot read model weights"):
        load_model(directory / "evil.pth")


def test_mismatched_weights_are_refused(tmp_path, debug_model):
    directory = save_model(debug_model, tmp_path / "m")
    from safetensors.torch import load_file, save_file

    state = load_file(str(directory / "model.safetensors"))
    state.pop("text_projection.0.bias")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="1 missing keys.*1 unexpected"):
        load_model(directory)


def test_config_roundtrip_and_validation():
    config = debug_config()
    assert FlamConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown"):
        FlamConfig.from_dict({**config.to_dict(), "nonsense": 1})
    bad = config.to_dict()
    bad["frontend"]["n_mels"] = 20
    with pytest.raises(ValueError, match="n_mels"):
        FlamConfig.from_dict(bad)


def test_no_model_is_never_a_silent_debug_default(monkeypatch):
    from flamcli.models import registry

    monkeypatch.setattr(registry, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.delenv("FLAM_MODEL", raising=False)
    if registry.bundled_model_name() is not None:  # offline with flam-tiny installed: flam-tiny
        assert registry.choose_default_model() == "flam-tiny"
    monkeypatch.setattr(registry, "bundled_model_name", lambda: None)  # an install without it
    with pytest.raises(ModelLoadError, match="no model available.*openflam-v1-base.*--model debug"):
        load_model(None)
    with pytest.raises(ModelLoadError, match="unknown model 'nope'"):
        load_model("nope")


def test_frame_readout_follows_the_fold(debug_model):
    """A sound confined to one frame's time span moves only nearby frame features."""
    model = debug_model
    rate = model.sample_rate
    quiet = torch.zeros(1, model.window_samples)
    loud = quiet.clone()
    span = slice(int(5.0 * rate), int(5.3125 * rate))  # frame 16
    loud[0, span] = torch.from_numpy(np.random.default_rng(0).standard_normal(
        span.stop - span.start).astype(np.float32))
    with torch.no_grad():
        a = model.audio_branch(quiet)[0]
        b = model.audio_branch(loud)[0]
    change = (a - b).norm(dim=-1)
    assert change.argmax().item() in (15, 16, 17)
    assert change[:8].max() < change.max() * 0.2 and change[-8:].max() < change.max() * 0.2


def _small_cnn_config() -> FlamConfig:
    import dataclasses

    config = debug_config()
    config.name = "debug-cnn"
    config.audio = dataclasses.replace(config.audio, kind="cnn", channels=(4, 8, 8, 16), frames=32)
    config.validate()
    return config


def test_cnn_audio_tower_gives_frames_in_time_order_and_roundtrips(tmp_path, debug_model):
    from flamcli.models.cnn import CNNEncoder

    config = _small_cnn_config()
    assert FlamConfig.from_dict(config.to_dict()) == config
    assert config.frames_per_window == 32 and config.audio.out_dim == 16
    torch.manual_seed(0)
    model = FlamModel(config, tokenizer=debug_model.tokenizer).eval()
    assert isinstance(model.audio_branch, CNNEncoder)
    samples = model.window_samples
    # A tone burst in the last quarter only changes the last frames' features (receptive
    # field aside), so frame n really is time n: the readout is not scrambled.
    quiet = torch.zeros(1, samples)
    burst = quiet.clone()
    t = torch.arange(samples // 4) / model.sample_rate
    burst[0, -samples // 4:] = 0.5 * torch.sin(2 * math.pi * 1000 * t)
    with torch.no_grad():
        a = model.embed_audio_frames(quiet)[0]
        b = model.embed_audio_frames(burst)[0]
    assert a.shape == (32, config.embed_dim)
    change = (a - b).norm(dim=-1)
    assert change[-6:].min() > 10 * change[:8].max()
    # saved and loaded like any FLAM model
    directory = save_model(model, tmp_path / "cnn")
    loaded = load_model(directory, device="cpu")
    assert isinstance(loaded.audio_branch, CNNEncoder)
    with torch.no_grad():
        assert torch.allclose(loaded.embed_audio_frames(burst)[0], b, atol=1e-6)
    with pytest.raises(ValueError, match="kind"):
        bad = config.to_dict()
        bad["audio"]["kind"] = "lstm"
        FlamConfig.from_dict(bad)
