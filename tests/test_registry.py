"""Hub loading through the real huggingface_hub code path, offline, against a seeded cache."""

from __future__ import annotations

import socket

import pytest

from flamcli.files import sha256_of
from flamcli.models import hub, registry
from flamcli.models.hub import verify_sha256
from flamcli.models.registry import ModelLoadError, RegistryEntry, load_model
from flamcli.models.storage import save_model
from conftest import assert_same_weights

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test loudly."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def seeded_hub(tmp_path, debug_model, monkeypatch):
    """A HF cache holding a flam model at a pinned revision, and a registry entry for it."""
    cache = tmp_path / "hf-cache"
    snapshot = cache / "models--flam-test--tiny" / "snapshots" / REVISION
    save_model(debug_model, snapshot)
    (cache / "models--flam-test--tiny" / "refs").mkdir(parents=True)
    (cache / "models--flam-test--tiny" / "refs" / "main").write_text(REVISION)
    files = {name: sha256_of(snapshot / name)
             for name in ("config.json", "model.safetensors", "tokenizer.json")}
    entry = RegistryEntry(name="tiny-test", description="test", repo_id="flam-test/tiny",
                          revision=REVISION, files=files, licence="Apache-2.0")
    monkeypatch.setitem(registry.REGISTRY, "tiny-test", entry)
    return cache, snapshot, entry


def test_cached_hub_model_loads_with_no_network(seeded_hub, no_network, debug_model):
    cache, _, _ = seeded_hub
    model = load_model("tiny-test", device="cpu", cache_dir=cache)
    assert model.info.name == "tiny-test"
    assert model.info.revision == REVISION
    assert model.info.source == "hf://flam-test/tiny"
    assert_same_weights(model, debug_model)


def test_sha256_is_verified_once_then_stamped(seeded_hub, no_network, monkeypatch):
    cache, snapshot, entry = seeded_hub
    load_model("tiny-test", cache_dir=cache)
    stamps = list((registry.flam_cache_dir() / "verified").iterdir())
    assert len(stamps) == 3

    def no_rehash(path):
        raise AssertionError("re-hashed a verified file")

    monkeypatch.setattr(hub, "sha256_of", no_rehash)
    load_model("tiny-test", cache_dir=cache)


def test_corrupted_cached_file_is_detected(seeded_hub, no_network):
    cache, snapshot, _ = seeded_hub
    weights = snapshot / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="fails its sha256 check and a fresh download failed"):
        load_model("tiny-test", cache_dir=cache)


def test_verify_sha256_notices_a_changed_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    good = sha256_of(path)
    assert verify_sha256(path, good)
    path.write_bytes(b"abd")
    assert not verify_sha256(path, good)


def test_cache_miss_offline_is_one_friendly_sentence(tmp_path, monkeypatch, no_network):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    entry = RegistryEntry(name="absent", description="", repo_id="flam-test/absent",
                          revision=REVISION, files={"config.json": "0" * 64})
    monkeypatch.setitem(registry.REGISTRY, "absent", entry)
    with pytest.raises(ModelLoadError) as info:
        load_model("absent", cache_dir=tmp_path / "empty-cache")
    message = str(info.value)
    assert "'absent'" in message and "not in the local Hugging Face cache" in message
    assert "\n" not in message


def test_cache_miss_with_the_network_down_is_friendly(tmp_path, monkeypatch, no_network):
    entry = RegistryEntry(name="absent", description="", repo_id="flam-test/absent",
                          revision=REVISION, files={"config.json": "0" * 64})
    monkeypatch.setitem(registry.REGISTRY, "absent", entry)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    with pytest.raises(ModelLoadError, match="'absent'") as info:
        load_model("absent", cache_dir=tmp_path / "empty-cache")
    assert "\n" not in str(info.value)


def test_cli_reports_model_errors_with_exit_code_4(cli, tmp_path, make_audio):
    clip = make_audio("a.wav")
    result = cli("detect", clip, "dog", "--model", tmp_path / "nothing-here")
    assert result.exit_code == 4
    assert "unknown model" in result.stderr and "Traceback" not in result.stderr
    not_a_model = tmp_path / "dir"
    not_a_model.mkdir()
    result = cli("detect", clip, "dog", "--model", not_a_model)
    assert result.exit_code == 4 and "not a flam model directory" in result.stderr


@pytest.mark.parametrize("revision", ["../../etc", "-rf", "main branch", "a..b", "x" * 300,
                                      "v1.0.", "refs/heads/", "\u00e9t\u00e9", ""])
def test_a_revision_that_is_no_hub_revision_is_a_usage_error(flam, make_audio, revision):
    code, out, err = flam("detect", make_audio("a.wav"), "dog", "-m", "debug", "--revision", revision)
    assert code == 2 and out == "", err
    assert "not a Hub revision" in err and err.count("\n") == 1


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/3", "0123456789abcdef0123456789abcdef01234567"])
def test_hub_revisions_pass_the_check(revision):
    from flamcli.cli.common import check_revision

    assert check_revision(revision) == revision
