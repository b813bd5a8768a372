"""`flam train` on bad input: option errors before anything runs (exit 2), data failures named
by file (exit 3), and a trained model that is always saved."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from flamcli.training.trainer import TrainConfig, TrainingUsageError, train


@pytest.fixture(scope="module")
def data(train_data):
    """conftest's tiny corpus manifest and its 8 rendered mixtures."""
    return train_data


def run_train(cli, data, out, *extra, steps=1, batch=2):
    return cli("train", "--data", data, "--output", out, "--config", "debug", "--max-steps",
               steps, "--batch-size", batch, "--device", "cpu", *extra)


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def copy_mixtures(mix, target):
    shutil.copytree(mix, target)
    return target


# --- --validation ------------------------------------------------------------------------

def test_bad_validation_folder_is_refused_before_training(cli, data, tmp_path):
    mix, _ = data
    empty = tmp_path / "emptyval"
    empty.mkdir()
    for folder, missing in ((empty, "ground_truth.tsv"), (tmp_path / "nonexist", "no such folder")):
        out = tmp_path / f"out-{folder.name}"
        result = run_train(cli, mix, out, "--validation", folder)
        assert result.exit_code == 2, result.stderr
        line = one_error_line(result)
        assert "--validation" in line and missing in line
        assert not out.exists()  # nothing was run
    # A clip listed in durations.tsv without its audio file is found before training too.
    partial = copy_mixtures(mix, tmp_path / "partial")
    gone = sorted((partial / "audio").iterdir())[0]
    gone.unlink()
    result = run_train(cli, mix, tmp_path / "out-partial", "--validation", partial)
    assert result.exit_code == 2 and gone.stem in one_error_line(result)


def test_failed_validation_still_saves_the_model(cli, data, tmp_path):
    mix, _ = data
    val = copy_mixtures(mix, tmp_path / "val")
    broken = sorted((val / "audio").iterdir())[0]
    broken.write_bytes(b"not audio at all")  # present (passes the up-front check), unreadable
    out = tmp_path / "out"
    result = run_train(cli, mix, out, "--validation", val, "--eval-every", 1, steps=2)
    assert result.exit_code == 3, result.stderr
    assert result.stderr.count("validation at step") == 2 and broken.name in result.stderr
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md"):
        assert (out / name).is_file(), name


# --- an output folder that holds another run -----------------------------------------------

def test_existing_output_is_refused_without_resume(cli, data, tmp_path):
    mix, _ = data
    out = tmp_path / "m1"
    assert run_train(cli, mix, out, "--checkpoint-every", 1).exit_code == 0
    weights = (out / "model.safetensors").read_bytes()
    again = run_train(cli, mix, out, "--seed", 5)
    assert again.exit_code == 2
    line = one_error_line(again)
    assert "--output" in line and "--resume" in line and "another folder" in line
    assert (out / "model.safetensors").read_bytes() == weights
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    # Resuming into it still works, and continues the same run.
    resumed = run_train(cli, mix, out, "--resume", "latest", steps=2)
    assert resumed.exit_code == 0, resumed.stderr
    assert [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()] \
        == [1, 2]
    # A finished run's checkpoint resumed into a new folder: nothing left to train, the model
    # is written there all the same (it once failed plotting a loss no step had logged).
    finished = run_train(cli, mix, tmp_path / "copy", "--resume", out / "checkpoints" /
                         "step-00000002", steps=2)
    assert finished.exit_code == 0, finished.stderr
    assert (tmp_path / "copy" / "model.safetensors").is_file()
    # An empty existing folder is fine; a folder of other files is refused.
    (tmp_path / "empty").mkdir()
    assert run_train(cli, mix, tmp_path / "empty").exit_code == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    refused = run_train(cli, mix, tmp_path / "other")
    assert refused.exit_code == 2 and "notes.txt" in one_error_line(refused)


def test_usage_error_on_rank_0_stops_every_rank(data, tmp_path):
    """The output check runs on rank 0 only; the other rank must stop too, not hang."""
    mix, _ = data
    out = tmp_path / "taken"
    out.mkdir()
    (out / "metrics.jsonl").write_text("")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FLAM_NO_PROGRESS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "flamcli", "train", "--data", str(mix), "--output", str(out), "--config",
         "debug", "--max-steps", "1", "--batch-size", "1", "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.count("--output") == 2, done.stderr[-3000:]  # both ranks refused it


# --- corpus clips that cannot be read --------------------------------------------------------

