"""Result figures: spectrogram on top, one probability curve per query below, events shaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .detection import FileResult


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
    columns, the time axis switches to m:ss / h:mm:ss, and the figure widens (up to a limit).
    matplotlib's layout warnings (thousands of queries, very long ones) are not the user's
    concern and would print source lines on stderr: they are silenced here."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _plot_result(result, path, dpi)


def _plot_result(result: FileResult, path: str | Path, dpi: int) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

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
    fig.savefig(str(path), format="png", dpi=dpi)
    plt.close(fig)
