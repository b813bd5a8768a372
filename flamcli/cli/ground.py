"""``flam ground``: when does each described event happen, or is it absent? (exit 1 if absent)."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import (BatchOption, CacheOption, DeviceOption, ExitCode, Interruption, Log,
                     MedianFilterOption, ModelOption, OverlapOption, Precision, PrecisionOption,
                     QuietOption, RevisionOption, ThreadsOption, configure_torch, describe_model,
                     progress_bar)
from ..settings import (DEFAULT_BATCH_SIZE, DEFAULT_GROUND_MEDIAN_FILTER, DEFAULT_MIN_DURATION,
                        DEFAULT_OVERLAP)
from .detect import gather_arguments, make_settings, setting_error_line, usable_queries


class GroundFormat(str, Enum):
    text = "text"
    json = "json"
    jsonl = "jsonl"
    tsv = "tsv"


def ground(
    arguments: Annotated[list[str], typer.Argument(
        metavar="AUDIO [QUERY]...",
        help="AUDIO as in flam detect (file, directory, quoted glob, or - for paths on stdin); "
             "QUERY: descriptions of the events to locate.", show_default=False)],
    query: Annotated[Optional[list[str]], typer.Option(
        "-q", "--query", help="A query (repeatable).")] = None,
    queries_file: Annotated[Optional[Path], typer.Option(
        "--queries", help="File with one query per line (# comments).", dir_okay=False)] = None,
    fmt: Annotated[GroundFormat, typer.Option(
        "-f", "--format", help="text (one line per query), json, jsonl or tsv.")] = GroundFormat.text,
    threshold: Annotated[Optional[list[str]], typer.Option(
        "-t", "--threshold", help="Presence threshold on the calibrated probability (default: "
                                  "the model's own, 0.5 unless its card says otherwise; `flam "
                                  "models`), or \"QUERY=VALUE\". Repeatable.")] = None,
    min_duration: Annotated[float, typer.Option(
        "--min-duration", min=0.0,
        help="Shorter windows do not count as presence (seconds).")] = DEFAULT_MIN_DURATION,
    top_k: Annotated[Optional[int], typer.Option(
        "--top-k", min=1, max=10**6, help="Report at most this many windows per query (most confident).")] = None,
    median_filter: MedianFilterOption = DEFAULT_GROUND_MEDIAN_FILTER,
    overlap: OverlapOption = DEFAULT_OVERLAP,
    cache: CacheOption = None,
    model: ModelOption = None,
    revision: RevisionOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.fp32,
    batch_size: BatchOption = DEFAULT_BATCH_SIZE,
    threads: ThreadsOption = None,
    quiet: QuietOption = False,
) -> None:
    """Locate described events in recordings, or say they are absent.

    Exit codes like grep: 0 every query was found, 1 some query was absent, 2 usage error, 3 some input failed, 4 model not loadable.

    [bold]Examples[/bold]

      flam ground clip.wav "dog barks"            →  dog barks: 12.40-13.85 s (0.93)

      flam ground long.flac "siren" && alert      (runs alert only if a siren is heard)

      flam ground hour.wav "glass breaking" --cache ~/.cache/flam-embeddings -f json
    """
    from ..detection import Detector
    from ..grounding import ground_with
    from ..models.registry import ModelLoadError, load_model
    from ..settings import SettingsError
    from ..writers import GroundingWriter

    log = Log(quiet)
    log.attach()
    audio_args, raw_queries = gather_arguments(log, arguments, query, queries_file)
    queries = usable_queries(log, raw_queries, 'flam ground clip.wav "dog barks"')
    settings = make_settings(log, queries, threshold or [], grounding=True,
                             median_filter=median_filter, min_duration=min_duration,
                             overlap=overlap, batch_size=batch_size)

    from ..audio import expand_inputs

    inputs, problems = expand_inputs(audio_args)
    failed = bool(problems)
    for problem in problems:
        log.error(problem)
    configure_torch(threads)
    try:
        loaded = load_model(model, device=device, revision=revision,
                            precision=precision.value)
    except ModelLoadError as exc:
        log.error(str(exc))
        raise typer.Exit(ExitCode.MODEL)
    log.info(f"model: {describe_model(loaded)}")
    try:
        detector = Detector(loaded, settings, cache)
    except SettingsError as exc:
        log.error(setting_error_line(exc))
        raise typer.Exit(ExitCode.USAGE)

    bar = progress_bar(quiet)
    task = bar.add_task("grounding", total=None, detail="") if bar else None

    def on_progress(status):
        if bar is not None:
            bar.update(task, total=max(status.seconds_total, 1e-9), completed=status.seconds_done,
                       detail=f"{status.files_done}/{status.files_total} files")

    absent = False
    writer = GroundingWriter(fmt.value, sys.stdout, multiple_files=len(inputs) > 1)
    try:
        if bar is not None:
            bar.start()
        for result in ground_with(detector, inputs, top_k=top_k, progress=on_progress):
            for message in result.warnings:
                log.warning(f"{result.file}: {message}")
            if not result.ok:
                log.error(f"{result.file}: {result.error}")
                failed = True
                continue
            absent = absent or not all(answer.present for answer in result.answers)
            writer.write_result(result)
    except KeyboardInterrupt:
        # printed above the bar: the log and the bar share a console
        Interruption.report(log)
        raise typer.Exit(ExitCode.INTERRUPTED)
    finally:
        if bar is not None:
            bar.stop()
    writer.close()
    if failed:
        raise typer.Exit(ExitCode.INPUT_FAILED)
    raise typer.Exit(ExitCode.NOT_FOUND if absent else ExitCode.OK)
