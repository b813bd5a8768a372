"""``flam eval ground``: temporal grounding metrics (SpotSound-Bench and Lighthouse forms).

SpotSound-Bench form (ground truth and predictions alike)::

    [{"audio_path": "a.flac", "caption": "dog barks", "annotations": [[1.2, 3.4], …]}, …]

Ground-truth rows with empty ``annotations`` are absent-event queries (negatives); a
ground-truth row without the key is malformed.
Prediction rows may add ``"present": true|false`` (the stage-1 presence answer; default:
``annotations`` is non-empty) and ``"score"`` or ``"presence"`` (presence confidence, recorded
only; a number); other keys are ignored. ``flam ground -f json`` output is such a list. Rows are matched on (audio_path, caption); the
path may differ in folders as long as the file name identifies the row.

Metrics (fractions in [0, 1]; SpotSound's, as its benchmark defines them):

* set-IoU per positive query: intervals clipped to [0, duration] (when known) and merged
  into unions; ``|∪P ∩ ∪G| / |∪P ∪ ∪G|``; an empty prediction scores 0.
* ``miou``: mean set-IoU over positive queries; ``r1@τ``: share of positives with set-IoU ≥ τ.
* ``presence_accuracy_positive`` / ``_negative``: positives answered present / negatives
  answered absent.
* ``joint_f1`` (**reconstructed**, not the paper's text): stage 1 presence, stage 2 grounding
  when predicted present. TP = positive, predicted present, IoU ≥ τ; FP = predicted present on
  a negative, or a positive with IoU < τ; FN = positive predicted absent, or IoU < τ (a
  mislocalised positive is both FP and FN); F1 = 2TP / (2TP + FP + FN); τ = 0.5.

Lighthouse form (Moment-DETR lineage): ground truth JSONL ``{qid, query, duration, vid,
relevant_windows}``, predictions JSONL ``{qid, vid, pred_relevant_windows: [[s, e, score], …]}``.
``r1@τ``: the top-scoring window against the ground-truth window it overlaps most, τ = 0.5,
0.7; ``map@0.5``, ``map@0.75`` and ``map`` (mean over IoU 0.5:0.05:0.95) use at most 10
windows per query, ActivityNet-style AP (greedy matching by score, interpolated precision).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence

import numpy as np

from .inputs import EvalInputError, _number, clean_label, open_text

R1_THRESHOLDS = (0.3, 0.5, 0.7)
JOINT_IOU = 0.5
LIGHTHOUSE_R1 = (0.5, 0.7)
LIGHTHOUSE_MAP = tuple(round(x, 2) for x in np.linspace(0.5, 0.95, 10))
MAX_WINDOWS = 10


# -- reading -----------------------------------------------------------------------------------
def _load_json(path: Path):
    path = Path(path)
    text = open_text(path)
    if path.suffix.lower() == ".jsonl" or (text.lstrip()[:1] == "{" and "\n{" in text.strip()):
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise EvalInputError(f"{path}:{number}: not JSON ({exc.msg})") from None
            except RecursionError:  # "[[[[…" a hundred thousand deep
                raise EvalInputError(f"{path}:{number}: JSON nested too deeply") from None
        return "jsonl", rows
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EvalInputError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from None
    except RecursionError:
        raise EvalInputError(f"{path}: JSON nested too deeply") from None
    if isinstance(document, dict):  # e.g. {"model": …, "results": [...]}
        for key in ("results", "rows", "predictions"):
            if isinstance(document.get(key), list):
                document = document[key]
                break
    if not isinstance(document, list):
        raise EvalInputError(f"{path}: expected a JSON list of rows")
    return "json", [(index, row) for index, row in enumerate(document, start=1)]


def _windows(value, where: str, with_score: bool = False) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise EvalInputError(f"{where}: windows must be a list of [start, end]")
    out = []
    for item in value:
        size = 3 if with_score else 2
        if (not isinstance(item, (list, tuple)) or len(item) < 2 or len(item) > size
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in item)):
            raise EvalInputError(f"{where}: bad window {item!r} (expected [start, end"
                                 f"{', score' if with_score else ''}])")
        if not all(np.isfinite(item)) or item[1] < item[0]:
            raise EvalInputError(f"{where}: bad window {item!r} (need finite start <= end)")
        out.append([float(x) for x in item])
    return out


def read_grounding(path: Path, *, predictions: bool = False) -> list[dict]:
    """SpotSound-Bench rows → [{audio_path, caption, annotations, present?, score?}]."""
    kind, rows = _load_json(path)
    label = "line" if kind == "jsonl" else "row"
    out = []
    for number, row in rows:
        where = f"{path}: {label} {number}"
        if not isinstance(row, dict):
            raise EvalInputError(f"{where}: expected an object")
        # Ground truth must say "annotations": [] for a negative: a row that omits the key
        # (a truncated or hand-edited file) is not silently counted as an absent event.
        required = ("audio_path", "caption") if predictions else ("audio_path", "caption",
                                                                  "annotations")
        missing = [k for k in required if k not in row]
        if missing:
            raise EvalInputError(f"{where}: missing {', '.join(missing)}"
                                 + (" ([] for an absent event)" if "annotations" in missing
                                    else ""))
        item = {"audio_path": str(row["audio_path"]), "caption": clean_label(row["caption"]),
                "annotations": _windows(row.get("annotations", []), where), "where": where}
        if predictions:
            present = row.get("present")
            if present is not None and not isinstance(present, bool):
                raise EvalInputError(f"{where}: 'present' must be true or false")
            item["present"] = bool(item["annotations"]) if present is None else present
            key = "score" if "score" in row else "presence"  # flam ground -f json: presence
            if row.get(key) is not None:
                item["score"] = _number(row[key], where, repr(key))
        out.append(item)
    if not out:
        raise EvalInputError(f"{path}: no rows")
    return out


def is_lighthouse(path: Path) -> bool:
    kind, rows = _load_json(path)
    return bool(rows) and isinstance(rows[0][1], dict) and "qid" in rows[0][1]


def read_lighthouse(path: Path, *, predictions: bool = False) -> list[dict]:
    _, rows = _load_json(path)
    out = []
    key = "pred_relevant_windows" if predictions else "relevant_windows"
    for number, row in rows:
        where = f"{path}: line {number}"
        if not isinstance(row, dict) or "qid" not in row:
            raise EvalInputError(f"{where}: expected an object with 'qid'")
        if key not in row:
            raise EvalInputError(f"{where}: missing {key!r}")
        item = dict(row)
        item[key] = _windows(row[key], where, with_score=predictions)
        if predictions and any(len(w) < 3 for w in item[key]):
            raise EvalInputError(f"{where}: predicted windows need a score: [start, end, score]")
        out.append(item)
    return out


# -- set-IoU -----------------------------------------------------------------------------------
def union_of(intervals: Sequence[Sequence[float]], duration: float | None = None) -> list[tuple]:
    """Clip to [0, duration] and merge overlapping or touching intervals."""
    clipped = []
    for start, end, *_ in intervals:
        start = max(0.0, float(start))
        end = float(end) if duration is None else min(float(end), float(duration))
        if end > start:
            clipped.append((start, end))
    merged: list[list[float]] = []
    for start, end in sorted(clipped):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [tuple(x) for x in merged]


def _length(intervals) -> float:
    return float(sum(e - s for s, e in intervals))


def set_iou(predicted, reference, duration: float | None = None) -> float:
    """|∪P ∩ ∪G| / |∪P ∪ ∪G|; 0 when the prediction is empty; nan when both are empty."""
    p, g = union_of(predicted, duration), union_of(reference, duration)
    if not p and not g:
        return float("nan")
    inter, i, j = 0.0, 0, 0
    while i < len(p) and j < len(g):
        inter += max(0.0, min(p[i][1], g[j][1]) - max(p[i][0], g[j][0]))
        if p[i][1] < g[j][1]:
            i += 1
        else:
            j += 1
    union = _length(p) + _length(g) - inter
    return inter / union if union > 0 else 0.0


# -- SpotSound-style evaluation ----------------------------------------------------------------
def _match_key(path: str) -> str:
    return PurePosixPath(path.replace("\\", "/")).name


def match_rows(truth: list[dict], predicted: list[dict], source: str = "predictions") -> list[dict]:
    """For each ground-truth row its prediction, matched on (audio_path, caption), then on
    (file name, caption); repeated pairs match in order."""
    exact: dict[tuple, list] = {}
    by_name: dict[tuple, list] = {}
    for row in predicted:
        exact.setdefault((row["audio_path"], row["caption"]), []).append(row)
        by_name.setdefault((_match_key(row["audio_path"]), row["caption"]), []).append(row)
    used: set[int] = set()
    out = []
    for row in truth:
        candidates = [r for r in exact.get((row["audio_path"], row["caption"]), []) if id(r) not in used]
        if not candidates:
            candidates = [r for r in by_name.get((_match_key(row["audio_path"]), row["caption"]), [])
                          if id(r) not in used]
        if not candidates:
            raise EvalInputError(f"{source}: no prediction for {row['where'].split(': ', 1)[1]} "
                                 f"({row['audio_path']!r}, {row['caption']!r})")
        used.add(id(candidates[0]))
        out.append(candidates[0])
    # A second answer to a question already answered: the same answer is a harmless repeat,
    # a different one is a contradiction that must not be settled silently by file order.
    answers = {(r["audio_path"], r["caption"]): r for r in out}
    for row in predicted:
        first = answers.get((row["audio_path"], row["caption"]))
        if first is None or id(row) in used:
            continue
        if any(row.get(k) != first.get(k) for k in ("annotations", "present", "score")):
            raise EvalInputError(
                f"{first['where']} and {row['where'].split(': ', 1)[1]} answer "
                f"({row['audio_path']!r}, {row['caption']!r}) differently; keep one")
    return out


def evaluate_grounding(truth: list[dict], predicted: list[dict], *,
                       durations: Mapping[str, float] | None = None,
                       joint_iou: float = JOINT_IOU, source: str = "predictions") -> dict:
    """SpotSound-Bench metrics (module docstring); ``durations`` maps audio_path or file name
    (with or without extension) to seconds for clipping."""
    matched = match_rows(truth, predicted, source)
    durations = durations or {}

    def duration_of(path: str):
        name = _match_key(path)
        for key in (path, name, name.rsplit(".", 1)[0], path.rsplit(".", 1)[0]):
            if key in durations:
                return float(durations[key])
        return None

    ious, positives, negatives = [], [], []
    tp = fp = fn = 0
    rows = []
    for gt, pred in zip(truth, matched):
        present = bool(pred["present"])
        if gt["annotations"]:
            iou = set_iou(pred["annotations"] if present else [], gt["annotations"],
                          duration_of(gt["audio_path"]))
            ious.append(iou)
            positives.append(present)
            if not present:
                fn += 1
            elif iou >= joint_iou:
                tp += 1
            else:
                fp += 1
                fn += 1
            rows.append({"audio_path": gt["audio_path"], "caption": gt["caption"],
                         "positive": True, "present": present, "iou": iou})
        else:
            negatives.append(not present)
            fp += int(present)
            rows.append({"audio_path": gt["audio_path"], "caption": gt["caption"],
                         "positive": False, "present": present, "iou": None})
    iou_array = np.asarray(ious, dtype=float)
    report = {
        "task": "ground", "form": "spotsound", "queries": len(truth),
        "positives": len(positives), "negatives": len(negatives),
        "miou": float(iou_array.mean()) if len(ious) else None,
    }
    for tau in R1_THRESHOLDS:
        report[f"r1@{tau}"] = float((iou_array >= tau).mean()) if len(ious) else None
    report["presence_accuracy_positive"] = float(np.mean(positives)) if positives else None
    report["presence_accuracy_negative"] = float(np.mean(negatives)) if negatives else None
    denominator = 2 * tp + fp + fn
    report["joint_f1"] = 2 * tp / denominator if denominator else None
    report["joint_f1_counts"] = {"tp": tp, "fp": fp, "fn": fn, "iou_threshold": joint_iou}
    report["reconstructed"] = ["joint_f1"]
    report["notes"] = {
        "joint_f1": "reconstructed two-stage F1 (presence, then set-IoU >= iou_threshold); "
                    "not the SpotSound paper's text",
        "miou": "mean set-IoU over positive queries; an empty prediction scores 0",
    }
    report["per_query"] = rows
    return report


# -- Lighthouse (Moment-DETR) ------------------------------------------------------------------
def _iou_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Temporal IoU between every window of a [N, 2] and b [M, 2]."""
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    right = np.minimum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(right - left, 0, None)
    union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    mprec = np.concatenate(([0.0], precision, [0.0]))
    mrec = np.concatenate(([0.0], recall, [1.0]))
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def average_precision(gt_windows, pred_windows, thresholds: Sequence[float]) -> np.ndarray:
    """ActivityNet detection AP of one query at several IoU thresholds: predictions by
    descending score, each matched greedily to the best-overlapping unmatched reference."""
    ap = np.zeros(len(thresholds))
    if not pred_windows or not gt_windows:
        return ap
    order = sorted(range(len(pred_windows)), key=lambda i: -pred_windows[i][2])
    preds = np.asarray([pred_windows[i][:2] for i in order], dtype=float)
    gts = np.asarray([w[:2] for w in gt_windows], dtype=float)
    ious = _iou_pairs(preds, gts)
    tp = np.zeros((len(thresholds), len(preds)))
    fp = np.zeros_like(tp)
    locked = -np.ones((len(thresholds), len(gts)), dtype=int)
    for p in range(len(preds)):
        ranked = np.argsort(ious[p])[::-1]
        for t, threshold in enumerate(thresholds):
            for g in ranked:
                if ious[p, g] < threshold:
                    fp[t, p] = 1
                    break
                if locked[t, g] >= 0:
                    continue
                tp[t, p] = 1
                locked[t, g] = p
                break
            if tp[t, p] == 0 and fp[t, p] == 0:
                fp[t, p] = 1
    tp_sum, fp_sum = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
    recall = tp_sum / len(gts)
    precision = tp_sum / (tp_sum + fp_sum)
    for t in range(len(thresholds)):
        ap[t] = _interpolated_ap(precision[t], recall[t])
    return ap


