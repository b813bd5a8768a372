"""Finding and loading models: registry names, Hub entries, local directories and files.

The house of ``flamcli.models``: this module holds the entries and the one entry point,
:func:`load_model`; :mod:`.storage` reads and writes model directories, :mod:`.hub` talks to
the Hub, :mod:`.convert` turns the published OpenFLAM checkpoint into a model directory.

``--model`` accepts a registry name (``debug`` or a Hub entry pinned to a 40-hex revision with
per-file sha256), a flam model directory (``config.json`` + ``model.safetensors`` + tokenizer
files), or a single weights file (safetensors, or a legacy torch checkpoint read with
``weights_only=True``; nothing is ever unpickled otherwise).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..devices import DeviceError, resolve_device
from ..files import flam_cache_dir
from .config import FlamConfig, debug_config, openflam_v1_base_config
from .convert import (OPENFLAM_CHECKPOINT, OPENFLAM_LICENCE, OPENFLAM_NOTICE, convert_openflam,
                      load_openflam_directory)
from .flam import FlamModel, ModelInfo
from .hub import download_files, hub_reachable
# ModelLoadError lives with the readers; it is also the registry's error, imported from here.
from .storage import (CONFIG_FILE, WEIGHTS_FILE, ModelLoadError,  # noqa: F401
                      load_flam_directory, read_model_config)
from .text import TextTokenizer, byte_tokenizer

logger = logging.getLogger("flamcli")


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    description: str
    builder: Callable[[], FlamModel] | None = None  # in-code models
    repo_id: str | None = None  # Hub models
    revision: str | None = None  # a 40-hex commit: cached files load with no network call
    files: dict[str, str] = field(default_factory=dict)  # filename → sha256
    licence: str | None = None
    licence_notice: str | None = None  # shown once, when the model is first downloaded
    # "flam": the files form a flam model directory; "openflam": a legacy checkpoint plus the
    # RoBERTa tokenizer files from ``tokenizer_repo``, converted once into the flam cache.
    checkpoint_format: str = "flam"
    architecture: Callable[[], FlamConfig] = openflam_v1_base_config  # of an "openflam" checkpoint
    tokenizer_repo: str | None = None
    tokenizer_revision: str | None = None
    tokenizer_files: tuple[str, ...] = ()


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


register(RegistryEntry(
    name="openflam-v1-base",
    description="OpenFLAM v1-base (HTSAT-base + RoBERTa-base, 787 MB download), non-commercial",
    repo_id="kechenadobe/OpenFLAM",
    revision="7e7b8dd6c8fb17bbc7d5700dbe04c61cd1d5a2c7",
    files={OPENFLAM_CHECKPOINT: "0f7329b67ad6c3b3a31d5bbb30e91c74dcf7b9007f78d9d7af0bcc643bed1054"},
    licence=OPENFLAM_LICENCE,
    licence_notice=OPENFLAM_NOTICE,
    checkpoint_format="openflam",
    # Tokenizer files are plain git files (no sha256 on the Hub); the commit pins their content.
    tokenizer_repo="FacebookAI/roberta-base",
    tokenizer_revision="e2da8e2f811d1448a5b465c236feacd80ffbac7b",
    tokenizer_files=("vocab.json", "merges.txt"),
))

register(RegistryEntry(
    name="flam-tiny",
    description="small FLAM trained by flam on CC/GPL sound packages, shipped inside flam "
                "for offline use",
    builder=lambda: load_bundled_model("flam-tiny"),
    licence="Apache-2.0 (text tower: all-MiniLM-L6-v2, Apache-2.0)",
))

DEFAULT_MODEL = "openflam-v1-base"


def list_models() -> list[RegistryEntry]:
    return list(REGISTRY.values())


def entry_source(entry: RegistryEntry) -> str:
    """Where a registry model comes from, in one word or URL: ``hf://repo@commit``,
    ``bundled`` or ``built-in``."""
    if entry.repo_id:
        return f"hf://{entry.repo_id}@{entry.revision[:10]}"
    if entry.name == BUNDLED_MODEL:
        return "bundled" if bundled_model_dir(entry.name) else "bundled (not in this version)"
    return "built-in"


def entry_threshold(entry: RegistryEntry) -> float:
    """The threshold detection and grounding use by default with this model: the bundled
    model's card value, the calibrated boundary for the others (without loading weights)."""
    folder = bundled_model_dir(entry.name) if entry.name == BUNDLED_MODEL else None
    if folder is not None:
        try:
            return read_model_config(folder).presence_threshold
        except ModelLoadError:  # unreadable: loading it will say so
            pass
    return FlamConfig.presence_threshold


