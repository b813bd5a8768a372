"""Frame scores for many files: stream windows, batch them across files, stitch per file.

Decoding and resampling run in a background thread while the model runs, windows from
consecutive files share batches, and each file's overlapping windows are stitched by
overlap-add of frame scores with triangular weights (frames are aligned between windows
because the hop is a whole number of frames).
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from .audio import AudioError, AudioInput, Window, WindowStream
from .embedding_cache import CachedRecording, EmbeddingCache
from .settings import DEFAULT_OVERLAP
from .spectrogram import Spectrogram
from .models.flam import FlamModel, TextEmbedding


@dataclass(frozen=True)
class WindowPlan:
    sample_rate: int
    window_samples: int
    frames_per_window: int
    hop_frames: int

    @property
    def frame_samples(self) -> int:
        return self.window_samples // self.frames_per_window

    @property
    def hop_samples(self) -> int:
        return self.hop_frames * self.frame_samples

    @property
    def frame_seconds(self) -> float:
        return self.frame_samples / self.sample_rate

    @property
    def cache_key(self) -> str:
        """Which windows a file is cut into: part of an embedding-cache entry's name."""
        return f"{self.sample_rate}-{self.window_samples}-{self.hop_samples}"

    @classmethod
    def for_model(cls, model: FlamModel, overlap_seconds: float = DEFAULT_OVERLAP) -> "WindowPlan":
        frames = model.frames_per_window
        if not (overlap_seconds >= 0 and math.isfinite(overlap_seconds)):
            raise ValueError("overlap must be a number of seconds, at least 0")
        overlap_frames = int(round(overlap_seconds / model.frame_seconds))
        if not 0 <= overlap_frames < frames:
            # Windows overlap by whole frames: say what the value rounded to, and the largest
            # that is accepted, so that 9.99 s against a 10 s window is not a riddle.
            largest = (frames - 1) * model.frame_seconds
            raise ValueError(
                f"rounds to {overlap_frames} frames of {model.frame_seconds:g} s "
                f"({overlap_frames * model.frame_seconds:g} s); overlaps are whole frames and "
                f"shorter than one window ({frames} frames, {frames * model.frame_seconds:g} s): "
                f"at most {largest:g} s"
            )
        return cls(model.sample_rate, model.window_samples, frames, frames - overlap_frames)


def triangular_weights(frames: int) -> np.ndarray:
    """1, 2, …, peak, …, 2, 1: window edges count least where a neighbour overlaps them."""
    j = np.arange(frames)
    return np.minimum(j + 1, frames - j).astype(np.float32)


@dataclass
class FileScores:
    """Stitched frame probabilities of one file: ``scores`` [frames, queries]."""

    input: AudioInput
    duration: float
    sample_rate: int  # of the file, before resampling
    frame_seconds: float
    scores: np.ndarray
    silent: bool
    spectrogram: Spectrogram | None = None


@dataclass
class _FileState:
    input: AudioInput
    stream: WindowStream
    plan: WindowPlan
    n_queries: int
    spectrogram: Spectrogram | None
    sums: np.ndarray = field(init=False)
    weights: np.ndarray = field(init=False)
    pending: int = 0  # windows read but not scored yet
    finished_reading: bool = False
    error: str | None = None
    # With an embedding cache: (index, start, valid, frames) of every window, to store.
    collected: list | None = None

    def __post_init__(self):
        # Sized from the header; grown if the decoder yields more than announced.
        frames = math.ceil(self.stream.info.duration / self.plan.frame_seconds) + self.plan.frames_per_window
        self.sums = np.zeros((frames, self.n_queries), dtype=np.float64)
        self.weights = np.zeros(frames, dtype=np.float64)

    def add(self, window: Window, probs: np.ndarray, weights: np.ndarray) -> None:
        first = window.index * self.plan.hop_frames
        last = first + self.plan.frames_per_window
        if last > len(self.weights):
            grow = last - len(self.weights) + 64
            self.sums = np.pad(self.sums, ((0, grow), (0, 0)))
            self.weights = np.pad(self.weights, (0, grow))
        # float64 so that a frame covered by one window comes back bit-exact
        self.sums[first:last] += probs.T.astype(np.float64) * weights[:, None]
        self.weights[first:last] += weights

    def result(self) -> FileScores:
        total = self.stream.total_samples
        frames = math.ceil(total / self.plan.frame_samples)
        scores = (self.sums[:frames] / np.maximum(self.weights[:frames], 1e-12)[:, None])
        return FileScores(
            input=self.input, duration=total / self.plan.sample_rate,
            sample_rate=self.stream.info.sample_rate, frame_seconds=self.plan.frame_seconds,
            scores=scores.astype(np.float32), silent=self.stream.peak == 0.0,
            spectrogram=self.spectrogram,
        )


_DONE = object()
CACHED_BATCH = 512  # windows per scoring call when their frame embeddings come from a cache