def evaluate_lighthouse(truth: list[dict], predicted: list[dict], *,
                        source: str = "predictions") -> dict:
    by_qid = {}
    for row in predicted:
        by_qid[str(row["qid"])] = row
    r1_hits = {t: [] for t in LIGHTHOUSE_R1}
    top_ious, aps = [], []
    for row in truth:
        qid = str(row["qid"])
        if qid not in by_qid:
            raise EvalInputError(f"{source}: no prediction for qid {row['qid']!r}")
        windows = sorted(by_qid[qid]["pred_relevant_windows"], key=lambda w: -w[2])[:MAX_WINDOWS]
        gts = row["relevant_windows"]
        if windows and gts:
            ious = _iou_pairs(np.asarray([windows[0][:2]]), np.asarray(gts, dtype=float))[0]
            best = float(ious[int(np.argmax(ious))])
        else:
            best = 0.0
        top_ious.append(best)
        for t in LIGHTHOUSE_R1:
            r1_hits[t].append(best >= t)
        aps.append(average_precision(gts, windows, LIGHTHOUSE_MAP))
    ap = np.asarray(aps).mean(axis=0) if aps else np.full(len(LIGHTHOUSE_MAP), np.nan)
    report = {"task": "ground", "form": "lighthouse", "queries": len(truth)}
    for t in LIGHTHOUSE_R1:
        report[f"r1@{t}"] = float(np.mean(r1_hits[t])) if truth else None
    report["miou_top1"] = float(np.mean(top_ious)) if truth else None
    report["map@0.5"] = float(ap[0])
    report["map@0.75"] = float(ap[LIGHTHOUSE_MAP.index(0.75)])
    report["map"] = float(ap.mean())
    report["map_thresholds"] = list(LIGHTHOUSE_MAP)
    return report


