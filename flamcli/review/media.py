"""What the review page shows and plays, read from the original file by seeking: a
spectrogram picture of any time range at a bounded width, a short WAV clip at the file's own
rate, and detect's probability curves. A one-hour recording is never decoded whole."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

MAX_PICTURE_WIDTH = 4096  # columns; the page asks for its own width, rounded up
PICTURE_MELS = 64
MAX_CLIP_SECONDS = 120.0  # longer playback requests are refused (the page asks for events)
MAX_CURVE_POINTS = 20_000  # per query; longer files are max-pooled (peaks stay visible)
# Ranges up to this many samples are read whole (every column from contiguous frames); longer
# ones read a few frames at each column's place, so an hour costs as much as a minute.
CONTIGUOUS_SAMPLES = 4_000_000
FRAMES_PER_SAMPLED_COLUMN = 4


class MediaError(ValueError):
    """A range or file the page cannot have (the server answers 4xx with the message)."""


def _mono(block: np.ndarray) -> np.ndarray:
    return block.mean(axis=1, dtype=np.float32) if block.ndim == 2 else block.astype(np.float32)


def spectrogram_picture(path: Path, start: float, end: float, width: int) -> bytes:
    """A log-mel PNG of ``[start, end)`` seconds, ``width`` columns at most, low frequencies at
    the bottom. Uses flam's one mel picture (:class:`flamcli.spectrogram.Spectrogram`)."""
    import soundfile as sf

    from ..spectrogram import Spectrogram

    width = int(min(max(width, 16), MAX_PICTURE_WIDTH))
    with sf.SoundFile(str(path)) as handle:
        rate = handle.samplerate
        total = handle.frames
        first = int(max(0.0, start) * rate)
        last = min(total, int(end * rate)) if end > 0 else total
        if last - first < 2:
            raise MediaError(f"empty range {start:g}–{end:g} s")
        span = (last - first) / rate
        picture = Spectrogram(rate, span, max_columns=width, n_mels=PICTURE_MELS)
        n_fft = picture.transform.n_fft
        columns = int(np.ceil(span / picture.column_seconds))
        if last - first <= CONTIGUOUS_SAMPLES:
            handle.seek(first)
            samples = _mono(handle.read(last - first, dtype="float32", always_2d=True))
            if len(samples) >= n_fft:
                picture.add(samples, 0, len(samples))
        else:
            # A few consecutive frames at the middle of each column: a faithful overview of a
            # long range at a fraction of the decoding.
            length = n_fft + (FRAMES_PER_SAMPLED_COLUMN - 1) * picture.hop
            chunks = np.zeros((columns, length), dtype=np.float32)
            for column in range(columns):
                middle = first + int((column + 0.5) * picture.column_seconds * rate)
                at = min(max(first, middle - length // 2), max(first, last - length))
                handle.seek(at)
                samples = _mono(handle.read(length, dtype="float32", always_2d=True))
                chunks[column, :len(samples)] = samples
            return _png(picture.sampled_image(chunks))
    image = picture.image()  # [mels, columns] dB
    if image.shape[1] < columns:
        floor = image.min() if image.size else -100.0
        image = np.pad(image, ((0, 0), (0, columns - image.shape[1])), constant_values=floor)
    return _png(image[:, :columns])


def _png(decibels: np.ndarray) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import colormaps
    from matplotlib.image import imsave

    top = float(decibels.max()) if decibels.size else 0.0
    scaled = np.clip((decibels - (top - 80.0)) / 80.0, 0.0, 1.0)[::-1]  # 80 dB range, low at bottom
    out = io.BytesIO()
    imsave(out, colormaps["magma"](scaled)[..., :3], format="png")
    return out.getvalue()


def audio_clip(path: Path, start: float, end: float) -> bytes:
    """``[start, end)`` seconds of the file as a 16-bit WAV at the file's own rate and channels."""
    import soundfile as sf

    if not end - start > 0:
        raise MediaError(f"empty range {start:g}–{end:g} s")
    if end - start > MAX_CLIP_SECONDS:
        raise MediaError(f"clips are at most {MAX_CLIP_SECONDS:g} s (asked for {end - start:g} s)")
    with sf.SoundFile(str(path)) as handle:
        rate = handle.samplerate
        first = min(handle.frames, int(max(0.0, start) * rate))
        last = min(handle.frames, int(end * rate))
        handle.seek(first)
        samples = handle.read(max(0, last - first), dtype="float32", always_2d=True)
    out = io.BytesIO()
    sf.write(out, np.clip(samples, -1.0, 1.0), rate, subtype="PCM_16", format="WAV")
    return out.getvalue()


def probability_curves(scores_path: Path, queries: list[str]) -> dict:
    """detect's ``<stem>.scores.tsv`` → ``{"times": frame starts, "step", "curves": {query:
    values}}``, max-pooled to at most :data:`MAX_CURVE_POINTS` points per query."""
    with open(scores_path, encoding="utf-8", newline="") as handle:
        header = next(csv.reader([handle.readline()], delimiter="\t"))
        table = np.loadtxt(handle, delimiter="\t", dtype=np.float64, ndmin=2)
    if header[:2] != ["onset", "offset"]:
        raise MediaError(f"{scores_path}: not a flam score table")
    columns = header[2:]
    if table.size == 0:
        return {"times": [], "step": 0.0, "curves": {q: [] for q in columns}}
    pool = max(1, int(np.ceil(len(table) / MAX_CURVE_POINTS)))
    rows = len(table) // pool * pool
    times = table[:rows:pool, 0]
    curves = {}
    for index, query in enumerate(columns):
        values = table[:rows, 2 + index].reshape(-1, pool).max(axis=1)
        if rows < len(table):
            values = np.append(values, table[rows:, 2 + index].max())
        curves[query] = np.round(values, 4).tolist()
    if rows < len(table):
        times = np.append(times, table[rows, 0])
    step = float(table[0, 1] - table[0, 0]) * pool
    return {"times": np.round(times, 4).tolist(), "step": step, "curves": curves}
