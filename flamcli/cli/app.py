"""The ``flam`` command: a Typer app whose commands are thin layers over the library."""

from __future__ import annotations

import errno
import os
import signal
import sys

import typer

from .common import ExitCode, Interruption, Log, VersionOption

app = typer.Typer(
    name="flam",
    help="Find when a described sound happens in audio (open-vocabulary sound event detection).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)


@app.callback()
def main_callback(version: VersionOption = None) -> None:
    """flam: open-vocabulary sound event detection with FLAM."""


def _register() -> None:
    """Every command, in one place: the command modules know nothing of ``app`` (no import
    cycle), and this list is the CLI's table of contents."""
    from . import detect, evaluate, ground, models, review, synth, train

    app.command(no_args_is_help=True)(detect.detect)
    app.add_typer(evaluate.eval_app)
    app.command(no_args_is_help=True)(ground.ground)
    app.command("models")(models.models_command)
    app.command(no_args_is_help=True)(review.review)
    app.add_typer(synth.synth_app)
    app.command("train", no_args_is_help=True)(train.train_command)


_register()


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


class _ClosedOutput:
    """Standing in for a standard output the shell closed (``>&-``): writing to it is the
    "could not write" error every command already reports (exit 3), not an AttributeError."""

    encoding = "utf-8"

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "Bad file descriptor (standard output is closed)")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise OSError(errno.EBADF, "standard output is closed")


class _BestEffortErrors:
    """Standard error that never stops a command halfway: a closed (``2>&-``), full
    (``2>/dev/full``) or abandoned (``2>&1 | head``) stderr loses messages, not the work, and
    the failure is remembered (``failed_errno``) so that the exit code can say so at the end."""

    def __init__(self, stream, failed_errno: int | None = None):
        self._stream = stream
        self._closed = failed_errno is not None  # closed before flam started: writes fail
        self.failed_errno: int | None = None

    def write(self, text: str) -> int:
        if self._closed:
            self.failed_errno = self.failed_errno or errno.EBADF
            return len(text)
        try:
            return self._stream.write(text)
        except (OSError, ValueError) as exc:
            self.failed_errno = self.failed_errno or getattr(exc, "errno", None) or errno.EIO
            return len(text)

    def flush(self) -> None:
        if self._closed:
            return
        try:
            self._stream.flush()
        except (OSError, ValueError) as exc:
            self.failed_errno = self.failed_errno or getattr(exc, "errno", None) or errno.EIO

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _guard_standard_streams() -> None:
    if sys.stdout is None:
        sys.stdout = _ClosedOutput()
    if sys.stderr is None:
        sys.stderr = _BestEffortErrors(open(os.devnull, "w", encoding="utf-8"), errno.EBADF)
    elif not isinstance(sys.stderr, _BestEffortErrors):
        sys.stderr = _BestEffortErrors(sys.stderr)


def _lost_messages_code(code) -> int | None:
    """141 when stderr's reader went away, 3 when stderr was closed or full, for a run that
    otherwise ended well or with an answer (`flam ground`'s 1 must not read as "absent" when
    its messages were lost); None when nothing written to stderr was lost."""
    failed = getattr(sys.stderr, "failed_errno", None)
    if failed is None or code not in (ExitCode.OK, ExitCode.NOT_FOUND, None):
        return None
    return ExitCode.BROKEN_PIPE if failed == errno.EPIPE else ExitCode.INPUT_FAILED


def _on_interrupt(signum, frame) -> None:
    Interruption.seen = True
    raise KeyboardInterrupt


def main() -> None:
    """Console entry point: run the app, turning stray exceptions into one line and a code."""
    _guard_standard_streams()
    Interruption.seen = Interruption.reported = False
    try:
        previous = signal.signal(signal.SIGINT, _on_interrupt)
    except ValueError:  # not the main thread (an embedding application): leave SIGINT alone
        previous = None
    try:
        _main()
    except SystemExit as exc:
        replaced = _lost_messages_code(exc.code)
        if replaced is not None:
            sys.exit(replaced)
        if exc.code == ExitCode.INTERRUPTED and Interruption.seen and not Interruption.reported:
            # Ctrl-C while starting, loading the model or in a command that does not say
            # itself what the interruption left behind: Typer exited quietly.
            Log().error("interrupted")
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _main() -> None:
    try:
        # Not standalone: Click would print its usage errors as a multi-line box.
        code = app(standalone_mode=False)
    except typer.Abort as exc:
        # Typer turns any EOFError escaping a command into Abort, as if the user had ended a
        # prompt with Ctrl-D; flam has no prompts, so it is a bug to report, not an abort.
        if isinstance(exc.__cause__, EOFError):
            _internal_error(exc.__cause__)
        Log().error("aborted")
        sys.exit(ExitCode.INTERRUPTED)
    except typer.TyperException as exc:  # Click's usage errors (Typer vendors Click)
        _usage_error(exc)
    except KeyboardInterrupt:
        Interruption.report(Log())
        sys.exit(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # Quietly stop when the reader of stdout went away (`flam detect … | head`).
        _silence_stdout()
        sys.exit(ExitCode.BROKEN_PIPE)
    except SystemExit as exc:
        # Click (Typer vendors its own copy) catches a broken pipe itself, wraps stdout in its
        # PacifyFlushWrapper and exits 1, which for `flam ground` would mean "absent": give the
        # documented 141 instead.
        if exc.code == 1 and type(sys.stdout).__name__ == "PacifyFlushWrapper":
            _silence_stdout()
            sys.exit(ExitCode.BROKEN_PIPE)
        raise
    except OSError as exc:
        if exc.filename:  # a file that vanished or filled the disk outside the per-file checks
            Log().error(f"{exc.filename}: {exc.strerror or exc}")
            sys.exit(ExitCode.INPUT_FAILED)
        if exc.errno in _OUTPUT_ERRNOS:  # stdout on a full disk or a vanished device
            Log().error(f"standard output: could not write: {exc.strerror}")
            _silence_stdout()
            sys.exit(ExitCode.INPUT_FAILED)
        _internal_error(exc)
    except Exception as exc:
        _internal_error(exc)
    # A command's own exit code (typer.Exit), 0 when it returned normally.
    sys.exit(code if isinstance(code, int) else ExitCode.OK)


def _usage_error(exc: Exception) -> None:
    """A bad option or argument: one line naming it and where help is, then exit 2."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # the command's help is already shown
        sys.exit(ExitCode.USAGE)
    format_message = getattr(exc, "format_message", None)
    message = (format_message() if callable(format_message) else str(exc)).rstrip(".")
    context = getattr(exc, "ctx", None)
    where = f"{context.command_path}: " if context is not None else ""
    hint = f" (see {context.command_path} -h)" if context is not None else ""
    Log().error(f"{where}{message}{hint}")
    sys.exit(max(int(getattr(exc, "exit_code", ExitCode.USAGE)), ExitCode.USAGE))


# Write errors that say "the output went wrong", not "flam has a bug".
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG, errno.EBADF, errno.EROFS}


def _internal_error(exc: Exception) -> None:
    """A bug: one line (and code 5) unless FLAM_DEBUG asks for the traceback."""
    if os.environ.get("FLAM_DEBUG"):
        raise exc
    Log().error(f"internal error: {exc.__class__.__name__}: {exc} "
                "(set FLAM_DEBUG=1 for a traceback, and please report it)")
    sys.exit(ExitCode.INTERNAL)
