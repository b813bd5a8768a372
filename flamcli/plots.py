"""Every figure flam draws, in one place, all with matplotlib's Agg backend and written atomically:
detection results (spectrogram on top, one probability curve per query below, events shaded),
``flam eval sed --plots`` and ``flam train``'s loss curve.

matplotlib's layout warnings (thousands of queries, very long ones) are not the user's concern
and would print source lines on stderr: they are silenced while a figure is drawn.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .files import atomic_path

if TYPE_CHECKING:
    from .detection import FileResult


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG atomically and close it."""
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.savefig(str(tmp), format="png", dpi=dpi)
    pyplot().close(fig)
    return Path(path)


def _time_formatter(duration: float):
    from matplotlib.ticker import FuncFormatter

    def fmt(value, _pos):
        value = max(value, 0.0)
        if duration < 120:
            return f"{value:g}"
        hours, rest = divmod(int(round(value)), 3600)
        minutes, seconds = divmod(rest, 60)
        return f"{hours}:{minutes:02d}:{seconds:02d}" if duration >= 3600 else f"{minutes}:{seconds:02d}"

    return FuncFormatter(fmt)


def plot_result(result: FileResult, path: str | Path, dpi: int = 100) -> None:
    """Write a PNG. Long files stay readable: the spectrogram is pooled to a bounded number of
    columns, the time axis switches to m:ss / h:mm:ss, and the figure widens (up to a limit)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _plot_result(result, path, dpi)


def _plot_result(result: FileResult, path: str | Path, dpi: int) -> None:
    plt = pyplot()

    duration = max(result.duration, result.frame_seconds)
    width = float(np.clip(8 + duration / 60, 10, 24))
    has_spec = result.spectrogram is not None and result.spectrogram.counts.size > 0
    rows = 2 if has_spec else 1
    fig, axes = plt.subplots(rows, 1, figsize=(width, 6 if has_spec else 3.5), sharex=True,
                             squeeze=False, gridspec_kw={"height_ratios": [1, 1.2][-rows:]})
    axes = axes[:, 0]
    if has_spec:
        image = result.spectrogram.image()
        top = image.max()
        extent = [0, image.shape[1] * result.spectrogram.column_seconds, 0, image.shape[0]]
        axes[0].imshow(image, origin="lower", aspect="auto", extent=extent, cmap="magma",
                       vmin=top - 80, vmax=top, interpolation="nearest")
        axes[0].set_ylabel("mel bin")
        axes[0].set_title(result.file, loc="left", fontsize=10)
    ax = axes[-1]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    edges = result.timestamps
    for column, query in enumerate(result.queries):
        colour = colours[column % len(colours)]
        values = result.scores[:, column]
        ax.step(edges, np.append(values, values[-1:]), where="post", color=colour, lw=1.2,
                label=query)
        threshold = result.thresholds[column]
        ax.axhline(threshold, color=colour, ls="--", lw=0.8, alpha=0.7)
        for event in result.events:
            if event.query == query:
                ax.axvspan(event.onset, event.offset, color=colour, alpha=0.18, lw=0)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(0, duration)
    ax.set_ylabel("probability")
    ax.set_xlabel("time (s)" if duration < 120 else "time")
    ax.xaxis.set_major_formatter(_time_formatter(duration))
    if not has_spec:
        ax.set_title(result.file, loc="left", fontsize=10)
    ax.legend(loc="upper right", fontsize=8, ncol=min(4, len(result.queries)), framealpha=0.8)
    ax.grid(alpha=0.25)
    fig.tight_layout()
    save_figure(fig, path, dpi)


# -- flam eval sed --plots ----------------------------------------------------------------------
def _finish(fig, ax, path: Path, xlim, ylim, xlabel: str, ylabel: str, title: str, *,
            legend: str | None, legend_size: float | None = None) -> Path:
    """The common frame of the evaluation figures: limits, labels, grid, legend; then save."""
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left")
    ax.grid(alpha=0.3)
    if legend is not None:
        ax.legend(loc=legend, fontsize=legend_size)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_psd_roc(curves: dict, report: dict, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name in ("psds1", "psds2"):
        if name in curves:
            etpr, efpr = curves[name]
            ax.step(efpr, etpr, where="post", label=f"{name.upper()} = {report[name]:.3f}")
    return _finish(fig, ax, path, (0, 100), (0, 1.02), "effective false positives per hour",
                   "effective true positive rate", "PSD-ROC", legend="lower right")


def plot_f1_curves(curves: dict, threshold: float, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for query, (thresholds, f1) in curves.items():
        finite = np.isfinite(thresholds)
        ax.step(np.clip(thresholds[finite], 0, 1), f1[finite], where="pre", lw=1.2, label=query)
    ax.axvline(threshold, color="grey", ls="--", lw=0.8)
    return _finish(fig, ax, path, (0, 1), (0, 1.02),
                   "threshold (a frame counts when its score reaches it)", "collar-based F1",
                   "event F1 against threshold",
                   legend="best" if len(curves) <= 12 else None, legend_size=7)


def plot_calibration(calibration: dict, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    predicted = np.asarray(calibration["mean_predicted"], dtype=float)
    observed = np.asarray(calibration["observed"], dtype=float)
    used = np.isfinite(predicted) & np.isfinite(observed)
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8, label="perfect calibration")
    ax.plot(predicted[used], observed[used], marker="o", label=f"frames (ECE {calibration['ece']:.3f})")
    return _finish(fig, ax, path, (0, 1), (0, 1), "predicted probability",
                   "observed frequency", "calibration", legend="upper left")


def write_sed_plots(evaluation, directory: Path) -> list[Path]:
    """``flam eval sed --plots``: psd_roc.png, f1_threshold.png, calibration.png."""
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


# -- flam train -------------------------------------------------------------------------------------
def plot_losses(metrics: Path, target: Path) -> None:
    """``flam train``'s loss.png: every loss part against the step, from metrics.jsonl."""
    import json

    if not metrics.exists():  # resumed at --max-steps: no step ran, nothing to plot
        return
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not rows:
        return
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in rows]
    for key in ("loss", "sed", "global", "prior"):
        if key in rows[0]:
            ax.plot(steps, [r[key] for r in rows], label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, target)
