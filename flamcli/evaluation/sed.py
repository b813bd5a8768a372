"""``flam eval sed``: the standard SED metrics over an open-vocabulary evaluation set.

Open-vocabulary protocol: every query is scored against every clip, and a query absent from a
clip is a negative there (its ground truth in that clip is empty). A query without a single
ground-truth event in the whole set has no recall, so it is left out of the metrics (listed in
``queries_without_events``); sed_scores_eval refuses such classes the same way.

All values are fractions in [0, 1]. Settings (DCASE task 4 / FLAM §5.2):

==================  ============================================================================
``psds1``           DTC 0.7, GTC 0.7, no cross-triggers, α_ST 1, max eFPR 100/h
``psds2``           DTC 0.1, GTC 0.1, CTTC 0.3, α_CT 0.5, α_ST 1, max eFPR 100/h
``mpauc``           mean over queries of the segment ROC area for FPR ≤ 0.1 divided by 0.1,
                    1 s segments (segment score = max frame score); no McClish correction
``auroc``           mean over queries of the segment ROC area, 0.3125 s segments
``event_f1``        collar-based F1 (onset collar 0.2 s, offset max(0.2 s, 20% of the event)),
                    macro-averaged over queries, a frame detected when its score > threshold
``segment_f1``      1 s segment F1 at the same threshold, macro-averaged
``*_micro``         the same counts pooled over queries
==================  ============================================================================

Per query: the same metrics, plus the best collar F1 over all thresholds and that threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from . import sed_metrics as m
from .inputs import EvalInputError, Segment, merge_touching

COLLAR = dict(onset_collar=0.2, offset_collar=0.2, offset_collar_rate=0.2)
SEGMENT_F1_LENGTH = 1.0
AUROC_SEGMENT = 0.3125
MPAUC_SEGMENT, MPAUC_MAX_FPR = 1.0, 0.1
# A score table may end short of its clip by less than one frame (a system that drops the last
# partial frame) plus this much (durations and timestamps written with few decimals); more
# leaves part of the clip unscored, which silently changes every metric (flam detect's own
# tables end exactly at the clip's end).
COVERAGE_SLACK = 0.01
SED_KEYS = ("psds1", "psds2", "mpauc", "auroc", "event_f1", "event_f1_micro", "segment_f1",
            "segment_f1_micro")


@dataclass
class SedEvaluation:
    report: dict
    warnings: list[str] = field(default_factory=list)
    curves: dict = field(default_factory=dict)  # for plots: psd-roc, F1 curves, calibration


def _clean(value):
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return None if not np.isfinite(value) else value
    if isinstance(value, np.integer):
        return int(value)
    return value


def align(scores: Mapping[str, tuple], ground_truth: Mapping[str, list[Segment]], durations: Mapping[str, float],
          *, scores_source: str = "scores", gt_source: str = "ground truth",
          durations_source: str = "durations") -> tuple[list[str], list[str]]:
    """Check that inputs cover the same clips → (clips, warnings). The clips are those with a
    duration; ground-truth clips need a duration and every clip needs scores."""
    warnings = []
    missing = sorted(set(ground_truth) - set(durations))
    if missing:
        raise EvalInputError(f"{durations_source}: no duration for clip {missing[0]!r} of "
                             f"{gt_source}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    clips = sorted(durations)
    lacking = [c for c in clips if c not in scores]
    if lacking:
        raise EvalInputError(f"{scores_source}: no scores for clip {lacking[0]!r}"
                             + (f" (and {len(lacking) - 1} more)" if len(lacking) > 1 else ""))
    for clip in clips:
        _check_coverage(scores[clip], clip, float(durations[clip]), scores_source,
                        durations_source)
    extra = sorted(set(scores) - set(clips))
    if extra:
        warnings.append(f"{scores_source}: {len(extra)} clip(s) not in the evaluation set "
                        f"ignored (e.g. {extra[0]!r})")
    free = [c for c in clips if c not in ground_truth]
    if free:
        warnings.append(f"{len(free)} clip(s) have no ground-truth rows: scored as event-free")
    return clips, warnings


def _check_coverage(table, clip: str, duration: float, scores_source: str,
                    durations_source: str) -> None:
    """A table that stops well before the clip's end is a failed input, like a missing one."""
    timestamps = np.asarray(table[0], dtype=np.float64)
    end = float(timestamps[-1])
    hop = float(np.median(np.diff(timestamps))) if len(timestamps) > 1 else 0.0
    if duration - end > hop + COVERAGE_SLACK:
        source = getattr(table, "path", scores_source)  # ScoreTable names its file
        raise EvalInputError(
            f"{source}: scores for clip {clip!r} end at {end:.3f} s, but {durations_source} "
            f"gives it {duration:.3f} s (more than one frame short: a truncated table?)")


