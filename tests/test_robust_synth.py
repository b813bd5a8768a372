"""`flam synth` on bad input: one line naming the file or option, the right exit code, no
traceback and no data lost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from flamcli.synth import read_manifest

RATE = 16000


def _tone(freq: float, seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny corpus (three events, one background) and its CSV manifest."""
    root = tmp_path_factory.mktemp("robust_corpus")
    (root / "animals").mkdir()
    (root / "amb").mkdir()
    for name, freq in [("dog_bark", 500.0), ("cat_meow", 900.0), ("bell_ring", 2000.0)]:
        sf.write(root / "animals" / f"{name}.wav", _tone(freq, 0.5), RATE)
    noise = 0.05 * np.random.default_rng(0).standard_normal(RATE * 3)
    sf.write(root / "amb" / "rain_ambience.wav", noise, RATE)
    from flamcli.synth import index_directory, write_manifest

    clips, skipped = index_directory(root)
    assert not skipped
    return root, write_manifest(clips, root / "corpus.csv")


def _no_traceback(result) -> None:
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


# ---------------------------------------------------------------------------------------------
# split never writes one list over the other, nor over its input


@pytest.mark.parametrize("case", ["same", "train-is-input", "validation-is-input"])
def test_split_refuses_outputs_that_overwrite_each_other_or_the_input(corpus, tmp_path, cli,
                                                                      case):
    manifest = tmp_path / "corpus.csv"
    manifest.write_bytes(corpus[1].read_bytes())
    before = manifest.read_bytes()
    train, validation = {
        "same": (tmp_path / "both.csv", tmp_path / "both.csv"),
        "train-is-input": (manifest, tmp_path / "val.csv"),
        # another spelling of the input's path is still the input
        "validation-is-input": (tmp_path / "train.csv", tmp_path / "." / "corpus.csv"),
    }[case]
    result = cli("synth", "split", manifest, "--train", train, "--validation", validation)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--train" in lines[0] and "--validation" in lines[0]
    _no_traceback(result)
    assert manifest.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.csv"]


# ---------------------------------------------------------------------------------------------
# recipe values that are not finite or out of range are usage errors


@pytest.mark.parametrize("recipe_text, field", [
    ('{"recipe": "sed", "active_db": NaN}', "active_db"),
    ('{"recipe": "sed", "active_db": 3}', "active_db"),
    ('{"recipe": "sed", "event_db": [-5, Infinity]}', "event_db"),
    ('{"recipe": "sed", "background_dbfs": [-Infinity, -20]}', "background_dbfs"),
    ('{"recipe": "sed", "label_hop": 1e-9}', "label_hop"),
    ('{"recipe": "sed", "min_run_frames": -5}', "min_run_frames"),
    ('{"recipe": "sed", "fill_gap_frames": -3}', "fill_gap_frames"),
    ('{"recipe": "sed", "max_concurrent": Infinity}', "max_concurrent"),
    ('{"recipe": "ground", "min_gap": NaN}', "min_gap"),
    ('{"recipe": "ground", "min_gap": -5}', "min_gap"),
])
def test_bad_recipe_values_are_refused_before_any_output(corpus, tmp_path, cli, recipe_text,
                                                          field):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(recipe_text)
    out = tmp_path / "out"
    kind = json.loads(recipe_text)["recipe"]
    result = cli("synth", kind, corpus[1], "-o", out, "-n", "1", "--sample-rate", RATE,
                 "--recipe", recipe)
    assert result.exit_code == 2, result.stderr
    assert field in result.stderr and str(recipe) in result.stderr
    _no_traceback(result)
    assert not out.exists()  # no synth.json left behind to block a corrected rerun


def test_settings_of_a_run_that_made_no_mixture_do_not_block_a_rerun(corpus, tmp_path, cli):
    # What a run that crashed before its first mixture left behind (another recipe).
    out = tmp_path / "out"
    out.mkdir()
    (out / "synth.json").write_text(json.dumps(
        {"recipe": {"recipe": "sed", "active_db": -3.0}, "seed": 0, "corpus": "other"}))
    result = cli("synth", "sed", corpus[1], "-o", out, "-n", "1", "--sample-rate", RATE)
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "synth.json").read_text())["corpus"] != "other"
    # Once it holds mixtures, another seed is still refused (resuming stays safe).
    result = cli("synth", "sed", corpus[1], "-o", out, "-n", "1", "--sample-rate", RATE,
                 "--seed", "3")
    assert result.exit_code == 2 and "another recipe, seed or corpus" in result.stderr


# ---------------------------------------------------------------------------------------------
# a negative seed


@pytest.mark.parametrize("command", ["sed", "ground"])
def test_negative_seed_is_a_usage_error(corpus, tmp_path, cli, command):
    out = tmp_path / "out"
    result = cli("synth", command, corpus[1], "-o", out, "-n", "1", "--sample-rate", RATE,
                 "--seed", "-1")
    assert result.exit_code == 2 and "--seed" in result.stderr
    _no_traceback(result)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# captions with "|" survive a CSV manifest


