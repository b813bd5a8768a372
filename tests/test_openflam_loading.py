"""The OpenFLAM layout: legacy checkpoint + RoBERTa tokenizer files, converted once, offline.

A small architecture of the same module tree stands in for the 787 MB checkpoint so these
tests run in seconds; the key set of the real architecture is checked in test_models.py and
its numbers in test_openflam_parity.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
import torch

from flamcli.models import hub, registry
from flamcli.models.config import debug_config
from flamcli.models.flam import FlamModel
from flamcli.files import sha256_of
from flamcli.models.registry import load_model
from flamcli.models.text import TextTokenizer, roberta_tokenizer
from conftest import assert_same_weights

REV = "7e7b8dd6c8fb17bbc7d5700dbe04c61cd1d5a2c7"
TOKENIZER_REV = "e2da8e2f811d1448a5b465c236feacd80ffbac7b"


def small_openflam_config():
    config = debug_config()
    config.name = "openflam-small-test"
    config.text = dataclasses.replace(config.text, vocab_size=263, lowercase=False)
    return config


def write_roberta_files(directory):
    """A RoBERTa-style byte-level BPE: specials, the 256 byte symbols, three merges."""
    from tokenizers import pre_tokenizers

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    for token in ("og", "Ġd", "Ġdog"):
        vocab[token] = len(vocab)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\no g\nĠ d\nĠd og\n")


def write_checkpoint(path, config):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = FlamModel(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)  # a flat pickled state dict, as published
    return model


def test_roberta_files_tokenise_like_roberta(tmp_path):
    write_roberta_files(tmp_path)
    tokenizer = TextTokenizer(roberta_tokenizer(tmp_path / "vocab.json", tmp_path / "merges.txt"),
                              small_openflam_config().text)
    ids, mask = tokenizer(["a dog dog", "dog"])
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    assert ids[0].tolist() == [0, vocab["a"], vocab["Ġdog"], vocab["Ġdog"], 2]
    assert ids[1].tolist() == [0, vocab["d"], vocab["og"], 2, 1]  # no prefix space; padded
    assert mask[1].tolist() == [1, 1, 1, 1, 0]


def test_local_directory_with_a_legacy_checkpoint_loads_offline(tmp_path):
    config = small_openflam_config()
    directory = tmp_path / "openflam"
    original = write_checkpoint(directory / "open_flam_oct17.pth", config)
    write_roberta_files(directory)
    (directory / "config.json").write_text(json.dumps(config.to_dict()))
    model = load_model(directory, device="cpu")
    assert_same_weights(model, original)
    with torch.no_grad():
        assert model.encode_text(["a dog"]).embeddings.shape == (1, config.embed_dim)


def test_openflam_layout_without_tokenizer_files_is_explained(tmp_path):
    directory = tmp_path / "openflam"
    directory.mkdir()
    (directory / "open_flam_oct17.pth").write_bytes(b"x")
    with pytest.raises(registry.ModelLoadError, match="vocab.json and merges.txt"):
        load_model(directory)


@pytest.fixture
def seeded_openflam_hub(tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    snapshot = cache / "models--kechenadobe--OpenFLAM" / "snapshots" / REV
    original = write_checkpoint(snapshot / "open_flam_oct17.pth", small_openflam_config())
    write_roberta_files(cache / "models--FacebookAI--roberta-base" / "snapshots" / TOKENIZER_REV)
    base = registry.REGISTRY["openflam-v1-base"]
    entry = dataclasses.replace(
        base, name="openflam-test", architecture=small_openflam_config,
        files={"open_flam_oct17.pth": sha256_of(snapshot / "open_flam_oct17.pth")},
        licence_notice="TEST LICENCE NOTICE",
    )
    monkeypatch.setitem(registry.REGISTRY, "openflam-test", entry)
    # offline: the default-model choice (registry) and the downloads (hub) both probe
    monkeypatch.setattr(registry, "hub_reachable", lambda timeout=2.0: False)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=2.0: False)
    return cache, snapshot, original


def test_hub_checkpoint_is_converted_once_and_later_loads_never_unpickle(
        seeded_openflam_hub, monkeypatch, caplog):
    cache, snapshot, original = seeded_openflam_hub
    caplog.set_level(logging.INFO, logger="flamcli")
    first = load_model("openflam-test", device="cpu", cache_dir=cache)
    assert "TEST LICENCE NOTICE" in caplog.text
    converted = registry.converted_dir(registry.REGISTRY["openflam-test"], REV)
    assert sorted(p.name for p in converted.iterdir()) == [
        "README.md", "config.json", "model.safetensors", "tokenizer.json"]
    assert "TEST LICENCE NOTICE" not in (converted / "README.md").read_text()  # real notice
    assert "Adobe Research License" in (converted / "README.md").read_text()
    assert first.info.licence.startswith("Adobe Research License")
    assert_same_weights(first, original)

    caplog.clear()
    (snapshot / "open_flam_oct17.pth").unlink()  # the pickle is not needed any more

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load called on a converted model")

    monkeypatch.setattr(torch, "load", no_unpickling)
    second = load_model("openflam-test", cache_dir=cache)
    assert "TEST LICENCE NOTICE" not in caplog.text  # the notice shows the first time only
    assert torch.equal(second.logit_scale_a, original.logit_scale_a)


def test_default_model_is_openflam_when_available(seeded_openflam_hub, monkeypatch):
    cache, _, _ = seeded_openflam_hub
    monkeypatch.setattr(registry, "DEFAULT_MODEL", "openflam-test")
    assert registry.choose_default_model(cache_dir=cache) == "openflam-test"


def test_default_model_falls_back_to_the_bundled_one_with_a_notice(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(registry, "hub_reachable", lambda timeout=2.0: False)
    monkeypatch.setattr(registry, "bundled_model_name", lambda: "debug")
    caplog.set_level(logging.WARNING, logger="flamcli")
    model = load_model(None, cache_dir=tmp_path / "empty")
    assert model.info.name == "debug"
    assert caplog.text.count("using the bundled model debug") == 1


def test_cli_without_any_model_is_one_clear_line(cli, make_audio, monkeypatch):
    monkeypatch.setattr(registry, "hub_reachable", lambda timeout=2.0: False)
    monkeypatch.setattr(registry, "bundled_model_name", lambda: None)  # an install without it
    result = cli("detect", make_audio("a.wav"), "dog")
    assert result.exit_code == 4
    errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "openflam-v1-base" in errors[0]


def test_text_branch_runs_once_per_query_and_one_query_works(debug_model, make_audio):
    from flamcli.detection import detect

    calls = []
    handle = debug_model.text_branch.register_forward_hook(
        lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    try:
        paths = [make_audio("a.wav", seconds=25.0), make_audio("b.wav", seconds=3.0)]
        detect(debug_model, paths, ["dog barks", "rain", "a siren wails"])
        detect(debug_model, paths[1], ["dog barks"])
    finally:
        handle.remove()
    assert calls == [3, 1]  # one batched pass per run, each query once


def test_exact_ten_seconds_at_48k_prints_the_model_frame_probabilities(cli, tmp_path, make_audio):
    """`--format scores --median-filter 1` on 10 s at 48 kHz = the model's 32 unbiased values."""
    import numpy as np

    from flamcli.models.config import FrontendConfig
    from flamcli.models.storage import save_model
    from flamcli.models.text import byte_tokenizer

    config = debug_config()
    config.frontend = FrontendConfig(sample_rate=48_000, n_fft=1024, hop_length=480, n_mels=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = FlamModel(config, TextTokenizer(byte_tokenizer(), config.text)).eval()
    directory = save_model(model, tmp_path / "m48")
    rng = np.random.default_rng(0)
    data = (0.1 * rng.standard_normal(480_000)).astype(np.float32)
    clip = make_audio("ten48.wav", data=data, rate=48_000, subtype="FLOAT")
    queries = ["dog barks", "a car horn honks"]
    result = cli("detect", clip, *queries, "-m", directory, "-f", "scores", "--median-filter", "1")
    assert result.exit_code == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert rows[0] == ["onset", "offset", *queries] and len(rows) == 33
    printed = np.array([[float(v) for v in row[2:]] for row in rows[1:]], dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(data)[None], queries)[0].T.numpy()  # [32, C]
    np.testing.assert_array_equal(printed, expected)


def test_a_damaged_conversion_is_made_again(seeded_openflam_hub, caplog):
    cache, _, original = seeded_openflam_hub
    load_model("openflam-test", cache_dir=cache)
    weights = registry.converted_dir(registry.REGISTRY["openflam-test"], REV) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # cut short (a full disk, a killed copy)
    caplog.set_level(logging.WARNING, logger="flamcli")
    again = load_model("openflam-test", cache_dir=cache)
    assert "is damaged" in caplog.text and "converting again" in caplog.text
    assert_same_weights(again, original)
    caplog.clear()
    load_model("openflam-test", cache_dir=cache)  # repaired for good
    assert "damaged" not in caplog.text


def test_an_unusable_flam_cache_converts_for_this_run_only(seeded_openflam_hub, tmp_path,
                                                          monkeypatch, caplog):
    cache, _, original = seeded_openflam_hub
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("a file where the cache folder should be")
    monkeypatch.setenv("FLAM_CACHE", str(not_a_folder))
    caplog.set_level(logging.WARNING, logger="flamcli")
    model = load_model("openflam-test", cache_dir=cache)
    assert_same_weights(model, original)
    assert "converting for this run only" in caplog.text
    assert not_a_folder.read_text().startswith("a file")


def test_a_damaged_default_model_falls_back_to_the_bundled_one(seeded_openflam_hub, monkeypatch,
                                                              caplog, cli, make_audio):
    cache, snapshot, _ = seeded_openflam_hub
    checkpoint = snapshot / "open_flam_oct17.pth"
    checkpoint.write_bytes(checkpoint.read_bytes()[:-100])  # fails its sha256, offline
    monkeypatch.setattr(registry, "DEFAULT_MODEL", "openflam-test")
    monkeypatch.setattr(registry, "bundled_model_name", lambda: "debug")
    caplog.set_level(logging.WARNING, logger="flamcli")
    model = load_model(None, cache_dir=cache)
    assert model.info.name == "debug"
    assert caplog.text.count("using the bundled model debug") == 1
    assert "sha256" in caplog.text
    # asked for by name, the same damage is an error (exit 4 in the CLI), not a silent swap
    with pytest.raises(registry.ModelLoadError, match="sha256"):
        load_model("openflam-test", cache_dir=cache)
