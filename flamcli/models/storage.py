"""flam model directories on disk: the one writer, and reading them back.

A model directory holds ``config.json``, ``tokenizer.json``, ``model.safetensors`` (or
``text-tower.safetensors`` / a ``text-tower.json`` pointer for a frozen text tower kept
apart), a model card ``README.md`` and, where the weights need one, a ``NOTICE``. Weights are
read from safetensors, or from a legacy torch file with ``weights_only=True``; nothing is ever
unpickled otherwise.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Mapping

import torch

from ..files import atomic_path, sha256_of
from .config import FlamConfig
from .flam import FlamModel, ModelInfo
from .text import TextTokenizer

logger = logging.getLogger("flamcli")

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# A frozen text tower may live in its own file beside the weights (flam-tiny's MiniLM): it
# never changes between retrainings, so a repository stores it once.
TEXT_TOWER_FILE = "text-tower.safetensors"
TEXT_TOWER_POINTER = "text-tower.json"  # instead of the file: where a shared copy lives
CARD_FILE = "README.md"
# Third-party attribution a model's weights require (flam-sfx: the aisfx tower, CC BY 4.0).
NOTICE_FILE = "NOTICE"


class ModelLoadError(Exception):
    """A model could not be found, downloaded, verified or built; the message says what to do."""


def write_model_directory(directory: str | Path, config: FlamConfig,
                          tokenizer: TextTokenizer | Path | None,
                          weights: Mapping[str, Mapping[str, torch.Tensor]], card: str, *,
                          notice: str | None = None,
                          text_tower_pointer: dict | None = None) -> Path:
    """The one writer of a model directory (saving, OpenFLAM conversion, bundling).

    ``weights`` maps file names (``model.safetensors``, ``text-tower.safetensors``) to state
    dicts; ``tokenizer`` is a tokenizer to save or a ``tokenizer.json`` to copy byte for byte.
    Every file is written atomically, and the weights go last: their presence marks a
    complete directory, so an interrupted write is never taken for a model.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    if isinstance(tokenizer, TextTokenizer):
        with atomic_path(directory / TextTokenizer.FILE) as tmp:
            tokenizer.tokenizer.save(str(tmp))
    elif tokenizer is not None:
        with atomic_path(directory / TextTokenizer.FILE) as tmp:
            tmp.write_bytes(Path(tokenizer).read_bytes())
    with atomic_path(directory / CARD_FILE) as tmp:
        tmp.write_text(card, encoding="utf-8")
    if notice is not None:
        with atomic_path(directory / NOTICE_FILE) as tmp:
            tmp.write_text(notice, encoding="utf-8")
    if text_tower_pointer is not None:
        with atomic_path(directory / TEXT_TOWER_POINTER) as tmp:
            tmp.write_text(json.dumps(text_tower_pointer, indent=2) + "\n", encoding="utf-8")
    metadata = {"format": "pt", "flam_config": config.name}
    for filename, state in weights.items():
        state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        with atomic_path(directory / filename) as tmp:
            save_file(state, str(tmp), metadata=metadata)
    return directory