def calibration(scores, ground_truth, queries: Sequence[str], bins: int = 10) -> dict:
    """Frame-level reliability: a frame is positive when its centre lies in an event of the
    query. Returns bin edges, mean predicted probability, observed frequency, counts and the
    expected calibration error (count-weighted |observed − predicted|)."""
    total = np.zeros(bins)
    predicted = np.zeros(bins)
    positive = np.zeros(bins)
    for clip, (timestamps, values) in scores.items():
        centres = (timestamps[:-1] + timestamps[1:]) / 2
        for k, query in enumerate(queries):
            target = np.zeros(len(centres), dtype=bool)
            for onset, offset, label in ground_truth.get(clip, []):
                if label == query:
                    target |= (centres >= onset) & (centres < offset)
            column = np.clip(values[:, k], 0.0, 1.0)
            index = np.minimum((column * bins).astype(int), bins - 1)
            total += np.bincount(index, minlength=bins)
            predicted += np.bincount(index, weights=column, minlength=bins)
            positive += np.bincount(index, weights=target.astype(float), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = predicted / total
        observed = positive / total
    used = total > 0
    ece = float(np.sum(total[used] * np.abs(observed[used] - mean_predicted[used])) / total.sum()) \
        if total.sum() else float("nan")
    return {"bin_edges": np.linspace(0, 1, bins + 1).tolist(),
            "mean_predicted": mean_predicted.tolist(), "observed": observed.tolist(),
            "frames": total.astype(int).tolist(), "ece": ece}


def evaluate_sed(scores: Mapping[str, tuple], queries: Sequence[str],
                 ground_truth: Mapping[str, list[Segment]], durations: Mapping[str, float], *,
                 threshold: float = 0.5, hard: bool = False, sources: dict | None = None
                 ) -> SedEvaluation:
    """Score ``scores`` (``{clip: (timestamps, values [T, len(queries)])}``) against the ground
    truth. ``hard``: the scores are 0/1 event masks (event predictions), so only the F1 metrics
    at the threshold are meaningful; the threshold-free ones are reported as None."""
    sources = sources or {}
    clips, warnings = align(scores, ground_truth, durations,
                            scores_source=sources.get("scores", "scores"),
                            gt_source=sources.get("ground_truth", "ground truth"),
                            durations_source=sources.get("durations", "durations"))
    queries = list(queries)
    known = set(queries)
    gt, dropped, joined = {}, 0, 0
    for clip in clips:
        events = [e for e in ground_truth.get(clip, []) if e[2] in known]
        dropped += len(ground_truth.get(clip, [])) - len(events)
        gt[clip], count = merge_touching(events)
        joined += count
    if dropped:
        warnings.append(f"{dropped} ground-truth event(s) with labels that are not queries ignored")
    if joined:
        warnings.append(f"{joined} overlapping or touching ground-truth event(s) of one label "
                        "merged")
    counts, _ = m.event_counts_and_durations(gt, queries)
    scored = [q for q in queries if counts[q] > 0]
    without = [q for q in queries if counts[q] == 0]
    if without:
        warnings.append(f"{len(without)} quer{'y' if len(without) == 1 else 'ies'} without any "
                        f"ground-truth event left out of the metrics (e.g. {without[0]!r})")
    if not scored:
        raise EvalInputError(f"{sources.get('ground_truth', 'ground truth')}: no query has a "
                             "ground-truth event in the evaluated clips")
    columns = [queries.index(q) for q in scored]
    table = {}
    for clip in clips:
        timestamps, values = scores[clip]
        table[clip] = (np.asarray(timestamps, dtype=np.float64),
                       np.asarray(values, dtype=np.float64)[:, columns])
    dur = {c: float(durations[c]) for c in clips}

    report = {"task": "sed", "clips": len(clips), "queries": len(queries),
              "scored_queries": scored, "queries_without_events": without,
              "threshold": threshold, "hard_predictions": hard}
    for key in SED_KEYS:
        report[key] = None
    per_query = {q: {} for q in scored}
    curves = {}

    collar = m.collar_statistics(table, gt, scored, **COLLAR)
    event = m.fscore_at(collar, threshold)
    segments = m.segment_statistics(table, gt, dur, scored, segment_length=SEGMENT_F1_LENGTH)
    segment = m.fscore_at(segments, threshold)
    report["event_f1"], report["event_f1_micro"] = event.f["macro_average"], event.f["micro_average"]
    report["segment_f1"], report["segment_f1_micro"] = segment.f["macro_average"], segment.f["micro_average"]
    report["event_precision"], report["event_recall"] = event.p["macro_average"], event.r["macro_average"]
    report["segment_precision"], report["segment_recall"] = segment.p["macro_average"], segment.r["macro_average"]
    for q in scored:
        per_query[q].update(event_f1=event.f[q], event_precision=event.p[q], event_recall=event.r[q],
                            segment_f1=segment.f[q])
    if not hard:
        for name, settings in (("psds1", m.PSDS1), ("psds2", m.PSDS2)):
            result = m.psds(table, gt, dur, scored, **settings)
            report[name] = result.psds
            curves[name] = (result.etpr, result.efpr)
            for q in scored:
                per_query[q][name] = result.per_class[q]
        auroc, _ = m.segment_auroc(table, gt, dur, scored, segment_length=AUROC_SEGMENT)
        mpauc, _ = m.segment_auroc(table, gt, dur, scored, segment_length=MPAUC_SEGMENT,
                                   max_fpr=MPAUC_MAX_FPR)
        report["auroc"] = _nanmean(auroc, scored)
        report["mpauc"] = _nanmean(mpauc, scored)
        best = m.best_fscore(collar)
        report["best_event_f1"] = best.f["macro_average"]
        curves["f1"] = {}
        for q in scored:
            per_query[q].update(auroc=auroc[q], mpauc=mpauc[q], best_event_f1=best.f[q],
                                best_threshold=best.thresholds[q])
            f, _, _, thresholds, _ = m.fscore_curve(collar[q])
            curves["f1"][q] = (thresholds, f)
        calib = calibration(table, gt, scored)
        report["calibration"] = calib
        curves["calibration"] = calib
    report["per_query"] = per_query
    report["settings"] = {
        "psds1": {k: v for k, v in m.PSDS1.items()}, "psds2": {k: v for k, v in m.PSDS2.items()},
        "mpauc": {"segment_length": MPAUC_SEGMENT, "max_fpr": MPAUC_MAX_FPR},
        "auroc": {"segment_length": AUROC_SEGMENT},
        "event_f1": {**COLLAR, "detection": "score > threshold"},
        "segment_f1": {"segment_length": SEGMENT_F1_LENGTH},
        "reference": "sed_scores_eval 0.0.4 (native re-implementation; equal on the test goldens)",
    }
    return SedEvaluation(_clean(report), warnings, curves)


def _nanmean(values: dict, keys) -> float | None:
    numbers = [values[k] for k in keys if np.isfinite(values[k])]
    return float(np.mean(numbers)) if numbers else None


def events_as_scores(predictions: Mapping[str, list[Segment]], queries: Sequence[str],
                     durations: Mapping[str, float]) -> tuple[dict, list[str]]:
    """Hard event predictions → binary score tables for every clip with a duration
    (a clip without predicted events gets an all-zero table)."""
    known = set(queries)
    warnings = []
    unknown = sorted({e[2] for events in predictions.values() for e in events} - known)
    if unknown:
        warnings.append(f"predicted labels that are not queries ignored: {unknown[:3]}")
    extra = sorted(set(predictions) - set(durations))
    if predictions and len(extra) == len(predictions):
        raise EvalInputError(f"no predicted clip is in the evaluation set (predictions name "
                             f"{extra[0]!r}, the durations e.g. {min(durations)!r})")
    if extra:
        warnings.append(f"{len(extra)} predicted clip(s) not in the evaluation set ignored "
                        f"(e.g. {extra[0]!r})")
    tables = {clip: _binary_scores(predictions.get(clip, []), list(queries), duration)
              for clip, duration in durations.items()}
    return tables, warnings


def _binary_scores(events: Sequence[Segment], queries: list[str], duration: float):
    """Binary score table for hard event predictions: 1 inside an event, 0 elsewhere."""
    cuts = {0.0, float(duration)}
    for onset, offset, _ in events:
        cuts.update((min(max(onset, 0.0), duration), min(max(offset, 0.0), duration)))
    edges = np.array(sorted(cuts))
    edges = edges[np.concatenate(([True], np.diff(edges) > 0))]
    if len(edges) < 2:
        edges = np.array([0.0, float(duration)])
    centres = (edges[:-1] + edges[1:]) / 2
    values = np.zeros((len(edges) - 1, len(queries)))
    column = {q: k for k, q in enumerate(queries)}
    for onset, offset, label in events:
        if label in column:
            values[(centres > onset) & (centres < offset), column[label]] = 1.0
    return edges, values


def score_tables(results) -> tuple[dict[str, tuple], dict[str, float]]:
    """Detection results (:class:`flamcli.detection.FileResult`, all ok) → the score tables
    ``{clip: (frame edges, scores)}`` and durations ``{clip: seconds}`` that
    :func:`evaluate_sed` takes; a clip is named by its path under the audio folder, with ``/``."""
    tables, durations = {}, {}
    for result in results:
        clip = result.stem.replace("\\", "/")
        tables[clip] = (result.timestamps, result.scores)
        durations[clip] = result.duration
    return tables, durations
