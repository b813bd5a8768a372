"""Frame embeddings of whole recordings kept on disk, so new queries skip the audio tower.

The audio tower is nearly all the cost of scoring a recording; a query only adds a text
embedding and a dot product per frame. With ``--cache DIR`` the per-window frame embeddings of
a file are saved once, keyed by the file's content (sha256), the model and the windowing, and
later runs with other queries read them back instead of decoding and embedding the audio.
Scores computed from the cache are identical to scores computed from the audio.

Hashing a long file costs seconds, so the content hash is stamped per (path, size, mtime) and
recomputed only when the file changes.
"""

from __future__ import annotations

import hashlib
import logging
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .audio import AudioInfo
from .files import atomic_path, sha256_of, write_text_atomic

# Bump when the stored layout, the windowing or what may be stored changes meaning. 2: files
# the decoder finds truncated are refused, so entries written by 1 may hold such files.
logger = logging.getLogger("flamcli")

CACHE_FORMAT = 2

# What np.load and reading an entry's arrays raise for an entry cut short by a crash, emptied
# by a full disk or otherwise damaged: an empty file is EOFError, a cut or garbled zip
# BadZipFile, a missing array KeyError, a non-npz file ValueError.
_DAMAGED_ENTRY = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile)


def model_fingerprint(model) -> str:
    """Identifies a model's weights cheaply: its identity plus samples of every tensor."""
    digest = hashlib.sha256(json.dumps(model.info.as_dict(), sort_keys=True).encode())
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            flat = tensor.detach().reshape(-1)
            digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
            sample = torch.cat([flat[:64], flat[-64:]]).float().cpu().numpy()
            digest.update(sample.tobytes())
    return digest.hexdigest()


@dataclass
class CachedRecording:
    """What the detector needs of a file when its audio is not read again."""

    frames: np.ndarray  # float32 [windows, frames per window, D]
    starts: np.ndarray  # int64 [windows] first sample of each window (model rate)
    valid: np.ndarray  # int64 [windows] real samples in each window
    total_samples: int
    peak: float
    info: AudioInfo


class EmbeddingCache:
    def __init__(self, directory: str | os.PathLike, model, window_key: str):
        self.directory = Path(directory)
        self.model_key = model_fingerprint(model)[:20]
        self.window_key = window_key
        self._warned = False

    # -- content hashes, stamped ---------------------------------------------------------
    def content_hash(self, path: Path) -> str:
        real = path.resolve()
        status = real.stat()
        stamp = (self.directory / "stamps"
                 / (hashlib.sha256(str(real).encode()).hexdigest()[:32] + ".json"))
        identity = {"path": str(real), "size": status.st_size, "mtime_ns": status.st_mtime_ns}
        try:
            saved = json.loads(stamp.read_text(encoding="utf-8"))
            if (isinstance(saved, dict) and isinstance(saved.get("sha256"), str)
                    and {k: saved.get(k) for k in identity} == identity):
                return saved["sha256"]
        except (OSError, ValueError):
            pass  # unreadable or damaged stamp: hash again (and overwrite it)
        digest = sha256_of(real)
        try:
            write_text_atomic(stamp, json.dumps({**identity, "sha256": digest}))
        except OSError:
            pass  # a read-only cache still works, it just hashes again next time
        return digest

    def _entry(self, path: Path) -> Path:
        return (self.directory / f"v{CACHE_FORMAT}" / self.model_key
                / f"{self.content_hash(path)}-{self.window_key}.npz")

    # -- entries ---------------------------------------------------------------------------
    def load(self, path: Path) -> CachedRecording | None:
        try:
            entry = self._entry(path)
            if not entry.exists():
                return None
            with np.load(entry) as data:
                info = AudioInfo(int(data["sample_rate"]), int(data["channels"]),
                                 int(data["source_frames"]), str(data["format"]))
                recording = CachedRecording(
                    frames=data["frames"], starts=data["starts"], valid=data["valid"],
                    total_samples=int(data["total_samples"]), peak=float(data["peak"]),
                    info=info)
        except _DAMAGED_ENTRY:
            return None  # unreadable or damaged: compute again (and overwrite)
        if not (np.isfinite(recording.frames).all() and np.isfinite(recording.peak)):
            # A damaged or foreign entry would turn every score into NaN: computed again
            # (and overwritten).
            logger.warning("%s: cached embeddings hold NaN or infinite values; computing them "
                           "again", path)
            return None
        return recording

    def store(self, path: Path, recording: CachedRecording) -> None:
        try:
            entry = self._entry(path)
            with atomic_path(entry) as tmp:
                with open(tmp, "wb") as handle:
                    np.savez(handle, frames=recording.frames.astype(np.float32),
                             starts=recording.starts, valid=recording.valid,
                             total_samples=recording.total_samples, peak=recording.peak,
                             sample_rate=recording.info.sample_rate,
                             channels=recording.info.channels,
                             source_frames=recording.info.frames,
                             format=recording.info.format)
        except OSError as exc:
            # Caching is an optimisation: a full disk or a read-only folder must not fail
            # detection, but the user asked for a cache and should know it is not kept.
            if not self._warned:
                self._warned = True
                logger.warning("--cache %s: cannot store embeddings (%s); detection goes on "
                               "without caching", self.directory, exc.strerror or exc)