def save_model(model: FlamModel, directory: str | Path, card: str | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors``, tokenizer files and a model card."""
    if card is None:
        card = f"# {model.config.name}\n\nA FLAM model saved by flam.\n"
    return write_model_directory(directory, model.config, model.tokenizer,
                                 {WEIGHTS_FILE: model.state_dict()}, card)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Weights from safetensors, or from a legacy torch file without unpickling code."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file: say which
        reason = _first_line(exc)
        if "Weights only load failed" in reason:
            # torch's own text advises loading with weights_only=False, which would run the
            # pickled code: flam never does, so say what the file holds instead.
            reason = ("it holds pickled objects or code, and flam reads only plain tensors "
                      "(convert it to .safetensors)")
        raise ModelLoadError(f"cannot read model weights {path}: {reason}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path} does not hold a flat tensor state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def read_model_config(directory: Path) -> FlamConfig:
    """A flam model directory's ``config.json``, checked (ModelLoadError names the file)."""
    config_path = Path(directory) / CONFIG_FILE
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
        config = FlamConfig.from_dict(data)
    except (ValueError, TypeError, OSError, AttributeError) as exc:  # JSONDecodeError: ValueError
        raise ModelLoadError(f"invalid {config_path}: {exc}") from None
    except RecursionError:
        raise ModelLoadError(f"invalid {config_path}: JSON nested too deeply") from None
    missing = FlamConfig.missing_fields(data)
    if missing:  # an older flam's file, or one written by hand: say what was assumed
        assumed = ", ".join(f"{name}={value!r}" for name, value in missing.items())
        logger.warning("%s leaves out %d field(s); using the defaults %s", config_path,
                       len(missing), assumed)
    return config


def shared_text_tower(directory: Path) -> Path | None:
    """The frozen text tower's weights for a model directory: its own ``text-tower.safetensors``,
    or the one a ``text-tower.json`` pointer names (``{"file": relative path, "sha256": …}``).

    Two models packed with the same frozen MiniLM (e.g. a second bundled model beside
    flam-tiny) then ship its 43 MB once; the checksum makes sure the pointer still finds the
    same weights.
    """
    own = directory / TEXT_TOWER_FILE
    if own.is_file():
        return own
    pointer = directory / TEXT_TOWER_POINTER
    if not pointer.is_file():
        return None
    try:
        spec = json.loads(pointer.read_text(encoding="utf-8"))
        target = (directory / spec["file"]).resolve()
        expected = spec["sha256"]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(f"invalid {pointer}: {_first_line(exc)} (need a JSON object with "
                             "'file' and 'sha256')") from None
    if not target.is_file():
        raise ModelLoadError(f"{pointer} names {target}, which does not exist")
    if sha256_of(target) != expected:
        raise ModelLoadError(f"{target} (named by {pointer}) is not the text tower this model "
                             "was trained with (sha256 differs)")
    return target


def load_flam_directory(directory: Path, info: ModelInfo | None = None,
                        weights: Path | None = None,
                        other_weights: tuple[str, ...] = ()) -> FlamModel:
    """A flam model directory (``config.json``, tokenizer, ``model.safetensors``, maybe a text
    tower beside it); ``other_weights`` are weights file names tried after
    ``model.safetensors`` when ``weights`` is not given."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file():
        raise ModelLoadError(f"{directory} is not a flam model directory (no {CONFIG_FILE})")
    config = read_model_config(directory)
    try:
        tokenizer = TextTokenizer.from_directory(directory, config.text)
    except FileNotFoundError as exc:
        raise ModelLoadError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - `tokenizers` raises a bare Exception for a damaged file
        raise ModelLoadError(f"{directory}: unreadable tokenizer files ({_first_line(exc)})") from None
    if weights is None:
        candidates = [directory / WEIGHTS_FILE] + [directory / n for n in other_weights]
        weights = next((p for p in candidates if p.is_file()), candidates[0])
    if not weights.is_file():
        raise ModelLoadError(f"{directory} has no weights file {weights.name}")
    state = read_state_dict(weights)
    text_tower = shared_text_tower(directory)
    if text_tower is not None:
        state.update(read_state_dict(text_tower))
    return build_from_state_dict(config, tokenizer, state,
                                 info or ModelInfo(name=config.name, source=str(directory)))


def build_from_state_dict(config: FlamConfig, tokenizer: TextTokenizer,
                          state: dict[str, torch.Tensor], info: ModelInfo) -> FlamModel:
    # Weights may be stored in half precision to save space (flam-tiny's frozen text tower);
    # flam computes in fp32, and assign=True would keep the stored dtype.
    state = {name: tensor.float() if tensor.is_floating_point() else tensor
             for name, tensor in state.items()}
    with torch.device("meta"):
        model = FlamModel(config, tokenizer)
    try:
        result = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as exc:  # a tensor of another shape: weights paired with the wrong config
        # torch lists one problem per line after a heading: count them, show the first
        problems = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        raise ModelLoadError(
            f"weights of {info.source} do not match the {config.name!r} architecture "
            f"({len(problems)} tensor(s), e.g. {(problems or [_first_line(exc)])[0]})"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise ModelLoadError(
            f"weights of {info.source} do not match the {config.name!r} architecture: "
            f"{len(result.missing_keys)} missing keys (e.g. {result.missing_keys[:3]}), "
            f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]})"
        )
    model.info = info
    return model.eval()


def pack_model(run_dir: str | Path, output: str | Path, card: str,
                presence_threshold: float | None = None, half_weights: bool = False,
                shared_text_tower: str | Path | None = None) -> Path:
    """A trained model folder → the shipped (bundled) form, in the layout this module reads.

    ``presence_threshold`` (measured with bench/ground_presence.py) is written into the
    bundled config.json as the model's `flam ground` default.

    The frozen MiniLM tower goes to ``text-tower.safetensors`` in fp16 (43 MiB instead of 87;
    it is computed in fp32 after loading) and never changes between retrainings; the trained
    parts (audio tower, projections, heads) go to ``model.safetensors`` in fp32, or in fp16
    with ``half_weights`` (flam-sfx: its pretrained tower is 4.7 M parameters; computed in fp32
    after loading). A ``NOTICE`` beside the run (third-party attribution) is copied along.

    ``shared_text_tower``: an existing packed ``text-tower.safetensors`` holding the same
    frozen tower (checked tensor by tensor); the bundle then gets a ``text-tower.json``
    pointer to it (relative path, sha256) instead of a second copy.
    """
    from safetensors.torch import load_file

    run_dir, output = Path(run_dir), Path(output)
    model = load_flam_directory(run_dir)
    trained, text_tower = {}, {}
    # Loaded on the CPU; write_model_directory makes every tensor contiguous.
    for name, tensor in model.state_dict().items():
        if name.startswith("text_branch."):
            text_tower[name] = tensor.half() if tensor.is_floating_point() else tensor
        elif half_weights and tensor.is_floating_point():
            trained[name] = tensor.half()
        else:
            trained[name] = tensor
    weights, pointer = {WEIGHTS_FILE: trained}, None
    if shared_text_tower is None:
        weights[TEXT_TOWER_FILE] = text_tower
    else:
        shared = Path(shared_text_tower).resolve()
        existing = load_file(str(shared))
        if existing.keys() != text_tower.keys() or not all(
                torch.equal(existing[k], text_tower[k]) for k in text_tower):
            raise ValueError(f"{shared} does not hold this model's text tower")
        output.mkdir(parents=True, exist_ok=True)
        pointer = {"file": os.path.relpath(shared, output.resolve()),
                   "sha256": sha256_of(shared)}
    config = model.config
    if presence_threshold is not None:
        config.presence_threshold = float(presence_threshold)
    notice = run_dir / NOTICE_FILE
    return write_model_directory(
        output, config, run_dir / TextTokenizer.FILE, weights, card,
        notice=notice.read_text(encoding="utf-8") if notice.is_file() else None,
        text_tower_pointer=pointer)
