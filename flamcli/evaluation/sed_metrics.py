"""Threshold-independent SED metrics, natively, exactly as sed_scores_eval 0.0.4 computes them.

Every function here reproduces the corresponding sed_scores_eval 0.0.4 computation step by step
(same change points, same rounding to ``time_decimals``, same tie handling and curve
interpolation), using numpy only; ``tests/test_eval.py`` checks the numbers against goldens
made with sed_scores_eval itself (``tests/reference/make_eval_golden.py``).

Inputs use plain containers instead of DataFrames:

* ``scores``: ``{clip_id: (timestamps [T + 1], values [T, K])}``, frames gapless;
* ``ground_truth``: ``{clip_id: [(onset, offset, label), …]}`` with the same clip ids; an
  event-free clip has ``[]`` (this is how open-vocabulary negatives enter);
* ``classes``: the K column names (queries); every class must have at least one event in
  ``ground_truth`` (sed_scores_eval asserts the same: recall is undefined otherwise);
* ``durations``: ``{clip_id: seconds}``.

The Polyphonic Sound Detection Score follows Bilen et al. (ICASSP 2020) with the exact
threshold sweep of Ebbers et al. (ICASSP 2022): every score where a statistic changes is an
operating point, so no threshold grid is involved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

SECONDS_PER_UNIT = {"second": 1.0, "minute": 60.0, "hour": 3600.0}
TIME_DECIMALS = 6

Scores = Mapping[str, tuple]  # clip id → (timestamps [T + 1], values [T, K])
GroundTruth = Mapping[str, Sequence[tuple]]


# -- shared helpers ----------------------------------------------------------------------------
def _first_index_where(array: np.ndarray, criterion: str, value) -> int:
    mask = {"geq": array >= value, "gt": array > value, "leq": array <= value,
            "lt": array < value}[criterion]
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else len(array)


def _xsort(y: np.ndarray, x: np.ndarray, *others):
    """Sort by x, then y (stable), and apply the same order to the other arrays / dicts."""
    order = np.lexsort((y, x))

    def take(value):
        if np.isscalar(value):
            return value
        if isinstance(value, dict):
            return {k: take(v) for k, v in value.items()}
        return value[order]

    return (y[order], x[order], *[take(o) for o in others])


def _cummax_indices(array: np.ndarray) -> np.ndarray:
    values = np.maximum.accumulate(array)
    return np.concatenate(([0], np.arange(1, len(array))[values[1:] > values[:-1]]))


def staircase_auc(y: np.ndarray, x: np.ndarray, max_x: float | None = None) -> float:
    """Area under a step curve (each y holds until the next x), optionally up to ``max_x``."""
    order = np.argsort(x)
    x, y = x[order], y[order]
    if max_x is None:
        y = y[:-1]
    else:
        cutoff = _first_index_where(x, "gt", max_x)
        x = np.concatenate((x[:cutoff], [max_x]))
        y = y[:cutoff]
    areas = y * (x[1:] - x[:-1])
    return float(sum(areas))  # sequential sum, as upstream (not numpy's pairwise sum)


def onset_deltas(scores: np.ndarray) -> np.ndarray:
    """+1 where the detection count rises as the threshold falls below a score (local
    maxima), −1 at local minima."""
    prev_scores = np.concatenate(([-np.inf], scores[:-1]))
    next_scores = np.concatenate((scores[1:], [-np.inf]))
    return ((scores > prev_scores).astype(int) - (next_scores > scores).astype(int)) * (
        scores > -np.inf)


def onset_offset_curves(scores: np.ndarray, timestamps: np.ndarray,
                        candidates: np.ndarray | None = None):
    """For each candidate threshold (default: the unique scores) the detected events, as
    onset/offset time matrices [thresholds, events]; inactive slots have onset == offset == 0.

    A frame is detected when its score is ≥ the threshold; events are runs of detected frames.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if candidates is None:
        candidates = np.unique(scores)
    detection = (scores >= candidates[:, None]) & (scores > -np.inf)
    pad = np.zeros_like(detection[:, :1])
    prev = np.concatenate((pad, detection), axis=1)
    detection = np.concatenate((detection, pad), axis=1)
    onsets = detection > prev
    offsets = detection < prev
    n_events = onsets.sum(-1)
    max_events = int(n_events.max()) if len(n_events) else 0
    onset_times = np.zeros((len(candidates), max_events))
    offset_times = np.zeros_like(onset_times)
    rows, frames = np.nonzero(onsets)
    first_of_row = np.cumsum(n_events) - n_events
    slots = np.arange(len(rows)) - first_of_row[rows]
    onset_times[rows, slots] = timestamps[frames]
    rows, frames = np.nonzero(offsets)
    offset_times[rows, slots] = timestamps[frames]
    return candidates, onset_times, offset_times


