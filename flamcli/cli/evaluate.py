"""``flam eval``: SED, grounding, retrieval and zero-shot classification metrics.

Thin layer over :mod:`flamcli.evaluation`: parse options, read inputs (or run the model), print
a table on stderr and the JSON report on stdout (or ``--output``, written atomically).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..settings import (DEFAULT_BATCH_SIZE, DEFAULT_GROUND_MEDIAN_FILTER, DEFAULT_MEDIAN_FILTER,
                        DEFAULT_MIN_DURATION, DEFAULT_OVERLAP, MAX_MEDIAN_FILTER)
from .common import (BatchOption, DeviceOption, ExitCode, Log, ModelOption, describe_model,
                     Precision, PrecisionOption, QuietOption,
                     RevisionOption, ThreadsOption, configure_torch, progress_bar)

eval_app = typer.Typer(
    name="eval",
    help="Score a model or saved predictions with the field's standard metrics.\n\n"
         "sed: PSDS1/PSDS2, MPAUC, AUROC, event and segment F1. ground: set-IoU, mIoU, R1@τ, "
         "presence accuracy, joint F1 (reconstructed), Lighthouse R1/mAP. retrieval: R@1/5/10. "
         "classify: top-1/top-5 accuracy. JSON on stdout, a table on stderr.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

OutputOption = Annotated[Optional[Path], typer.Option(
    "-o", "--output", dir_okay=False, help="Write the JSON report here (atomically) instead of stdout.")]
AudioOption = Annotated[Optional[Path], typer.Option(
    "--audio", help="Audio folder: run the model (--model) on it.")]
ThresholdOption = Annotated[float, typer.Option(
    "-t", "--threshold", min=0.0, max=1.0, help="Detection threshold (calibrated probability).")]


class _Stop(Exception):
    def __init__(self, code: int):
        self.code = code


def _emit(report: dict, output: Path | None, log: Log) -> None:
    from ..files import write_text_atomic

    text = json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    if output is not None:
        try:
            write_text_atomic(output, text)
        except OSError as exc:
            log.error(f"{output}: cannot write ({exc.strerror or exc})")
            raise _Stop(ExitCode.INPUT_FAILED)
        log.info(f"report written to {output}")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def _table(log: Log, title: str, rows: list[tuple[str, object]], percent: bool = True) -> None:
    if log.quiet:
        return
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in rows:
        if value is None:
            text = "–"
        elif isinstance(value, float):
            text = f"{100 * value:.2f}" if percent else f"{value:.4f}"
        else:
            text = str(value)
        table.add_row(name, text)
    log.console.print(table)


def _load(model_name, revision, device, threads, log: Log, precision: "Precision"):
    from ..models.registry import ModelLoadError, load_model

    configure_torch(threads)
    try:
        model = load_model(model_name, device=device, revision=revision,
                           precision=precision.value)
    except ModelLoadError as exc:
        log.error(str(exc))
        raise _Stop(ExitCode.MODEL)
    log.info(f"model: {describe_model(model)}")
    return model


def _run(body) -> None:
    from ..evaluation import EvalInputError

    try:
        body()
    except _Stop as stop:
        raise typer.Exit(stop.code)
    except EvalInputError as exc:
        Log().error(str(exc))
        raise typer.Exit(ExitCode.INPUT_FAILED)


def _progress(quiet: bool, label: str):
    """(bar or None, progress callback) for a model run."""
    bar = progress_bar(quiet)
    task = bar.add_task(label, total=None, detail="") if bar else None

    def on_progress(status):
        if bar:
            bar.update(task, total=max(status.seconds_total, 1e-9), completed=status.seconds_done,
                       detail=f"{status.files_done}/{status.files_total} files")

    return bar, on_progress


def _detector(model, settings, log):
    from ..detection import Detector
    from ..settings import SettingsError
    from .detect import setting_error_line

    try:
        return Detector(model, settings)
    except SettingsError as exc:
        log.error(setting_error_line(exc))
        raise _Stop(ExitCode.USAGE)


def _detect(model, audio, settings, quiet, log):
    """Run the detector; any failed input stops the evaluation (its clips would be missing)."""
    detector = _detector(model, settings, log)
    bar, on_progress = _progress(quiet, "scoring")
    results, failed = [], False
    try:
        if bar:
            bar.start()
        for result in detector.run(audio, progress=on_progress):
            if result.error:
                log.error(f"{result.file}: {result.error}")
                failed = True
            else:
                results.append(result)
    finally:
        if bar:
            bar.stop()
    if failed:
        log.error("some audio could not be scored; nothing evaluated")
        raise _Stop(ExitCode.INPUT_FAILED)
    return results


# -- sed ---------------------------------------------------------------------------------------
@eval_app.command("sed", no_args_is_help=True)
def sed_command(
    ground_truth: Annotated[Path, typer.Option(
        "-g", "--ground-truth", help="DCASE events TSV (filename onset offset event_label), an "
                                     "Audacity label track, or a folder of label tracks.")],
    durations: Annotated[Optional[Path], typer.Option(
        "-d", "--durations", help="TSV filename duration; the clips it lists are the evaluation "
                                  "set (optional with --audio).")] = None,
    scores: Annotated[Optional[Path], typer.Option(
        "--scores", help="Folder of score tables <clip>.tsv or <clip>.scores.tsv (flam detect "
                         "-o), or one table with a filename column.")] = None,
    events: Annotated[Optional[Path], typer.Option(
        "--events", help="Event predictions (DCASE TSV or Audacity label tracks): F1 only.")] = None,
    audio: AudioOption = None,
    queries_file: Annotated[Optional[Path], typer.Option(
        "--queries", dir_okay=False, help="With --audio: one query per line (default: the "
                                          "ground-truth labels).")] = None,
    threshold: ThresholdOption = 0.5,
    median_filter: Annotated[int, typer.Option(
        "--median-filter", min=1, max=MAX_MEDIAN_FILTER, help="With --audio: median filter in frames (1 = off).")] = DEFAULT_MEDIAN_FILTER,
    overlap: Annotated[float, typer.Option(
        "--overlap", min=0.0, help="With --audio: overlap between model windows on long files "
                                   "(seconds), as in flam detect.")] = DEFAULT_OVERLAP,
    output: OutputOption = None,
    plots: Annotated[Optional[Path], typer.Option(
        "--plots", file_okay=False, help="Write psd_roc.png, f1_threshold.png, calibration.png here.")] = None,
    model: ModelOption = None,
    revision: RevisionOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.fp32,
    batch_size: BatchOption = DEFAULT_BATCH_SIZE,
    threads: ThreadsOption = None,
    quiet: QuietOption = False,
) -> None:
    """Sound event detection: PSDS1, PSDS2, MPAUC, AUROC, event F1, segment F1.

    Every query is scored against every clip; where a query has no event it is a negative.

    [bold]Examples[/bold]

      flam eval sed -g ground_truth.tsv -d durations.tsv --scores out/

      flam eval sed -g ground_truth.tsv --audio clips/ --model openflam-v1-base --plots figs/
    """
    log = Log(quiet)
    log.attach()
    sources = [s for s in (scores, events, audio) if s is not None]
    if len(sources) != 1:
        log.error("give exactly one of --scores DIR, --events FILE or --audio DIR")
        raise typer.Exit(ExitCode.USAGE)
    if durations is None and audio is None:
        log.error("--durations is needed unless --audio is given")
        raise typer.Exit(ExitCode.USAGE)

    def body():
        from ..evaluation.inputs import (match_clip_ids, read_durations, read_events,
                                         read_scores)
        from ..evaluation.sed import evaluate_sed, events_as_scores, score_tables

        truth, warnings = read_events(ground_truth)
        for message in warnings:
            log.warning(message)
        lengths = read_durations(durations) if durations is not None else None
        labels = list(dict.fromkeys(e[2] for clip in truth.values() for e in clip))
        meta = {"ground_truth": str(ground_truth)}
        names = {"ground_truth": str(ground_truth),
                 "durations": str(durations) if durations else "durations"}
        hard = False
        if scores is not None:
            queries, tables = read_scores(scores)
            tables, notes = match_clip_ids(tables, lengths, str(scores))
            for message in notes:
                log.info(message)
            names["scores"] = str(scores)
            meta["scores"] = str(scores)
        elif events is not None:
            predicted, more = read_events(events, predictions=True)
            predicted, notes = match_clip_ids(predicted, lengths, str(events))
            for message in more:
                log.warning(message)
            for message in notes:
                log.info(message)
            queries = labels
            tables, more = events_as_scores(predicted, queries, lengths)
            for message in more:
                log.warning(message)
            names["scores"] = str(events)
            meta["events"] = str(events)
            hard = True
        else:
            queries = _read_queries(log, queries_file) if queries_file else labels
            if not queries:
                log.error(f"{ground_truth}: no labels to use as queries (give --queries)")
                raise _Stop(ExitCode.USAGE)
            settings = _settings(log, queries, threshold, median_filter=median_filter,
                                 overlap=overlap, batch_size=batch_size)
            loaded = _load(model, revision, device, threads, log, precision)
            results = _detect(loaded, [str(audio)], settings, quiet, log)
            queries = list(settings.queries)
            tables, found_lengths = score_tables(results)
            if lengths is None:
                lengths = found_lengths
                names["durations"] = f"{audio} (audio files)"
            names["scores"] = f"{audio} (audio files)"
            meta.update(audio=str(audio), model=loaded.info.as_dict(), median_filter=median_filter)
        evaluation = evaluate_sed(tables, queries, truth, lengths, threshold=threshold,
                                  hard=hard, sources=names)
        for message in evaluation.warnings:
            log.warning(message)
        report = _with_meta(evaluation.report, meta)
        if plots is not None and not hard:
            from ..plots import write_sed_plots

            try:
                written = write_sed_plots(evaluation, plots)
            except OSError as exc:
                log.error(f"{plots}: cannot write plots ({exc.strerror or exc})")
                raise _Stop(ExitCode.INPUT_FAILED)
            report["plots"] = [str(p) for p in written]
        rows = [(k, report[k]) for k in ("psds1", "psds2", "mpauc", "auroc", "event_f1",
                                         "segment_f1", "event_f1_micro", "segment_f1_micro")]
        if report.get("calibration"):
            rows.append(("calibration ECE", report["calibration"]["ece"]))
        _table(log, f"sed: {report['clips']} clips × {len(report['scored_queries'])} queries "
                    f"(threshold {threshold:g}; values in %)", rows)
        _emit(report, output, log)

    _run(body)


def _with_meta(report: dict, meta: dict) -> dict:
    from .. import __version__

    return {"flam_version": __version__, **meta, **report}


# -- ground ------------------------------------------------------------------------------------
@eval_app.command("ground", no_args_is_help=True)
def ground_command(
    ground_truth: Annotated[Path, typer.Option(
        "-g", "--ground-truth", help="SpotSound-Bench JSON [{audio_path, caption, annotations}] "
                                     "or Lighthouse JSONL {qid, query, duration, vid, relevant_windows}.")],
    predictions: Annotated[Optional[Path], typer.Option(
        "--predictions", help="Predictions in the same form (flam ground -f json), or Lighthouse "
                              "JSONL {qid, vid, pred_relevant_windows}.")] = None,
    audio: AudioOption = None,
    durations: Annotated[Optional[Path], typer.Option(
        "-d", "--durations", help="TSV filename duration, to clip intervals to each file.")] = None,
    threshold: Annotated[Optional[float], typer.Option(
        "-t", "--threshold", min=0.0, max=1.0,
        help="With --audio: presence threshold (default: the model's own, as in flam ground)."
    )] = None,
    min_duration: Annotated[float, typer.Option(
        "--min-duration", min=0.0, help="With --audio: shorter windows do not count as presence "
                                        "(seconds), as in flam ground.")] = DEFAULT_MIN_DURATION,
    iou_threshold: Annotated[float, typer.Option(
        "--iou-threshold", min=0.0, max=1.0, help="IoU needed for a joint-F1 true positive.")] = 0.5,
    median_filter: Annotated[int, typer.Option(
        "--median-filter", min=1, max=MAX_MEDIAN_FILTER, help="With --audio: median filter in frames.")
    ] = DEFAULT_GROUND_MEDIAN_FILTER,
    overlap: Annotated[float, typer.Option(
        "--overlap", min=0.0, help="With --audio: overlap between model windows on long files "
                                   "(seconds), as in flam ground.")] = DEFAULT_OVERLAP,
    output: OutputOption = None,
    model: ModelOption = None,
    revision: RevisionOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.fp32,
    batch_size: BatchOption = DEFAULT_BATCH_SIZE,
    threads: ThreadsOption = None,
    quiet: QuietOption = False,
) -> None:
    """Temporal grounding: set-IoU, mIoU, R1@0.3/0.5/0.7, presence accuracy, joint F1.

    Negatives (rows with empty annotations) count for presence accuracy and joint F1 only.
    With --audio the model answers each row as flam ground does (same defaults): present = a
    window above --threshold lasting at least --min-duration, windows = those windows.

    [bold]Examples[/bold]

      flam eval ground -g grounding.json --predictions predicted.json

      flam eval ground -g grounding.json --audio haystack/ --model openflam-v1-base
    """
    log = Log(quiet)
    log.attach()
    if (predictions is None) == (audio is None):
        log.error("give exactly one of --predictions FILE or --audio DIR")
        raise typer.Exit(ExitCode.USAGE)

    def body():
        from ..evaluation.grounding import (evaluate_grounding, evaluate_lighthouse,
                                            is_lighthouse, read_grounding, read_lighthouse)
        from ..evaluation.inputs import read_durations

        meta = {"ground_truth": str(ground_truth)}
        if is_lighthouse(ground_truth):
            if predictions is None:
                log.error("Lighthouse ground truth needs --predictions (model runs use the "
                          "SpotSound-Bench form)")
                raise _Stop(ExitCode.USAGE)
            report = evaluate_lighthouse(read_lighthouse(ground_truth),
                                         read_lighthouse(predictions, predictions=True),
                                         source=str(predictions))
            meta["predictions"] = str(predictions)
            report = _with_meta(report, meta)
            _table(log, f"ground (Lighthouse): {report['queries']} queries (values in %)",
                   [(k, report[k]) for k in ("r1@0.5", "r1@0.7", "map@0.5", "map@0.75", "map")])
            _emit(report, output, log)
            return
        truth = read_grounding(ground_truth)
        lengths = read_durations(durations) if durations is not None else {}
        if predictions is not None:
            predicted = read_grounding(predictions, predictions=True)
            meta["predictions"] = str(predictions)
            source = str(predictions)
        else:
            predicted, lengths = _ground_with_model(truth, audio, lengths, threshold,
                                                    min_duration, median_filter, overlap, model,
                                                    revision, device,
                                                    batch_size, threads, quiet, log, meta,
                                                    precision)
            source = f"{audio} (model run)"
        report = evaluate_grounding(truth, predicted, durations=lengths,
                                    joint_iou=iou_threshold, source=source)
        report = _with_meta(report, meta)
        _table(log, f"ground: {report['positives']} positive, {report['negatives']} negative "
                    "queries (values in %)",
               [(k, report[k]) for k in ("miou", "r1@0.3", "r1@0.5", "r1@0.7",
                                         "presence_accuracy_positive",
                                         "presence_accuracy_negative")]
               + [("joint_f1 (reconstructed)", report["joint_f1"])])
        _emit(report, output, log)

    _run(body)


def _ground_with_model(truth, audio, lengths, threshold, min_duration, median_filter, overlap,
                       model_name, revision, device, batch_size, threads, quiet, log, meta,
                       precision):
    """Answer every row as ``flam ground -f json`` would (the library's
    :func:`~flamcli.evaluation.grounding.answer_rows`)."""
    from ..evaluation.grounding import answer_rows

    captions = list(dict.fromkeys(row["caption"] for row in truth))
    settings = _settings(log, captions, threshold, grounding=True, min_duration=min_duration,
                         median_filter=median_filter, overlap=overlap, batch_size=batch_size)
    loaded = _load(model_name, revision, device, threads, log, precision)
    detector = _detector(loaded, settings, log)
    bar, on_progress = _progress(quiet, "grounding")
    try:
        if bar:
            bar.start()
        predicted, found_lengths, errors = answer_rows(detector, truth, audio, on_progress)
    finally:
        if bar:
            bar.stop()
    for message in errors:
        log.error(message)
    if errors:
        log.error("some audio could not be scored; nothing evaluated")
        raise _Stop(ExitCode.INPUT_FAILED)
    meta.update(audio=str(audio), model=loaded.info.as_dict(), threshold=detector.thresholds[0],
                min_duration=min_duration, median_filter=median_filter)
    return predicted, {**found_lengths, **dict(lengths)}


def _read_queries(log, path: Path) -> list[str]:
    """--queries FILE, read as `flam detect --queries` reads it; unreadable is exit 2."""
    from ..settings import SettingsError, read_queries

    try:
        return read_queries(path)
    except SettingsError as exc:
        log.error(f"--queries {exc}")
        raise _Stop(ExitCode.USAGE)


def _settings(log, queries, threshold, grounding=False, **settings):
    """The run's DetectionSettings; a bad value is one line and exit 2."""
    from ..settings import DetectionSettings, SettingsError
    from .detect import setting_error_line

    make = DetectionSettings.for_grounding if grounding else DetectionSettings.create
    try:
        return make(queries, threshold, **settings)
    except SettingsError as exc:
        log.error(setting_error_line(exc))
        raise _Stop(ExitCode.USAGE)


