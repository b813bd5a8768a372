"""``flam detect``: parse, call :func:`flamcli.detection.iter_detect`, write outputs."""

from __future__ import annotations

import io
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..audio import AUDIO_EXTENSIONS
from ..settings import DEFAULT_BATCH_SIZE, DEFAULT_MEDIAN_FILTER, DEFAULT_OVERLAP
from .common import (BatchOption, CacheOption, MedianFilterOption, DeviceOption, ExitCode, Log, ModelOption,
                     Interruption, Precision, PrecisionOption,
                     OverlapOption, QuietOption, RevisionOption, ThreadsOption, VersionOption,
                     describe_model, configure_torch, progress_bar)


class Format(str, Enum):
    tsv = "tsv"
    csv = "csv"
    json = "json"
    jsonl = "jsonl"
    audacity = "audacity"
    scores = "scores"


def split_audio_and_queries(arguments: list[str]) -> tuple[list[str], list[str]]:
    """First argument is audio; following ones that name existing audio files or directories
    are audio too (so unquoted shell globs work), and so are ones that only look like audio
    paths (an audio extension, a trailing slash), so that a mistyped second path is reported
    as missing instead of being searched for as a sound. The rest are queries."""
    audio, rest = arguments[:1], arguments[1:]
    while rest and rest[0].strip():  # an empty argument is an (empty) query, not "."
        argument = rest[0]
        candidate = Path(argument).expanduser()
        looks_like_audio = (candidate.suffix.lower() in AUDIO_EXTENSIONS
                            or argument.endswith(("/", os.sep)))
        if not (looks_like_audio or _is_directory(candidate)):
            break
        audio.append(rest.pop(0))
    return audio, rest


def _is_directory(path: Path) -> bool:
    """Like Path.is_dir, but a text no file system accepts as a name (a long query is longer
    than a file name may be: ENAMETOOLONG) is simply not a directory."""
    try:
        return path.is_dir()
    except OSError:
        return False


def usable_queries(log: Log, raw_queries: list[str], example: str) -> list[str]:
    """Cleaned queries; an empty query, or none at all, is a usage error (exit 2, nothing
    run), each named on one line. ``example`` is the command line suggested when none is given."""
    from ..settings import clean_queries

    queries, warnings, errors = clean_queries(raw_queries)
    for message in warnings:
        log.warning(message)
    for message in errors:
        log.error(message)
    if errors or not queries:
        if not errors:
            log.error(f"no query given: e.g. {example}")
        raise typer.Exit(ExitCode.USAGE)
    return queries


def gather_arguments(log: Log, arguments: list[str], query: list[str] | None,
                     queries_file: Path | None) -> tuple[list[str], list[str]]:
    """(audio arguments, raw queries) from positional arguments, -q and --queries FILE."""
    audio_args, positional = split_audio_and_queries(arguments)
    if "-" in positional:  # `flam detect - - q`: a dash is "paths on stdin", not a sound
        where = ("given twice: stdin can be read once" if "-" in audio_args
                 else "must be the first argument to read paths on stdin")
        log.error(f"'-' {where} (use -q - for a query that is a dash)")
        raise typer.Exit(ExitCode.USAGE)
    raw_queries = positional + list(query or [])
    if queries_file is not None:
        from ..settings import SettingsError, read_queries

        try:
            raw_queries += read_queries(queries_file)
        except SettingsError as exc:
            log.error(f"--queries {exc}")
            raise typer.Exit(ExitCode.USAGE)
    return audio_args, raw_queries


def parse_thresholds(values: list[str], default: float | None = None
                     ) -> tuple[float | None, dict[str, float]]:
    """(default, {query: threshold}): ``0.6`` sets the default; ``"dog barks=0.7"`` sets one
    query's threshold. A ``default`` of None leaves it to the model
    (``config.presence_threshold``)."""
    per_query = {}
    given_default = None
    for value in values:
        name, sep, number = value.rpartition("=")
        try:
            threshold = float(number)
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not a number or QUERY=NUMBER") from None
        if not 0.0 <= threshold <= 1.0:
            raise typer.BadParameter(f"{value!r}: thresholds are probabilities in [0, 1]")
        if sep:
            query = " ".join(name.split())
            if query in per_query and per_query[query] != threshold:
                raise typer.BadParameter(f"two thresholds for {query!r}")
            per_query[query] = threshold
        else:
            if given_default is not None and given_default != threshold:
                raise typer.BadParameter(f"two default thresholds ({given_default:g} and "
                                         f"{threshold:g}); name a query for the other: "
                                         f"\"QUERY={threshold:g}\"")
            default = given_default = threshold
    return default, per_query


