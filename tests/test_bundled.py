"""The bundled-model path: packing a trained run (fp16 text tower) and loading it back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from flamcli.models.registry import load_model, load_model_directory
from flamcli.models.storage import pack_model, save_model

ROOT = Path(__file__).resolve().parents[1]


def test_pack_puts_the_text_tower_apart_in_fp16_and_loads_in_fp32(debug_model, tmp_path):
    run = save_model(debug_model, tmp_path / "run")
    packed = pack_model(run, tmp_path / "bundle", card="# card\n")
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
    again = pack_model(run, tmp_path / "b2", card="# card\n", presence_threshold=0.8)
    assert load_model_directory(again).config.presence_threshold == 0.8
    assert model.config.presence_threshold == 0.5


def test_the_build_script_packs_a_run(debug_model, tmp_path):
    """tools/flam_tiny.py pack, as the model card's build steps run it."""
    run = save_model(debug_model, tmp_path / "run")
    (tmp_path / "card.md").write_text("# card\n")
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "flam_tiny.py"), "pack", str(run),
                          "-o", str(tmp_path / "bundle"), "--card", str(tmp_path / "card.md"),
                          "--presence-threshold", "0.7"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path / "bundle")
    model = load_model_directory(tmp_path / "bundle")
    assert model.config.presence_threshold == 0.7
    assert (tmp_path / "bundle" / "README.md").read_text() == "# card\n"


def test_pack_can_point_to_a_shared_text_tower_instead_of_copying_it(debug_model, tmp_path):
    from flamcli.models.registry import ModelLoadError

    run = save_model(debug_model, tmp_path / "run")
    first = pack_model(run, tmp_path / "models" / "first", card="# one\n")
    second = pack_model(run, tmp_path / "models" / "second", card="# two\n",
                         shared_text_tower=first / "text-tower.safetensors")
    assert not (second / "text-tower.safetensors").exists()
    pointer = json.loads((second / "text-tower.json").read_text())
    assert pointer["file"] == "../first/text-tower.safetensors"
    a, b = load_model_directory(first).state_dict(), load_model_directory(second).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a pointer whose target changed, or that names nothing, is one clear error
    (second / "text-tower.json").write_text(json.dumps({**pointer, "sha256": "0" * 64}))
    with pytest.raises(ModelLoadError, match="sha256 differs"):
        load_model_directory(second)
    (second / "text-tower.json").write_text(json.dumps({**pointer, "file": "../gone.safetensors"}))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model_directory(second)
    (second / "text-tower.json").write_text("{")
    with pytest.raises(ModelLoadError, match="invalid"):
        load_model_directory(second)
    # a packed tower of another model is refused rather than pointed to
    from flamcli.models.registry import build_debug_model

    changed = build_debug_model()  # a fresh one: the fixture is shared by the session
    with torch.no_grad():
        changed.text_branch.embeddings.word_embeddings.weight.add_(1)
    run2 = save_model(changed, tmp_path / "run2")
    with pytest.raises(ValueError, match="does not hold this model's text tower"):
        pack_model(run2, tmp_path / "models" / "third", card="# three\n",
                    shared_text_tower=first / "text-tower.safetensors")


def test_pack_can_store_the_trained_parts_in_fp16(debug_model, tmp_path):
    run = save_model(debug_model, tmp_path / "run")
    (run / "NOTICE").write_text("attribution\n")
    packed = pack_model(run, tmp_path / "bundle", card="# card\n", half_weights=True)
    with safe_open(str(packed / "model.safetensors"), "pt") as weights:
        dtypes = {weights.get_tensor(n).dtype for n in weights.keys()}
    assert torch.float16 in dtypes and torch.float32 not in dtypes
    assert (packed / "NOTICE").read_text() == "attribution\n"
    model = load_model_directory(packed)
    original = debug_model.state_dict()
    for name, tensor in model.state_dict().items():
        assert tensor.dtype == original[name].dtype  # computed in fp32 again
        assert torch.allclose(tensor, original[name], rtol=1e-3, atol=1e-4)


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


