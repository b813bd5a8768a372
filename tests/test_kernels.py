"""The GEMM path (oneDNN or MKL) is chosen per machine by timing both, remembered, and can be
forced; both paths give the same numbers within the parity tolerance."""

from __future__ import annotations

import json

import pytest
import torch

from flamcli.models import linear


@pytest.fixture
def fresh_choice(monkeypatch):
    monkeypatch.setattr(linear, "FORCED", None)
    linear.use_onednn.cache_clear()
    yield
    linear.use_onednn.cache_clear()


@pytest.mark.skipif(not linear._onednn_linear_available(), reason="a torch without oneDNN")
def test_the_faster_path_is_timed_once_and_remembered(fresh_choice, monkeypatch):
    from flamcli.files import flam_cache_dir

    timed = []
    real = linear.time_gemms
    monkeypatch.setattr(linear, "time_gemms", lambda *a, **k: timed.append(1) or real(*a, **k))
    choice = linear.use_onednn()
    cache = json.loads((flam_cache_dir() / linear.KERNEL_CACHE_FILE).read_text())
    entry = cache[linear.machine_key()]
    seconds = entry["seconds"]
    assert seconds["mkl"] > 0 and seconds["onednn"] > 0
    assert choice == entry["onednn"] == (seconds["onednn"] * linear.ONEDNN_MARGIN < seconds["mkl"])
    linear.use_onednn.cache_clear()
    assert linear.use_onednn() == choice and len(timed) == 1  # read back, not timed again
    # a capped instruction set is another machine as far as the choice goes
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert linear.machine_key() != next(iter(cache))
    linear.use_onednn.cache_clear()
    linear.use_onednn()
    assert len(timed) == 2
    assert len(json.loads((flam_cache_dir() / linear.KERNEL_CACHE_FILE).read_text())) == 2


def test_a_damaged_choice_file_is_timed_again(fresh_choice):
    from flamcli.files import flam_cache_dir

    path = flam_cache_dir() / linear.KERNEL_CACHE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    linear.use_onednn()
    if linear._onednn_linear_available():
        assert linear.machine_key() in json.loads(path.read_text())


@pytest.mark.parametrize("forced", [True, False])
def test_the_environment_forces_a_path(fresh_choice, monkeypatch, forced):
    monkeypatch.setattr(linear, "FORCED", forced)
    monkeypatch.setattr(linear, "time_gemms", lambda *a, **k: pytest.fail("timed though forced"))
    assert linear.use_onednn() == (forced and linear._onednn_linear_available())


@pytest.mark.skipif(not linear._onednn_linear_available(), reason="a torch without oneDNN")
@pytest.mark.parametrize("fusion", [{}, {"activation": "gelu"}, {"residual": True}])
def test_both_paths_agree_within_the_parity_tolerance(fresh_choice, monkeypatch, fusion):
    torch.manual_seed(0)
    layer = linear.Linear(512, 768).eval()
    x = torch.randn(2, 64, 512)
    kwargs = dict(fusion)
    if kwargs.pop("residual", False):
        kwargs["residual"] = torch.randn(2, 64, 768)
    outputs = []
    for forced in (True, False):
        monkeypatch.setattr(linear, "FORCED", forced)
        linear.use_onednn.cache_clear()
        with torch.inference_mode():
            outputs.append(layer(x, **kwargs))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
