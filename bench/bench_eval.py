#!/usr/bin/env python
"""Benchmark ``flam eval sed`` on precomputed scores: 1000 clips × 20 queries by default.

The evaluation set is synthetic and seeded: 10 s clips, FLAM's 0.3125 s frames (32 per clip),
every query absent from about two clips in three (the open-vocabulary protocol scores it
there as a negative), 1–3 events where present, scores that are high inside events and low
elsewhere with random confusions. It is written once as flam would leave it
(``<clip>.scores.tsv`` per clip, a DCASE ground-truth TSV and durations) under ``--data-dir``.

Timed, each ``--repeats`` times in this process:

* ``read``: parsing the 1000 score tables, the ground truth and the durations;
* ``metrics``: :func:`flamcli.evaluation.evaluate_sed` (PSDS1, PSDS2, MPAUC, AUROC, event F1,
  segment F1, best-F1 thresholds per query, calibration);
* ``cli``: the whole ``flam eval sed … --scores DIR`` command in a fresh process (imports,
  reading, metrics, JSON), once.

With ``--reference PYTHON`` (a python with sed_scores_eval 0.0.4, e.g. /tmp/sse-venv/bin/python)
the same metrics are also timed with sed_scores_eval and the values compared.

Examples::

    python bench/bench_eval.py                        # → bench/results/eval.json
    python bench/bench_eval.py --clips 100 --out bench/results/eval-quick.json
    python bench/bench_eval.py --reference /tmp/sse-venv/bin/python
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

QUERIES = [
    "dog barks", "a car horn honks", "a person speaking", "glass breaking", "a baby crying",
    "footsteps on a wooden floor", "rain falling on a roof", "a door slams shut",
    "an alarm clock ringing", "birds chirping", "a siren wailing", "applause from a crowd",
    "a cat meowing", "music playing on a piano", "water running from a tap",
    "a telephone ringing", "thunder rumbling", "a vacuum cleaner", "keyboard typing",
    "an engine idling",
]
FRAME = 0.3125
DURATION = 10.0


def make_data(directory: Path, clips: int, queries: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    names = QUERIES[:queries]
    scores_dir = directory / "scores"
    scores_dir.mkdir(parents=True, exist_ok=True)
    n_frames = int(np.ceil(DURATION / FRAME))
    edges = np.arange(n_frames + 1) * FRAME
    centres = (edges[:-1] + edges[1:]) / 2
    gt = ["filename\tonset\toffset\tevent_label"]
    durations = ["filename\tduration"]
    for index in range(clips):
        clip = f"clip{index:05d}"
        values = rng.uniform(0, 0.6, (n_frames, queries)) ** 1.5
        rows = []
        for k, query in enumerate(names):
            if rng.random() < 0.65:
                continue
            cursor = 0.0
            for _ in range(int(rng.integers(1, 4))):
                onset = round(cursor + rng.uniform(0.1, 3.0), 3)
                offset = round(min(onset + rng.uniform(0.4, 3.0), DURATION), 3)
                if offset - onset < 0.2:
                    break
                rows.append(f"{clip}.wav\t{onset}\t{offset}\t{query}")
                inside = (centres > onset - FRAME / 2) & (centres < offset + FRAME / 2)
                values[inside, k] = np.clip(rng.uniform(0.55, 1.0) + rng.normal(0, 0.08, inside.sum()), 0, 1)
                cursor = offset + 0.1
        for _ in range(int(rng.integers(0, 3))):
            k, start = int(rng.integers(queries)), int(rng.integers(n_frames))
            values[start:start + int(rng.integers(1, 6)), k] = rng.uniform(0.3, 0.9)
        gt += rows or [f"{clip}.wav\t\t\t"]
        durations.append(f"{clip}.wav\t{DURATION}")
        lines = ["onset\toffset\t" + "\t".join(names)]
        lines += [f"{edges[i]:.6f}\t{edges[i + 1]:.6f}\t" + "\t".join(f"{v:.9g}" for v in row)
                  for i, row in enumerate(values)]
        (scores_dir / f"{clip}.scores.tsv").write_text("\n".join(lines) + "\n")
    (directory / "ground_truth.tsv").write_text("\n".join(gt) + "\n")
    (directory / "durations.tsv").write_text("\n".join(durations) + "\n")


REFERENCE_SNIPPET = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
from sed_scores_eval import collar_based, intersection_based, segment_based, io
d = sys.argv[1]
t0 = time.perf_counter()
scores = io.read_sed_scores(d + "/scores_sse")
gt = io.read_ground_truth_events(d + "/ground_truth.tsv")
for k in scores:
    gt.setdefault(k, [])
dur = io.read_audio_durations(d + "/durations.tsv")
t1 = time.perf_counter()
out = {}
out["psds1"] = intersection_based.psds(scores, gt, dur, dtc_threshold=.7, gtc_threshold=.7, cttc_threshold=None, alpha_ct=0., alpha_st=1., max_efpr=100.)[0]
out["psds2"] = intersection_based.psds(scores, gt, dur, dtc_threshold=.1, gtc_threshold=.1, cttc_threshold=.3, alpha_ct=.5, alpha_st=1., max_efpr=100.)[0]
out["mpauc"] = segment_based.auroc(scores, gt, dur, segment_length=1., max_fpr=.1)[0]["mean"]
out["auroc"] = segment_based.auroc(scores, gt, dur, segment_length=.3125)[0]["mean"]
out["event_f1"] = collar_based.fscore(scores, gt, .5, onset_collar=.2, offset_collar=.2, offset_collar_rate=.2)[0]["macro_average"]
out["segment_f1"] = segment_based.fscore(scores, gt, dur, .5, segment_length=1.)[0]["macro_average"]
out["best_event_f1"] = collar_based.best_fscore(scores, gt, onset_collar=.2, offset_collar=.2, offset_collar_rate=.2)[0]["macro_average"]
t2 = time.perf_counter()
print(json.dumps({"read_s": t1 - t0, "metrics_s": t2 - t1, "values": {k: float(v) for k, v in out.items()}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/flam-bench-eval"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "eval.json")
    parser.add_argument("--reference", help="python with sed_scores_eval 0.0.4 to compare with")
    args = parser.parse_args()

    data = args.data_dir / f"{args.clips}x{args.queries}"
    if not (data / "durations.tsv").exists():
        t = time.perf_counter()
        make_data(data, args.clips, args.queries)
        print(f"made {data} in {time.perf_counter() - t:.1f} s", file=sys.stderr)

    from flamcli.evaluation.inputs import read_durations, read_events, read_scores
    from flamcli.evaluation.sed import evaluate_sed

    runs = []
    report = None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        queries, tables = read_scores(data / "scores")
        truth, _ = read_events(data / "ground_truth.tsv")
        durations = read_durations(data / "durations.tsv")
        t1 = time.perf_counter()
        evaluation = evaluate_sed(tables, queries, truth, durations, threshold=0.5)
        t2 = time.perf_counter()
        runs.append({"read_s": t1 - t0, "metrics_s": t2 - t1, "total_s": t2 - t0})
        report = evaluation.report
        print(f"read {t1 - t0:.2f} s, metrics {t2 - t1:.2f} s", file=sys.stderr)

    t = time.perf_counter()
    command = [sys.executable, "-c", "import sys, flamcli.cli.evaluate; from flamcli.cli.app import main; "
               "sys.argv = ['flam'] + sys.argv[1:]; main()", "eval", "sed",
               "-g", str(data / "ground_truth.tsv"), "-d", str(data / "durations.tsv"),
               "--scores", str(data / "scores"), "--quiet", "-o", str(data / "report.json")]
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    cli_s = time.perf_counter() - t
    print(f"flam eval sed (fresh process): {cli_s:.2f} s", file=sys.stderr)

    values = {k: report[k] for k in ("psds1", "psds2", "mpauc", "auroc", "event_f1",
                                     "segment_f1", "best_event_f1")}
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "platform": platform.platform(), "date": _dt.date.today().isoformat()},
        "command": " ".join(["python bench/bench_eval.py"] + sys.argv[1:]),
        "data": {"clips": args.clips, "queries": args.queries, "clip_seconds": DURATION,
                 "frame_seconds": FRAME, "frames_per_clip": int(np.ceil(DURATION / FRAME)),
                 "ground_truth_events": sum(len(v) for v in truth.values())},
        "runs": runs,
        "best": {k: min(r[k] for r in runs) for k in ("read_s", "metrics_s", "total_s")},
        "cli_fresh_process_s": cli_s,
        "values": values,
        "budget_s": 60.0,
    }
    if args.reference:
        sse_dir = data / "scores_sse"
        if not sse_dir.exists():  # sed_scores_eval wants <clip>.tsv and nothing else
            sse_dir.mkdir()
            for file in (data / "scores").iterdir():
                os.symlink(file, sse_dir / file.name.replace(".scores.tsv", ".tsv"))
        out = subprocess.run([args.reference, "-c", REFERENCE_SNIPPET, str(data)], check=True,
                             capture_output=True, text=True)
        reference = json.loads(out.stdout.strip().splitlines()[-1])
        reference["max_abs_difference"] = max(abs(reference["values"][k] - values[k]) for k in values)
        result["sed_scores_eval_0.0.4"] = reference
        print(f"sed_scores_eval: read {reference['read_s']:.2f} s, metrics "
              f"{reference['metrics_s']:.2f} s, max |Δ| {reference['max_abs_difference']:.2e}",
              file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"best": result["best"], "cli_fresh_process_s": cli_s, "values": values}, indent=2))


if __name__ == "__main__":
    main()
