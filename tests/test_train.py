"""`flam train`: the FLAM losses by hand, the cross-rank ring against one process, the trainer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from flamcli.training import FlamLoss, LossConfig, LossInputs, build_text_slots
from flamcli.training.losses import normalise_caption, text_id


def bce(logit: float, target: float) -> float:
    return -(target * math.log(1 / (1 + math.exp(-logit)))
             + (1 - target) * math.log(1 - 1 / (1 + math.exp(-logit))))


# ---------------------------------------------------------------------------------------------
# Union-of-descriptions labelling


def test_text_slots_deduplicate_and_label():
    labels = [{"Dog barks": [[0.0, 5.0]]}, {"dog  barks": [[5.0, 10.0]], "rain": [[0, 10]]}]
    negatives = [["siren"], ["Siren", "bell"]]
    slots = build_text_slots(labels, negatives, n_frames=4, duration=10.0)
    assert slots.texts == ["Dog barks", "siren", "rain", "bell"]  # first spelling kept
    assert slots.capacity == 10 and slots.text_mask.tolist() == [True] * 4 + [False] * 6
    assert slots.ids[0] == text_id("DOG barks") and normalise_caption(" A  b ") == "a b"
    # clip 0: dog on frames 0-1 (2.5 s frames; 5.0 s covers half of frame 1 → 1.0 and 1.0)
    assert slots.targets[0, 0].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert slots.targets[1, 0].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert slots.targets[0, 2].sum() == 0  # "rain" not annotated for clip 0: negative
    assert slots.targets[:, 1].sum() == 0 and slots.targets[:, 3].sum() == 0  # negatives
    assert slots.present.tolist()[0][:4] == [1, 0, 0, 0]
    assert slots.present.tolist()[1][:4] == [1, 0, 1, 0]


def test_text_slots_overflow_masks_the_clip():
    labels = [{"a": [[0, 1]], "b": [[0, 1]]}, {"c": [[0, 1]], "d": [[0, 1]]}, {"a": [[0, 1]]}]
    slots = build_text_slots(labels, [[], [], []], n_frames=2, duration=2.0, capacity=3)
    assert slots.audio_mask.tolist() == [True, False, True] and slots.dropped_clips == 1
    assert slots.texts == ["a", "b"]
    assert slots.targets[1].sum() == 0


# ---------------------------------------------------------------------------------------------
# Losses by hand: one clip, two frames, two texts, 2-d embeddings


def tiny_inputs(requires_grad=True):
    frames = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # [N=1, T=2, D=2]
    audio_global = torch.tensor([[math.sqrt(0.5), math.sqrt(0.5)]])
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], requires_grad=requires_grad)
    alpha = torch.tensor([10.0, 5.0, 1.0], requires_grad=requires_grad)
    beta = torch.tensor([-8.0, -2.0, 0.0], requires_grad=requires_grad)
    slots = build_text_slots([{"x": [[0.0, 1.0]]}], [["y"]], n_frames=2, duration=2.0,
                             capacity=3)
    return LossInputs(frames, audio_global, emb, alpha, beta, slots)


def test_sed_loss_by_hand():
    inputs = tiny_inputs()
    loss = FlamLoss(LossConfig(global_loss="none", sed_weight=1.0, prior_weight=0.0))
    out = loss(inputs, torch.tensor(0.0))
    # text x (α 10, β −8): frame 0 positive cos 1, frame 1 negative cos 0
    # text y (α 5, β −2): both frames negative, cos 0 and 1
    expected = (bce(10 - 8, 1) + bce(-8, 0) + bce(-2, 0) + bce(5 - 2, 0)) / (2 * 2)
    assert out.parts["sed"].item() == pytest.approx(expected, rel=1e-6)
    out.total.backward()
    assert inputs.alpha.grad is not None and inputs.alpha.grad[:2].abs().min() > 0
    assert inputs.beta.grad is None or inputs.beta.grad.abs().max() == 0  # stop-gradient
    assert inputs.alpha.grad[2] == 0  # padding slot


def test_unlabelled_matches_are_left_out_not_negative():
    inputs = tiny_inputs()
    # "y" fits the clip (say, a tag of its event) without labelling it: its pairs drop out of
    # the SED sum and of the pair count; the clip's own label "x" is never dropped.
    inputs.slots = build_text_slots([{"x": [[0.0, 1.0]]}], [["y"]], n_frames=2, duration=2.0,
                                    capacity=3, unlabelled=[["Y", "x"]])
    assert inputs.slots.unlabelled_ids.tolist() == [[text_id("y")]]
    loss = FlamLoss(LossConfig(global_loss="none", sed_weight=1.0, prior_weight=0.0))
    out = loss(inputs, torch.tensor(0.0))
    expected = (bce(10 - 8, 1) + bce(-8, 0)) / (1 * 2)
    assert out.parts["sed"].item() == pytest.approx(expected, rel=1e-5)  # fp32 sums
    out.total.backward()
    assert inputs.alpha.grad[1] == 0 and inputs.alpha.grad[0] != 0


def test_prior_loss_by_hand_trains_only_beta():
    inputs = tiny_inputs()
    loss = FlamLoss(LossConfig(global_loss="none", sed_weight=0.0, prior_weight=1.0))
    out = loss(inputs, torch.tensor(0.0))
    # ȳ(x) = 1 positive frame / (1 clip × 2 frames) = 0.5; ȳ(y) = 0; mean over 2 texts
    expected = (bce(-8, 0.5) + bce(-2, 0.0)) / 2
    assert out.parts["prior"].item() == pytest.approx(expected, rel=1e-6)
    out.total.backward()
    assert inputs.beta.grad[:2].abs().min() > 0 and inputs.beta.grad[2] == 0
    assert inputs.alpha.grad is None and inputs.text_embeddings.grad is None


def test_sigmoid_global_loss_by_hand():
    inputs = tiny_inputs()
    loss = FlamLoss(LossConfig(global_loss="sigmoid", sed_weight=0.0, prior_weight=0.0))
    assert loss.global_bias.item() == -10.0  # SigLIP's init
    scale = torch.tensor(math.log(10.0))
    out = loss(inputs, scale)
    c = math.sqrt(0.5)  # cosine of the global embedding with both texts
    expected = (bce(10 * c - 10, 1) + bce(10 * c - 10, 0)) / 1  # sum over pairs / clips
    assert out.parts["global"].item() == pytest.approx(expected, rel=1e-6)


def test_infonce_matches_clip_cross_entropy():
    torch.manual_seed(0)
    n, d = 4, 8
    audio = F.normalize(torch.randn(n, d), dim=-1)
    text = F.normalize(torch.randn(5 * n, d), dim=-1)
    labels = [{f"t{i}": [[0.0, 1.0]]} for i in range(n)]
    slots = build_text_slots(labels, [[]] * n, n_frames=2, duration=2.0)
    inputs = LossInputs(audio[:, None].expand(n, 2, d), audio, text, torch.ones(5 * n),
                        torch.zeros(5 * n), slots)
    loss = FlamLoss(LossConfig(global_loss="infonce", sed_weight=0.0, prior_weight=0.0))
    scale = torch.tensor(math.log(1 / 0.07))
    out = loss(inputs, scale)
    logits = scale.exp() * audio @ text[:n].T
    target = torch.arange(n)
    expected = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    assert out.parts["global"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_weights_and_paper_initialisation(debug_model):
    cfg = LossConfig()
    assert (cfg.global_weight, cfg.sed_weight, cfg.prior_weight) == (1.0, 200.0, 1.0)
    assert debug_model.config.alpha_init == pytest.approx(math.log(10))
    assert debug_model.config.beta_init == -8.0
    assert debug_model.logit_scale_a.item() == pytest.approx(math.log(1 / 0.07))
    assert not debug_model.aed_logit_scale.requires_grad


# ---------------------------------------------------------------------------------------------
# The ring across gloo processes against one process


@pytest.fixture(scope="module")
def full_computations():
    """The one-process loss and gradients per global loss, computed once for the module."""
    from ring_parity import full_computation

    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = full_computation(name)
        return cache[name]

    return get


@pytest.mark.parametrize("global_loss, world", [("sigmoid", 2), ("sigmoid", 3), ("infonce", 2),
                                                ("infonce", 3)])
def test_ring_matches_single_process(global_loss, world, full_computations):
    from ring_parity import check_parity

    result = check_parity(world, global_loss, full=full_computations(global_loss))
    assert not result["missing"]
    assert result["loss_error"] <= 1e-5
    assert len(result["grad_errors"]) == result["parameters"] > 90
    for name, (diff, norm) in result["grad_errors"].items():
        # 1e-6 absolute: analytically-zero gradients (attention key biases) are float noise
        assert diff <= 1e-5 * norm + 1e-6, (name, diff, norm)


# ---------------------------------------------------------------------------------------------
# Trainer: data from `flam synth`, checkpoints, kill and resume, outputs, bad input

import json  # noqa: E402
from pathlib import Path  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from flamcli.training.trainer import TrainConfig, TrainingError, lr_factor, train  # noqa: E402


def quick(data, out, **kw) -> TrainConfig:
    values = dict(data=str(data), output=str(out), config="debug", max_steps=2, batch_size=2,
                  checkpoint_every=1, device="cpu", seed=3)
    values.update(kw)
    return TrainConfig(**values)


def test_schedule_warms_up_then_decays():
    factors = [lr_factor(s, 4, 12) for s in range(12)]
    assert factors[0] == pytest.approx(0.5 * (1 - math.cos(math.pi / 4)))
    assert factors[3] == pytest.approx(1.0) and factors[4] == pytest.approx(1.0)
    assert factors[4:] == sorted(factors[4:], reverse=True) and factors[-1] > 0
    assert lr_factor(12, 4, 12) == 0


def test_cli_train_writes_a_loadable_model(cli, train_data, tmp_path):
    from flamcli.models.registry import load_model

    mix, _ = train_data
    out = tmp_path / "model"
    result = cli("train", "--data", mix, "--output", out, "--config", "debug", "--max-steps", 2,
                 "--batch-size", 2, "--checkpoint-every", 1, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md", "loss.png"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["loss"]) and {"sed", "prior", "global"} <= set(r) for r in rows)
    card = (out / "README.md").read_text()
    assert "flam train" in card and "--max-steps 2" in card and str(mix) in card
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-00000002"
    assert len(list((out / "checkpoints").glob("step-*"))) == 2  # --keep-checkpoints 2
    model = load_model(out)
    assert model.config.name == "debug"
    # the trained model runs in detect
    audio = next((mix / "audio").iterdir())
    detect = cli("detect", audio, "dog bark", "--model", out)
    assert detect.exit_code == 0, detect.stderr


def test_train_on_the_fly_from_a_manifest(train_data, tmp_path):
    _, manifest = train_data
    summary = train(quick(manifest, tmp_path / "m", max_steps=1, grad_accum=2,
                          global_loss="infonce", freeze_text=True), log=lambda m: None)
    assert summary["steps"] == 1 and math.isfinite(summary["last"]["loss"])
    assert summary["last"]["global"] > 0


def test_progress_reports_every_step_instead_of_a_line(train_data, tmp_path):
    mix, _ = train_data
    rows, lines = [], []
    summary = train(quick(mix, tmp_path / "p", max_steps=3, checkpoint_every=5),
                    log=lines.append, progress=rows.append)
    assert [r["step"] for r in rows] == [1, 2, 3] and {r["max_steps"] for r in rows} == {3}
    assert all(math.isfinite(r["loss"]) and r["clips_per_s"] > 0 for r in rows)
    assert rows[-1]["loss"] == summary["last"]["loss"]
    assert not [line for line in lines if line.startswith("step ")]
    # without a callback, one line per step (stderr in a file: `flam train … 2> log`)
    lines = []
    train(quick(mix, tmp_path / "q", max_steps=2, checkpoint_every=5), log=lines.append)
    assert [line.split(" loss")[0] for line in lines if line.startswith("step ")] == [
        "step 1/2", "step 2/2"]


def small_cnn_config(tmp_path, **audio):
    """The debug architecture with a small cnn audio tower, as a config.json file."""
    import dataclasses

    from flamcli.models.config import debug_config

    config = debug_config()
    config.audio = dataclasses.replace(config.audio, kind="cnn", channels=(4, 8, 8, 16), frames=32,
                                       **audio)
    config.validate()
    path = tmp_path / "cnn.json"
    path.write_text(json.dumps(config.to_dict()))
    return config, path


def test_frames_fine_tunes_a_cnn_model_at_a_finer_grid(cli, train_data, tmp_path):
    from flamcli.models.registry import load_model

    _, config_file = small_cnn_config(tmp_path)
    mix, _ = train_data
    coarse = tmp_path / "coarse"
    train(quick(mix, coarse, config=str(config_file), max_steps=1), log=lambda m: None)
    fine = tmp_path / "fine"
    result = cli("train", "--data", mix, "--output", fine, "--init", coarse, "--frames", 64,
                 "--max-steps", 1, "--batch-size", 2, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    before, after = load_model(coarse), load_model(fine)
    assert before.frames_per_window == 32 and after.frames_per_window == 64
    assert after.frame_seconds == pytest.approx(before.frame_seconds / 2)
    # the same weights, one step on: every tensor keeps its shape
    assert {k: v.shape for k, v in before.state_dict().items()} == \
        {k: v.shape for k, v in after.state_dict().items()}
    audio = next((mix / "audio").iterdir())
    with torch.no_grad():
        assert after.embed_audio_frames(torch.zeros(1, after.window_samples)).shape[1] == 64
    assert cli("detect", audio, "dog bark", "--model", fine).exit_code == 0
    # a transformer tower's frame count is its architecture: refused, naming the option
    refused = cli("train", "--data", mix, "--output", tmp_path / "x", "--frames", 64,
                  "--max-steps", 1, "--device", "cpu")
    assert refused.exit_code == 2 and "--frames 64" in refused.stderr
    assert "Traceback" not in refused.stderr
    odd = cli("train", "--data", mix, "--output", tmp_path / "y", "--init", coarse,
              "--frames", 7, "--max-steps", 1, "--device", "cpu")
    assert odd.exit_code == 2 and "--frames 7" in odd.stderr


def test_frequency_masking_blanks_bands_in_training_only(tmp_path):
    import dataclasses

    from flamcli.models.cnn import CNNEncoder, mask_frequency_bands

    torch.manual_seed(0)
    x = torch.randn(64, 1, 20, 32) + 5.0  # no bin is 0 before masking
    masked = mask_frequency_bands(x, bands=2, max_bins=8)
    blank = (masked == 0).all(dim=2)[:, 0, :]  # [clips, mels]: bins blanked on every frame
    assert torch.equal(torch.where(blank[:, None, None, :], x, masked), x)  # the rest is kept
    widths = blank.sum(dim=1)
    assert widths.max() <= 16 and widths.float().mean() > 3  # two bands of 0–8 bins, some overlap
    for row in blank:  # each clip's blank bins form at most two runs
        edges = torch.diff(torch.cat([torch.tensor([0]), row.int(), torch.tensor([0])]))
        assert (edges == 1).sum() <= 2
    assert mask_frequency_bands(x, bands=1, max_bins=32).eq(0).any()

    config, _ = small_cnn_config(tmp_path, freq_masks=2)
    tower = CNNEncoder(config.frontend, config.audio)
    wave = torch.randn(2, config.frontend.window_samples)
    tower.eval()  # inference never masks: the same clip gives the same frames
    with torch.no_grad():
        assert torch.equal(tower(wave), tower(wave))
    tower.train()
    with torch.no_grad():
        assert not torch.allclose(tower(wave), tower(wave))
    config.audio = dataclasses.replace(config.audio, freq_mask_bins=0)
    with pytest.raises(ValueError, match="freq_mask_bins"):
        config.validate()


def test_freq_masks_option_sets_the_trained_models_config(cli, train_data, tmp_path):
    from flamcli.models.registry import load_model

    _, config_file = small_cnn_config(tmp_path)
    mix, _ = train_data
    result = cli("train", "--data", mix, "--output", tmp_path / "m", "--config", config_file,
                 "--freq-masks", 2, "--max-steps", 1, "--batch-size", 2, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert load_model(tmp_path / "m").config.audio.freq_masks == 2
    refused = cli("train", "--data", mix, "--output", tmp_path / "x", "--freq-masks", 2,
                  "--max-steps", 1, "--device", "cpu")  # debug: a transformer tower
    assert refused.exit_code == 2 and "--freq-masks 2" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_augmentations_are_deterministic_and_configurable(train_data):
    from flamcli.training.data import Augment, open_data

    _, manifest = train_data
    data = open_data(manifest, 16000, 10.0, seed=1, augment=Augment(tag_rate=1.0,
                                                                   downsample_rate=1.0))
    plain = open_data(manifest, 16000, 10.0, seed=1,
                      augment=Augment(tag_rate=0.0, downsample_rate=0.0, phrase_rate=0.0))
    a, b, c = data.example(0), data.example(0), plain.example(0)
    assert (a.audio == b.audio).all() and a.labels == b.labels
    assert not (a.audio == c.audio).all()  # down-and-up resampled
    tags = {"animals", "bells", "vehicles"}  # folder names are the tags of build_corpus
    assert set(a.labels) <= tags and set(c.labels).isdisjoint(tags)
    # What fits the clip without labelling it: the replaced captions (with tag_rate 1) and
    # the tags (without replacement); never its own labels.
    assert a.unlabelled and set(a.unlabelled).isdisjoint(a.labels)
    assert set(a.unlabelled) & set(c.labels) and set(c.unlabelled) & tags
    assert set(c.unlabelled).isdisjoint(c.labels)


def test_phrasings_replace_captions_and_are_never_negative_for_their_clip(train_data, tmp_path):
    import dataclasses

    from flamcli.synth import read_manifest, write_manifest
    from flamcli.training.data import Augment, open_data

    _, manifest = train_data
    clips = [dataclasses.replace(c, captions=[c.label, f"the sound of {c.label}"])
             for c in read_manifest(manifest)]
    rephrased = write_manifest(clips, tmp_path / "phrased.csv")
    always = Augment(tag_rate=0.0, downsample_rate=0.0, phrase_rate=1.0)
    never = Augment(tag_rate=0.0, downsample_rate=0.0, phrase_rate=0.0)
    a = open_data(rephrased, 16000, 10.0, seed=1, augment=always).example(0)
    b = open_data(rephrased, 16000, 10.0, seed=1, augment=never).example(0)
    assert a.labels and all(t.startswith("the sound of ") for t in a.labels)
    assert sorted(a.labels.values()) == sorted(b.labels.values())  # same events, new words
    assert {t[len("the sound of "):] for t in a.labels} <= set(a.unlabelled)
    assert {f"the sound of {t}" for t in b.labels} <= set(b.unlabelled)


def test_bad_data_is_a_clear_error(cli, train_data, tmp_path):
    empty = tmp_path / "empty"
    (empty / "meta").mkdir(parents=True)
    result = cli("train", "--data", empty, "--output", tmp_path / "o", "--max-steps", 1)
    assert result.exit_code == 2 and "empty dataset" in result.stderr  # a --data with nothing to train on
    broken = tmp_path / "broken"
    (broken / "meta").mkdir(parents=True)
    (broken / "audio").mkdir()
    (broken / "meta" / "x.json").write_text('{"labels": {"dog": [[1]]}}')
    (broken / "audio" / "x.flac").write_bytes(b"")
    with pytest.raises(TrainingError, match="x.json: malformed metadata"):
        train(quick(broken, tmp_path / "o2", max_steps=1), log=lambda m: None)
    with pytest.raises(TrainingError, match="no such folder"):
        train(quick(tmp_path / "nope", tmp_path / "o3"), log=lambda m: None)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(train_data, tmp_path, monkeypatch):
    from flamcli.training import losses

    mix, _ = train_data
    real = losses.FlamLoss.forward
    calls = []

    def poisoned(self, *args, **kw):
        out = real(self, *args, **kw)
        calls.append(1)
        if len(calls) >= 3:
            out.total = out.total * float("nan")
        return out

    monkeypatch.setattr(losses.FlamLoss, "forward", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(TrainingError, match=r"non-finite loss at step 3.*step-00000002"):
        train(quick(mix, out, max_steps=4), log=lambda m: None)
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-00000002"


def random_layer_config(path: Path, tower: str) -> Path:
    """A debug-sized config.json whose audio tower draws random numbers in training: a conv
    tower with dropout and SpecAugment frequency masks, or the Swin tower with drop-path."""
    from flamcli.models.config import AudioEncoderConfig, debug_config

    config = debug_config()
    if tower == "cnn":
        config.audio = AudioEncoderConfig(kind="cnn", channels=(8, 16), frames=32, dropout=0.3,
                                          freq_masks=2, freq_mask_bins=4)
    else:
        config.audio.drop_path_rate = 0.5
    path.write_text(json.dumps(config.to_dict()))
    return path


@pytest.mark.parametrize("tower", ["cnn", "htsat"])
def test_sigkill_mid_step_then_resume_matches_an_uninterrupted_run(train_data, tmp_path, tower):
    """Random layers on (dropout, frequency masks / drop-path), on-the-fly mixtures with the
    caption and resampling augmentations, and a SIGKILL at a random moment inside a step:
    the resumed run ends with exactly the weights of a run never stopped."""
    import random

    from flamcli.models.config import FlamConfig
    from flamcli.models.flam import FlamModel
    from flamcli.models.text import TextTokenizer, byte_tokenizer
    from safetensors.torch import load_file

    _, manifest = train_data
    config = random_layer_config(tmp_path / "config.json", tower)
    # The random layers really draw: two training-mode passes over one input differ.
    built = FlamConfig.from_dict(json.loads(config.read_text()))
    model = FlamModel(built, TextTokenizer(byte_tokenizer(), built.text)).train()
    wave = torch.randn(1, model.window_samples)
    assert not torch.equal(model.embed_audio(wave)[0], model.embed_audio(wave)[0])

    args = ["--data", str(manifest), "--config", str(config), "--max-steps", "6",
            "--batch-size", "2", "--checkpoint-every", "2", "--seed", "5", "--device", "cpu",
            "--threads", "1", "--tag-rate", "0.5", "--downsample-rate", "0.5"]
    delay = 0.6
    env = {**os.environ, "FLAM_TRAIN_STEP_DELAY": str(delay), "FLAM_NO_PROGRESS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "flamcli", "train", *args, "--output",
                             str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    latest = killed / "checkpoints" / "latest"
    deadline = time.time() + 120
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(random.uniform(0.05, delay * 0.9))  # somewhere inside step 3
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    assert latest.read_text().strip() == "step-00000002"
    assert not (killed / "model.safetensors").exists()
    # The rest in-process (same thread count as the killed run: bitwise-equal arithmetic).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        common = dict(config=str(config), max_steps=6, checkpoint_every=2, seed=5,
                      tag_rate=0.5, downsample_rate=0.5)
        resumed = train(quick(manifest, killed, resume="latest", **common), log=lambda m: None)
        train(quick(manifest, tmp_path / "straight", **common), log=lambda m: None)
        train(quick(manifest, tmp_path / "other", **{**common, "seed": 6}), log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    assert resumed["steps"] == 6
    a = load_file(str(killed / "model.safetensors"))
    b = load_file(str(tmp_path / "straight" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    other = load_file(str(tmp_path / "other" / "model.safetensors"))
    assert any(not torch.equal(a[k], other[k]) for k in a)  # the comparison can tell runs apart
    steps = [json.loads(line)["step"]
             for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_torchrun_two_processes(train_data, tmp_path):
    mix, _ = train_data
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FLAM_NO_PROGRESS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "flamcli", "train", "--data", str(mix), "--output", str(out), "--config",
         "debug", "--max-steps", "2", "--batch-size", "1", "--checkpoint-every", "2",
         "--device", "cpu"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("model after 2 steps") == 1  # rank 0 reports
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    from flamcli.models.registry import load_model

    assert load_model(out).config.name == "debug"


def test_validation_metrics_during_training(cli, train_data, tmp_path):
    mix, _ = train_data
    out = tmp_path / "validated"
    result = cli("train", "--data", mix, "--output", out, "--config", "debug", "--max-steps", 2,
                 "--batch-size", 2, "--device", "cpu", "--validation", mix, "--eval-every", 1)
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert 0.0 <= row["auroc"] <= 1.0 and 0.0 <= row["psds1"] <= 1.0
    bad = cli("train", "--data", mix, "--output", tmp_path / "bad", "--config", "debug",
              "--max-steps", 1, "--batch-size", 2, "--device", "cpu",
              "--validation", tmp_path)
    # checked before training: a usage error, nothing run
    assert bad.exit_code == 2 and "--validation" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_recipe_shapes_on_the_fly_mixtures_and_is_saved(cli, train_data, tmp_path):
    from flamcli.synth import SedRecipe, make_mixture
    from flamcli.training.data import open_data

    folder, manifest = train_data
    recipe = SedRecipe(background_layers=(2, 2), background_tilt_db=2.0, duration=3.0)
    recipe.save(tmp_path / "recipe.json")
    result = cli("train", "--data", manifest, "--output", tmp_path / "m", "--config", "debug",
                 "--max-steps", 1, "--batch-size", 2, "--recipe", tmp_path / "recipe.json")
    assert result.exit_code == 0, result.stderr
    saved = SedRecipe.load(tmp_path / "m" / "recipe.json")
    # The augmentation is kept; the rate and length follow the model, not the file.
    assert saved.background_layers == (2, 2) and saved.background_tilt_db == 2.0
    assert saved.duration == 10.0 and saved.sample_rate == 16000
    data = open_data(manifest, 16000, 10.0, seed=0, recipe=saved)
    assert len(make_mixture(data.bank, saved, 0, 0).plan["background_layers"]) == 2
    # A pre-rendered folder cannot be re-shaped, and a bad recipe names the option.
    refused = cli("train", "--data", folder, "--output", tmp_path / "f", "--config", "debug",
                  "--max-steps", 1, "--recipe", tmp_path / "recipe.json")
    assert refused.exit_code == 2 and "already rendered" in refused.stderr
    assert "Traceback" not in refused.stderr
    (tmp_path / "bad.json").write_text('{"recipe": "sed", "background_layers": [0, 1]}')
    bad = cli("train", "--data", manifest, "--output", tmp_path / "b", "--config", "debug",
              "--max-steps", 1, "--recipe", tmp_path / "bad.json")
    assert bad.exit_code == 2 and "--recipe" in bad.stderr and "background_layers" in bad.stderr
