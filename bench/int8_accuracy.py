#!/usr/bin/env python
"""--precision int8 against fp32 on a `flam synth sed` validation folder, through the CLI.

For each precision, in a fresh process each (order alternating over ``--rounds``):
``flam detect AUDIO --queries LABELS -o OUT --no-plot --precision P --threads T`` (wall time),
then ``flam eval sed --scores OUT`` (segment AUROC, PSDS1, MPAUC). The two runs' frame
probability tables are then compared frame by frame: largest difference, and the share of
(frame, query) decisions that are the same at the model's threshold and at 0.5.

The issue's bounds for int8: segment AUROC within 0.005 of fp32, decisions the same on at least
99% of frames.

Example (flam-tiny's validation split, rebuilt as in models/flam-tiny/README.md)::

    python bench/int8_accuracy.py --folder /work/corpus-data/val-sed --model flam-tiny \\
        -o bench/results/int8-flam-tiny.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PRECISIONS = ("fp32", "int8")


def run(command: list[str], env: dict | None = None) -> float:
    began = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def read_scores(folder: Path) -> dict[str, np.ndarray]:
    """<stem>.scores.tsv → [frames, queries] (columns in the file's order)."""
    tables = {}
    for path in sorted(folder.glob("*.scores.tsv")):
        with path.open(encoding="utf-8") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
        tables[path.name] = np.array([[float(v) for v in row[2:]] for row in rows[1:]])
    return tables


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray], thresholds: list[float]) -> dict:
    if a.keys() != b.keys():
        raise SystemExit("the two runs wrote different score tables")
    x = np.concatenate([a[k].ravel() for k in sorted(a)])
    y = np.concatenate([b[k].ravel() for k in sorted(b)])
    out = {"frame_decisions": int(x.size), "max_abs_prob_diff": float(np.abs(x - y).max()),
           "mean_abs_prob_diff": float(np.abs(x - y).mean())}
    for t in thresholds:
        same = (x >= t) == (y >= t)
        out[f"same_decision_at_{t:g}"] = float(same.mean())
        out[f"positives_at_{t:g}"] = [int((x >= t).sum()), int((y >= t).sum())]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, required=True,
                        help="a `flam synth sed` folder (audio/, ground_truth.tsv, durations.tsv)")
    parser.add_argument("--model", default="flam-tiny")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="timed detect runs per precision")
    parser.add_argument("--threshold", type=float, default=None,
                        help="the model's threshold (default: read from `flam models --json`)")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)

    folder = args.folder.resolve()
    labels = sorted({row[3] for row in csv.reader(
        (folder / "ground_truth.tsv").open(encoding="utf-8"), delimiter="\t")} - {"event_label"})
    threshold = args.threshold
    if threshold is None:  # what `flam detect` uses for this model by default
        from flamcli.models.registry import load_model

        threshold = load_model(args.model, device="cpu").config.presence_threshold
    env = dict(os.environ)
    results: dict = {"folder": str(folder), "model": args.model, "threads": args.threads,
                     "queries": len(labels), "model_threshold": threshold,
                     "clips": len(list((folder / "audio").iterdir())),
                     "command": "python bench/int8_accuracy.py " + " ".join(
                         sys.argv[1:] if argv is None else argv)}
    with tempfile.TemporaryDirectory(prefix="flam-int8-") as tmp:
        tmp = Path(tmp)
        (tmp / "queries.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
        seconds = {p: [] for p in PRECISIONS}
        for round_ in range(args.rounds):
            order = PRECISIONS if round_ % 2 == 0 else PRECISIONS[::-1]
            for precision in order:
                out = tmp / precision
                seconds[precision].append(run(
                    ["flam", "detect", str(folder / "audio"), "--queries", str(tmp / "queries.txt"),
                     "-o", str(out), "--no-plot", "--quiet", "--model", args.model,
                     "--precision", precision, "--threads", str(args.threads)], env))
        for precision in PRECISIONS:
            report = tmp / f"eval-{precision}.json"
            run(["flam", "eval", "sed", "-g", str(folder / "ground_truth.tsv"),
                 "-d", str(folder / "durations.tsv"), "--scores", str(tmp / precision),
                 "-o", str(report), "--quiet"], env)
            metrics = json.loads(report.read_text(encoding="utf-8"))
            results[precision] = {k: metrics[k] for k in ("auroc", "psds1", "psds2", "mpauc",
                                                          "best_event_f1")}
            results[precision]["detect_s"] = seconds[precision]
        results["comparison"] = compare(read_scores(tmp / "fp32"), read_scores(tmp / "int8"),
                                        sorted({threshold, 0.5}))
    fp32, int8 = results["fp32"], results["int8"]
    results["auroc_delta"] = int8["auroc"] - fp32["auroc"]
    results["detect_speed_up"] = min(fp32["detect_s"]) / min(int8["detect_s"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in results.items() if k != "command"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
