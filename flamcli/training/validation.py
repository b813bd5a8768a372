"""SED metrics on a held-out `flam synth sed` folder while training (``--validation``)."""

from __future__ import annotations

from pathlib import Path

import torch

from .data import DataError

VALIDATION_KEYS = ("psds1", "psds2", "auroc", "mpauc", "event_f1", "segment_f1")


def validate(model, folder: str | Path, median_filter_frames: int = 3,
             batch_size: int = 8) -> dict:
    """Every validation query scored against every validation clip, as `flam eval sed` does."""
    from ..detection import iter_detect
    from ..evaluation import EvalInputError
    from ..evaluation.inputs import read_durations, read_events
    from ..evaluation.sed import evaluate_sed

    folder = Path(folder)
    try:
        truth, _ = read_events(folder / "ground_truth.tsv")
        lengths = read_durations(folder / "durations.tsv")
    except EvalInputError as exc:
        raise DataError(f"--validation {folder}: {exc}") from None
    queries = sorted({event[2] for events in truth.values() for event in events})
    if not queries:
        raise DataError(f"--validation {folder}: the ground truth has no events")
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            results = list(iter_detect(model, [str(folder / "audio")], queries,
                                       median_filter_frames=median_filter_frames,
                                       batch_size=batch_size))
    finally:
        for module, training in modes.items():  # frozen towers stay as the trainer set them
            module.train(training)
    failed = [r for r in results if r.error]
    if failed:
        raise DataError(f"--validation: {failed[0].file}: {failed[0].error}")
    tables = {r.stem: (r.timestamps, r.scores) for r in results}
    report = evaluate_sed(tables, queries, truth, lengths).report
    return {key: report.get(key) for key in VALIDATION_KEYS}