def answer_rows(detector, truth: list[dict], audio_dir: Path,
                progress=None) -> tuple[list[dict], dict[str, float], list[str]]:
    """Answer every grounding row with ``detector`` (a :class:`flamcli.detection.Detector`
    made with grounding settings, so the answers are `flam ground`'s): present = a window
    survived, annotations = those windows, score = the presence. Each recording is scored
    once for all its captions. Returns (predicted rows, durations by ``audio_path``, errors);
    with any error the rows are incomplete and should not be evaluated."""
    from ..grounding import ground_with
    from .retrieval import resolve_audio

    paths = resolve_audio(audio_dir, [row["audio_path"] for row in truth], str(audio_dir))
    unique = list(dict.fromkeys(paths.values()))
    by_path, errors = {}, []
    for result in ground_with(detector, [str(p) for p in unique], progress=progress):
        if result.ok:
            by_path[Path(result.path).resolve()] = result
        else:
            errors.append(f"{result.file}: {result.error}")
    if errors:
        return [], {}, errors
    predicted, durations = [], {}
    for row in truth:
        result = by_path[paths[row["audio_path"]].resolve()]
        answer = next(a for a in result.answers if a.query == row["caption"])
        predicted.append({"audio_path": row["audio_path"], "caption": row["caption"],
                          "annotations": [[a, b] for a, b, _ in answer.intervals],
                          "present": bool(answer.present), "score": answer.presence})
        durations.setdefault(row["audio_path"], result.duration)
    return predicted, durations, errors
