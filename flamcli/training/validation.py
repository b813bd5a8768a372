"""SED metrics on a held-out `flam synth sed` folder while training (``--validation``)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..settings import DEFAULT_BATCH_SIZE, DEFAULT_MEDIAN_FILTER
from .data import DataError

VALIDATION_KEYS = ("psds1", "psds2", "auroc", "mpauc", "event_f1", "segment_f1")


def load_validation(folder: str | Path):
    """A validation folder's ground truth, durations, queries and audio inputs, checked.

    Cheap (no audio is decoded), so that ``flam train`` can refuse a bad folder before
    training instead of after it.
    """
    from ..audio import expand_inputs
    from ..evaluation import EvalInputError
    from ..evaluation.inputs import read_durations, read_events

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--validation {folder}: "
                        + ("not a folder" if folder.exists() else "no such folder"))
    try:
        truth, _ = read_events(folder / "ground_truth.tsv")
        lengths = read_durations(folder / "durations.tsv")
    except EvalInputError as exc:
        raise DataError(f"--validation {folder}: {exc}") from None
    queries = sorted({event[2] for events in truth.values() for event in events})
    if not queries:
        raise DataError(f"--validation {folder}: the ground truth has no events")
    audio = folder / "audio"
    if not audio.is_dir():
        raise DataError(f"--validation {folder}: no audio/ folder")
    inputs, problems = expand_inputs([str(audio)])
    if problems:
        raise DataError(f"--validation {folder}: {problems[0]}")
    # What scoring needs of the files (evaluate_sed checks the scores themselves later).
    undated = sorted(set(truth) - set(lengths))
    if undated:
        raise DataError(f"--validation {folder}: durations.tsv lists no duration for clip "
                        f"{undated[0]!r} of ground_truth.tsv")
    missing = sorted(set(lengths) - {item.stem for item in inputs})
    if missing:
        raise DataError(f"--validation {folder}: no audio file for clip {missing[0]!r} "
                        f"(audio/{missing[0]}.*)"
                        + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    return truth, lengths, queries, inputs


def validate(model, folder: str | Path, median_filter_frames: int = DEFAULT_MEDIAN_FILTER,
             batch_size: int = DEFAULT_BATCH_SIZE) -> dict:
    """Every validation query scored against every validation clip, as `flam eval sed` does."""
    from ..detection import iter_detect
    from ..evaluation import EvalInputError
    from ..evaluation.sed import evaluate_sed

    truth, lengths, queries, inputs = load_validation(folder)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            results = list(iter_detect(model, inputs, queries,
                                       median_filter_frames=median_filter_frames,
                                       batch_size=batch_size))
    finally:
        for module, training in modes.items():  # frozen towers stay as the trainer set them
            module.train(training)
    failed = [r for r in results if r.error]
    if failed:
        raise DataError(f"--validation: {failed[0].file}: {failed[0].error}")
    tables = {r.stem: (r.timestamps, r.scores) for r in results}
    try:
        report = evaluate_sed(tables, queries, truth, lengths).report
    except EvalInputError as exc:
        raise DataError(f"--validation {folder}: {exc}") from None
    return {key: report.get(key) for key in VALIDATION_KEYS}
