"""Temporal grounding: when does each described event happen in a recording, or is it absent?

Built on detection: the calibrated, unbiased frame probabilities (boundary 0.5) are median
filtered, thresholded and turned into windows with a minimum duration. A query is *present*
when at least one window survives, and *absent* otherwise: flam refuses rather than inventing
timestamps. ``presence`` is the highest smoothed frame probability, so an absent answer still
says how close it came.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from .detection import Detector, FileResult, Progress
from .models.flam import FlamModel, ModelInfo
from .settings import (DEFAULT_BATCH_SIZE, DEFAULT_GROUND_MEDIAN_FILTER, DEFAULT_MIN_DURATION,
                       DEFAULT_OVERLAP, DetectionSettings)



@dataclass
class Answer:
    query: str
    present: bool
    presence: float  # highest smoothed frame probability of the query in the file
    intervals: list[tuple[float, float, float]] = field(default_factory=list)  # start, end, conf.
    threshold: float | None = None  # the presence threshold the query was held to

    @property
    def too_short(self) -> bool:
        """Absent although the peak passed the threshold: no run above it lasted
        ``min_duration``."""
        return (not self.present and self.threshold is not None
                and self.presence >= self.threshold)

    def as_dict(self) -> dict:
        out = {"query": self.query, "present": self.present,
               "presence": round(self.presence, 6),
               "intervals": [[round(a, 3), round(b, 3), round(c, 6)] for a, b, c in self.intervals]}
        if self.threshold is not None:
            out["threshold"] = round(self.threshold, 6)
        return out


@dataclass
class GroundingResult:
    file: str
    path: Path | None
    duration: float = 0.0
    answers: list[Answer] = field(default_factory=list)
    model: ModelInfo | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def iter_ground(
    model: FlamModel | str,
    audio,
    queries: Sequence[str],
    *,
    threshold: float | Mapping[str, float | None] | None = None,
    min_duration: float = DEFAULT_MIN_DURATION,
    top_k: int | None = None,
    median_filter_frames: int = DEFAULT_GROUND_MEDIAN_FILTER,
    merge_gap: float = 0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    overlap: float = DEFAULT_OVERLAP,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> Iterator[GroundingResult]:
    """One :class:`GroundingResult` per file with an :class:`Answer` per query.

    The one-call form of ``ground_with(Detector(model, DetectionSettings.for_grounding(…),
    cache_dir), audio, top_k=…)``. ``threshold`` (a value, or ``{query: value}``) defaults to
    the model's presence threshold (``config.presence_threshold``). ``top_k`` keeps the k most
    confident windows of each query (reported in time order). ``cache_dir`` keeps frame
    embeddings so later queries about the same recordings cost only the text tower.
    ``overlap`` (seconds between model windows on long files) is as in
    :func:`~flamcli.detection.iter_detect`.
    """
    settings = DetectionSettings.for_grounding(
        queries, threshold, median_filter=median_filter_frames, min_duration=min_duration,
        merge_gap=merge_gap, batch_size=batch_size, overlap=overlap)
    return ground_with(Detector(model, settings, cache_dir), audio, top_k=top_k,
                       progress=progress)


def ground_with(detector: Detector, audio, *, top_k: int | None = None,
                progress: Callable[[Progress], None] | None = None
                ) -> Iterator[GroundingResult]:
    """Ground the detector's queries in every audio input (see :func:`iter_ground`)."""
    for result in detector.run(audio, progress=progress):
        grounded = GroundingResult(result.file, result.path, result.duration, model=result.model,
                                   error=result.error, warnings=list(result.warnings))
        if result.ok:
            grounded.answers = answers_from_detection(result, top_k)
        yield grounded


def answers_from_detection(result: FileResult, top_k: int | None = None) -> list[Answer]:
    """Per query: present iff a detected window survived; windows in time order."""
    answers = []
    for column, query in enumerate(result.queries):
        windows = [(e.onset, e.offset, e.confidence) for e in result.events if e.query == query]
        if top_k is not None:
            windows = sorted(windows, key=lambda w: -w[2])[:top_k]
        windows.sort()
        scores = result.scores[:, column]
        presence = float(scores.max()) if len(scores) else 0.0
        threshold = result.thresholds[column] if column < len(result.thresholds) else None
        answers.append(Answer(query, bool(windows), presence, windows, threshold))
    return answers


def ground(model: FlamModel | str, audio, queries: Sequence[str], **options) -> list[GroundingResult]:
    """Like :func:`iter_ground`, collected into a list."""
    return list(iter_ground(model, audio, queries, **options))
