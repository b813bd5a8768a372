"""A model folder that cannot be used ends in one line naming it and exit 4 (model not
loadable), never an internal error: damaged tokenizer files, weights of another shape, a
config.json with sizes or a threshold no model can have, a pickle that would run code."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from conftest import REPO

FLAM_TINY = REPO / "models" / "flam-tiny"
CLIP = REPO / "examples" / "dog_park.flac"


@pytest.fixture
def model_copy(tmp_path):
    """flam-tiny in a folder of its own: big files linked, small ones copied to be damaged."""
    folder = tmp_path / "model"
    folder.mkdir()
    for item in FLAM_TINY.iterdir():
        if item.suffix == ".safetensors":
            (folder / item.name).symlink_to(item)
        else:
            (folder / item.name).write_bytes(item.read_bytes())
    return folder


def refused(cli, folder: Path) -> str:
    result = cli("detect", CLIP, "dog barks", "-m", folder)
    assert result.exit_code == 4, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "internal error" not in result.stderr, result.stderr
    assert result.stdout == ""
    return lines[0]


def test_the_undamaged_copy_loads(cli, model_copy):
    assert cli("detect", CLIP, "dog barks", "-m", model_copy).exit_code == 0


@pytest.mark.parametrize("damage", [b"", b"{\"version\": \"1.0\", \"trunc", b"\xff\xfe\x00"])
def test_damaged_tokenizer_file(cli, model_copy, damage):
    (model_copy / "tokenizer.json").write_bytes(damage)
    assert refused(cli, model_copy).startswith(f"error: {model_copy}: unreadable tokenizer files")


def test_weights_of_another_shape(cli, model_copy):
    from safetensors.torch import load_file, save_file

    state = load_file(str(FLAM_TINY / "model.safetensors"))
    name = sorted(k for k, v in state.items() if v.ndim == 2)[0]
    state[name] = torch.zeros(3, 7)
    (model_copy / "model.safetensors").unlink()
    save_file(state, str(model_copy / "model.safetensors"))
    line = refused(cli, model_copy)
    assert "do not match the 'flam-tiny' architecture (1 tensor(s)" in line and name in line


@pytest.mark.parametrize("edit, says", [
    (lambda c: c["text"].update(hidden_size="384"), "hidden_size: need whole numbers ≥ 1"),
    (lambda c: c["frontend"].update(hop_length=0), "hop_length: need whole numbers ≥ 1"),
    (lambda c: c["audio"].update(frames=64.0), "frames: need whole numbers ≥ 1"),
    (lambda c: c.update(presence_threshold=7), "presence_threshold must be between 0 and 1"),
    (lambda c: c["frontend"].update(f_max=96000.0), "f_max ≤ sample_rate / 2"),
    (lambda c: c["text"].update(num_heads=5), "hidden_size must be a multiple of num_heads"),
    (lambda c: c["text"].update(lowercase="no"), "lowercase must be true or false"),
])
def test_config_values_no_model_can_have(cli, model_copy, edit, says):
    config = json.loads((model_copy / "config.json").read_text())
    edit(config)
    (model_copy / "config.json").write_text(json.dumps(config))
    line = refused(cli, model_copy)
    assert line.startswith(f"error: invalid {model_copy / 'config.json'}: ") and says in line


class RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_pickle_that_would_run_code_is_refused_in_one_line(cli, model_copy):
    weights = model_copy / "legacy.pth"  # a legacy weights file with config and tokenizer beside
    with open(weights, "wb") as handle:
        pickle.dump({"state_dict": RunsCode()}, handle)
    result = cli("detect", CLIP, "dog barks", "-m", weights)
    assert result.exit_code == 4, result.stderr
    assert "this must never run" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot read model weights {weights}")
    # torch's advice to load with weights_only=False would run the code: not passed on
    assert "pickled objects or code" in lines[0] and "weights_only" not in result.stderr


def test_fields_left_out_of_config_json_are_named_with_their_defaults(flam, model_copy, make_audio):
    import json

    config = model_copy / "config.json"
    data = json.loads(config.read_text())
    del data["presence_threshold"], data["audio"]["dropout"]
    config.write_text(json.dumps(data))
    code, out, err = flam("detect", make_audio("a.wav"), "dog", "-m", model_copy)
    assert code == 0, err
    [line] = [l for l in err.splitlines() if "leaves out" in l]
    assert line.startswith("warning: ") and "2 field(s)" in line
    assert "presence_threshold=0.5" in line and "audio.dropout=0.0" in line


def test_a_complete_config_json_says_nothing(flam, model_copy, make_audio):
    code, _, err = flam("detect", make_audio("a.wav"), "dog", "-m", model_copy)
    assert code == 0 and "leaves out" not in err