def detect(
    arguments: Annotated[list[str], typer.Argument(
        metavar="AUDIO [QUERY]...",
        help="AUDIO: a file (wav, flac, ogg, mp3), a directory (searched recursively), a quoted "
             "glob, or - to read paths from stdin; more audio paths may follow (an argument "
             "with an audio extension or a trailing / is a path, reported if missing). "
             "QUERY: free-text descriptions of the sounds to find.",
        show_default=False)],
    query: Annotated[Optional[list[str]], typer.Option(
        "-q", "--query", help="A query (repeatable); use it for queries that look like paths.")] = None,
    queries_file: Annotated[Optional[Path], typer.Option(
        "--queries", help="File with one query per line (# comments).", dir_okay=False)] = None,
    fmt: Annotated[Format, typer.Option(
        "-f", "--format", help="stdout format: tsv (DCASE events), csv, json, jsonl, audacity "
                               "(label track) or scores (frame probabilities).")] = Format.tsv,
    output_dir: Annotated[Optional[Path], typer.Option(
        "-o", "--output", file_okay=False,
        help="Folder: also write per file events .tsv, Audacity labels .txt, frame scores .tsv, "
             "plot .png, and a .detect.json record (source, queries, settings) for `flam "
             "review`.")] = None,
    # The spelling before -o/--output meant "where results go" in every command.
    output_dir_old: Annotated[Optional[Path], typer.Option(
        "--output-dir", file_okay=False, hidden=True)] = None,
    threshold: Annotated[Optional[list[str]], typer.Option(
        "-t", "--threshold", help="Calibrated probability threshold (default: the model's own, "
                                  "0.5 unless its card says otherwise; `flam models`), or "
                                  "\"QUERY=VALUE\" for one query. Repeatable.")] = None,
    median_filter: MedianFilterOption = DEFAULT_MEDIAN_FILTER,
    min_duration: Annotated[float, typer.Option(
        "--min-duration", min=0.0, help="Drop events shorter than this (seconds).")] = 0.0,
    merge_gap: Annotated[float, typer.Option(
        "--merge-gap", min=0.0, help="Join events of a query separated by at most this (seconds).")] = 0.0,
    overlap: OverlapOption = DEFAULT_OVERLAP,
    approximate: Annotated[bool, typer.Option(
        "--approximate", help="Use σ(α·cos) instead of the unbiased p/(p+σ(β)) probabilities.")] = False,
    no_plot: Annotated[bool, typer.Option("--no-plot", help="With -o: skip the PNG plots.")] = False,
    cache: CacheOption = None,
    model: ModelOption = None,
    revision: RevisionOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.fp32,
    batch_size: BatchOption = DEFAULT_BATCH_SIZE,
    threads: ThreadsOption = None,
    quiet: QuietOption = False,
    version: VersionOption = None,
) -> None:
    """Detect when described sounds happen: events on stdout, logs on stderr.

    [bold]Examples[/bold]

      flam detect clip.wav "dog barks" "car horn"

      flam detect recordings/ -q "siren" -f jsonl -o results/

      find . -name '*.flac' | flam detect - "birds singing" -t 0.6
    """
    log = Log(quiet)
    log.attach()
    if output_dir_old is not None:
        if output_dir is not None and output_dir != output_dir_old:
            log.error(f"-o {output_dir} and --output-dir {output_dir_old}: two output folders "
                      "(--output-dir is the old name of -o/--output)")
            raise typer.Exit(ExitCode.USAGE)
        output_dir = output_dir_old
    audio_args, all_queries = gather_arguments(log, arguments, query, queries_file)
    queries = usable_queries(log, all_queries, 'flam detect clip.wav "dog barks"')
    settings = make_settings(log, queries, threshold or [], median_filter=median_filter,
                             min_duration=min_duration, merge_gap=merge_gap, overlap=overlap,
                             batch_size=batch_size, unbiased=not approximate)
    exit_code = run_detect(log, audio_args, settings, fmt=fmt, output_dir=output_dir,
                           plot=not no_plot, model_name=model, revision=revision, device=device,
                           precision=precision.value, threads=threads, quiet=quiet,
                           cache_dir=cache)
    raise typer.Exit(exit_code)


# What each DetectionSettings field is called on the command line.
SETTING_OPTIONS = {"queries_file": "--queries", "threshold": "--threshold", "median_filter": "--median-filter",
                   "min_duration": "--min-duration", "merge_gap": "--merge-gap",
                   "overlap": "--overlap", "batch_size": "--batch-size", "queries": "query"}


def make_settings(log, queries: list[str], threshold_values: list[str], grounding: bool = False,
                  **settings):
    """The one DetectionSettings of a command, from its options; a bad one is one line naming
    the option and exit 2 (nothing run)."""
    from ..settings import DetectionSettings, SettingsError

    try:
        default, per_query = parse_thresholds(threshold_values)
        make = DetectionSettings.for_grounding if grounding else DetectionSettings.create
        return make(queries, default, query_thresholds=per_query, **settings)
    except typer.BadParameter as exc:
        log.error(f"--threshold: {exc}")
    except SettingsError as exc:
        log.error(setting_error_line(exc))
    raise typer.Exit(ExitCode.USAGE)


