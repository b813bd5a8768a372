"""Evaluation figures (matplotlib, Agg): PSD-ROC, F1 against threshold, calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..files import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), format="png", dpi=100)
    plt.close(fig)
    return path


def plot_psd_roc(curves: dict, report: dict, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name in ("psds1", "psds2"):
        if name in curves:
            etpr, efpr = curves[name]
            ax.step(efpr, etpr, where="post", label=f"{name.upper()} = {report[name]:.3f}")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("effective false positives per hour")
    ax.set_ylabel("effective true positive rate")
    ax.set_title("PSD-ROC", loc="left")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def plot_f1_curves(curves: dict, threshold: float, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for query, (thresholds, f1) in curves.items():
        finite = np.isfinite(thresholds)
        ax.step(np.clip(thresholds[finite], 0, 1), f1[finite], where="pre", lw=1.2, label=query)
    ax.axvline(threshold, color="grey", ls="--", lw=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("threshold (a frame counts when its score reaches it)")
    ax.set_ylabel("collar-based F1")
    ax.set_title("event F1 against threshold", loc="left")
    ax.grid(alpha=0.3)
    if len(curves) <= 12:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def plot_calibration(calibration: dict, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    predicted = np.asarray(calibration["mean_predicted"], dtype=float)
    observed = np.asarray(calibration["observed"], dtype=float)
    used = np.isfinite(predicted) & np.isfinite(observed)
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8, label="perfect calibration")
    ax.plot(predicted[used], observed[used], marker="o", label=f"frames (ECE {calibration['ece']:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title("calibration", loc="left")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return _save(fig, path)


def write_sed_plots(evaluation, directory: Path) -> list[Path]:
    import warnings

    with warnings.catch_warnings():  # layout warnings with many queries: not the user's concern
        warnings.simplefilter("ignore")
        return _write_sed_plots(evaluation, directory)


def _write_sed_plots(evaluation, directory: Path) -> list[Path]:
    directory = Path(directory)
    written = []
    curves, report = evaluation.curves, evaluation.report
    if "psds1" in curves:
        written.append(plot_psd_roc(curves, report, directory / "psd_roc.png"))
    if "f1" in curves:
        written.append(plot_f1_curves(curves["f1"], report["threshold"], directory / "f1_threshold.png"))
    if "calibration" in curves:
        written.append(plot_calibration(curves["calibration"], directory / "calibration.png"))
    return written