def describe_models() -> list[dict]:
    """One row per registry model: name, source, default threshold, licence, description."""
    return [{"name": e.name, "source": entry_source(e), "presence_threshold": entry_threshold(e),
             "licence": e.licence, "description": e.description, "repo_id": e.repo_id,
             "revision": e.revision} for e in list_models()]


# ---------------------------------------------------------------------------------------------
# Saving and loading flam model directories


def load_model_directory(directory: Path, info: ModelInfo | None = None,
                         weights: Path | None = None) -> FlamModel:
    """A flam model directory, or the published OpenFLAM layout (``open_flam_oct17.pth`` +
    ``vocab.json`` + ``merges.txt``) read directly."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file() and (
            (directory / OPENFLAM_CHECKPOINT).is_file() or (weights and weights.suffix == ".pth")):
        return load_openflam_directory(directory, weights or directory / OPENFLAM_CHECKPOINT)
    return load_flam_directory(directory, info, weights, other_weights=(OPENFLAM_CHECKPOINT,))


# ---------------------------------------------------------------------------------------------
# Hub entries: downloaded, verified and (OpenFLAM) converted once


def converted_dir(entry: RegistryEntry, revision: str) -> Path:
    return flam_cache_dir() / "converted" / entry.name / revision


def is_available_offline(entry: RegistryEntry, revision: str | None = None, cache_dir=None) -> bool:
    """Whether ``entry`` can load with no network call (built in, converted or cached)."""
    from huggingface_hub import try_to_load_from_cache

    if entry.builder is not None:
        return True
    revision = revision or entry.revision
    if entry.checkpoint_format == "openflam" and (converted_dir(entry, revision) / WEIGHTS_FILE).is_file():
        return True
    return all(isinstance(try_to_load_from_cache(entry.repo_id, f, cache_dir=cache_dir,
                                                 revision=revision), str) for f in entry.files)


def load_hub_entry(entry: RegistryEntry, revision: str | None = None, cache_dir=None) -> FlamModel:
    revision = revision or entry.revision
    verify = revision == entry.revision  # a user-chosen revision has no pinned hashes
    info = ModelInfo(name=entry.name, source=f"hf://{entry.repo_id}", revision=revision,
                     licence=entry.licence)
    if entry.checkpoint_format == "flam":
        paths = download_files(entry.name, entry.repo_id, entry.files, revision, cache_dir, verify)
        if CONFIG_FILE not in paths:
            raise ModelLoadError(f"registry entry {entry.name!r} lists no {CONFIG_FILE}")
        return load_model_directory(paths[CONFIG_FILE].parent, info)
    target = converted_dir(entry, revision)
    if (target / WEIGHTS_FILE).is_file():
        try:
            return load_model_directory(target, info)
        except ModelLoadError as exc:  # a damaged conversion is flam's own file: make it again
            logger.warning("the converted copy of %s in %s is damaged (%s): converting again",
                           entry.name, target, exc)
            shutil.rmtree(target, ignore_errors=True)
    checkpoint = download_files(entry.name, entry.repo_id, entry.files, revision, cache_dir,
                                verify)[next(iter(entry.files))]
    tokenizer = download_files(entry.name, entry.tokenizer_repo,
                               dict.fromkeys(entry.tokenizer_files), entry.tokenizer_revision,
                               cache_dir)
    if entry.licence_notice:
        logger.warning(entry.licence_notice)
    provenance = {"repository": entry.repo_id, "revision": revision,
                  "sha256": entry.files[next(iter(entry.files))],
                  "tokenizer": f"{entry.tokenizer_repo}@{entry.tokenizer_revision}"}

    def convert(into: Path) -> None:
        convert_openflam(checkpoint, tokenizer["vocab.json"], tokenizer["merges.txt"], into,
                         config=entry.architecture(), provenance=provenance)

    logger.info("converting %s to safetensors in %s (once)", entry.name, target)
    try:
        convert(target)
    except OSError as exc:  # FLAM_CACHE read-only, full or not a folder: convert for this run only
        import tempfile

        logger.warning("cannot keep the converted %s in %s (%s): converting for this run only "
                       "(set FLAM_CACHE to a writable folder to convert once)", entry.name,
                       target, exc.strerror or exc)
        with tempfile.TemporaryDirectory(prefix="flam-convert-") as scratch:
            convert(Path(scratch))
            return load_model_directory(Path(scratch), info)
    return load_model_directory(target, info)


# ---------------------------------------------------------------------------------------------
# The one entry point


BUNDLED_MODEL = "flam-tiny"  # trained here, ships inside the package (models/flam-tiny/)


def bundled_model_dir(name: str) -> Path | None:
    """The folder of a model shipped with flam: in the installed package, or in a checkout."""
    from importlib import resources

    try:
        folder = Path(str(resources.files("flamcli._bundled") / name))
    except (ModuleNotFoundError, TypeError):
        folder = None
    if folder is None or not (folder / WEIGHTS_FILE).is_file():
        folder = Path(__file__).resolve().parents[2] / "models" / name  # running from source
    return folder if (folder / WEIGHTS_FILE).is_file() else None


def bundled_model_name() -> str | None:
    """The bundled model's name when its weights are installed, else None."""
    return BUNDLED_MODEL if bundled_model_dir(BUNDLED_MODEL) is not None else None