def setting_error_line(exc) -> str:
    """``--overlap 10: why`` for a refused value, ``--threshold: why`` otherwise."""
    option = SETTING_OPTIONS.get(exc.setting, exc.setting)
    if exc.value is None:
        return f"{option}: {exc.reason}"
    value = f"{exc.value:g}" if isinstance(exc.value, float) else str(exc.value)
    return f"{option} {value}: {exc.reason}"


def run_detect(log, audio_args, settings, *, fmt=Format.tsv, output_dir=None, plot=True,
               model_name=None, revision=None, device="auto", precision="fp32", threads=None,
               quiet=False, cache_dir=None, stdout=None) -> int:
    """`flam detect` after parsing: model, detector, outputs. ``stdout``: where the ``fmt``
    table goes (default sys.stdout; `flam review` passes a sink)."""
    from ..detection import Detector
    from ..models.registry import ModelLoadError, load_model
    from ..settings import SettingsError
    from ..writers import get_writer, write_file_outputs

    failed = False
    from ..audio import expand_inputs

    inputs, problems = expand_inputs(audio_args)
    if fmt.value == "audacity" and len(inputs) > 1:
        # A label track has no file column: several files' labels on one stream would mix.
        log.error(f"-f audacity: a label track holds one file's labels, and {len(inputs)} "
                  "files were given; use -o DIR for a <name>.labels.txt per file")
        return ExitCode.USAGE
    for problem in problems:
        log.error(problem)
        failed = True
    if output_dir is not None:  # only then do names matter
        for item in inputs:
            if item.shares_name_with:
                log.info(f"{item.display}: its output files are named {item.stem}.* (another "
                         f"input is also named {item.shares_name_with})")
    from ..distributed import gather_in_input_order, setup_distributed

    # Under torchrun each rank detects every world-th file; rank 0 writes them all, in order.
    # gloo: what is gathered are Python objects, wherever the model runs.
    dist = setup_distributed(backend="gloo")
    local_inputs = inputs[dist.rank::dist.world]

    configure_torch(threads)
    try:
        model = load_model(model_name, device=device, revision=revision, precision=precision)
    except ModelLoadError as exc:
        log.error(str(exc))
        return ExitCode.MODEL
    log.info(f"model: {describe_model(model)}")
    try:
        detector = Detector(model, settings, cache_dir)
    except SettingsError as exc:
        log.error(setting_error_line(exc))
        return ExitCode.USAGE

    metadata = {"model": model.info.as_dict()}
    # Under torchrun only rank 0 prints (the gathered results); a table writer starts with its
    # header, so the other ranks' writers must not reach stdout at all.
    stream = (stdout or sys.stdout) if dist.main else io.StringIO()
    writer = get_writer(fmt.value, stream, metadata, multiple_files=len(inputs) > 1)
    bar = progress_bar(quiet)
    task = None
    results = []

    def on_progress(status):
        if bar is not None:
            bar.update(task, total=max(status.seconds_total, 1e-9), completed=status.seconds_done,
                       detail=f"{status.files_done}/{status.files_total} files")

    try:
        if bar is not None:
            bar.start()
            task = bar.add_task("detecting", total=None, detail="")
        for result in detector.run(local_inputs, progress=on_progress,
                                   with_spectrogram=output_dir is not None and plot):
            for message in result.warnings:
                log.warning(f"{result.file}: {message}")
            if result.error:
                log.error(f"{result.file}: {result.error}")
                failed = True
            elif output_dir is not None:
                try:
                    # The record beside each file's outputs (<stem>.detect.json) for `flam review`.
                    write_file_outputs(result, output_dir, plot=plot, settings=settings.record())
                except OSError as exc:
                    log.error(f"{output_dir}: cannot write outputs for {result.file}: {exc}")
                    failed = True
            if dist.world == 1:
                writer.write_result(result)
            else:
                result.spectrogram = None  # already plotted; keep the gather small
                results.append(result)
    except KeyboardInterrupt:
        if bar is not None:
            bar.stop()
        Interruption.report(log, "files written so far are complete; nothing is half-written")
        return ExitCode.INTERRUPTED
    finally:
        if bar is not None:
            bar.stop()

    if dist.world > 1:
        gathered, any_failed = gather_in_input_order(results, inputs, dist,
                                                     key=lambda r: r.path)
        for result in gathered:
            writer.write_result(result)
        failed = failed or any_failed
    if dist.main:
        writer.close()
    return ExitCode.INPUT_FAILED if failed else ExitCode.OK