def _deltas_from_statistics(unique_scores: np.ndarray, stats: dict[str, np.ndarray]):
    """Statistics per threshold → (change point scores, deltas) keeping only changes."""
    keys = list(stats)
    stacked = np.stack([stats[k] for k in keys], axis=1).astype(np.float64)
    deltas = stacked - np.concatenate((stacked[1:], np.zeros_like(stacked[:1])))
    change = np.flatnonzero(np.abs(deltas).sum(1) > 0)
    return unique_scores[change], {k: deltas[change, i] for i, k in enumerate(keys)}


def _accumulate(change_points: list[np.ndarray], deltas: list[dict[str, np.ndarray]]):
    """Deltas of all clips → (unique scores + [inf], statistics at each score)."""
    keys = list(deltas[0]) if deltas else []
    points = np.concatenate(change_points) if change_points else np.zeros(0)
    unique, inverse = np.unique(points, return_inverse=True)
    count = len(unique)
    unique = np.concatenate((unique, [np.inf]))
    stacked = np.stack([np.concatenate([d[k] for d in deltas]) for k in keys], axis=1) \
        if keys else np.zeros((0, 0))
    summed = np.zeros((count, stacked.shape[1]))
    np.add.at(summed, inverse.reshape(-1), stacked)
    stats = np.concatenate((np.cumsum(summed[::-1], axis=0)[::-1], np.zeros_like(summed[:1])))
    return unique, {k: stats[:, i] for i, k in enumerate(keys)}


def _class_events(ground_truth: GroundTruth, clip: str, classes: Sequence[str]):
    per_class = {c: [] for c in classes}
    for onset, offset, label in ground_truth[clip]:
        if label in per_class:
            per_class[label].append((onset, offset))
    out = {}
    for c, events in per_class.items():
        if events:
            array = np.asarray(events, dtype=np.float64)
            out[c] = (array[:, 0], array[:, 1])
        else:
            out[c] = (np.zeros(0), np.zeros(0))
    return out


def event_counts_and_durations(ground_truth: GroundTruth, classes: Sequence[str]):
    counts = {c: 0 for c in classes}
    durations = {c: 0.0 for c in classes}
    for clip in ground_truth:
        for onset, offset, label in ground_truth[clip]:
            if label in counts:
                counts[label] += 1
                durations[label] += offset - onset
    return counts, durations


def _check(scores: Scores, ground_truth: GroundTruth, classes: Sequence[str]) -> list[str]:
    clips = sorted(scores)
    if set(ground_truth) != set(clips):
        missing = sorted(set(clips) ^ set(ground_truth))
        raise ValueError(f"scores and ground truth cover different clips: {missing[:3]}")
    counts, _ = event_counts_and_durations(ground_truth, classes)
    empty = [c for c in classes if counts[c] == 0]
    if empty:
        raise ValueError(f"no ground-truth event for {empty[:3]} (leave such queries out)")
    return clips