def load_bundled_model(name: str = BUNDLED_MODEL) -> FlamModel:
    folder = bundled_model_dir(name)
    if folder is None:
        raise ModelLoadError(f"the bundled model {name!r} is not installed with this copy of flam")
    model = load_model_directory(folder)
    model.info = ModelInfo(name=name, source="bundled with flam")
    return model


def choose_default_model(cache_dir=None) -> str:
    """``openflam-v1-base`` when cached or downloadable; else the bundled model, with a notice."""
    entry = REGISTRY[DEFAULT_MODEL]
    if is_available_offline(entry, cache_dir=cache_dir) or hub_reachable():
        return DEFAULT_MODEL
    bundled = bundled_model_name()
    if bundled is None:
        raise ModelLoadError(
            f"no model available: the default model {DEFAULT_MODEL!r} is not downloaded and the "
            "Hub cannot be reached, and no bundled model is installed; pass --model with a "
            "local model directory (or `--model debug` for a smoke test)"
        )
    logger.warning("the Hub cannot be reached and %s is not downloaded: using the bundled "
                   "model %s", DEFAULT_MODEL, bundled)
    return bundled


def load_model(name_or_path: str | os.PathLike | None = None, device: str | torch.device | None = None,
               revision: str | None = None, cache_dir: str | Path | None = None,
               precision: str = "fp32") -> FlamModel:
    """Load a FLAM model by registry name, model directory or weights file.

    ``name_or_path`` defaults to ``$FLAM_MODEL``, then to ``openflam-v1-base`` when it is cached
    or downloadable, then to the bundled model. ``debug`` is never chosen silently.
    ``precision="int8"`` runs the audio side's Linear layers in int8 on the CPU (:mod:`.int8`;
    ``device`` auto then means the CPU).
    """
    from .int8 import check_precision, quantize_int8

    check_precision(precision, device)  # PrecisionError (a ValueError) before any loading
    if device in (None, "auto") and precision == "int8":
        device = "cpu"
    try:
        target = resolve_device(device)
    except DeviceError as exc:
        raise ModelLoadError(str(exc)) from None
    name = os.fspath(name_or_path) if name_or_path is not None else os.environ.get("FLAM_MODEL")
    chosen_for_the_user = not name
    if chosen_for_the_user:
        name = choose_default_model(cache_dir)
    try:
        model = _resolve(name, revision, cache_dir)
    except ModelLoadError as exc:
        bundled = bundled_model_name()
        if not chosen_for_the_user or bundled is None or name == bundled:
            raise
        # The user asked for no model in particular: a damaged download of the default one
        # should not stop them while a working model ships with flam.
        logger.warning("%s could not be loaded (%s): using the bundled model %s", name, exc,
                       bundled)
        model = _resolve(bundled, None, cache_dir)
    model = model.to(target)
    if precision == "int8":
        quantize_int8(model)
    return model


def _resolve(name: str, revision: str | None, cache_dir) -> FlamModel:
    entry = REGISTRY.get(name)
    if entry is not None:
        if entry.builder is not None:
            return entry.builder()
        return load_hub_entry(entry, revision, cache_dir)
    path = Path(name).expanduser()
    if path.is_dir():
        return load_model_directory(path)
    if path.is_file():
        return load_model_directory(path.parent, weights=path)
    known = ", ".join(sorted(REGISTRY))
    raise ModelLoadError(
        f"unknown model {name!r}: not a registry name ({known}), directory or file"
    )
