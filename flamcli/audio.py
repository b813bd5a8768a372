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
import re
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
    # The stem it would have had, when another input took it (its outputs get "<stem>-2.*").
    shares_name_with: str | None = None


@dataclass
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int  # from the header; an upper-bound estimate when not length_known
    format: str
    length_known: bool = True

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
    if not path.is_file():  # a FIFO, /dev/zero, /dev/urandom: endless or one-shot streams
        raise AudioError("not a regular file (a pipe or device); flam reads audio files")
    if path.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        info = sf.info(os.fsencode(path))
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError …
        reason = _short(exc)
        if "does not exist" in reason:  # libsndfile's words for data no decoder accepts
            reason = "unrecognised format or corrupt data"
        raise AudioError(f"not a readable audio file ({reason})") from None
    if info.format not in ACCEPTED_FORMATS:
        raise AudioError(
            f"unsupported audio format {info.format} (flam reads WAV, FLAC, OGG/Vorbis and MP3)"
        )
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError("invalid header (sample rate or channel count is zero)")
    frames = info.frames
    length_known = frames < _UNKNOWN_LENGTH
    if not length_known:
        # A stream that never recorded its length. Counting it would decode the whole file
        # once more before the real pass; its size gives an upper bound instead (16-bit PCM:
        # compressed audio is smaller), good enough for progress and buffer sizes, and the
        # real pass counts what is there (and finds a file with no samples).
        frames = max(1, path.stat().st_size // (2 * info.channels))
    if frames <= 0:
        raise AudioError("contains no audio samples")
    truncation = _truncated_by_header(info)
    if truncation:
        raise AudioError(truncation)
    return AudioInfo(info.samplerate, info.channels, frames, info.format, length_known)


# libsndfile reports SF_COUNT_MAX frames for a file whose header does not give its length (a
# FLAC written to a pipe by a streaming encoder): taken as a length, it would size buffers of
# exabytes. Anything this large is that marker.
_UNKNOWN_LENGTH = 1 << 62


# libsndfile's parse log (``extra_info``) is the only place soundfile shows what a WAV header
# declares: it gives the file the frames actually present and notes ``data : DECLARED (should
# be PRESENT)`` when the data chunk runs past the end of the file.
_WAV_DATA_SIZES = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# Writers that stream a WAV of unknown length put a placeholder size near 2 or 4 GiB there;
# such a file is unfinished by design, not cut short.
_WAV_PLACEHOLDER_SIZE = 0x7FFF0000
# RF64 keeps its sizes in a ds64 chunk; libsndfile's log compares it with what is there.
_RF64_FRAMES = re.compile(r"Calculated frame count (\d+) does not match value from 'ds64' chunk "
                          r"of (\d+)")
# Sony Wave64: ``riff : DECLARED (should be PRESENT)``, the data chunk's declared size (with its
# 24-byte GUID and size header) and the bytes per frame.
_W64_RIFF_SIZES = re.compile(r"^riff\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_W64_DATA = re.compile(r"^data\s*:\s*(\d+)", re.MULTILINE)
_W64_ALIGN = re.compile(r"Block Align\s*:\s*(\d+)")
_W64_CHUNK_HEADER = 24


def _truncated_by_header(info) -> str | None:
    """Why the header shows the file was cut short, or None: a WAV data chunk that promises
    more bytes than the file holds, or an Ogg stream whose last page is not its end."""
    if info.format in ("WAV", "WAVEX"):
        match = _WAV_DATA_SIZES.search(info.extra_info)
        if match:
            declared, present = int(match.group(1)), int(match.group(2))
            if present < declared < _WAV_PLACEHOLDER_SIZE:
                declared_frames = info.frames * declared // max(present, 1)
                if declared_frames > info.frames:
                    return _truncation_message(info.frames, declared_frames, info.samplerate)
    if info.format == "RF64":  # libsndfile notes a ds64 length the data does not reach
        match = _RF64_FRAMES.search(info.extra_info)
        if match and int(match.group(1)) < int(match.group(2)) < _UNKNOWN_LENGTH:
            return _truncation_message(int(match.group(1)), int(match.group(2)), info.samplerate)
    if info.format == "W64":  # the riff size promises more than the file holds
        riff = _W64_RIFF_SIZES.search(info.extra_info)
        data, align = _W64_DATA.search(info.extra_info), _W64_ALIGN.search(info.extra_info)
        if riff and data and align and int(riff.group(2)) < int(riff.group(1)):
            declared = (int(data.group(1)) - _W64_CHUNK_HEADER) // max(1, int(align.group(1)))
            if declared > info.frames:
                return _truncation_message(info.frames, declared, info.samplerate)
    if info.format == "OGG" and "lacks an end-of-stream bit" in info.extra_info:
        return ("truncated: the Ogg stream stops before its end-of-stream page "
                "(a cut or unfinished file)")
    return None


def _truncation_message(present_frames: int, declared_frames: int, rate: int) -> str:
    present, declared = f"{present_frames / rate:.2f} s", f"{declared_frames / rate:.2f} s"
    if present == declared:  # a few samples short: seconds would read "1.00 s of the 1.00 s"
        present, declared = f"{present_frames} samples", f"{declared_frames}"
    return f"truncated: holds {present} of the {declared} its header declares"


def _short(exc: Exception) -> str:
    # The caller names the file: soundfile's own "Error opening 'NAME': " would repeat it.
    text = (getattr(exc, "error_string", None) or str(exc)).strip()
    return text.splitlines()[0].rstrip(".") if text else exc.__class__.__name__


# ---------------------------------------------------------------------------------------------
# Resolving AUDIO arguments


def _stem_of(path: Path, root: Path | None) -> str:
    rel = path.relative_to(root) if root is not None else Path(path.name)
    return str(rel.with_suffix(""))


def readable_name(name: str) -> str:
    """A file name as text that can always be printed: bytes that are not UTF-8 (kept by
    Python as lone surrogates) are shown as ``\\xff`` escapes, the way ``ls -b`` shows them."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _stdin_lines(stream) -> Iterator[str]:
    """Lines of ``stream`` without their line ending. Bytes are decoded like file names
    (os.fsdecode), so a path that is not UTF-8 still names its file and binary data cannot
    stop the reading with a decoding error."""
    binary = getattr(stream, "buffer", None)
    for line in binary if binary is not None else stream:
        text = os.fsdecode(line) if isinstance(line, bytes) else line
        yield text.rstrip("\r\n")


# Audio piped into ``-`` instead of being named: how its data starts (MPEG sync bytes are not
# UTF-8, so they arrive as surrogates).
_AUDIO_SIGNATURES = ("RIFF", "RF64", "fLaC", "OggS", "ID3", "\udcff\udcfb", "\udcff\udcf3")
_BAD_STDIN_LINES_SHOWN = 3  # binary data splits into many "lines": name a few, count the rest
_AUDIO_ON_STDIN = ("standard input holds audio data, not file paths: `-` reads newline-separated "
                   "paths; give the audio file itself as AUDIO")


def _not_a_path(line: str) -> str | None:
    """Why a line read from stdin cannot be a file path, or None."""
    binary = "\0" in line or any(ord(c) < 32 and c != "\t" for c in line)
    if not binary:
        return None
    if line.startswith(_AUDIO_SIGNATURES):
        return _AUDIO_ON_STDIN
    if "\0" in line:  # no file name can hold one: `find -print0` output, or binary data
        return ("not a path (contains a NUL byte): `-` reads newline-separated file paths, "
                "not NUL-separated ones or audio")
    if os.path.lexists(line):  # a real, if odd, name with control characters
        return None
    return "not a path (binary data): `-` reads newline-separated file paths, not audio"


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
        display = readable_name(display)
        try:
            key = path.resolve()
        except RuntimeError:  # Python 3.11 raises this for a symlink loop
            problems.append(f"{display}: a symbolic link loop, not a file")
            return
        if key in seen:
            return
        seen.add(key)
        stem = base = _stem_of(path, root)
        counter = 2
        while stem in stems:
            stem, counter = f"{base}-{counter}", counter + 1
        stems.add(stem)
        inputs.append(AudioInput(path, display, stem, base if stem != base else None))

    def add_directory(directory: Path, display: str) -> None:
        found = sorted(
            p for p in directory.rglob("*")
            if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file() and not p.name.startswith(".")
        )
        if not found:
            problems.append(f"{readable_name(display)}: no audio files found "
                            f"(looked for {' '.join(AUDIO_EXTENSIONS)})")
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
                problems.append(f"{readable_name(argument)}: no file matches this pattern")
            for match in matches:
                m = Path(match)
                if m.is_dir():
                    add_directory(m, match)
                else:
                    add(m, None, match)

    def add_checked(argument: str, where: str) -> None:
        try:
            add_argument(argument)
        except OSError as exc:  # e.g. a name longer than the file system allows
            problems.append(f"{where}: {exc.strerror or exc}")

    for argument in arguments:
        if argument == "-":
            stream = stdin if stdin is not None else sys.stdin
            if stream.isatty():
                logger.info("reading audio paths from standard input, one per line (Ctrl-D ends)")
            entries = bad_lines = 0
            for number, line in enumerate(_stdin_lines(stream), 1):
                if not line.strip():
                    continue
                entries += 1
                reason = _not_a_path(line)
                if reason == _AUDIO_ON_STDIN:
                    problems.append(f"-: {reason}")
                    break  # the rest is more of the same audio, not paths
                if not reason:
                    add_checked(line, readable_name(line))
                    continue
                bad_lines += 1
                if bad_lines <= _BAD_STDIN_LINES_SHOWN:
                    problems.append(f"-: line {number}: {reason}")
            if bad_lines > _BAD_STDIN_LINES_SHOWN:
                problems.append(f"-: {bad_lines - _BAD_STDIN_LINES_SHOWN} more lines that are "
                                "not paths were skipped")
            if not entries:
                problems.append("-: no audio paths on standard input")
        else:
            add_checked(argument, readable_name(argument))
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
        handle = sf.SoundFile(os.fsencode(path))
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
                if (handle.frames < _UNKNOWN_LENGTH
                        and handle.frames - position > _decoding_tolerance(handle)):
                    raise AudioError(_truncation_message(position, handle.frames,
                                                         handle.samplerate))
                return
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
            if not np.isfinite(mono).all():
                bad = int(np.flatnonzero(~np.isfinite(mono))[0]) + position
                raise AudioError(
                    f"contains NaN or infinite samples (first at {bad / handle.samplerate:.3f} s)"
                )
            position += len(mono)
            yield np.ascontiguousarray(mono)


def _decoding_tolerance(handle) -> int:
    """Frames a complete file may decode short of its header's count: none, except for MP3,
    whose length is estimated from the bitrate when it has no Xing/Info header (with one,
    as LAME writes, it is exact)."""
    if handle.format != "MP3":
        return 0
    return max(handle.frames // 100, handle.samplerate // 2)


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