# -- retrieval / classify ----------------------------------------------------------------------
@eval_app.command("retrieval", no_args_is_help=True)
def retrieval_command(
    captions: Annotated[Path, typer.Option(
        "--captions", help="CSV file,caption (one row per caption) or file_name,caption_1…caption_5.")],
    audio: Annotated[Path, typer.Option("--audio", help="Folder the CSV's file names are relative to.")],
    output: OutputOption = None,
    model: ModelOption = None,
    revision: RevisionOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.fp32,
    batch_size: BatchOption = DEFAULT_BATCH_SIZE,
    threads: ThreadsOption = None,
    quiet: QuietOption = False,
) -> None:
    """Text↔audio retrieval with global embeddings: R@1, R@5, R@10 both ways.

    Example: flam eval retrieval --captions clotho_captions_evaluation.csv --audio evaluation/
    """
    log = Log(quiet)
    log.attach()

    def body():
        from ..evaluation.retrieval import (embed_audio_files, embed_texts, read_captions,
                                            resolve_audio, retrieval_metrics)

        pairs = read_captions(captions)
        paths = resolve_audio(audio, [f for f, _ in pairs], str(captions))
        files = list(paths)
        loaded = _load(model, revision, device, threads, log, precision)
        audio_vectors = embed_audio_files(loaded, [paths[f] for f in files], batch_size)
        text_vectors = embed_texts(loaded, [c for _, c in pairs])
        index = {f: i for i, f in enumerate(files)}
        report = retrieval_metrics(audio_vectors, text_vectors, [index[f] for f, _ in pairs])
        report = _with_meta(report, {"captions": str(captions), "audio": str(audio),
                                     "model": loaded.info.as_dict()})
        _table(log, f"retrieval: {report['files']} files, {report['captions']} captions (%)",
               [(k, report[k]) for k in report if "_r@" in k])
        _emit(report, output, log)

    _run(body)


