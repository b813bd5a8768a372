"""``flam review``: check and correct detections in the browser (:mod:`flamcli.review`)."""

from __future__ import annotations

import io
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import ExitCode, Log, ModelOption, QuietOption, VersionOption
from .detect import gather_arguments, usable_queries


def review(
    arguments: Annotated[list[str], typer.Argument(
        metavar="FOLDER | AUDIO [QUERY]...",
        help="A folder written by `flam detect -o`, or audio and queries: flam detects first "
             "(into -o, or a folder named after the first audio file) and opens that.",
        show_default=False)],
    query: Annotated[Optional[list[str]], typer.Option(
        "-q", "--query", help="A query (repeatable), when detecting first.")] = None,
    queries_file: Annotated[Optional[Path], typer.Option(
        "--queries", help="File with one query per line, when detecting first.", dir_okay=False)] = None,
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output", file_okay=False,
        help="When detecting first: the folder for detect's outputs and the review.")] = None,
    threshold: Annotated[Optional[list[str]], typer.Option(
        "-t", "--threshold", help="When detecting first: as in `flam detect`.")] = None,
    export: Annotated[Optional[Path], typer.Option(
        "--export", dir_okay=False,
        help="Write one DCASE table (filename onset offset event_label) of the accepted and "
             "added events of the whole folder to this file (- for stdout), without starting "
             "the server.")] = None,
    port: Annotated[int, typer.Option(
        "--port", min=0, max=65535, help="Port on 127.0.0.1 (0: any free port).")] = 0,
    no_browser: Annotated[bool, typer.Option(
        "--no-browser", help="Print the URL only; do not open a browser.")] = False,
    model: ModelOption = None,
    quiet: QuietOption = False,
    version: VersionOption = None,
) -> None:
    """Review detections in a local web page: hear each event, accept, reject, relabel, move
    its boundaries, add missed ones. Every decision is saved at once (review.jsonl, and per file
    a reviewed Audacity label track and DCASE table); reopening the folder resumes.

    [bold]Keys[/bold]: j/k next/previous event · a accept · r reject · space play · e label ·
    [ ] { } move onset/offset · u undo · n/p next/previous file · + - 0 zoom.

    [bold]Examples[/bold]

      flam detect recordings/ "dog barks" -o results/ && flam review results/

      flam review clip.wav "dog barks" "car horn"

      flam review results/ --export reviewed.tsv
    """
    from ..review import ReviewError, ReviewFolder

    log = Log(quiet)
    log.attach()
    single_folder = (len(arguments) == 1 and not query and queries_file is None
                     and Path(arguments[0]).is_dir())
    if export is not None:
        if not single_folder:
            log.error("--export: give one folder written by `flam detect -o` (no queries)")
            raise typer.Exit(ExitCode.USAGE)
        raise typer.Exit(_export(log, Path(arguments[0]), export))

    exit_code = ExitCode.OK
    if single_folder:
        folder_path = Path(arguments[0])
    else:
        folder_path, exit_code = _detect_first(log, arguments, query, queries_file, output,
                                               threshold or [], model, quiet)
    try:
        folder = ReviewFolder.open(folder_path)
    except ReviewError as exc:
        log.error(str(exc))
        raise typer.Exit(exc.exit_code)
    for message in folder.warnings:
        log.warning(message)
    for message in folder.problems:
        log.error(message)
        exit_code = ExitCode.INPUT_FAILED
    if not any(f.audio is not None for f in folder.files.values()):
        log.error(f"{folder_path}: none of its audio files can be found; nothing to review "
                  f"(`flam review {folder_path} --export FILE` still writes the labels)")
        raise typer.Exit(ExitCode.INPUT_FAILED)
    raise typer.Exit(max(exit_code, _serve(log, folder, port, no_browser)))


def _export(log: Log, folder_path: Path, target: Path) -> int:
    from ..files import write_text_atomic
    from ..review import ReviewError, ReviewFolder

    try:
        folder = ReviewFolder.open(folder_path, check_outputs=False)
    except ReviewError as exc:
        log.error(str(exc))
        return exc.exit_code
    text, warnings = folder.export_table()
    for message in folder.warnings + warnings:
        log.warning(message)
    if str(target) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        try:
            write_text_atomic(target, text)
        except OSError as exc:
            log.error(f"--export {target}: cannot write ({exc.strerror or exc})")
            return ExitCode.INPUT_FAILED
        rows = text.count("\n") - 1
        log.info(f"wrote {rows} reviewed event(s) of {len(folder.files)} file(s) to {target}")
    return ExitCode.OK


def _detect_first(log, arguments, query, queries_file, output, thresholds, model, quiet):
    """Run `flam detect -o` into the review folder (unless it already holds this detection);
    returns (folder, exit code so far)."""
    from ..review import ReviewError, ReviewFolder
    from .detect import make_settings, run_detect

    audio_args, raw_queries = gather_arguments(log, arguments, query, queries_file)
    queries = usable_queries(log, raw_queries, 'flam review clip.wav "dog barks"')
    settings = make_settings(log, queries, thresholds)  # detect's defaults otherwise

    def same_detection(folder: Path) -> bool | None:
        """True: a review of these queries to resume; False: another one; None: no review."""
        try:
            files = ReviewFolder.open(folder, check_outputs=False).files.values()
        except ReviewError:
            return None
        return all(f.queries == queries for f in files)

    if output is None:
        base = Path(audio_args[0].rstrip("/\\")).stem or "audio"
        output, n = Path(f"{base}-review"), 2
        while output.exists() and not same_detection(output):
            output, n = Path(f"{base}-review-{n}"), n + 1
    if output.exists():
        found = same_detection(output)
        if found:
            log.info(f"{output}: resuming its review (delete the folder to detect again)")
            return output, ExitCode.OK
        if found is False and (output / "review.jsonl").exists():
            # Detecting again would renumber the events its decisions refer to.
            log.error(f"-o {output}: already holds a review of other queries; choose another "
                      "folder")
            raise typer.Exit(ExitCode.USAGE)
    log.info(f"detecting into {output}")
    code = run_detect(log, audio_args, settings, output_dir=output, model_name=model,
                      quiet=quiet, stdout=io.StringIO())
    if code not in (ExitCode.OK, ExitCode.INPUT_FAILED):
        raise typer.Exit(code)
    return output, code


def _serve(log: Log, folder, port: int, no_browser: bool) -> int:
    from ..review import ReviewServer

    try:
        server = ReviewServer(folder, port=port, log=log.warning)
    except OSError as exc:
        log.error(f"--port {port}: cannot listen on 127.0.0.1 ({exc.strerror or exc})")
        return ExitCode.USAGE

    def stop(_signum, _frame):
        raise KeyboardInterrupt

    counts = folder.summaries()
    pending = sum(f["pending"] for f in counts)
    log.info(f"reviewing {len(counts)} file(s), {pending} event(s) to decide, in {folder.directory}; "
             "Ctrl-C stops")
    try:
        signal.signal(signal.SIGTERM, stop)  # before the URL: a script may stop us once it has it
        print(server.url, flush=True)  # machine output: the one line a script needs
        if not no_browser:
            import webbrowser

            if not webbrowser.open(server.url):
                log.info("no browser found: open the URL above")
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    log.info(f"stopped; every decision is saved in {folder.directory / 'review.jsonl'}")
    return ExitCode.OK
