"""What a perfect model with FLAM's frame grid could score on a `flam synth sed` set.

    python bench/sed_ceiling.py /work/corpus-data/val-sed
    python bench/sed_ceiling.py /work/corpus-data/val-sed --frame-seconds 0.15625 0.078125 0.04


The oracle's score for (clip, query, frame) is the fraction of the frame the ground truth
covers (so the threshold sweep can pick "any overlap" or "mostly covered"), on the model's
grid of 0.3125 s frames (or each --frame-seconds given). Its PSDS1/PSDS2/AUROC are the
ceilings any flam-tiny or openflam-v1-base could reach: PSDS1's detection- and
ground-truth-tolerance criteria (0.7) cannot be met for events much shorter than a frame.
Other frame lengths show what a finer-grained model could reach. Writes OUT (JSON: one entry,
or a list with one per frame length) and prints it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchlib import write_result
from flamcli.evaluation.inputs import read_durations, read_event_table
from flamcli.evaluation.sed import evaluate_sed

HERE = Path(__file__).resolve().parent


FRAME_SECONDS = 10.0 / 32  # FLAM's grid: 32 frames per 10 s window


def oracle_scores(ground_truth: dict, durations: dict, queries: list[str],
                  frame_seconds: float = FRAME_SECONDS) -> dict:
    scores = {}
    for clip, duration in durations.items():
        frames = int(np.ceil(duration / frame_seconds - 1e-9))
        edges = np.minimum(np.arange(frames + 1) * frame_seconds, duration)
        values = np.zeros((frames, len(queries)))
        for onset, offset, label in ground_truth.get(clip, []):
            k = queries.index(label)
            overlap = np.clip(np.minimum(edges[1:], offset) - np.maximum(edges[:-1], onset), 0, None)
            values[:, k] = np.maximum(values[:, k], overlap / np.diff(edges))
        scores[clip] = (edges, values)
    return scores


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a `flam synth sed` output folder")
    ap.add_argument("--frame-seconds", type=float, nargs="+", default=[FRAME_SECONDS],
                    help="frame lengths to score the oracle on (default: FLAM's 0.3125 s)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "sed-ceiling.json")
    args = ap.parse_args(argv)
    truth = read_event_table(args.folder / "ground_truth.tsv")
    durations = read_durations(args.folder / "durations.tsv")
    queries = sorted({label for events in truth.values() for _, _, label in events})
    keep = ("psds1", "psds2", "auroc", "mpauc", "event_f1", "segment_f1")
    lengths = np.array([b - a for events in truth.values() for a, b, _ in events])
    entries = []
    for frame_seconds in args.frame_seconds:
        report = evaluate_sed(oracle_scores(truth, durations, queries, frame_seconds), queries,
                              truth, durations)
        entries.append({"folder": str(args.folder), "frame_seconds": frame_seconds,
                        "events": int(lengths.size),
                        "events_shorter_than_one_frame": float(np.mean(lengths < frame_seconds)),
                        "oracle": {k: report.report[k] for k in keep}})
    out = entries[0] if len(entries) == 1 else entries
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
