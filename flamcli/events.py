"""Frame scores → events: median filter, thresholds, runs, gap merging, minimum duration."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Event:
    file: str
    onset: float
    offset: float
    query: str
    confidence: float  # the highest (filtered) frame probability inside the event

    def as_dict(self) -> dict:
        return asdict(self)


def median_filter(scores: np.ndarray, size: int) -> np.ndarray:
    """Median over ``size`` frames along axis 0 with mirrored edges (scipy's ``reflect``).

    ``size`` 1 (or less) returns the scores unchanged; even sizes are rounded up to odd so
    the filter stays centred.
    """
    scores = np.asarray(scores, dtype=np.float32)
    if size <= 1 or scores.shape[0] == 0:
        return scores
    size += 1 - size % 2
    half = size // 2
    pad = [(half, half)] + [(0, 0)] * (scores.ndim - 1)
    padded = np.pad(scores, pad, mode="symmetric")
    windows = np.lib.stride_tricks.sliding_window_view(padded, size, axis=0)
    # np.median copies the windows it is given: in chunks of frames, memory stays bounded
    # (a long file with a wide filter would otherwise need gigabytes).
    out = np.empty(scores.shape, dtype=np.float32)
    per_frame = size * int(np.prod(scores.shape[1:], dtype=np.int64))
    step = max(1, MEDIAN_CHUNK_VALUES // max(1, per_frame))
    for start in range(0, scores.shape[0], step):
        out[start:start + step] = np.median(windows[start:start + step], axis=-1)
    return out


MEDIAN_CHUNK_VALUES = 1 << 22  # float32 values copied per np.median call (16 MiB)


def find_runs(active: np.ndarray) -> list[tuple[int, int]]:
    """Boolean frames → [(first, last + 1)] of consecutive True frames."""
    if not active.size:
        return []
    edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return list(zip(starts.tolist(), ends.tolist()))


def scores_to_events(
    scores: np.ndarray,
    queries: list[str],
    frame_seconds: float,
    duration: float,
    thresholds: list[float],
    file: str = "",
    min_duration: float = 0.0,
    merge_gap: float = 0.0,
) -> list[Event]:
    """Filtered scores [T, C] → events sorted by onset, then query order.

    A frame is active when its score reaches the query's threshold. Runs separated by at
    most ``merge_gap`` seconds are joined first; runs shorter than ``min_duration`` are then
    dropped. Offsets never pass the end of the file.
    """
    events = []
    for column, query in enumerate(queries):
        column_scores = scores[:, column]
        runs = find_runs(column_scores >= thresholds[column])
        merged: list[list[int]] = []
        for start, end in runs:
            if merged and (start - merged[-1][1]) * frame_seconds <= merge_gap + 1e-9:
                merged[-1][1] = end
            else:
                merged.append([start, end])
        for start, end in merged:
            onset = start * frame_seconds
            offset = min(end * frame_seconds, duration)
            if offset - onset + 1e-9 < min_duration or offset <= onset:
                continue
            confidence = float(column_scores[start:end].max())
            events.append(Event(file, round(onset, 6), round(offset, 6), query,
                                round(confidence, 6)))
    events.sort(key=lambda e: (e.onset, queries.index(e.query), e.offset))
    return events
