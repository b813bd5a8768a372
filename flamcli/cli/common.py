"""What every flam command shares: exit codes, stderr logging, progress, common options."""

from __future__ import annotations

import os
import sys
from enum import Enum, IntEnum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import __version__
from ..settings import MAX_MEDIAN_FILTER
from ..writers import one_line  # noqa: F401  (the CLI's modules import it from here too)


class ExitCode(IntEnum):
    """Process exit codes (documented in docs/cli/detect.md#exit-codes and each command's page)."""

    OK = 0
    NOT_FOUND = 1  # `flam ground`: some query was absent (like grep)
    USAGE = 2  # bad option, argument or query; nothing was run
    INPUT_FAILED = 3  # some inputs could not be processed; the others were
    MODEL = 4  # the model could not be loaded
    INTERNAL = 5  # a bug: please report it (FLAM_DEBUG=1 shows the traceback)
    INTERRUPTED = 130  # Ctrl-C; no output file is left half-written
    BROKEN_PIPE = 141  # stdout or stderr was closed early (e.g. `| head`)


class Interruption:
    """Ctrl-C bookkeeping. Typer turns a KeyboardInterrupt that escapes a command into a silent
    exit 130, so the entry point's SIGINT handler notes that one happened (``seen``), and a
    command that says itself what the interruption left behind notes that (``reported``);
    the entry point prints the one line when nobody did."""

    seen = False
    reported = False

    @classmethod
    def report(cls, log: "Log", detail: str = "") -> None:
        log.error("interrupted" + (f": {detail}" if detail else ""))
        cls.reported = True


_STDERR_CONSOLE: tuple | None = None  # (the sys.stderr it writes to, the console)


def stderr_console():
    """The one rich console on stderr that log lines and the progress bar share: with two,
    a line printed while the bar runs is glued onto the bar's line."""
    global _STDERR_CONSOLE
    if _STDERR_CONSOLE is None or _STDERR_CONSOLE[0] is not sys.stderr:  # tests swap stderr
        from rich.console import Console

        class StderrConsole(Console):
            def on_broken_pipe(self) -> None:
                # rich would exit 1, which for `flam ground` means "absent"; the CLI maps a
                # broken pipe to its documented 141 instead.
                raise BrokenPipeError

        _STDERR_CONSOLE = (sys.stderr, StderrConsole(stderr=True, soft_wrap=True,
                                                     highlight=False))
    return _STDERR_CONSOLE[1]


class Log:
    """One-line messages on stderr; machine output never goes through here."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.console = stderr_console()

    def _line(self, style: str, prefix: str, message: str) -> None:
        from rich.markup import escape

        self.console.print(f"[{style}]{prefix}[/{style}]{escape(one_line(message))}")

    def info(self, message: str) -> None:
        if not self.quiet:
            self._line("dim", "", message)

    def warning(self, message: str) -> None:
        self._line("yellow", "warning: ", message)

    def error(self, message: str) -> None:
        self._line("bold red", "error: ", message)

    def attach(self, logger_name: str = "flamcli") -> None:
        """Show the library's log records (licence notices, fallbacks) as lines here."""
        import logging

        log = self

        class Forward(logging.Handler):
            def emit(self, record):
                message = record.getMessage()
                if record.levelno >= logging.ERROR:
                    log.error(message)
                elif record.levelno >= logging.WARNING:
                    log.warning(message)
                else:
                    log.info(message)

        logger = logging.getLogger(logger_name)
        logger.handlers = [h for h in logger.handlers if not isinstance(h, Forward)] + [Forward()]
        logger.setLevel(logging.INFO)
        logger.propagate = False


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"flam {__version__}")
        raise typer.Exit()


VersionOption = Annotated[
    Optional[bool],
    typer.Option("--version", callback=version_callback, is_eager=True,
                 help="Print the version and exit."),
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", help="Only errors and warnings on stderr; no progress bar.")
]
ModelOption = Annotated[
    Optional[str],
    typer.Option("-m", "--model", envvar="FLAM_MODEL", show_envvar=True,
                 help="Registry name (see `flam models`), model directory or weights file. "
                      "Default: openflam-v1-base when cached or reachable, else the bundled "
                      "flam-tiny. `debug` is a tiny random model for smoke tests."),
]
def check_revision(value: str | None) -> str | None:
    """--revision: a commit hash, branch or tag as the Hub names them (refused before any work:
    a typo or a path would otherwise surface as a download error)."""
    import re

    if value is None:
        return value
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,254}", value) or ".." in value \
            or value.endswith((".", "/", ".lock")):
        raise typer.BadParameter(f"{value!r} is not a Hub revision (a commit hash, branch or tag)")
    return value


RevisionOption = Annotated[
    Optional[str],
    typer.Option("--revision", callback=check_revision,
                 help="Hub revision (commit hash, branch or tag) instead of the registry's "
                      "pinned commit."),
]


def check_device(value: str) -> str:
    """--device: refused before any work when it names no device or CUDA is not there."""
    if value in ("auto", "cpu"):
        return value
    from ..devices import DeviceError, resolve_device

    try:
        resolve_device(value)
    except DeviceError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


DeviceOption = Annotated[
    str, typer.Option("--device", callback=check_device,
                      help="auto (CUDA when available), cpu or cuda.")
]
class Precision(str, Enum):
    fp32 = "fp32"
    int8 = "int8"


def check_precision_option(ctx: typer.Context, value: Precision) -> Precision:
    """--precision int8 with an explicit GPU --device, or on a torch without a quantised CPU
    engine, is refused before any work (--device is declared, so parsed, first)."""
    from ..models.int8 import PrecisionError, check_precision

    try:
        check_precision(value.value, ctx.params.get("device"))
    except PrecisionError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


PrecisionOption = Annotated[
    Precision, typer.Option(
        "--precision", callback=check_precision_option,
        help="fp32, or int8: the audio model's Linear layers in 8-bit integers on the CPU, "
             "approximate and faster on transformer audio models (docs/benchmarks.md).")
]
ThreadsOption = Annotated[
    Optional[int], typer.Option("--threads", min=1, max=4096, help="CPU threads for torch (default: torch's choice).")
]
MedianFilterOption = Annotated[
    int, typer.Option("--median-filter", min=1, max=MAX_MEDIAN_FILTER, help="Median filter length in frames (1 = off).")
]
CacheOption = Annotated[
    Optional[Path], typer.Option(
        "--cache", file_okay=False,
        help="Keep frame embeddings here (by file content and model): later runs with other "
             "queries on the same recordings skip the audio model.")
]
BatchOption = Annotated[
    int, typer.Option("--batch-size", min=1, max=65_536, help="Model windows per forward pass (across files).")
]
OverlapOption = Annotated[
    float, typer.Option("--overlap", min=0.0,
                        help="Overlap between model windows on long files (seconds); more "
                             "costs audio-model time.")
]


def describe_model(model) -> str:
    """The log line's model: name, source, device and, when not fp32, the precision."""
    text = f"{model.info.name} ({model.info.source}) on {model.device}"
    return text if model.info.precision == "fp32" else f"{text}, {model.info.precision}"


def configure_torch(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def progress_bar(quiet: bool):
    """A rich progress bar on stderr when it is a terminal, else None."""
    if quiet or not sys.stderr.isatty() or os.environ.get("FLAM_NO_PROGRESS"):
        return None
    from rich.progress import (BarColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=stderr_console(), transient=True,
    )