# -- intersection-based (PSDS) -----------------------------------------------------------------
def _rows_per_chunk(events: int, targets: int) -> int:
    return max(1, int(4_000_000 // max(1, events * max(1, targets))))


def _intersection_statistics(on, off, target_on, target_off, others, dtc, gtc, cttc, decimals):
    det_crit = off > on
    num_detections = det_crit.sum(-1)
    inter = np.maximum(np.minimum(off[..., None], target_off) - np.maximum(on[..., None], target_on), 0.0)
    total = np.round(np.sum(inter, axis=-1), decimals=decimals)
    lengths = off - on
    dtc_ok = (total >= np.round(dtc * lengths, decimals=decimals)) * det_crit
    fps = num_detections - dtc_ok.sum(-1)
    relevant = np.round(np.sum(dtc_ok[..., None] * inter, axis=-2), decimals=decimals)
    gtc_ok = relevant >= np.round(gtc * (target_off - target_on), decimals=decimals)
    stats = {"tps": gtc_ok.sum(-1), "fps": fps}
    if cttc is not None:
        for name, (other_on, other_off) in others.items():
            if len(other_on) == 0:
                stats["cts\\" + name] = np.zeros_like(stats["tps"])
                continue
            other = np.maximum(np.minimum(off[..., None], other_off) - np.maximum(on[..., None], other_on), 0.0)
            total_other = np.round(np.sum((1 - dtc_ok[..., None]) * other, axis=-1), decimals=decimals)
            ct = (total_other >= np.round(cttc * lengths, decimals=decimals)) * det_crit
            stats["cts\\" + name] = ct.sum(-1)
    return stats


def intersection_deltas(scores: Scores, ground_truth: GroundTruth, classes: Sequence[str], *,
                        dtc_threshold: float, gtc_threshold: float,
                        cttc_threshold: float | None = None, time_decimals: int = TIME_DECIMALS):
    """Per clip and class: (change point scores, deltas of tps / fps / cts) (upstream §2)."""
    clips = _check(scores, ground_truth, classes)
    out = {}
    for clip in clips:
        timestamps, values = scores[clip]
        timestamps = np.asarray(timestamps, dtype=np.float64)
        values = np.asarray(values, dtype=np.float64)
        events = _class_events(ground_truth, clip, classes)
        out[clip] = {}
        for k, name in enumerate(classes):
            column = values[:, k]
            target_on, target_off = events[name]
            others = {o: events[o] for o in classes if o != name}
            # Upstream's shortcut: a class without events here only produces false positives.
            # (Its test for "no other class has events either" iterates over class *names*, so
            # with a cross-trigger criterion the shortcut never applies; kept for identity.)
            if len(target_on) == 0 and (cttc_threshold is None
                                        or all(len(o) == 0 for o in others)):
                delta = onset_deltas(column)
                change = np.abs(delta) > 0.5
                cp = column[change]
                deltas = {"tps": np.zeros_like(cp), "fps": delta[change].astype(np.float64)}
                if cttc_threshold is None:
                    deltas["cts"] = np.zeros_like(cp)
                else:
                    deltas.update({"cts\\" + o: np.zeros_like(cp) for o in others})
                out[clip][name] = (cp, deltas)
                continue
            unique = np.unique(column)
            n_events = max(1, (len(column) + 1) // 2)
            n_targets = len(target_on) + (sum(len(v[0]) for v in others.values())
                                          if cttc_threshold is not None else 0)
            step = _rows_per_chunk(n_events, n_targets)
            parts = []
            for start in range(0, len(unique), step):
                _, on, off = onset_offset_curves(column, timestamps, unique[start:start + step])
                parts.append(_intersection_statistics(
                    on, off, target_on, target_off, others, dtc_threshold, gtc_threshold,
                    cttc_threshold, time_decimals))
            stats = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
            if cttc_threshold is None:
                stats = {"tps": stats["tps"], "fps": stats["fps"],
                         "cts": np.zeros_like(stats["tps"])}
            out[clip][name] = _deltas_from_statistics(unique, stats)
    return out


def _accumulate_classes(deltas: dict, classes: Sequence[str]) -> dict:
    return {
        name: _accumulate([deltas[clip][name][0] for clip in deltas],
                          [deltas[clip][name][1] for clip in deltas])
        for name in classes
    }


def _unique_cummax_sort(tp_ratio, efpr, scores, max_efpr=None):
    tp_ratio, efpr, scores = _xsort(tp_ratio, efpr, scores)
    keep = _cummax_indices(tp_ratio)
    tp_ratio, efpr, scores = tp_ratio[keep], efpr[keep], scores[keep]
    efpr, last = np.unique(efpr[::-1], return_index=True)
    last = -1 - last
    tp_ratio, scores = tp_ratio[last], scores[last]
    if max_efpr is not None:
        cutoff = _first_index_where(efpr, "gt", max_efpr)
        tp_ratio, efpr, scores = tp_ratio[:cutoff], efpr[:cutoff], scores[:cutoff]
    return tp_ratio, efpr, scores


def _interp_previous(x: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Step interpolation holding the previous value; 0 before the first x, y[-1] after."""
    index = np.clip(np.searchsorted(x, at, side="right") - 1, 0, len(x) - 1)
    out = y[index].astype(np.float64)
    out[at < x[0]] = 0.0
    out[at > x[-1]] = y[-1]
    return out


@dataclass
class PsdsResult:
    psds: float
    per_class: dict[str, float]
    etpr: np.ndarray  # the PSD-ROC: effective TPR against …
    efpr: np.ndarray  # … effective FPR per unit of time
    class_rocs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # tpr, efpr, scores


def psds(scores: Scores, ground_truth: GroundTruth, durations: Mapping[str, float],
         classes: Sequence[str], *, dtc_threshold: float, gtc_threshold: float,
         cttc_threshold: float | None = None, alpha_ct: float = 0.0, alpha_st: float = 0.0,
         unit_of_time: str = "hour", max_efpr: float = 100.0,
         time_decimals: int = TIME_DECIMALS) -> PsdsResult:
    """Polyphonic Sound Detection Score (sed_scores_eval ``intersection_based.psds``)."""
    if (alpha_ct == 0.0) != (cttc_threshold is None):
        raise ValueError("cttc_threshold must be given exactly when alpha_ct is not 0")
    deltas = intersection_deltas(scores, ground_truth, classes, dtc_threshold=dtc_threshold,
                                 gtc_threshold=gtc_threshold, cttc_threshold=cttc_threshold,
                                 time_decimals=time_decimals)
    accumulated = _accumulate_classes(deltas, classes)
    n_ref, t_ref = event_counts_and_durations(ground_truth, classes)
    dataset_duration = sum(float(durations[c]) for c in sorted(scores))
    class_rocs = {}
    for name in classes:
        cp_scores, stats = accumulated[name]
        tp_ratio = stats["tps"] / max(n_ref[name], 1)
        fp_rate = stats["fps"] / dataset_duration
        if alpha_ct == 0.0:
            efpr = fp_rate
        else:
            ct_rates = [stats["cts\\" + o] / max(t_ref[o], 1e-12) for o in classes if o != name]
            # One class alone has nothing to cross-trigger on (upstream crashes there).
            efpr = fp_rate + (alpha_ct * np.mean(ct_rates, axis=0) if ct_rates else 0.0)
        efpr = efpr * SECONDS_PER_UNIT[unit_of_time]
        class_rocs[name] = _unique_cummax_sort(tp_ratio, efpr, cp_scores, max_efpr=max_efpr)
    overall = np.unique(np.sort(np.concatenate([roc[1] for roc in class_rocs.values()])))
    interpolated = []
    for tpr, efpr, _ in class_rocs.values():
        interpolated.append(_interp_previous(efpr, tpr, overall))
    etpr = np.mean(interpolated, axis=0) - alpha_st * np.std(interpolated, axis=0)
    etpr = np.maximum(etpr, 0.0)
    if max_efpr is not None:
        etpr = np.concatenate((etpr, [etpr[-1]]))
        overall = np.concatenate((overall, [max_efpr]))
    value = staircase_auc(etpr, overall, max_x=max_efpr) / max_efpr
    per_class = {name: staircase_auc(tpr, efpr, max_x=max_efpr) / max_efpr
                 for name, (tpr, efpr, _) in class_rocs.items()}
    return PsdsResult(value, per_class, etpr, overall, class_rocs)


# DCASE 2021–2023 task 4 settings
PSDS1 = dict(dtc_threshold=0.7, gtc_threshold=0.7, cttc_threshold=None, alpha_ct=0.0,
             alpha_st=1.0, unit_of_time="hour", max_efpr=100.0)
PSDS2 = dict(dtc_threshold=0.1, gtc_threshold=0.1, cttc_threshold=0.3, alpha_ct=0.5,
             alpha_st=1.0, unit_of_time="hour", max_efpr=100.0)


# -- segment-based (AUROC, MPAUC, segment F1) --------------------------------------------------
def segment_statistics(scores: Scores, ground_truth: GroundTruth, durations: Mapping[str, float],
                       classes: Sequence[str], *, segment_length: float,
                       time_decimals: int = TIME_DECIMALS) -> dict:
    """Per class (scores + [inf], {tps, fps, n_sys, n_ref, tns}) over segment max scores."""
    clips = _check(scores, ground_truth, classes)
    cps = {c: [] for c in classes}
    targets = {c: [] for c in classes}
    for clip in clips:
        timestamps, values = scores[clip]
        timestamps = np.round(np.asarray(timestamps, dtype=np.float64), time_decimals)
        values = np.asarray(values, dtype=np.float64)
        n_segments = int(np.ceil(durations[clip] / segment_length))
        bounds = np.round(np.arange(n_segments + 1) * segment_length, time_decimals)
        seg_on, seg_off = bounds[:-1], bounds[1:]
        events = _class_events(ground_truth, clip, classes)
        idx_on = np.maximum(np.searchsorted(timestamps, seg_on, side="right") - 1, 0)
        idx_off = np.minimum(np.searchsorted(timestamps, seg_off, side="left"),
                             len(timestamps) - 1)
        seg_scores = np.zeros((n_segments, len(classes)))
        for i in range(n_segments):
            if idx_off[i] > idx_on[i]:
                seg_scores[i] = values[idx_on[i]:idx_off[i]].max(axis=0)
        for k, name in enumerate(classes):
            target_on, target_off = events[name]
            if len(target_on):
                active = np.any((seg_on[None] < target_off[:, None])
                                & (seg_off[None] > target_on[:, None])
                                & (seg_off > seg_on)[None], axis=0)
            else:
                active = np.zeros(n_segments, dtype=bool)
            cps[name].append(seg_scores[:, k])
            targets[name].append(active)
    out = {}
    for name in classes:
        target = np.concatenate(targets[name]) if targets[name] else np.zeros(0, bool)
        unique, stats = _accumulate(
            [np.concatenate(cps[name])], [{"tps": target.astype(np.int64),
                                           "fps": 1 - target.astype(np.int64)}])
        stats["n_sys"] = stats["tps"] + stats["fps"]
        stats["n_ref"] = stats["tps"][0]
        fns = stats["n_ref"] - stats["tps"]
        stats["tns"] = stats["n_sys"][0] - stats["n_sys"] - fns
        out[name] = (unique, stats)
    return out


def auroc_from_statistics(statistics: dict, max_fpr: float | None = None):
    """Per-class and mean area under the segment ROC; with ``max_fpr`` the partial area
    divided by ``max_fpr`` (no McClish standardisation, as sed_scores_eval 0.0.4)."""
    values, curves = {}, {}
    for name, (cp_scores, stats) in statistics.items():
        with np.errstate(invalid="ignore", divide="ignore"):
            tpr = stats["tps"] / stats["n_ref"]
            fpr = stats["fps"] / (stats["tns"] + stats["fps"])
        tpr, fpr, cp_sorted = _xsort(tpr, fpr, cp_scores)
        norm = 1 if max_fpr is None else max_fpr
        values[name] = staircase_auc(tpr, fpr, max_x=max_fpr) / norm
        curves[name] = (tpr, fpr, cp_sorted)
    values["mean"] = float(np.mean([values[n] for n in statistics]))
    return values, curves


def segment_auroc(scores, ground_truth, durations, classes, *, segment_length: float,
                  max_fpr: float | None = None, time_decimals: int = TIME_DECIMALS):
    """sed_scores_eval ``segment_based.auroc``: (per class + 'mean', ROC curves)."""
    stats = segment_statistics(scores, ground_truth, durations, classes,
                               segment_length=segment_length, time_decimals=time_decimals)
    return auroc_from_statistics(stats, max_fpr=max_fpr)


# -- collar-based (event F1) -------------------------------------------------------------------
def _max_matching(hits: np.ndarray) -> int:
    """Size of a maximum bipartite matching between detections (rows) and references."""
    match_of_ref: dict[int, int] = {}

    def augment(det: int, seen: set) -> bool:
        for ref in np.flatnonzero(hits[det]):
            if ref in seen:
                continue
            seen.add(ref)
            if ref not in match_of_ref or augment(match_of_ref[ref], seen):
                match_of_ref[ref] = det
                return True
        return False

    return sum(augment(det, set()) for det in range(hits.shape[0]))


def _collar_statistics(on, off, target_on, target_off, onset_collar, offset_collar,
                       offset_collar_rate, decimals):
    det_crit = off > on
    num_detections = det_crit.sum(-1)
    onset_crit = np.round(np.abs(on[..., None] - target_on) - onset_collar, decimals=decimals) <= 0.0
    collars = np.maximum(offset_collar, offset_collar_rate * (target_off - target_on))
    offset_crit = np.round(np.abs(off[..., None] - target_off) - collars, decimals=decimals) <= 0.0
    hits = det_crit[..., None] & onset_crit & offset_crit
    tps = hits.sum((1, 2))
    ambiguous = np.any(hits.sum(1) > 1, axis=1) | np.any(hits.sum(2) > 1, axis=1)
    for row in np.flatnonzero(ambiguous):
        tps[row] = _max_matching(hits[row])
    return {"tps": tps, "fps": num_detections - tps}


def collar_statistics(scores: Scores, ground_truth: GroundTruth, classes: Sequence[str], *,
                      onset_collar: float, offset_collar: float, offset_collar_rate: float = 0.0,
                      time_decimals: int = TIME_DECIMALS) -> dict:
    """Per class (scores + [inf], {tps, fps, n_ref}) for every operating point."""
    clips = _check(scores, ground_truth, classes)
    per_class = {c: ([], []) for c in classes}
    for clip in clips:
        timestamps, values = scores[clip]
        timestamps = np.asarray(timestamps, dtype=np.float64)
        values = np.asarray(values, dtype=np.float64)
        events = _class_events(ground_truth, clip, classes)
        for k, name in enumerate(classes):
            column = values[:, k]
            target_on, target_off = events[name]
            if len(target_on) == 0:
                delta = onset_deltas(column)
                change = np.abs(delta) > 0.5
                cp = column[change]
                cp_deltas = {"fps": delta[change].astype(np.float64), "tps": np.zeros_like(cp)}
            else:
                unique = np.unique(column)
                step = _rows_per_chunk(max(1, (len(column) + 1) // 2), len(target_on))
                parts = []
                for start in range(0, len(unique), step):
                    _, on, off = onset_offset_curves(column, timestamps, unique[start:start + step])
                    parts.append(_collar_statistics(on, off, target_on, target_off, onset_collar,
                                                    offset_collar, offset_collar_rate,
                                                    time_decimals))
                stats = {key: np.concatenate([p[key] for p in parts]) for key in ("tps", "fps")}
                cp, cp_deltas = _deltas_from_statistics(unique, stats)
            per_class[name][0].append(cp)
            per_class[name][1].append(cp_deltas)
    n_ref, _ = event_counts_and_durations(ground_truth, classes)
    out = {}
    for name in classes:
        unique, stats = _accumulate(*per_class[name])
        stats["n_ref"] = n_ref[name]
        out[name] = (unique, stats)
    return out


# -- precision / recall / F from statistics -------------------------------------------------------
def fscore_from_pr(p, r, beta: float = 1.0):
    return (1 + beta ** 2) * p * r / np.maximum(beta ** 2 * p + r, 1e-15)


def pr_curve(statistics: tuple):
    cp_scores, stats = statistics
    tps, fps = stats["tps"], stats["fps"]
    p = tps / np.maximum(tps + fps, 1)
    p[tps + fps == 0] = 1.0
    if stats["n_ref"] == 0:
        raise ValueError("recall is undefined without positive instances")
    r = tps / stats["n_ref"]
    sub = {k: v for k, v in stats.items() if k in ("tps", "fps", "n_ref")}
    return _xsort(p, r, cp_scores, sub)


def _item(stats: dict, index) -> dict:
    return {k: (v if np.isscalar(v) else v[index]) for k, v in stats.items()}


def _micro(per_class_stats: dict, beta: float = 1.0):
    tps = np.sum([s["tps"] for s in per_class_stats.values()])
    fps = np.sum([s["fps"] for s in per_class_stats.values()])
    n_ref = np.sum([s["n_ref"] for s in per_class_stats.values()])
    p = tps / np.maximum(tps + fps, 1)
    r = tps / np.maximum(n_ref, 1)
    return float(fscore_from_pr(p, r, beta)), float(p), float(r)


@dataclass
class FScores:
    f: dict[str, float]  # per class, 'macro_average', 'micro_average'
    p: dict[str, float]
    r: dict[str, float]
    stats: dict[str, dict]
    thresholds: dict[str, float] | None = None


def fscore_at(statistics: dict, threshold: float | Mapping[str, float], beta: float = 1.0) -> FScores:
    """F-score where detection means score > threshold (sed_scores_eval's convention)."""
    f, p, r, chosen = {}, {}, {}, {}
    for name, class_stats in statistics.items():
        thr = threshold[name] if isinstance(threshold, Mapping) else threshold
        precision, recall, cp_scores, stats = pr_curve(class_stats)
        order = np.argsort(cp_scores)
        index = _first_index_where(cp_scores[order], "gt", thr)
        index = order[-1 if index == len(order) else index]
        p[name], r[name] = float(precision[index]), float(recall[index])
        f[name] = float(fscore_from_pr(precision[index], recall[index], beta))
        chosen[name] = _item(stats, index)
    for out in (f, p, r):
        out["macro_average"] = float(np.mean([out[n] for n in statistics]))
    f["micro_average"], p["micro_average"], r["micro_average"] = _micro(chosen, beta)
    return FScores(f, p, r, chosen)


def fscore_curve(class_statistics: tuple, beta: float = 1.0):
    """(F, P, R, thresholds) sorted by threshold, for one class."""
    p, r, cp_scores, stats = pr_curve(class_statistics)
    f = fscore_from_pr(p, r, beta)
    f, cp_scores, p, r, stats = _xsort(f, cp_scores, p, r, stats)
    return f, p, r, cp_scores, stats


def best_fscore(statistics: dict, beta: float = 1.0) -> FScores:
    """Best F per class over all thresholds; the threshold is midway between the chosen
    operating point's score and the next lower one (−inf if none)."""
    f, p, r, chosen, thresholds = {}, {}, {}, {}, {}
    for name, class_stats in statistics.items():
        fs, ps, rs, cp_scores, stats = fscore_curve(class_stats, beta)
        best = len(fs) - 1 - int(np.argmax(fs[::-1]))
        thresholds[name] = float((cp_scores[best] + cp_scores[best - 1]) / 2) if best > 0 else -np.inf
        f[name], p[name], r[name] = float(fs[best]), float(ps[best]), float(rs[best])
        chosen[name] = _item(stats, best)
    for out in (f, p, r):
        out["macro_average"] = float(np.mean([out[n] for n in statistics]))
    f["micro_average"], p["micro_average"], r["micro_average"] = _micro(chosen, beta)
    return FScores(f, p, r, chosen, thresholds)