def test_skipped_corpus_clips_are_named(cli, data, tmp_path):
    _, manifest = data
    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    event = next(r for r in rows if r["kind"] == "event")
    missing = dict(event, path=str(tmp_path / "missing_dog.wav"), sha256="abc")
    text = dict(event, path=str(tmp_path / "broken.wav"), sha256="abd")
    (tmp_path / "broken.wav").write_text("not audio")
    bad = tmp_path / "bad.csv"
    with open(bad, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([dict(r, path=str(manifest.parent / r["path"])) for r in rows]
                         + [missing, text])
    out = tmp_path / "out"
    result = run_train(cli, bad, out)
    assert result.exit_code == 3, result.stderr  # as `flam synth sed`: the rest was used
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert "missing_dog.wav: skipped" in warnings[0] and "broken.wav: skipped" in warnings[1]
    assert (out / "model.safetensors").is_file()


# --- option errors exit 2 ---------------------------------------------------------

def test_negative_seed_is_a_usage_error(cli, data, tmp_path):
    mix, _ = data
    # Through the real entry point, which turns Click's usage errors into one line.
    done = subprocess.run(
        [sys.executable, "-m", "flamcli", "train", "--data", str(mix), "--output",
         str(tmp_path / "o"), "--config", "debug", "--max-steps", "1", "--seed", "-1"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error:") and done.stderr.count("\n") == 1
    assert "--seed" in done.stderr and "internal" not in done.stderr
    with pytest.raises(TrainingUsageError, match="--seed"):  # the library refuses it too
        train(TrainConfig(data=str(mix), output=str(tmp_path / "o2"), seed=-1, device="cpu"))


def test_missing_tags_manifest_is_a_usage_error(cli, data, tmp_path):
    mix, _ = data
    result = run_train(cli, mix, tmp_path / "o", "--tags", tmp_path / "nonexist.csv")
    assert result.exit_code == 2, result.stderr
    line = one_error_line(result)
    assert "--tags" in line and "nonexist.csv" in line and "internal" not in line


def test_bad_options_exit_2_before_training(cli, data, tmp_path):
    mix, _ = data
    (tmp_path / "bad.json").write_text("{not json")
    fake = tmp_path / "fake-checkpoint"
    fake.mkdir()
    (fake / "trainer.pt").write_bytes(b"garbage")
    (fake / "model.safetensors").write_bytes(b"garbage")
    cases = [(("--config", tmp_path / "nonexist.json"), "--config"),
             (("--config", tmp_path / "bad.json"), "--config"),
             (("--resume", tmp_path / "nonexist"), "--resume"),
             (("--resume", fake), "--resume")]
    for number, (options, name) in enumerate(cases):
        out = tmp_path / f"o{number}"
        result = run_train(cli, mix, out, *options)
        assert result.exit_code == 2, (options, result.stderr)
        assert name in one_error_line(result)
        assert not (out / "model.safetensors").exists()
    missing = run_train(cli, tmp_path / "nope", tmp_path / "o9")
    assert missing.exit_code == 2 and "--data" in one_error_line(missing)


# --- malformed mixtures; NaN samples ---------------------------------------------------

def test_non_numeric_label_bounds_are_malformed_metadata(cli, data, tmp_path):
    mix, _ = data
    folder = copy_mixtures(mix, tmp_path / "mix")
    meta = sorted((folder / "meta").glob("*.json"))[0]
    content = json.loads(meta.read_text())
    content["labels"] = {"dog bark": [["a", "b"]]}
    meta.write_text(json.dumps(content))
    result = run_train(cli, folder, tmp_path / "o", batch=8)  # every mixture in step 1
    assert result.exit_code == 3, result.stderr
    line = one_error_line(result)
    assert meta.name in line and "malformed metadata" in line


def test_nan_samples_name_the_file(cli, data, tmp_path):
    mix, _ = data
    folder = copy_mixtures(mix, tmp_path / "mix")
    flac = sorted((folder / "audio").iterdir())[0]
    audio, rate = sf.read(flac, dtype="float32")
    audio[100] = np.nan
    flac.unlink()
    wav = flac.with_suffix(".wav")
    sf.write(wav, audio, rate, subtype="FLOAT")
    result = run_train(cli, folder, tmp_path / "o", batch=8)
    assert result.exit_code == 3, result.stderr
    line = one_error_line(result)
    assert wav.name in line and "NaN or infinite samples" in line and "--lr" not in line


def test_a_checkpoint_left_half_written_is_cleared_by_the_next(cli, data, tmp_path):
    mix, _ = data
    out = tmp_path / "run"
    assert run_train(cli, mix, out, "--checkpoint-every", 1).exit_code == 0
    stale = out / "checkpoints" / ".step-00000007.part"  # as a kill during a write leaves it
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    resumed = run_train(cli, mix, out, "--resume", "latest", "--checkpoint-every", 1, steps=2)
    assert resumed.exit_code == 0, resumed.stderr
    assert not stale.exists()
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-00000002"
