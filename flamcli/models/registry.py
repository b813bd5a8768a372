"""Finding and loading models: registry names, Hub downloads, local directories and files.

``--model`` accepts a registry name (``debug`` or a Hub entry pinned to a 40-hex revision with
per-file sha256), a flam model directory (``config.json`` + ``model.safetensors`` + tokenizer
files), or a single weights file (safetensors, or a legacy torch checkpoint read with
``weights_only=True``; nothing is ever unpickled otherwise).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..io import atomic_path
from .config import FlamConfig, debug_config
from .flam import FlamModel, ModelInfo
from .text import TextTokenizer, byte_tokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"


class ModelLoadError(Exception):
    """A model could not be found, downloaded, verified or built; the message says what to do."""


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    description: str
    builder: Callable[[], FlamModel] | None = None  # in-code models
    repo_id: str | None = None  # Hub models
    revision: str | None = None  # a 40-hex commit: cached files load with no network call
    files: dict[str, str] = field(default_factory=dict)  # filename → sha256
    licence: str | None = None
    licence_notice: str | None = None


def build_debug_model() -> FlamModel:
    """A tiny random FLAM built in code, identical on every call (fixed seed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = debug_config()
        model = FlamModel(config, TextTokenizer(byte_tokenizer(), config.text))
    model.info = ModelInfo(name="debug", source="built-in (random weights, for tests only)")
    return model.eval()


REGISTRY: dict[str, RegistryEntry] = {}


def register(entry: RegistryEntry) -> None:
    REGISTRY[entry.name] = entry


register(RegistryEntry(
    name="debug",
    description="tiny random model built in code, for tests and smoke runs (detects nothing real)",
    builder=build_debug_model,
))


def list_models() -> list[RegistryEntry]:
    return list(REGISTRY.values())


# ---------------------------------------------------------------------------------------------
# Saving and loading flam model directories


def save_model(model: FlamModel, directory: str | Path, card: str | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors``, tokenizer files and a model card."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "flam_config": model.config.name})
    with atomic_path(directory / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(model.config.to_dict(), indent=2) + "\n", encoding="utf-8")
    if model.tokenizer is not None:
        with atomic_path(directory / TextTokenizer.FILE) as tmp:
            model.tokenizer.tokenizer.save(str(tmp))
    if card is None:
        card = f"# {model.config.name}\n\nA FLAM model saved by flam.\n"
    with atomic_path(directory / CARD_FILE) as tmp:
        tmp.write_text(card, encoding="utf-8")
    return directory


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Weights from safetensors, or from a legacy torch file without unpickling code."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file: say which
        raise ModelLoadError(f"cannot read model weights {path}: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path} does not hold a flat tensor state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_model_directory(directory: Path, info: ModelInfo | None = None,
                         weights: Path | None = None) -> FlamModel:
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise ModelLoadError(f"{directory} is not a flam model directory (no {CONFIG_FILE})")
    try:
        config = FlamConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"invalid {config_path}: {exc}") from None
    try:
        tokenizer = TextTokenizer.from_directory(directory, config.text)
    except (FileNotFoundError, ValueError, KeyError, OSError) as exc:
        raise ModelLoadError(str(exc)) from None
    weights = weights or directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelLoadError(f"{directory} has no weights file {weights.name}")
    return build_from_state_dict(config, tokenizer, read_state_dict(weights),
                                 info or ModelInfo(name=config.name, source=str(directory)))


def build_from_state_dict(config: FlamConfig, tokenizer: TextTokenizer,
                          state: dict[str, torch.Tensor], info: ModelInfo) -> FlamModel:
    with torch.device("meta"):
        model = FlamModel(config, tokenizer)
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ModelLoadError(
            f"weights of {info.source} do not match the {config.name!r} architecture: "
            f"{len(result.missing_keys)} missing keys (e.g. {result.missing_keys[:3]}), "
            f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]})"
        )
    model.info = info
    return model.eval()


# ---------------------------------------------------------------------------------------------
# Hub downloads with sha256 verified once and stamped