# ---------------------------------------------------------------------------------------------
# The shipped flam-tiny itself: it loads offline, finds the example's dogs, refuses a piano.

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dog_park.flac"
GROUND_PRESENCE = (Path(__file__).resolve().parents[1] / "bench" / "results" / "flam-tiny-run7"
                   / "ground-presence.json")


@pytest.fixture(scope="module")
def flam_tiny():
    from flamcli.models import registry

    if registry.bundled_model_dir("flam-tiny") is None:
        pytest.skip("flam-tiny's weights are not in this checkout")
    return load_model("flam-tiny", device="cpu")


def dog_truth() -> list[tuple[float, float]]:
    rows = [line.split("\t") for line in (EXAMPLE.with_suffix(".tsv")).read_text().splitlines()[1:]]
    return [(float(a), float(b)) for _, a, b, label in rows if label.strip() == "dog barks"]


def test_flam_tiny_finds_the_barking_in_the_readme_example(flam_tiny):
    from flamcli import detect

    [result] = detect(flam_tiny, [EXAMPLE], ["dog barks"])
    assert result.ok and result.events
    for onset, offset in dog_truth():  # each barking passage is mostly covered by detections
        covered = sum(max(0.0, min(e.offset, offset) - max(e.onset, onset)) for e in result.events)
        assert covered >= 0.7 * (offset - onset), (onset, offset, result.events)
    # and it ranks: the barking frames score higher than the frames without barking
    times = (np.arange(len(result.scores)) + 0.5) * result.frame_seconds
    barking = np.zeros(len(times), dtype=bool)
    for onset, offset in dog_truth():
        barking |= (times >= onset) & (times < offset)
    assert result.scores[barking, 0].mean() > result.scores[~barking, 0].mean() + 0.2


def test_flam_tiny_grounds_and_refuses_with_its_own_threshold(flam_tiny):
    from flamcli.grounding import ground

    # the shipped threshold is the one bench/ground_presence.py chose for flam ground's own
    # median filter and minimum duration (recorded in bench/results)
    measured = json.loads(GROUND_PRESENCE.read_text())["for_defaults"]["tune"]["threshold"]
    assert flam_tiny.config.presence_threshold == pytest.approx(measured)
    [result] = ground(flam_tiny, [EXAMPLE], ["dog barks", "a piano playing"])
    dog, piano = result.answers
    assert dog.present and not piano.present and piano.presence < 0.5


def test_flam_tiny_stays_quiet_for_sounds_the_example_does_not_hold(flam_tiny):
    """False alarms on the README example (a dog park: dogs, a rooster, speech, soft traffic
    noise): a piano or rain must stay well under the model's own threshold everywhere, not
    merely under it. Measured: piano at most 0.19, rain 0.73, against 0.9."""
    from flamcli import detect

    threshold = flam_tiny.config.presence_threshold
    absent = ["a piano playing", "rain", "a car horn honks", "thunder", "applause"]
    [result] = detect(flam_tiny, [EXAMPLE], ["dog barks", *absent])
    assert result.ok and result.scores[:, 0].max() >= threshold  # the barking is found
    for column, query in enumerate(absent, start=1):
        peak = float(result.scores[:, column].max())
        assert peak < threshold - 0.15, (query, peak, threshold)
    assert not [e for e in result.events if e.query in absent]


def test_offline_without_a_model_falls_back_to_flam_tiny(flam_tiny, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               FLAM_CACHE=str(tmp_path / "flam"), FLAM_NO_PROGRESS="1")
    env.pop("FLAM_MODEL", None)
    run = subprocess.run([sys.executable, "-m", "flamcli", "detect", str(EXAMPLE), "dog barks"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    notices = [line for line in run.stderr.splitlines() if line.startswith("warning:")]
    assert len(notices) == 1 and "using the bundled model flam-tiny" in notices[0]
    assert "model: flam-tiny (bundled with flam)" in run.stderr
    assert "dog barks" in run.stdout and "Traceback" not in run.stderr
