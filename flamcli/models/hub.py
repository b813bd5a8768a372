"""The Hugging Face Hub as flam uses it: a quick reachability probe, pinned downloads, and
sha256 checks done once per file and remembered in a stamp."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from ..files import atomic_path, flam_cache_dir, sha256_of
from .storage import ModelLoadError


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