def _prefetch(iterator: Iterator, depth: int) -> Iterator:
    """Run ``iterator`` in a daemon thread, ``depth`` items ahead of the consumer."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def worker():
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(_DONE)
        except BaseException as exc:  # hand any crash to the consumer
            items.put(exc)

    thread = threading.Thread(target=worker, daemon=True, name="flam-decode")
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _window_items(inputs: list[AudioInput], plan: WindowPlan, n_queries: int,
                  with_spectrogram: bool, cache: EmbeddingCache | None = None):
    """("window", state, (Window, frames or None)) for every window, then ("end", state).

    A file found in ``cache`` is not decoded: its windows carry their stored frame embeddings.
    """
    for item in inputs:
        recording = None
        if cache is not None:
            try:
                recording = cache.load(item.path)
            except OSError:
                recording = None  # missing or unreadable: reported by the normal path below
        if recording is not None:
            state = _FileState(item, recording, plan, n_queries, None)
            yield "start", state, None
            for index, frames in enumerate(recording.frames):
                window = Window(index, None, int(recording.valid[index]),
                                int(recording.starts[index]))
                yield "window", state, (window, frames)
            yield "end", state, None
            continue
        try:
            stream = WindowStream(item.path, plan.sample_rate, plan.window_samples,
                                  plan.hop_samples)
        except AudioError as exc:
            yield "failed", item, str(exc)
            continue
        spectrogram = Spectrogram(plan.sample_rate, stream.info.duration) if with_spectrogram else None
        state = _FileState(item, stream, plan, n_queries, spectrogram)
        if cache is not None:
            state.collected = []
        yield "start", state, None
        try:
            for window in stream:
                if spectrogram is not None:
                    last = window.valid < plan.window_samples
                    own = window.valid if last else plan.hop_samples
                    spectrogram.add(window.samples[: window.valid], window.start, own)
                yield "window", state, (window, None)
        except AudioError as exc:
            state.error = str(exc)
        if state.error is None and stream.total_samples == 0:
            state.error = "contains no audio samples"
        yield "end", state, None


def inference_context(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def score_files(
    model: FlamModel,
    inputs: list[AudioInput],
    text: TextEmbedding,
    plan: WindowPlan,
    batch_size: int = 8,
    unbiased: bool = True,
    with_spectrogram: bool = False,
    on_window: Callable[[AudioInput, int], None] | None = None,
    cache: EmbeddingCache | None = None,
) -> Iterator[tuple[AudioInput, FileScores | None, str | None]]:
    """Yield ``(input, scores, None)`` or ``(input, None, error)`` per file, in input order.

    With ``cache``, files seen before (same content, model and windowing) skip decoding and
    the audio tower; new files have their frame embeddings stored for next time.
    """
    weights = triangular_weights(plan.frames_per_window)
    text = text.to(model.device)
    order: list = []  # file states and failed inputs in input order
    batch: list[tuple[_FileState, Window, np.ndarray | None]] = []

    def run_batch():
        if not batch:
            return
        to_embed = [i for i, (_, _, stored) in enumerate(batch) if stored is None]
        with torch.inference_mode(), inference_context(model.device):
            computed = None
            if to_embed:
                waves = torch.from_numpy(np.stack([batch[i][1].samples for i in to_embed]))
                computed = model.embed_audio_frames(waves.to(model.device)).float()
            if len(to_embed) == len(batch):
                frames = computed
            else:
                parts, next_computed = [], 0
                for _, _, stored in batch:
                    if stored is None:
                        parts.append(computed[next_computed])
                        next_computed += 1
                    else:
                        parts.append(torch.from_numpy(stored).to(model.device))
                frames = torch.stack(parts)
            probs = model.frame_probabilities(frames, text, unbiased=unbiased).cpu().numpy()
            frames_out = frames.cpu().numpy() if cache is not None else None
        for position, ((state, window, stored), p) in enumerate(zip(batch, probs)):
            state.pending -= 1
            if state.error is None:
                state.add(window, p, weights)
                if state.collected is not None and stored is None:
                    state.collected.append((window.index, window.start, window.valid,
                                            frames_out[position]))
            if on_window is not None:
                on_window(state.input, window.index)
        batch.clear()

    def store(state: _FileState) -> None:
        if cache is None or state.collected is None or not state.collected:
            return
        state.collected.sort(key=lambda entry: entry[0])
        cache.store(state.input.path, CachedRecording(
            frames=np.stack([entry[3] for entry in state.collected]),
            starts=np.array([entry[1] for entry in state.collected], dtype=np.int64),
            valid=np.array([entry[2] for entry in state.collected], dtype=np.int64),
            total_samples=state.stream.total_samples, peak=state.stream.peak,
            info=state.stream.info))

    def drain_finished():
        while order:
            head = order[0]
            if isinstance(head, tuple):  # failed before streaming
                order.pop(0)
                yield head[0], None, head[1]
                continue
            if not head.finished_reading or head.pending:
                return
            order.pop(0)
            if head.error is not None:
                yield head.input, None, head.error
            else:
                store(head)
                yield head.input, head.result(), None

    items = _prefetch(_window_items(inputs, plan, len(text.texts), with_spectrogram, cache),
                      depth=max(2, 2 * batch_size))
    for kind, state, payload in items:
        if kind == "failed":
            order.append((state, payload))
        elif kind == "start":
            order.append(state)
        elif kind == "window":
            state.pending += 1
            batch.append((state, *payload))
            waiting_for_audio = sum(1 for entry in batch if entry[2] is None)
            # Cached windows only need a dot product: score them in much larger batches.
            if waiting_for_audio >= batch_size or len(batch) >= CACHED_BATCH:
                run_batch()
        else:  # "end"
            state.finished_reading = True
            if state.error is not None:  # drop its queued windows
                kept = [entry for entry in batch if entry[0] is not state]
                state.pending -= len(batch) - len(kept)
                batch[:] = kept
        yield from drain_finished()
    run_batch()
    yield from drain_finished()
