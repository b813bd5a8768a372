"""Atomic file writes: readers never see a half-written file, even after Ctrl-C or a crash."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


PART_SUFFIX = ".part"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a path to write ``target`` through. For a regular file (or a new one) that is a
    temporary file beside it which replaces it atomically on success, so that readers never see
    a half-written file. A symlink is followed: the file it points to is replaced and the link
    kept. What is not a regular file (``/dev/stdout``, a FIFO, a device) cannot be replaced and
    is written in place; a directory is refused (IsADirectoryError naming it)."""
    target = Path(target)
    special = _special_file(target)
    if special is not None:
        try:
            yield special
        except OSError as exc:  # /dev/full and the like: name the file, not "standard output"
            if exc.filename is None:
                raise OSError(exc.errno, exc.strerror, str(target)) from exc
            raise
        return
    if target.is_symlink():
        target = Path(os.path.realpath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        # The writer's pid in the name: a later run can tell a killed run's leftover from a
        # file another live process is still writing (see _remove_stale_parts).
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=PART_SUFFIX,
                                   dir=target.parent)
    except OSError as exc:
        raise _naming(target, exc) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600); a written output gets the permissions any
        # new file would (0666 minus the umask), like `open(target, "w")`.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and exc.filename in (tmp, tmp_path):
            raise _naming(target, exc) from exc
        raise
    _remove_stale_parts(target)


def _special_file(target: Path) -> Path | None:
    """``target`` itself when it exists and is not a regular file (nothing to replace: write
    into it), else None. /dev/stdout and /proc/self/fd/N are always written in place, even when
    they lead to a regular file: replacing that file would cut it from the shell's redirection."""
    import stat

    text = str(target)
    if text in ("/dev/stdout", "/dev/stderr") or text.startswith(("/dev/fd/", "/proc/self/fd/")):
        return target
    try:
        mode = os.stat(target).st_mode  # follows symlinks
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:  # a symlink loop, a permission error: let the write name it
        return None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(21, "Is a directory", str(target))
    return None if stat.S_ISREG(mode) else target


def _remove_stale_parts(target: Path) -> None:
    """Remove ``.<name>.<pid>.*.part`` files beside ``target`` left by writers that no longer
    run (a SIGKILLed earlier run): a rerun leaves the folder as an uninterrupted run would.
    A folder is listed once per process (a run writing 8000 files into one folder must not
    list it 8000 times); what a dead writer left there cannot grow while we run."""
    folder = target.parent
    stale = _STALE_PARTS.get(folder)
    if stale is None:
        stale = _STALE_PARTS[folder] = _stale_parts_in(folder)
    for part in stale.pop(target.name, []):
        with contextlib.suppress(OSError):
            part.unlink()


_STALE_PARTS: dict[Path, dict[str, list[Path]]] = {}


def _stale_parts_in(folder: Path) -> dict[str, list[Path]]:
    """{target name: its leftover part files whose writer is gone} of one folder."""
    found: dict[str, list[Path]] = {}
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return found
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(PART_SUFFIX)):
            continue
        pieces = name[1:-len(PART_SUFFIX)].rsplit(".", 2)  # target, writer pid, mkstemp's part
        if len(pieces) != 3 or not pieces[1].isdigit():
            continue
        pid = int(pieces[1])
        if pid != os.getpid() and not _alive(pid):
            found.setdefault(pieces[0], []).append(folder / name)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _naming(target: Path, exc: OSError) -> OSError:
    """The same error, naming the path the user asked for: the hidden temporary file beside
    it is flam's own business and would only puzzle them."""
    return OSError(exc.errno, exc.strerror, str(target))  # OSError picks the subclass


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def flam_cache_dir() -> Path:
    """flam's own cache (conversions, checksum stamps, decoded clips): $FLAM_CACHE."""
    root = os.environ.get("FLAM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "flam"
    )
    return Path(root)


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