@eval_app.command("classify", no_args_is_help=True)
def classify_command(
    labels: Annotated[Path, typer.Option("--labels", help="CSV file,label (ESC-50: filename,category).")],
    audio: Annotated[Path, typer.Option("--audio", help="Folder the CSV's file names are relative to.")],
    prompt: Annotated[str, typer.Option(
        "--prompt", help="Prompt template; {} is replaced by the label (underscores as spaces).")] = "{}",
    output: OutputOption = None,
    model: ModelOption = None,
    revision: RevisionOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.fp32,
    batch_size: BatchOption = DEFAULT_BATCH_SIZE,
    threads: ThreadsOption = None,
    quiet: QuietOption = False,
) -> None:
    """Zero-shot classification with global embeddings: top-1 and top-5 accuracy.

    Example: flam eval classify --labels esc50.csv --audio audio/ --prompt "the sound of {}"
    """
    log = Log(quiet)
    log.attach()
    if "{}" not in prompt:
        log.error("--prompt must contain {} where the label goes")
        raise typer.Exit(ExitCode.USAGE)

    def body():
        from ..evaluation.retrieval import (classification_metrics, embed_audio_files,
                                            embed_texts, prompt_for, read_labels, resolve_audio)

        pairs = read_labels(labels)
        paths = resolve_audio(audio, [f for f, _ in pairs], str(labels))
        names = sorted({label for _, label in pairs})
        loaded = _load(model, revision, device, threads, log, precision)
        audio_vectors = embed_audio_files(loaded, [paths[f] for f, _ in pairs], batch_size)
        prompt_vectors = embed_texts(loaded, [prompt_for(n, prompt) for n in names])
        report = classification_metrics(audio_vectors, prompt_vectors,
                                        [names.index(label) for _, label in pairs], names)
        report = _with_meta(report, {"labels_file": str(labels), "audio": str(audio),
                                     "prompt": prompt, "model": loaded.info.as_dict()})
        _table(log, f"classify: {report['files']} files, {report['labels']} labels (%)",
               [("top1_accuracy", report["top1_accuracy"]), ("top5_accuracy", report["top5_accuracy"])])
        _emit(report, output, log)

    _run(body)
