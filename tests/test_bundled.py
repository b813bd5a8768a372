"""The bundled-model path: packing a trained run (fp16 text tower) and loading it back."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from flamcli.models.minilm import pack_bundle
from flamcli.models.registry import load_model, load_model_directory, save_model


def test_pack_puts_the_text_tower_apart_in_fp16_and_loads_in_fp32(debug_model, tmp_path):
    run = save_model(debug_model, tmp_path / "run")
    packed = pack_bundle(run, tmp_path / "bundle", card="# card\n")
    with safe_open(str(packed / "text-tower.safetensors"), "pt") as weights:
        text = {name: weights.get_tensor(name).dtype for name in weights.keys()}
    with safe_open(str(packed / "model.safetensors"), "pt") as weights:
        trained = {name: weights.get_tensor(name).dtype for name in weights.keys()}
    assert text and all(n.startswith("text_branch.") for n in text)
    assert all(d == torch.float16 for d in text.values() if d.is_floating_point)
    assert trained and not any(n.startswith("text_branch.") for n in trained)
    assert all(d == torch.float32 for d in trained.values() if d.is_floating_point)
    model = load_model_directory(packed)
    original = debug_model.state_dict()
    for name, tensor in model.state_dict().items():
        assert tensor.dtype == original[name].dtype
        if name.startswith("text_branch."):
            assert torch.allclose(tensor, original[name], rtol=1e-3, atol=1e-4)
        else:
            assert torch.equal(tensor, original[name])
    assert (packed / "README.md").read_text() == "# card\n"
    # the measured operating point travels in config.json and drives flam ground's default
    again = pack_bundle(run, tmp_path / "b2", card="# card\n", presence_threshold=0.8)
    assert load_model_directory(again).config.presence_threshold == 0.8
    assert model.config.presence_threshold == 0.5


def test_flam_tiny_is_bundled_and_loads_offline():
    from flamcli.models import registry

    if registry.bundled_model_dir("flam-tiny") is None:
        pytest.skip("flam-tiny's weights are not in this checkout")
    model = load_model("flam-tiny")
    assert model.info.name == "flam-tiny" and model.info.source == "bundled with flam"
    assert model.config.frontend.sample_rate == 16000
    audio_bytes = sum(v.numel() * 4 for k, v in model.state_dict().items()
                      if k.startswith("audio_branch."))
    assert audio_bytes <= 20 * 10**6
