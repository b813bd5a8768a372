"""--precision int8: the audio side's Linear layers run in int8 (dynamic quantisation), within the
error that 8-bit rounding allows, and nowhere else; fp32 stays exact and the default."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from flamcli.models import int8
from flamcli.models.linear import Linear

pytestmark = pytest.mark.skipif(int8.int8_engine() is None, reason="no quantised CPU engine")
ENGINES = [e for e in ("fbgemm", "qnnpack") if e in torch.backends.quantized.supported_engines]


def int8_linear(weight, bias, engine):
    layer = Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    layer.int8_weight = int8.pack_int8_weight(weight, bias, engine)
    layer.int8_reduce_range = engine == "fbgemm"
    return layer


@pytest.mark.parametrize("engine", ENGINES)
def test_one_layer_is_within_the_rounding_bound(engine):
    """|int8 − fp32| per output ≤ Σ|x|·(w step)/2 + Σ|w|·(x step)/2 + the product of the steps:
    what rounding w to 8 bits per output channel and x to 7 (FBGEMM) or 8 bits can cost."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 96, generator=g)
    weight = torch.randn(40, 96, generator=g) * 0.2
    bias = torch.randn(40, generator=g)
    layer = int8_linear(weight, bias, engine)
    with torch.inference_mode():
        got = layer(x)
    exact = F.linear(x, weight, bias)
    w_step = weight.abs().amax(1) / 127  # per output channel
    levels = 127 if engine == "fbgemm" else 255
    x_step = (x.max().clamp(min=0) - x.min().clamp(max=0)) / levels
    bound = (x.abs().sum(1, keepdim=True) * w_step / 2
             + weight.abs().sum(1) * x_step / 2 + 96 * w_step * x_step / 4) * 1.01 + 1e-5
    error = (got - exact).abs()
    assert (error <= bound).all()
    assert error.max() > 1e-4  # it really ran in integers, not the float weights


def test_fused_gelu_and_residual_equal_the_separate_ops():
    g = torch.Generator().manual_seed(1)
    x, residual = torch.randn(7, 3, 32, generator=g), torch.randn(7, 3, 24, generator=g)
    layer = int8_linear(torch.randn(24, 32, generator=g), torch.randn(24, generator=g),
                        int8.int8_engine())
    with torch.inference_mode():
        plain = layer(x)
        assert plain.shape == (7, 3, 24)
        assert torch.equal(layer(x, activation="gelu"), F.gelu(plain))
        assert torch.equal(layer(x, residual=residual), plain + residual)


def test_training_and_gradients_use_the_float_weights():
    g = torch.Generator().manual_seed(2)
    weight, bias = torch.randn(8, 16, generator=g), torch.randn(8, generator=g)
    layer = int8_linear(weight, bias, int8.int8_engine())
    x = torch.randn(4, 16, generator=g, requires_grad=True)
    out = layer(x)
    assert torch.allclose(out, F.linear(x, weight, bias), atol=1e-6)
    out.sum().backward()
    assert x.grad is not None and layer.weight.grad is not None


def test_the_audio_side_is_quantised_and_the_text_side_is_not(debug_model):
    from flamcli.embedding_cache import model_fingerprint
    from flamcli.models.registry import build_debug_model

    model = build_debug_model().eval()
    clip = torch.randn(2, model.window_samples, generator=torch.Generator().manual_seed(3)) * 0.1
    with torch.inference_mode():
        frames_fp32 = model.embed_audio_frames(clip)
        text_fp32 = model.encode_text(["a dog barks", "rain"]).embeddings
    fingerprint_fp32 = model_fingerprint(model)
    audio_linears = [m for part in (model.audio_branch, model.audio_projection)
                     for m in part.modules() if isinstance(m, Linear)]
    assert int8.quantize_int8(model) == len(audio_linears) > 0
    assert all(m.int8_weight is not None for m in audio_linears)
    assert all(m.int8_weight is None for m in model.text_branch.modules() if isinstance(m, Linear))
    assert model.info.precision == "int8" and model.info.as_dict()["precision"] == "int8"
    with torch.inference_mode():
        frames_int8 = model.embed_audio_frames(clip)
        assert torch.equal(model.encode_text(["a dog barks", "rain"]).embeddings, text_fp32)
    cosine = F.cosine_similarity(frames_int8, frames_fp32, dim=-1)
    assert cosine.min() > 0.99 and not torch.equal(frames_int8, frames_fp32)
    # another precision is another model as far as the embedding cache goes
    assert model_fingerprint(model) != fingerprint_fp32
    # fp32 records are unchanged: no precision key at all
    assert "precision" not in build_debug_model().info.as_dict()


def test_load_model_int8_picks_the_cpu_and_refuses_a_gpu():
    from flamcli.models.registry import load_model

    model = load_model("debug", precision="int8")
    assert model.device.type == "cpu" and model.info.precision == "int8"
    with pytest.raises(int8.PrecisionError, match="CPU only"):
        load_model("debug", device="cuda", precision="int8")
    with pytest.raises(int8.PrecisionError, match="not one of"):
        load_model("debug", precision="int4")


def test_detect_int8_records_the_precision(cli, make_audio):
    clip = make_audio("clip.wav", seconds=4.0)
    exact = cli("detect", clip, "a tone", "-m", "debug", "-f", "json", "-t", "0")
    approx = cli("detect", clip, "a tone", "-m", "debug", "-f", "json", "-t", "0",
                 "--precision", "int8")
    assert exact.exit_code == approx.exit_code == 0, approx.stderr
    assert "precision" not in json.loads(exact.stdout)["model"]
    assert json.loads(approx.stdout)["model"]["precision"] == "int8"
    assert "on cpu, int8" in approx.stderr


@pytest.mark.parametrize("command", [["detect"], ["ground"]])
def test_int8_on_a_named_gpu_is_a_usage_error(flam, make_audio, monkeypatch, command):
    clip = make_audio("clip.wav", seconds=2.0)
    # --device cuda passes its own check only where CUDA exists; pretend it does, so that
    # the precision check is the one that answers.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    code, out, err = flam(*command, clip, "a tone", "-m", "debug", "--device", "cuda",
                          "--precision", "int8")
    assert code == 2 and out == ""
    assert "--precision" in err and "CPU only" in err and "Traceback" not in err


def test_eval_sed_int8_scores_with_the_int8_model(cli, make_audio, tmp_path):
    make_audio("clips/a.wav", seconds=4.0)
    (tmp_path / "gt.tsv").write_text("filename\tonset\toffset\tevent_label\n"
                                     "a.wav\t0.5\t2.0\tdog barks\n")
    result = cli("eval", "sed", "-g", tmp_path / "gt.tsv", "--audio", tmp_path / "clips",
                 "--model", "debug", "--precision", "int8")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["model"]["precision"] == "int8"
