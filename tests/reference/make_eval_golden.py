"""Golden outputs of sed_scores_eval 0.0.4 on seeded random SED cases (run BY HAND).

flam implements PSDS, segment AUROC/MPAUC, collar-based and segment-based F1 natively
(``flamcli/evaluation/sed_metrics.py``). This script runs the reference implementation,
sed_scores_eval 0.0.4, on seeded random cases (several clips of different lengths, several
queries, each query absent from some clips, random events, random and event-correlated
scores, quantised scores with ties, events on frame boundaries) and stores inputs and outputs
in ``tests/data/eval_sed_golden.json``. ``tests/test_eval.py`` (default suite, no
sed_scores_eval needed) checks flam's numbers against it; ``test_live_sed_scores_eval`` also
compares on fresh cases when sed_scores_eval is importable.

sed_scores_eval 0.0.4 is an sdist that compiles Cython and fails with pandas 3, so it lives in
its own venv::

    python3.11 -m venv /tmp/sse-venv
    /tmp/sse-venv/bin/pip install "Cython>=3.2" numpy setuptools wheel
    /tmp/sse-venv/bin/pip install --no-build-isolation "sed_scores_eval==0.0.4" "pandas<3"
    # from the repository root:
    /tmp/sse-venv/bin/python tests/reference/make_eval_golden.py --out tests/data/eval_sed_golden.json

The case generator (``make_case``) is plain numpy so that the live test can reuse it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

QUERIES = ["dog barks", "car horn", "speech", "glass breaking", "rain on a roof"]


def _events(rng, duration: float, label: str, count: int, grid: float | None):
    """Up to ``count`` non-touching events of one label inside [0, duration]."""
    events, cursor = [], 0.0
    for _ in range(count):
        gap = rng.uniform(0.1, duration / (count + 1))
        length = rng.uniform(0.4, min(4.0, duration / 2))
        onset, offset = cursor + gap, cursor + gap + length
        if grid:
            onset, offset = np.round(onset / grid) * grid, np.round(offset / grid) * grid
        onset, offset = round(float(onset), 6), round(float(min(offset, duration)), 6)
        if offset - onset < 0.05 or (events and onset <= events[-1][1]):
            break
        events.append((onset, offset, label))
        cursor = offset
    return events


def make_case(seed: int, n_clips: int = 8, n_queries: int = 4, frame: float = 0.3125,
              quantise: int | None = None, correlated: bool = True, on_grid: bool = False,
              durations: tuple[float, float] = (6.0, 12.0)) -> dict:
    """One random evaluation case as JSON-ready dict (scores as lists of rows)."""
    rng = np.random.default_rng(seed)
    queries = QUERIES[:n_queries]
    case = {"seed": seed, "queries": queries, "clips": {}}
    for index in range(n_clips):
        clip = f"clip{index:03d}"
        duration = round(float(rng.uniform(*durations)), 4)
        n_frames = int(np.ceil(duration / frame))
        edges = np.arange(n_frames + 1) * frame
        edges[-1] = duration
        events = []
        for q in queries:
            if rng.random() < 0.35:  # this query is absent here: a negative
                continue
            events += _events(rng, duration, q, int(rng.integers(1, 4)), frame if on_grid else None)
        centres = (edges[:-1] + edges[1:]) / 2
        if correlated:
            # a usable detector: low scores outside events, high inside, some confusions
            values = rng.uniform(0, 0.6, (n_frames, len(queries))) ** 1.5
            for onset, offset, label in events:
                k = queries.index(label)
                inside = (centres > onset - frame / 2) & (centres < offset + frame / 2)
                level = rng.uniform(0.55, 1.0)
                values[inside, k] = np.clip(level + rng.normal(0, 0.08, inside.sum()), 0, 1)
            for _ in range(int(rng.integers(0, 3))):  # spurious bumps
                k, start = int(rng.integers(len(queries))), int(rng.integers(n_frames))
                values[start:start + int(rng.integers(1, 6)), k] = rng.uniform(0.3, 0.9)
        else:
            values = rng.uniform(0, 1, (n_frames, len(queries)))
        if quantise:
            values = np.round(values * quantise) / quantise
        values = np.round(values, 6)  # keeps the golden small; both sides see the same numbers
        case["clips"][clip] = {
            "duration": duration,
            "timestamps": [round(float(t), 6) for t in edges],
            "scores": values.tolist(),
            "events": sorted(events),
        }
    # every query needs an event somewhere (recall is undefined otherwise)
    for k, q in enumerate(queries):
        if not any(e[2] == q for c in case["clips"].values() for e in c["events"]):
            clip = case["clips"]["clip000"]
            clip["events"] = sorted(clip["events"] + [(0.5, 1.5 + 0.25 * k, q)])
            clip["events"] = _merge(clip["events"])
    return case


def _merge(events):
    out = []
    for onset, offset, label in sorted(events, key=lambda e: (e[2], e[0])):
        if out and out[-1][2] == label and onset <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], offset), label)
        else:
            out.append((onset, offset, label))
    return sorted(out)


CASES = [
    dict(seed=1, n_clips=16),
    dict(seed=2, n_clips=24, n_queries=5),
    dict(seed=3, quantise=10),  # many tied scores
    dict(seed=4, correlated=False),  # pure noise
    dict(seed=5, frame=0.2, on_grid=True, quantise=4),  # events on frame edges, plateaus
    dict(seed=6, n_clips=6, n_queries=3, frame=0.5, durations=(20.0, 40.0)),
]


def reference_metrics(case: dict) -> dict:
    """Every number flam's sed evaluation reports, from sed_scores_eval 0.0.4."""
    import sed_scores_eval
    from sed_scores_eval import collar_based, intersection_based, segment_based
    from sed_scores_eval.base_modules.scores import create_score_dataframe

    queries = case["queries"]
    scores = {c: create_score_dataframe(np.asarray(v["scores"]), np.asarray(v["timestamps"]),
                                        queries) for c, v in case["clips"].items()}
    gt = {c: [tuple(e) for e in v["events"]] for c, v in case["clips"].items()}
    durations = {c: v["duration"] for c, v in case["clips"].items()}

    def f(x):
        return {k: float(v) for k, v in x.items()}

    out = {"sed_scores_eval": sed_scores_eval.__name__ and "0.0.4"}
    for name, kw in (("psds1", dict(dtc_threshold=.7, gtc_threshold=.7, cttc_threshold=None,
                                    alpha_ct=0., alpha_st=1.)),
                     ("psds2", dict(dtc_threshold=.1, gtc_threshold=.1, cttc_threshold=.3,
                                    alpha_ct=.5, alpha_st=1.))):
        value, per_class, (etpr, efpr), _ = intersection_based.psds(
            scores, gt, durations, unit_of_time="hour", max_efpr=100., **kw)
        out[name] = {"value": float(value), "per_class": f(per_class),
                     "etpr": etpr.tolist(), "efpr": efpr.tolist()}
    auroc, _ = segment_based.auroc(scores, gt, durations, segment_length=0.3125)
    mpauc, _ = segment_based.auroc(scores, gt, durations, segment_length=1.0, max_fpr=0.1)
    out["auroc"], out["mpauc"] = f(auroc), f(mpauc)
    collar = dict(onset_collar=.2, offset_collar=.2, offset_collar_rate=.2)
    for threshold in (0.5, 0.7):
        fs, ps, rs, _ = collar_based.fscore(scores, gt, threshold, **collar)
        out[f"event_f1@{threshold}"] = {"f": f(fs), "p": f(ps), "r": f(rs)}
        fs, ps, rs, _ = segment_based.fscore(scores, gt, durations, threshold, segment_length=1.0)
        out[f"segment_f1@{threshold}"] = {"f": f(fs), "p": f(ps), "r": f(rs)}
    fs, ps, rs, thresholds, _ = collar_based.best_fscore(scores, gt, **collar)
    out["event_f1_best"] = {"f": f(fs), "p": f(ps), "r": f(rs), "thresholds": f(thresholds)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("tests/data/eval_sed_golden.json"))
    args = parser.parse_args()
    import importlib.metadata as md

    import pandas

    cases = []
    for spec in CASES:
        case = make_case(**spec)
        case["spec"] = spec
        case["expected"] = reference_metrics(case)
        cases.append(case)
        e = case["expected"]
        print(f"seed {spec['seed']}: psds1 {e['psds1']['value']:.6f} psds2 {e['psds2']['value']:.6f} "
              f"auroc {e['auroc']['mean']:.6f} mpauc {e['mpauc']['mean']:.6f} "
              f"event_f1 {e['event_f1@0.5']['f']['macro_average']:.6f}")
    document = {
        "made_with": {"sed_scores_eval": md.version("sed_scores_eval"), "numpy": np.__version__,
                      "pandas": pandas.__version__},
        "cases": cases,
    }
    args.out.write_text(json.dumps(document, separators=(",", ":")) + "\n")
    print(f"{args.out}: {args.out.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
