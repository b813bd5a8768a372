"""--device, model loading and training share one device check (flamcli/devices.py)."""

from __future__ import annotations

import pytest
import torch

from flamcli.devices import DeviceError, resolve_device
from flamcli.models.registry import ModelLoadError, load_model
from flamcli.training.trainer import TrainingUsageError, setup_distributed

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def test_auto_and_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "CPU", "mps:0", ""])
def test_names_that_are_no_device(name):
    with pytest.raises(DeviceError, match="is not auto, cpu, cuda or cuda:N"):
        resolve_device(name)


@no_cuda
def test_cuda_refused_alike_everywhere_without_cuda():
    for name in ("cuda", "cuda:0"):
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device(name)
    with pytest.raises(ModelLoadError, match="cuda: CUDA is not available"):
        load_model("debug", device="cuda")
    with pytest.raises(TrainingUsageError, match="cuda: CUDA is not available"):
        setup_distributed("cuda")


@no_cuda
def test_cli_refuses_cuda_before_any_work(cli, make_audio):
    clip = make_audio("a.wav", seconds=1.0)
    result = cli("detect", str(clip), "dog", "--model", "debug", "--device", "cuda")
    assert result.exit_code == 2
    assert "CUDA is not available" in result.stderr