def test_csv_manifest_keeps_pipes_and_backslashes_in_captions(corpus, tmp_path, cli):
    root = tmp_path / "c"
    (root / "x").mkdir(parents=True)
    sf.write(root / "x" / "dog_bark.wav", _tone(500.0, 0.5), RATE)
    captions = ['a, "quoted" | piped', "back\\slash", "ends in \\", "plain"]
    (root / "x" / "dog_bark.json").write_text(json.dumps({"captions": captions,
                                                          "tags": ["a|b"]}))
    for suffix in ("csv", "jsonl"):
        result = cli("synth", "index", root, "-o", tmp_path / f"m.{suffix}")
        assert result.exit_code == 0, result.stderr
        [clip] = read_manifest(tmp_path / f"m.{suffix}")
        assert clip.captions == captions and clip.tags == ["a|b"]
    # A manifest written before escaping keeps reading the same: a lone backslash is text.
    old = tmp_path / "old.csv"
    old.write_text("path,kind,captions\nx/dog_bark.wav,event,C:\\sounds|dog\n")
    assert read_manifest(old)[0].captions == ["C:\\sounds", "dog"]


# ---------------------------------------------------------------------------------------------
# a JSONL value of the wrong JSON type


@pytest.mark.parametrize("key, value", [("duration", [1]), ("channels", {"a": 1}),
                                        ("path", ["x.wav"]), ("captions", [["dog"]])])
def test_jsonl_row_with_a_list_or_object_value_names_file_and_row(corpus, tmp_path, cli, key,
                                                                   value):
    from flamcli.synth import write_manifest

    manifest = write_manifest(read_manifest(corpus[1]), tmp_path / "m.jsonl")
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[1][key] = value
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = cli("synth", "sed", manifest, "-o", tmp_path / "out", "-n", "1",
                 "--sample-rate", RATE)
    assert result.exit_code == 2
    assert f"m.jsonl:2: {key}" in result.stderr
    _no_traceback(result)


# ---------------------------------------------------------------------------------------------
# byte-order marks from Excel or Notepad


def test_manifest_and_sidecars_with_a_byte_order_mark(corpus, tmp_path, cli):
    manifest = tmp_path / "bom.csv"
    text = corpus[1].read_text(encoding="utf-8")
    manifest.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    (tmp_path / "animals").symlink_to(corpus[0] / "animals")
    (tmp_path / "amb").symlink_to(corpus[0] / "amb")
    assert read_manifest(manifest) == read_manifest(corpus[1])
    result = cli("synth", "sed", manifest, "-o", tmp_path / "out", "-n", "1",
                 "--sample-rate", RATE)
    assert result.exit_code == 0, result.stderr

    root = tmp_path / "c"
    root.mkdir()
    sf.write(root / "honk.wav", _tone(700.0, 0.5), RATE)
    (root / "honk.txt").write_bytes("\ufeffhonk honk\n".encode())
    sf.write(root / "kettle.wav", _tone(1200.0, 0.5), RATE)
    (root / "kettle.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(
        {"captions": ["kettle whistles"]}).encode())
    result = cli("synth", "index", root, "-o", tmp_path / "m.csv")
    assert result.exit_code == 0, result.stderr
    assert sorted(c.label for c in read_manifest(tmp_path / "m.csv")) == ["honk honk",
                                                                           "kettle whistles"]


# ---------------------------------------------------------------------------------------------
# a sidecar's kind


def test_sidecar_kind_is_trimmed_and_a_bad_kind_is_named(tmp_path, cli):
    root = tmp_path / "c"
    root.mkdir()
    sf.write(root / "dog_bark.wav", _tone(500.0, 1.0), RATE)
    (root / "dog_bark.json").write_text(json.dumps({"kind": "Background ", "captions": "a|b"}))
    sf.write(root / "cat.wav", _tone(900.0, 1.0), RATE)
    (root / "cat.json").write_text(json.dumps({"kind": "sometimes"}))
    result = cli("synth", "index", root, "-o", tmp_path / "m.csv")
    assert result.exit_code == 3
    assert ("sidecar cat.json: kind must be event or background, not 'sometimes'"
            in result.stderr)
    assert "without an ambience word" not in result.stderr
    _no_traceback(result)
    [clip] = read_manifest(tmp_path / "m.csv")
    assert (Path(clip.path).name, clip.kind, clip.captions) == ("dog_bark.wav", "background",
                                                                ["a", "b"])


# ---------------------------------------------------------------------------------------------
# a file name that is not UTF-8


def test_index_skips_a_file_whose_name_a_manifest_cannot_hold(tmp_path, cli):
    import os

    root = tmp_path / "c"
    root.mkdir()
    sf.write(root / "dog_bark.wav", _tone(500.0, 1.0), RATE)
    sf.write(os.fsencode(root) + b"/cat\xffmeow.wav", _tone(900.0, 1.0), RATE)
    result = cli("synth", "index", root, "-o", tmp_path / "m.csv")
    assert result.exit_code == 3, result.stderr
    _no_traceback(result)
    assert "cat\\xffmeow.wav: skipped: its name is not UTF-8" in result.stderr
    [clip] = read_manifest(tmp_path / "m.csv")
    assert Path(clip.path).name == "dog_bark.wav"