def flam_cache_dir() -> Path:
    root = os.environ.get("FLAM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "flam"
    )
    return Path(root)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> bool:
    """Hash ``path`` once; remember a match in a stamp keyed by (real path, size, mtime)."""
    real = Path(path).resolve()
    stat = real.stat()
    stamp = flam_cache_dir() / "verified" / f"{expected}.json"
    identity = {"path": str(real), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        if json.loads(stamp.read_text()) == identity:
            return True
    except (OSError, ValueError):
        pass
    if sha256_of(real) != expected:
        return False
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(stamp) as tmp:
            tmp.write_text(json.dumps(identity))
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return True


def _hub_error_message(entry: RegistryEntry, filename: str, exc: Exception) -> str:
    from huggingface_hub import errors

    what = f"model {entry.name!r} ({entry.repo_id}, file {filename})"
    if isinstance(exc, errors.OfflineModeIsEnabled) or (
        isinstance(exc, errors.LocalEntryNotFoundError)
    ):
        return (f"{what} is not in the local Hugging Face cache and the Hub cannot be reached"
                " (offline or HF_HUB_OFFLINE=1): connect once to download it, or pass --model"
                " with a local model directory")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return f"{what}: the Hub repository does not exist or needs a token (set HF_TOKEN)"
    if isinstance(exc, (errors.EntryNotFoundError, errors.RevisionNotFoundError)):
        return f"{what}: the file or revision {entry.revision} is not on the Hub"
    return f"{what} could not be downloaded: {exc.__class__.__name__}: {exc}"


def download_entry(entry: RegistryEntry, revision: str | None = None,
                   cache_dir: str | Path | None = None) -> dict[str, Path]:
    """Fetch (or find in the HF cache) every file of a Hub entry and verify its sha256."""
    from huggingface_hub import hf_hub_download

    from .. import __version__

    revision = revision or entry.revision
    # A user-chosen revision has no pinned hashes to check against.
    check = revision == entry.revision

    def fetch(filename: str, force: bool) -> Path:
        try:
            return Path(hf_hub_download(
                entry.repo_id, filename, revision=revision, cache_dir=cache_dir,
                force_download=force, library_name="flam", library_version=__version__,
            ))
        except Exception as exc:  # huggingface_hub raises many types; all become one line
            raise ModelLoadError(_hub_error_message(entry, filename, exc)) from None

    paths = {}
    for filename, expected in entry.files.items():
        path = fetch(filename, force=False)
        if check and expected and not verify_sha256(path, expected):
            try:
                path = fetch(filename, force=True)
            except ModelLoadError as exc:
                raise ModelLoadError(
                    f"model {entry.name!r}: the cached {filename} ({path}) fails its sha256 "
                    f"check and a fresh download failed: {exc}"
                ) from None
            if not verify_sha256(path, expected):
                raise ModelLoadError(
                    f"model {entry.name!r}: {filename} fails its sha256 check after a fresh "
                    f"download (expected {expected}); the Hub copy may have changed"
                )
        paths[filename] = path
    return paths


# ---------------------------------------------------------------------------------------------
# The one entry point


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(name_or_path: str | os.PathLike | None = None, device: str | torch.device | None = None,
               revision: str | None = None, cache_dir: str | Path | None = None) -> FlamModel:
    """Load a FLAM model by registry name, model directory or weights file.

    ``name_or_path`` defaults to ``$FLAM_MODEL``; there is no silent fallback to ``debug``.
    """
    name = os.fspath(name_or_path) if name_or_path is not None else os.environ.get("FLAM_MODEL")
    if not name:
        raise ModelLoadError(
            "no model given: pass --model (a registry name, a model directory or a weights file)"
            " or set FLAM_MODEL; `--model debug` runs a tiny random model for smoke tests"
        )
    model = _resolve(name, revision, cache_dir)
    target = torch.device(device) if device not in (None, "auto") else default_device()
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was requested but CUDA is not available")
    return model.to(target)


def _resolve(name: str, revision: str | None, cache_dir) -> FlamModel:
    entry = REGISTRY.get(name)
    if entry is not None:
        if entry.builder is not None:
            return entry.builder()
        paths = download_entry(entry, revision, cache_dir)
        directory = paths[CONFIG_FILE].parent if CONFIG_FILE in paths else None
        if directory is None:
            raise ModelLoadError(f"registry entry {name!r} lists no {CONFIG_FILE}")
        info = ModelInfo(name=entry.name, source=f"hf://{entry.repo_id}",
                         revision=revision or entry.revision, licence=entry.licence)
        return load_model_directory(directory, info)
    path = Path(name).expanduser()
    if path.is_dir():
        return load_model_directory(path)
    if path.is_file():
        return load_model_directory(path.parent, weights=path)
    known = ", ".join(sorted(REGISTRY))
    raise ModelLoadError(
        f"unknown model {name!r}: not a registry name ({known}), directory or file"
    )
