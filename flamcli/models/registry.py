"""Finding and loading models: registry names, Hub downloads, local directories and files.

``--model`` accepts a registry name (``debug`` or a Hub entry pinned to a 40-hex revision with
per-file sha256), a flam model directory (``config.json`` + ``model.safetensors`` + tokenizer
files), or a single weights file (safetensors, or a legacy torch checkpoint read with
``weights_only=True``; nothing is ever unpickled otherwise).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..files import atomic_path, flam_cache_dir, sha256_of
from .config import FlamConfig, debug_config, openflam_v1_base_config
from .convert import (OPENFLAM_CHECKPOINT, OPENFLAM_LICENCE, OPENFLAM_NOTICE, convert_openflam,
                      looks_like_openflam)
from .flam import FlamModel, ModelInfo
from .text import TextTokenizer, byte_tokenizer

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


def load_model_directory(directory: Path, info: ModelInfo | None = None,
                         weights: Path | None = None) -> FlamModel:
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file():
        if (directory / OPENFLAM_CHECKPOINT).is_file() or (weights and weights.suffix == ".pth"):
            return load_openflam_directory(directory, weights or directory / OPENFLAM_CHECKPOINT)
        raise ModelLoadError(f"{directory} is not a flam model directory (no {CONFIG_FILE})")
    config = read_model_config(directory)
    try:
        tokenizer = TextTokenizer.from_directory(directory, config.text)
    except FileNotFoundError as exc:
        raise ModelLoadError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - `tokenizers` raises a bare Exception for a damaged file
        raise ModelLoadError(f"{directory}: unreadable tokenizer files ({_first_line(exc)})") from None
    if weights is None:
        candidates = [directory / WEIGHTS_FILE, directory / OPENFLAM_CHECKPOINT]
        weights = next((p for p in candidates if p.is_file()), candidates[0])
    if not weights.is_file():
        raise ModelLoadError(f"{directory} has no weights file {weights.name}")
    state = read_state_dict(weights)
    text_tower = shared_text_tower(directory)
    if text_tower is not None:
        state.update(read_state_dict(text_tower))
    return build_from_state_dict(config, tokenizer, state,
                                 info or ModelInfo(name=config.name, source=str(directory)))


def load_openflam_directory(directory: Path, checkpoint: Path) -> FlamModel:
    """The published layout: ``open_flam_oct17.pth`` with ``vocab.json`` + ``merges.txt``."""
    from .text import roberta_tokenizer

    config = openflam_v1_base_config()
    missing = [n for n in ("vocab.json", "merges.txt") if not (directory / n).is_file()]
    if missing:
        raise ModelLoadError(
            f"{directory}: an OpenFLAM checkpoint needs the RoBERTa tokenizer files "
            f"{' and '.join(missing)} beside it (from the Hub repo FacebookAI/roberta-base)"
        )
    try:
        tokenizer = TextTokenizer(roberta_tokenizer(directory / "vocab.json",
                                                    directory / "merges.txt"), config.text)
    except Exception as exc:  # noqa: BLE001 - `tokenizers` raises a bare Exception for a damaged file
        raise ModelLoadError(f"{directory}: unreadable vocab.json or merges.txt "
                             f"({_first_line(exc)})") from None
    state = read_state_dict(checkpoint)
    if not looks_like_openflam(state):
        raise ModelLoadError(f"{checkpoint} is not an OpenFLAM checkpoint")
    info = ModelInfo(name=config.name, source=str(checkpoint), licence=OPENFLAM_LICENCE)
    return build_from_state_dict(config, tokenizer, state, info)


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


# ---------------------------------------------------------------------------------------------
# Hub downloads with sha256 verified once and stamped


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


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hub answers a TCP connection within ``timeout`` seconds (DNS included).

    Lets an offline machine fail or fall back in seconds instead of waiting through slow DNS
    failures and huggingface_hub's retries. The lookup runs in a daemon thread because
    ``getaddrinfo`` ignores socket timeouts.
    """
    import threading
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    answer: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
                answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=probe, daemon=True, name="flam-hub-probe")
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])


def _hub_error_message(model: str, repo_id: str, filename: str, revision: str | None,
                       exc: Exception | None) -> str:
    from huggingface_hub import errors

    what = f"model {model!r} ({repo_id}, file {filename})"
    if exc is None or isinstance(exc, (errors.OfflineModeIsEnabled, errors.LocalEntryNotFoundError)):
        return (f"{what} is not in the local Hugging Face cache and the Hub cannot be reached"
                " (offline or HF_HUB_OFFLINE=1): connect once to download it, or pass --model"
                " with a local model directory")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return f"{what}: the Hub repository does not exist or needs a token (set HF_TOKEN)"
    if isinstance(exc, (errors.EntryNotFoundError, errors.RevisionNotFoundError)):
        return f"{what}: the file or revision {revision} is not on the Hub"
    return f"{what} could not be downloaded: {exc.__class__.__name__}: {exc}"


def download_files(model: str, repo_id: str, files: dict[str, str | None], revision: str,
                   cache_dir=None, verify: bool = True) -> dict[str, Path]:
    """Fetch (or find in the HF cache) each file at ``revision``; check sha256 where known.

    A cached file at a 40-hex revision is returned without any network call. A file that
    fails its check is downloaded again once.
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    from .. import __version__

    def fetch(filename: str, force: bool) -> Path:
        if not force:
            cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
            if isinstance(cached, str):
                return Path(cached)
        if not hub_reachable():
            raise ModelLoadError(_hub_error_message(model, repo_id, filename, revision, None))
        try:
            return Path(hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=cache_dir, force_download=force,
                library_name="flam", library_version=__version__,
            ))
        except Exception as exc:  # huggingface_hub raises many types; all become one line
            raise ModelLoadError(_hub_error_message(model, repo_id, filename, revision, exc)) from None

    paths = {}
    for filename, expected in files.items():
        path = fetch(filename, force=False)
        if verify and expected and not verify_sha256(path, expected):
            try:
                path = fetch(filename, force=True)
            except ModelLoadError as exc:
                raise ModelLoadError(
                    f"model {model!r}: the cached {filename} ({path}) fails its sha256 "
                    f"check and a fresh download failed: {exc}"
                ) from None
            if not verify_sha256(path, expected):
                raise ModelLoadError(
                    f"model {model!r}: {filename} fails its sha256 check after a fresh "
                    f"download (expected {expected}); the Hub copy may have changed"
                )
        paths[filename] = path
    return paths


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


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    if device in (None, "auto"):
        device = "cpu" if precision == "int8" else default_device()
    target = torch.device(device)
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
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was requested but CUDA is not available")
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
