"""The detection library: files + text queries → frame scores and events. No UI here."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from .audio import AudioError, AudioInput, expand_inputs, probe
from .events import Event, median_filter, scores_to_events
from .inference import WindowPlan, score_files
from .spectrogram import Spectrogram
from .models.flam import FlamModel, ModelInfo
from .settings import (DEFAULT_BATCH_SIZE, DEFAULT_MEDIAN_FILTER, DEFAULT_OVERLAP, DetectionSettings,
                       SettingsError)



@dataclass
class FileResult:
    """Detection output for one input: events and the (filtered) frame score table."""

    file: str  # as given by the user (relative to the argument)
    path: Path | None
    stem: str
    queries: list[str]
    events: list[Event] = field(default_factory=list)
    scores: np.ndarray | None = None  # [frames, queries], median-filtered as configured
    frame_seconds: float = 0.0
    duration: float = 0.0
    sample_rate: int = 0
    thresholds: list[float] = field(default_factory=list)
    model: ModelInfo | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    spectrogram: Spectrogram | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def timestamps(self) -> np.ndarray:
        """Frame boundaries [frames + 1]; the last frame ends at the end of the file."""
        edges = np.arange(len(self.scores) + 1, dtype=np.float64) * self.frame_seconds
        edges[-1] = min(edges[-1], self.duration)
        return edges

    def score_table(self):
        """The sed_scores_eval layout: columns ``onset, offset, <query>…``, one row per frame."""
        import pandas as pd

        edges = self.timestamps
        table = pd.DataFrame({"onset": edges[:-1], "offset": edges[1:]})
        for column, query in enumerate(self.queries):
            table[query] = self.scores[:, column]
        return table


@dataclass
class Progress:
    """Reported after every scored window and every finished file."""

    files_done: int
    files_total: int
    seconds_done: float  # audio seconds scored so far
    seconds_total: float  # from file headers (an estimate for some MP3s)
    current: str


class Detector:
    """A model paired with :class:`~flamcli.settings.DetectionSettings`, ready for any audio.

    ``Detector(model, settings).run(audio)`` yields one :class:`FileResult` per file;
    ``detector(audio)`` collects them. The pairing checks what needs both (the overlap against
    the model's window: :class:`~flamcli.settings.SettingsError`) and resolves the thresholds
    (``thresholds``: one per query, the model's own where the settings leave it open). Text
    queries are encoded once, at the first run. With ``cache_dir``, frame embeddings are kept
    on disk per file content and model, so later queries on the same recordings skip the audio
    tower (identical scores; no spectrogram for cached files).
    """

    def __init__(self, model: FlamModel | str, settings: DetectionSettings,
                 cache_dir: str | os.PathLike | None = None):
        if isinstance(model, str):
            from .models.registry import load_model

            model = load_model(model)
        self.model, self.settings = model, settings
        self.queries = list(settings.queries)
        self.thresholds = settings.thresholds(float(model.config.presence_threshold))
        try:
            self.plan = WindowPlan.for_model(model, settings.overlap)
        except ValueError as exc:
            raise SettingsError("overlap", str(exc), settings.overlap) from None
        self.cache = None
        if cache_dir is not None:
            from .embedding_cache import EmbeddingCache

            self.cache = EmbeddingCache(cache_dir, model, self.plan.cache_key)
        self._text = None

    def __call__(self, audio, **options) -> list[FileResult]:
        return list(self.run(audio, **options))

    def run(self, audio: str | os.PathLike | Iterable[str | os.PathLike | AudioInput], *,
            with_spectrogram: bool = False,
            progress: Callable[[Progress], None] | None = None) -> Iterator[FileResult]:
        """``audio`` takes files, directories (recursive), glob patterns or resolved inputs.
        Failed inputs are yielded with ``error`` set, so one bad file never stops the rest;
        windows of consecutive files share batches."""
        model, settings, queries, plan = self.model, self.settings, self.queries, self.plan
        if isinstance(audio, (str, os.PathLike)):
            audio = [audio]
        inputs, problems, arguments = [], [], []
        for item in audio:
            if isinstance(item, AudioInput):
                inputs.append(item)
            else:
                arguments.append(os.fspath(item))
        if arguments:
            expanded, problems = expand_inputs(arguments)
            inputs.extend(expanded)
        for problem in problems:
            name, _, message = problem.partition(": ")
            yield FileResult(file=name, path=None, stem="", queries=queries, error=message,
                             model=model.info)

        if self._text is None:
            with torch.inference_mode():
                self._text = model.encode_text(queries)

        totals = {}
        for item in inputs:
            try:
                totals[item] = probe(item.path).duration
            except AudioError:
                totals[item] = 0.0
        status = Progress(0, len(inputs), 0.0, sum(totals.values()), "")
        window_seconds = plan.window_samples / plan.sample_rate
        hop_seconds = plan.hop_samples / plan.sample_rate
        covered: dict[AudioInput, float] = {}

        def on_window(item: AudioInput, index: int) -> None:
            now = min(totals[item], window_seconds + index * hop_seconds)
            status.seconds_done += max(0.0, now - covered.get(item, 0.0))
            covered[item] = max(now, covered.get(item, 0.0))
            status.current = item.display
            if progress is not None:
                progress(status)

        for item, file_scores, error in score_files(
            model, inputs, self._text, plan, batch_size=settings.batch_size,
            unbiased=settings.unbiased, with_spectrogram=with_spectrogram, on_window=on_window,
            cache=self.cache,
        ):
            result = FileResult(file=item.display, path=item.path, stem=item.stem,
                                queries=queries, thresholds=self.thresholds, model=model.info,
                                error=error)
            if file_scores is not None:
                filtered = median_filter(file_scores.scores, settings.median_filter)
                result.scores = filtered
                result.frame_seconds = file_scores.frame_seconds
                result.duration = file_scores.duration
                result.sample_rate = file_scores.sample_rate
                result.spectrogram = file_scores.spectrogram
                if file_scores.silent:
                    result.warnings.append("audio is silent (all samples are zero)")
                result.events = scores_to_events(
                    filtered, queries, file_scores.frame_seconds, file_scores.duration,
                    self.thresholds, file=item.display, min_duration=settings.min_duration,
                    merge_gap=settings.merge_gap,
                )
            status.files_done += 1
            if progress is not None:
                progress(status)
            yield result


def iter_detect(
    model: FlamModel | str,
    audio: str | os.PathLike | Iterable[str | os.PathLike | AudioInput],
    queries: Sequence[str],
    *,
    threshold: float | Mapping[str, float | None] | None = None,
    median_filter_frames: int = DEFAULT_MEDIAN_FILTER,
    min_duration: float = 0.0,
    merge_gap: float = 0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    overlap: float = DEFAULT_OVERLAP,
    unbiased: bool = True,
    with_spectrogram: bool = False,
    progress: Callable[[Progress], None] | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Iterator[FileResult]:
    """Detect ``queries`` in every audio input; yields one :class:`FileResult` per file.

    The one-call form of ``Detector(model, DetectionSettings.create(queries, threshold, …),
    cache_dir).run(audio, …)``; see :class:`Detector`. ``threshold`` (a value, or
    ``{query: value}``) defaults to the model's own (``config.presence_threshold``: 0.5, the
    calibrated boundary, unless measured otherwise). Bad settings raise
    :class:`~flamcli.settings.SettingsError` (:class:`~flamcli.settings.QueryError` for the queries) before any
    audio is read.
    """
    settings = DetectionSettings.create(
        queries, threshold, median_filter=median_filter_frames, min_duration=min_duration,
        merge_gap=merge_gap, batch_size=batch_size, overlap=overlap, unbiased=unbiased)
    return Detector(model, settings, cache_dir).run(audio, with_spectrogram=with_spectrogram,
                                                    progress=progress)


def detect(model: FlamModel | str, audio, queries: Sequence[str], **options) -> list[FileResult]:
    """Like :func:`iter_detect`, collected into a list (failed inputs have ``error`` set)."""
    return list(iter_detect(model, audio, queries, **options))
