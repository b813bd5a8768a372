"""Audio input: find files, decode with soundfile, downmix, resample and stream fixed windows.

A file is never read whole: blocks are decoded, downmixed and resampled as a stream (aligned
to the resampling period so the result equals resampling the whole file), then cut into
overlapping model windows. The last window is zero-padded, never stretched.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3")
# soundfile format names per accepted kind (WAV variants included).
ACCEPTED_FORMATS = {"WAV", "WAVEX", "RF64", "W64", "FLAC", "OGG", "MP3"}


class AudioError(Exception):
    """One input cannot be used; the message names the problem (the caller adds the file)."""


@dataclass(frozen=True)
class AudioInput:
    """A resolved input file, with the name it is reported under and its output stem."""

    path: Path
    display: str  # as the user would recognise it (relative to the argument given)
    stem: str  # relative output name without extension, unique within a run


@dataclass
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int
    format: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def probe(path: Path) -> AudioInfo:
    """Check that ``path`` is a readable audio file of an accepted format."""
    import soundfile as sf

    if not path.exists():
        raise AudioError("no such file")
    if path.is_dir():
        raise AudioError("is a directory")
    if path.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError …
        raise AudioError(f"not a readable audio file ({_short(exc)})") from None
    if info.format not in ACCEPTED_FORMATS:
        raise AudioError(
            f"unsupported audio format {info.format} (flam reads WAV, FLAC, OGG/Vorbis and MP3)"
        )
    if info.frames <= 0:
        raise AudioError("contains no audio samples")
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError("invalid header (sample rate or channel count is zero)")
    return AudioInfo(info.samplerate, info.channels, info.frames, info.format)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return text.removeprefix("Error opening ").strip()


# ---------------------------------------------------------------------------------------------
# Resolving AUDIO arguments


def _stem_of(path: Path, root: Path | None) -> str:
    rel = path.relative_to(root) if root is not None else Path(path.name)
    return str(rel.with_suffix(""))


def expand_inputs(arguments: Iterable[str], stdin=None) -> tuple[list[AudioInput], list[str]]:
    """Files, directories (recursive), globs and ``-`` (paths on stdin) → inputs, problems.

    Problems are one line each, naming the argument (a missing path, an empty directory, a
    glob with no match); they do not stop the other arguments.
    """
    inputs: list[AudioInput] = []
    problems: list[str] = []
    seen: set[Path] = set()
    stems: set[str] = set()

    def add(path: Path, root: Path | None, display: str) -> None:
        key = path.resolve()
        if key in seen:
            return
        seen.add(key)
        stem = base = _stem_of(path, root)
        counter = 2
        while stem in stems:
            stem, counter = f"{base}-{counter}", counter + 1
        if stem != base:
            logger.info(f"{display}: its output files are named {stem}.* (another input is "
                        f"also named {base})")
        stems.add(stem)
        inputs.append(AudioInput(path, display, stem))

    def add_directory(directory: Path, display: str) -> None:
        found = sorted(
            p for p in directory.rglob("*")
            if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file() and not p.name.startswith(".")
        )
        if not found:
            problems.append(
                f"{display}: no audio files found (looked for {' '.join(AUDIO_EXTENSIONS)})"
            )
        for p in found:
            add(p, directory, str(Path(display) / p.relative_to(directory)))

    def add_argument(argument: str) -> None:
        path = Path(argument).expanduser()
        if path.is_dir():
            add_directory(path, argument)
        elif path.exists() or not glob.has_magic(argument):
            # Files, and missing paths: a missing file is reported when it is opened, so
            # that it is listed with the other per-file errors in input order.
            add(path, None, argument)
        else:
            matches = sorted(glob.glob(os.path.expanduser(argument), recursive=True))
            if not matches:
                problems.append(f"{argument}: no file matches this pattern")
            for match in matches:
                m = Path(match)
                if m.is_dir():
                    add_directory(m, match)
                else:
                    add(m, None, match)

    for argument in arguments:
        if argument == "-":
            stream = stdin if stdin is not None else sys.stdin
            if stream.isatty():
                logger.info("reading audio paths from standard input, one per line (Ctrl-D ends)")
            paths = 0
            for line in stream:
                line = line.rstrip("\r\n")
                if line.strip():
                    add_argument(line)
                    paths += 1
            if not paths:
                problems.append("-: no audio paths on standard input")
        else:
            add_argument(argument)
    return inputs, problems


# ---------------------------------------------------------------------------------------------
# Resampling whole clips

_RESAMPLERS: dict[tuple[int, int], object] = {}


def resample(audio: np.ndarray, orig: int, new: int) -> np.ndarray:
    """Resample a whole clip (float32 mono), building the sinc kernel once per rate pair."""
    import torch
    import torchaudio.transforms as T

    if orig == new or not len(audio):
        return audio
    resampler = _RESAMPLERS.get((orig, new))
    if resampler is None:
        resampler = _RESAMPLERS[(orig, new)] = T.Resample(orig, new)
    with torch.no_grad():
        return resampler(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))).numpy()


# ---------------------------------------------------------------------------------------------
# Streaming


class StreamingResampler:
    """Resample a stream block by block with the exact result of resampling it whole.

    Blocks are multiples of the rate-conversion period (``orig/g`` in, ``new/g`` out), and
    each is resampled with real neighbouring samples as context, so the windowed-sinc filter
    sees the same input it would see on the whole signal.
    """

    def __init__(self, orig: int, new: int, block_seconds: float = 2.0):
        g = math.gcd(orig, new)
        self.orig, self.new = orig, new
        self.period_in, self.period_out = orig // g, new // g
        periods = max(1, round(block_seconds * orig / self.period_in))
        self.block_in = periods * self.period_in
        # Context on each side: generous for the filter (width ~ 6 zero crossings), in periods.
        self.context_periods = max(1, math.ceil(256 / self.period_in))
        self.context_in = self.context_periods * self.period_in
        self.context_out = self.context_periods * self.period_out

    def resample(self, x: np.ndarray) -> np.ndarray:
        import torch
        import torchaudio.functional as AF

        if self.orig == self.new:
            return x
        out = AF.resample(torch.from_numpy(np.ascontiguousarray(x)), self.orig, self.new)
        return out.numpy()

    def stream(self, blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """Input blocks of any size → resampled blocks (concatenation equals the whole)."""
        if self.orig == self.new:
            yield from blocks
            return
        pending = np.zeros(0, dtype=np.float32)  # input not yet emitted
        left = np.zeros(0, dtype=np.float32)  # context before ``pending``
        exhausted = False
        while True:
            need = self.block_in + self.context_in
            while not exhausted and len(pending) < need:
                try:
                    pending = np.concatenate([pending, next(blocks)])
                except StopIteration:
                    exhausted = True
            if not len(pending):
                return
            take = len(pending) if exhausted and len(pending) <= need else self.block_in
            segment = np.concatenate([left, pending[: take + self.context_in]])
            out = self.resample(segment)
            start = len(left) // self.period_in * self.period_out
            count = math.ceil(take * self.new / self.orig)
            yield out[start: start + count]
            left = pending[max(0, take - self.context_in): take]
            pending = pending[take:]
            if exhausted and not len(pending):
                return


def read_blocks(path: Path, block_frames: int = 1 << 16) -> Iterator[np.ndarray]:
    """Decoded mono float32 blocks; NaN/inf and decoding failures raise AudioError."""
    import soundfile as sf

    try:
        handle = sf.SoundFile(str(path))
    except Exception as exc:
        raise AudioError(f"not a readable audio file ({_short(exc)})") from None
    position = 0
    with handle:
        while True:
            try:
                block = handle.read(block_frames, dtype="float32", always_2d=True)
            except Exception as exc:
                raise AudioError(
                    f"decoding failed at {position / handle.samplerate:.2f} s "
                    f"(truncated or corrupt file: {_short(exc)})"
                ) from None
            if not len(block):
                return
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
            if not np.isfinite(mono).all():
                bad = int(np.flatnonzero(~np.isfinite(mono))[0]) + position
                raise AudioError(
                    f"contains NaN or infinite samples (first at {bad / handle.samplerate:.3f} s)"
                )
            position += len(mono)
            yield np.ascontiguousarray(mono)


@dataclass
class Window:
    index: int
    # float32 [window_samples] at the model rate, zero-padded at the end; None when the
    # window's frame embeddings come from an embedding cache instead of the audio
    samples: np.ndarray | None
    valid: int  # samples of real audio in this window
    start: int  # first sample, at the model rate


class WindowStream:
    """Overlapping fixed-size windows of one file at the model rate.

    After iteration, ``total_samples`` (model rate), ``peak`` and ``info`` describe the file.
    """

    def __init__(self, path: Path, sample_rate: int, window: int, hop: int):
        self.path, self.sample_rate, self.window, self.hop = path, sample_rate, window, hop
        self.info = probe(path)
        self.total_samples = 0
        self.peak = 0.0

    def __iter__(self) -> Iterator[Window]:
        resampler = StreamingResampler(self.info.sample_rate, self.sample_rate)
        stream = resampler.stream(read_blocks(self.path))
        buffer = np.zeros(0, dtype=np.float32)
        start = index = 0
        exhausted = False
        while True:
            while not exhausted and len(buffer) < self.window:
                try:
                    block = next(stream)
                except StopIteration:
                    exhausted = True
                    break
                self.total_samples += len(block)
                if len(block):
                    self.peak = max(self.peak, float(np.abs(block).max()))
                buffer = np.concatenate([buffer, block])
            valid = min(len(buffer), self.window)
            # A window is needed if it is the first, or it holds samples the previous lacked.
            if index > 0 and len(buffer) <= self.window - self.hop:
                return
            samples = np.zeros(self.window, dtype=np.float32)
            samples[:valid] = buffer[:valid]
            yield Window(index, samples, valid, start)
            if exhausted and len(buffer) <= self.window:
                return
            buffer = buffer[self.hop:]
            start += self.hop
            index += 1
