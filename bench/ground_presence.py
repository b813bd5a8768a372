"""Choose `flam ground`'s presence defaults: refusal of absent queries vs recall of present ones.

    python bench/ground_presence.py --model models/flam-tiny \
        --tune /work/corpus-data/tune-ground --report /work/corpus-data/val-ground

The model scores every (file, caption) of the tuning set once, unsmoothed. Every setting of
(median filter, threshold, minimum duration) is then applied to those scores exactly as
`flam ground` applies it (flamcli.events), and `flamcli.evaluation.grounding` gives refusal
(presence accuracy on negatives), recall (on positives) and mIoU. The chosen setting is the
one with the highest mIoU among those that refuse ≥ --min-refusal of negatives while
finding ≥ --min-recall of positives (if none does, the best balanced presence accuracy). It
is chosen on --tune and then measured once on --report (a different `flam synth ground` set
from the same held-out clips), so the reported numbers are not tuned on themselves.

Writes OUT.json (every setting's numbers on the tuning set, the choice, its numbers on the
report set overall and per background recording, its worst false alarms with what each file
held and what sounded at the peak; the threshold chosen by the same rule among the settings
with flam ground's own median filter and minimum duration, which is the one a model ships as
``presence_threshold``; and the most-refusing setting that keeps --min-recall on the tuning
set, measured on the report set: one comparison point for every model) and OUT.png
(refusal vs recall, one curve per minimum duration).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchlib import background_names, mixture_plan
from flamcli.detection import iter_detect
from flamcli.evaluation.grounding import evaluate_grounding, read_grounding
from flamcli.events import median_filter, scores_to_events
from flamcli.settings import DEFAULT_GROUND_MEDIAN_FILTER, DEFAULT_MIN_DURATION
from flamcli.models import load_model

HERE = Path(__file__).resolve().parent


# Finer steps at the top, where a small model's refusal/recall trade-off lives.
THRESHOLDS = sorted({round(float(x), 3) for x in np.arange(0.30, 0.90, 0.025)}
                    | {round(float(x), 3) for x in np.arange(0.90, 0.9951, 0.005)})
MIN_DURATIONS = [0.0, 0.3, 0.6, 0.9, 1.2]
MEDIANS = [1, 3, 5]


def raw_scores(model, folder: Path, truth: list[dict], overlap: float = 2.5):
    """{audio_path: FileResult with unsmoothed scores} for every file of a grounding set."""
    captions = list(dict.fromkeys(row["caption"] for row in truth))
    files = list(dict.fromkeys(row["audio_path"] for row in truth))
    by_location = {str((folder / f).resolve()): f for f in files}
    results = {}
    for result in iter_detect(model, [str(folder / f) for f in files], captions,
                              median_filter_frames=1, min_duration=0.0, overlap=overlap):
        if not result.ok:
            raise SystemExit(f"{result.file}: {result.error}")
        results[by_location[str(Path(result.path).resolve())]] = result
    return results


def answer(truth, results, median: int, threshold: float, min_duration: float) -> list[dict]:
    predicted = []
    smoothed = {p: median_filter(r.scores, median) for p, r in results.items()}
    for row in truth:
        result = results[row["audio_path"]]
        column = result.queries.index(row["caption"])
        scores = smoothed[row["audio_path"]][:, column:column + 1]
        events = scores_to_events(scores, [row["caption"]], result.frame_seconds,
                                  result.duration, [threshold], min_duration=min_duration)
        predicted.append({"audio_path": row["audio_path"], "caption": row["caption"],
                          "annotations": [[e.onset, e.offset] for e in events],
                          "present": bool(events)})
    return predicted


def measure(truth, results, median, threshold, min_duration) -> dict:
    durations = {p: r.duration for p, r in results.items()}
    report = evaluate_grounding(truth, answer(truth, results, median, threshold, min_duration),
                                durations=durations)
    return {"median_filter": median, "threshold": threshold, "min_duration": min_duration,
            "refusal": report["presence_accuracy_negative"],
            "recall": report["presence_accuracy_positive"], "miou": report["miou"],
            "r1@0.3": report["r1@0.3"], "r1@0.5": report["r1@0.5"],
            "joint_f1": report["joint_f1"]}


def peak_source(plan: dict, seconds: float, tolerance: float) -> str:
    """The labelled event sounding at ``seconds`` (± tolerance), or "background"."""
    for label, intervals in sorted(plan.get("labels", {}).items()):
        if any(onset - tolerance <= seconds <= offset + tolerance for onset, offset in intervals):
            return label
    return "background"


def false_alarms(folder: Path, truth, results, answers, median) -> list[dict]:
    """Every absent query answered present, highest score first: what the file held and
    what was sounding at the peak (another event, or only the background)."""
    out = []
    for row, answer_row in zip(truth, answers):
        if row["annotations"] or not answer_row["present"]:
            continue
        result = results[row["audio_path"]]
        column = result.queries.index(row["caption"])
        smoothed = median_filter(result.scores[:, column:column + 1], median)[:, 0]
        item = {"audio_path": row["audio_path"], "caption": row["caption"],
                "score": round(float(smoothed.max()), 4)}
        plan = mixture_plan(folder, row["audio_path"])
        if plan is not None:
            item["events"] = sorted({o["label"] for o in plan.get("occurrences", [])})
            item["background"] = background_names(plan)
            peak_seconds = (int(smoothed.argmax()) + 0.5) * result.frame_seconds
            item["peak_on"] = peak_source(plan, peak_seconds, result.frame_seconds)
        out.append(item)
    return sorted(out, key=lambda r: -r["score"])


def at_recall(rows: list[dict], min_recall: float) -> dict | None:
    """The setting that refuses most while finding ≥ min_recall: a model-to-model comparison
    at one recall, whatever the chosen balance."""
    eligible = [r for r in rows if r["recall"] >= min_recall]
    return max(eligible, key=lambda r: (r["refusal"], r["miou"])) if eligible else None


def by_background(folder: Path, truth, answers) -> dict:
    """Refusal and recall per background recording: is presence limited by what it is heard in?"""
    counts: dict[str, list[int]] = {}
    for row, answer_row in zip(truth, answers):
        plan = mixture_plan(folder, row["audio_path"])
        if plan is None:
            return {}
        name = ",".join(background_names(plan)) or "-"
        c = counts.setdefault(name, [0, 0, 0, 0])  # negatives, refused, positives, found
        if row["annotations"]:
            c[2] += 1
            c[3] += answer_row["present"]
        else:
            c[0] += 1
            c[1] += not answer_row["present"]
    return {name: {"negatives": n, "refusal": round(r / n, 4) if n else None,
                   "positives": m, "recall": round(f / m, 4) if m else None}
            for name, (n, r, m, f) in sorted(counts.items())}


def choose(rows: list[dict], min_refusal: float, min_recall: float) -> dict:
    ok = [r for r in rows if r["refusal"] >= min_refusal and r["recall"] >= min_recall]
    if ok:
        return max(ok, key=lambda r: (r["miou"], r["refusal"] + r["recall"]))
    return max(rows, key=lambda r: (r["refusal"] + r["recall"], r["miou"]))


def plot(rows: list[dict], chosen: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for duration in MIN_DURATIONS:
        line = sorted((r for r in rows if r["median_filter"] == chosen["median_filter"]
                       and r["min_duration"] == duration), key=lambda r: r["threshold"])
        ax.plot([r["recall"] for r in line], [r["refusal"] for r in line], marker=".",
                label=f"min duration {duration:g} s")
    ax.scatter([chosen["recall"]], [chosen["refusal"]], s=120, facecolors="none",
               edgecolors="black", zorder=5,
               label=f"default: threshold {chosen['threshold']:g}, {chosen['min_duration']:g} s")
    ax.axhline(0.95, color="grey", lw=0.8, ls="--")
    ax.axvline(0.85, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("positives found (recall)")
    ax.set_ylabel("negatives refused")
    ax.set_title(title, fontsize=9)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--tune", type=Path, required=True, help="flam synth ground folder (tuning)")
    ap.add_argument("--report", type=Path, help="flam synth ground folder (reported numbers)")
    ap.add_argument("--min-refusal", type=float, default=0.95)
    ap.add_argument("--min-recall", type=float, default=0.85)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ground-presence")
    ap.add_argument("--overlap", type=float, default=2.5,
                    help="seconds of overlap between model windows (flam ground --overlap)")
    args = ap.parse_args(argv)

    model = load_model(args.model)
    truth = read_grounding(args.tune / "grounding.json")
    results = raw_scores(model, args.tune, truth, args.overlap)
    rows = [measure(truth, results, m, t, d)
            for m in MEDIANS for t in THRESHOLDS for d in MIN_DURATIONS]
    chosen = choose(rows, args.min_refusal, args.min_recall)
    out = {"model": model.info.as_dict(), "overlap": args.overlap, "tune": str(args.tune),
           "settings": rows,
           "targets": {"refusal": args.min_refusal, "recall": args.min_recall},
           "chosen": chosen}
    print("chosen on the tuning set:", json.dumps(chosen), file=sys.stderr)
    if args.report is not None:
        report_truth = read_grounding(args.report / "grounding.json")
        report_results = raw_scores(model, args.report, report_truth, args.overlap)
        out["report"] = {"folder": str(args.report), **measure(
            report_truth, report_results, chosen["median_filter"], chosen["threshold"],
            chosen["min_duration"])}
        print("on the report set:", json.dumps(out["report"]), file=sys.stderr)
        answers = answer(report_truth, report_results, chosen["median_filter"],
                         chosen["threshold"], chosen["min_duration"])
        out["report"]["by_background"] = by_background(args.report, report_truth, answers)
        alarms = false_alarms(args.report, report_truth, report_results, answers,
                              chosen["median_filter"])
        on_background = sum(a.get("peak_on") == "background" for a in alarms)
        out["report"]["false_alarm_peaks"] = {"on_another_event": len(alarms) - on_background,
                                              "on_background_only": on_background}
        out["report"]["false_alarms"] = alarms[:25]
        # The threshold a model should ship (config.json presence_threshold): the same rule,
        # among the settings that keep flam ground's own median filter and minimum duration.
        own = choose([r for r in rows if r["median_filter"] == DEFAULT_GROUND_MEDIAN_FILTER
                      and r["min_duration"] == DEFAULT_MIN_DURATION],
                     args.min_refusal, args.min_recall)
        out["for_defaults"] = {"tune": own, "report": measure(
            report_truth, report_results, own["median_filter"], own["threshold"],
            own["min_duration"])}
        print("with flam ground's defaults:", json.dumps(out["for_defaults"]), file=sys.stderr)
        fixed = at_recall(rows, args.min_recall)
        if fixed is not None:  # the same comparison point for every model
            out["at_target_recall"] = {"tune": fixed, "report": measure(
                report_truth, report_results, fixed["median_filter"], fixed["threshold"],
                fixed["min_duration"])}
            print("at the target recall:", json.dumps(out["at_target_recall"]), file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(out, indent=1) + "\n")
    plot(rows, chosen, args.out.with_suffix(".png"),
         f"{model.info.name}: {args.tune.name}, median filter {chosen['median_filter']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
