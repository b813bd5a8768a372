"""A folder written by ``flam detect -o`` under review: detect's events, the annotator's
decisions, and the reviewed outputs written from them. No web code here.

Every decision is appended to ``review.jsonl`` (time, file, event before and after) before
the reviewed outputs are rewritten, so the log alone rebuilds the review: reopening a folder
replays it. Each log line also records the checksums of the reviewed files it led to, which
is how a reviewed track edited by hand in between is told from one flam wrote.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..files import write_text_atomic
from ..writers import DETECT_RECORD_FORMAT, DETECT_RECORD_SUFFIX, interval_text, label_text, tsv_row

LOG_NAME = "review.jsonl"
REVIEWED_LABELS = ".reviewed.labels.txt"  # Audacity label track: accepted and added events
REVIEWED_TABLE = ".reviewed.tsv"  # DCASE table: filename onset offset event_label
REVIEWED_COLUMNS = ("filename", "onset", "offset", "event_label")
STATUSES = ("pending", "accepted", "rejected")
ACTIONS = ("accept", "reject", "relabel", "move", "add")
MAX_LABEL_CHARACTERS = 500


class ReviewError(Exception):
    """A folder or decision that cannot be used; ``exit_code`` is the CLI's (2 usage, 3 input)."""

    def __init__(self, message: str, exit_code: int = 3):
        super().__init__(message)
        self.exit_code = exit_code


class DecisionError(ValueError):
    """A request the review refuses (bad values, unknown event); ``status`` is its HTTP code."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class ReviewEvent:
    id: str  # "d<n>": detect's n-th event; "a<n>": the n-th event the annotator added
    onset: float
    offset: float
    label: str
    status: str = "pending"
    origin: str = "detected"
    confidence: float | None = None  # detect's; None for added events

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ReviewFile:
    stem: str  # detect's output name, relative to the folder (may hold "/")
    file: str  # the name detect reported (DCASE filename column)
    audio: Path | None  # found on disk, or None when it moved
    duration: float
    sample_rate: int
    queries: list[str]
    thresholds: dict[str, float]
    events: dict[str, ReviewEvent] = field(default_factory=dict)
    decisions: list[int] = field(default_factory=list)  # seqs of active (not undone) decisions
    known_outputs: set[str] = field(default_factory=set)  # checksums flam wrote

    def ordered_events(self) -> list[ReviewEvent]:
        return sorted(self.events.values(), key=lambda e: (e.onset, e.offset, e.id))

    def summary(self) -> dict:
        events = list(self.events.values())
        pending = sum(e.status == "pending" for e in events)
        return {"stem": self.stem, "file": self.file, "duration": self.duration,
                "events": len(events), "pending": pending,
                "accepted": sum(e.status == "accepted" for e in events),
                "audio": self.audio is not None}

    def reviewed_events(self) -> list[ReviewEvent]:
        return [e for e in self.ordered_events() if e.status == "accepted"]


def _set_event(review_file: ReviewFile, event_id: str, state: dict | None) -> None:
    """An event's state after a decision; None: the event is gone (an added one undone)."""
    if state is None:
        review_file.events.pop(event_id, None)
    else:
        review_file.events[event_id] = ReviewEvent(**state)


def reviewed_labels_text(events: list[ReviewEvent]) -> str:
    lines = []
    for e in events:
        start, end = interval_text(e.onset, e.offset, decimals=6)
        lines.append(f"{start}\t{end}\t{label_text(e.label)}\n")
    return "".join(lines)


def reviewed_table_rows(file: str, events: list[ReviewEvent]) -> str:
    return "".join(tsv_row([file, *interval_text(e.onset, e.offset), label_text(e.label)])
                   for e in events)


def reviewed_table_text(file: str, events: list[ReviewEvent]) -> str:
    return "\t".join(REVIEWED_COLUMNS) + "\n" + reviewed_table_rows(file, events)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha_of_file(path: Path) -> str | None:
    try:
        return _sha(path.read_bytes())
    except (FileNotFoundError, IsADirectoryError):  # nothing of ours there to protect
        return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class ReviewFolder:
    """Load with :meth:`open`; then :meth:`decide` and :meth:`undo` (thread-safe)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.files: dict[str, ReviewFile] = {}
        self.problems: list[str] = []  # one line each: files that cannot be reviewed
        self.warnings: list[str] = []
        self.last_decision: dict | None = None
        self._seq = 0
        self._entries: dict[int, dict] = {}
        self._cut_log_line: str | None = None
        self._lock = threading.Lock()

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | os.PathLike, *, check_outputs: bool = True) -> "ReviewFolder":
        """Read detect's records and replay ``review.jsonl``. Raises :class:`ReviewError` for
        a folder that is not detect's (exit 2) or holds a track edited by hand (exit 3);
        moved audio files are listed in ``problems`` (their labels stay reviewable by export)."""
        folder = cls(Path(directory))
        root = folder.directory
        if not root.is_dir():
            raise ReviewError(f"{root}: not a folder", 2)
        real_root = root.resolve()
        records = sorted(p for p in root.rglob(f"*{DETECT_RECORD_SUFFIX}") if p.is_file())
        if not records:
            hint = (" (it holds flam detect outputs from a flam older than `flam review`: "
                    "run flam detect -o again)" if any(root.rglob("*.events.tsv")) else "")
            raise ReviewError(f"{root}: no flam detect outputs (*{DETECT_RECORD_SUFFIX}) here; "
                              f"make them with `flam detect AUDIO QUERY -o {root}`{hint}", 2)
        for path in records:
            if not path.resolve().is_relative_to(real_root):  # a symlink out of the folder
                folder.warnings.append(f"{path}: links outside {root}; skipped")
                continue
            folder._add_record(path)
        if not folder.files:
            raise ReviewError(f"{root}: none of its detect records could be read", 3)
        folder._replay()
        if check_outputs:
            folder._check_outputs()
            folder._set_aside_cut_line()
        return folder

    def _set_aside_cut_line(self) -> None:
        """Keep the fragment a crash left at the end of the log beside it, and end the log at
        its last complete line, so that the next decision starts a line of its own."""
        if self._cut_log_line is None:
            return
        log = self.directory / LOG_NAME
        with open(log.with_name(LOG_NAME + ".incomplete"), "a", encoding="utf-8") as aside:
            aside.write(self._cut_log_line + "\n")
        data = log.read_bytes()
        with open(log, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
        self._cut_log_line = None

    def _add_record(self, path: Path) -> None:
        stem = path.relative_to(self.directory).as_posix()[: -len(DETECT_RECORD_SUFFIX)]
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(record, dict) or record.get("format") != DETECT_RECORD_FORMAT:
                raise ValueError(f"not a {DETECT_RECORD_FORMAT} document")
            events = {}
            for n, e in enumerate(record["events"]):
                event = ReviewEvent(f"d{n}", float(e["onset"]), float(e["offset"]),
                                    str(e["query"]), confidence=float(e["confidence"]))
                events[event.id] = event
            thresholds = {str(q): float(t) for q, t in record["thresholds"].items()}
            review_file = ReviewFile(
                stem=stem, file=str(record["file"]), audio=None,
                duration=float(record["duration"]), sample_rate=int(record["sample_rate"]),
                queries=[str(q) for q in record["queries"]], thresholds=thresholds, events=events)
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.problems.append(f"{path}: unreadable detect record ({exc.__class__.__name__}: {exc})")
            return
        review_file.audio = self._find_audio(path, record)
        if review_file.audio is None:
            self.problems.append(
                f"{review_file.file}: audio file moved or deleted (recorded as "
                f"{record.get('audio')}); its events can still be exported")
        base = path.parent / path.name[: -len(DETECT_RECORD_SUFFIX)]
        for name, checksum in (record.get("outputs") or {}).items():
            if name in ("labels.txt", "events.tsv") \
                    and _sha_of_file(Path(f"{base}.{name}")) not in (checksum, None):
                self.warnings.append(
                    f"{base}.{name}: changed since flam detect wrote it; the review starts from "
                    f"detect's own record ({path.name}) and leaves that file as it is")
        self.files[stem] = review_file

    @staticmethod
    def _find_audio(record_path: Path, record: dict) -> Path | None:
        candidates = []
        if record.get("audio_relative"):
            candidates.append(record_path.parent / str(record["audio_relative"]))
        if record.get("audio"):
            candidates.insert(0, Path(str(record["audio"])))
        for candidate in candidates:
            try:
                if candidate.is_file():
                    return candidate
            except OSError:
                continue
        return None

    def _replay(self) -> None:
        log = self.directory / LOG_NAME
        try:
            text = log.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            raise ReviewError(f"{log}: cannot read ({exc.__class__.__name__}); nothing was changed")
        lines = text.split("\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                self._apply_entry(entry)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                if number == len(lines) and not text.endswith("\n"):  # cut off mid-append
                    self.warnings.append(f"{log}:{number}: incomplete last line (a crash while "
                                         "saving); that decision was never confirmed: moved to "
                                         f"{log.name}.incomplete")
                    self._cut_log_line = line
                    continue
                raise ReviewError(f"{log}:{number}: not a review decision ({exc}); fix or move "
                                  "the log aside — nothing was changed")

    def _apply_entry(self, entry: dict) -> None:
        review_file = self.files.get(entry["file"])
        if review_file is None:
            self._seq = max(self._seq, int(entry["seq"]))
            self.warnings.append(f"{LOG_NAME}: decisions for {entry['file']!r}, which has no "
                                 "detect record here; kept in the log, not shown")
            return
        _set_event(review_file, entry["event"], entry.get("after"))
        self._note(review_file, entry)

    def _note(self, review_file: ReviewFile, entry: dict) -> None:
        """Book a logged entry (replayed or just written): the undo stack, the checksums flam
        wrote, the resume point."""
        seq = int(entry["seq"])
        self._seq = max(self._seq, seq)
        self._entries[seq] = entry
        if entry["action"] == "undo":
            undone = int(entry["undoes"])
            if undone in review_file.decisions:
                review_file.decisions.remove(undone)
        else:
            review_file.decisions.append(seq)
        review_file.known_outputs.update((entry.get("outputs") or {}).values())
        self.last_decision = {"file": review_file.stem, "event": entry["event"]}

    def _outputs_of(self, review_file: ReviewFile) -> dict[Path, bytes]:
        base = self.directory / review_file.stem
        events = review_file.reviewed_events()
        return {
            base.parent / (base.name + REVIEWED_LABELS): reviewed_labels_text(events).encode(),
            base.parent / (base.name + REVIEWED_TABLE):
                reviewed_table_text(review_file.file, events).encode(),
        }

    def _edited_outputs(self, review_file: ReviewFile) -> list[Path]:
        """Reviewed files that neither flam wrote (a checksum in the log) nor the log's state
        would write: edited by hand, and so never to be overwritten."""
        if not review_file.known_outputs:
            return []
        edited = []
        for path, data in self._outputs_of(review_file).items():
            current = _sha_of_file(path)
            if current not in (None, _sha(data)) and current not in review_file.known_outputs:
                edited.append(path)
        return edited

    def _check_outputs(self) -> None:
        """Refuse to overwrite a reviewed file edited by hand; rewrite ones that are missing or
        lag behind the log (a crash between saving a decision and writing the files)."""
        edited = [path for f in self.files.values() for path in self._edited_outputs(f)]
        if edited:
            raise ReviewError(
                f"{edited[0]}: changed since flam review wrote it (edited by hand?); move it "
                "aside and run again: flam rewrites it from review.jsonl, which keeps every "
                "decision" + (f" ({len(edited) - 1} more such files)" if len(edited) > 1 else ""))
        for review_file in self.files.values():
            if review_file.known_outputs:
                self._write_outputs(review_file)

    # -- decisions -------------------------------------------------------------------------
    def file(self, stem: str) -> ReviewFile:
        try:
            return self.files[stem]
        except KeyError:
            raise DecisionError(f"no file {stem!r} in this review", 404) from None

    def decide(self, stem: str, action: str, event_id: str | None = None, *,
               onset=None, offset=None, label=None, expect: dict | None = None) -> dict:
        """Apply one decision, log it, rewrite the reviewed outputs; returns the event after
        (``None`` never: every action leaves an event). ``expect``: the event as the page saw
        it; a different one means another page changed it (409)."""
        if action not in ACTIONS:
            raise DecisionError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
        with self._lock:
            review_file = self.file(stem)
            if action == "add":
                before = None
                number = 1 + max([int(i[1:]) for i in review_file.events if i.startswith("a")],
                                 default=-1)
                event = ReviewEvent(f"a{number}", 0.0, 0.0, "", status="accepted", origin="added")
                onset, offset = self._times(review_file, onset, offset)
                event.onset, event.offset = onset, offset
                event.label = self._label(label)
            else:
                current = review_file.events.get(str(event_id))
                if current is None:
                    raise DecisionError(f"{stem}: no event {event_id!r}", 404)
                before = current.as_dict()
                if expect is not None and expect != before:
                    raise DecisionError(f"{stem}: event {event_id} was changed elsewhere "
                                        "(another tab?); reload the page", 409)
                event = ReviewEvent(**before)
                if action == "accept":
                    event.status = "accepted"
                elif action == "reject":
                    event.status = "rejected"
                elif action == "relabel":
                    event.label = self._label(label)
                elif action == "move":
                    event.onset, event.offset = self._times(
                        review_file, current.onset if onset is None else onset,
                        current.offset if offset is None else offset)
            return self._commit(review_file, action, event.id, before, event.as_dict())

    def undo(self, stem: str) -> dict | None:
        """Revert the latest decision on ``stem`` not yet undone (logged as an ``undo``);
        returns ``{"event": id, "after": state or None}``, or None when nothing is left."""
        with self._lock:
            review_file = self.file(stem)
            if not review_file.decisions:
                return None
            undone = self._entries[review_file.decisions[-1]]
            event_id = undone["event"]
            current = review_file.events.get(event_id)
            before = current.as_dict() if current else None
            return self._commit(review_file, "undo", event_id, before, undone["before"],
                                undoes=undone["seq"])

    def _commit(self, review_file: ReviewFile, action: str, event_id: str, before, after,
                **extra) -> dict:
        edited = self._edited_outputs(review_file)
        if edited:
            raise DecisionError(f"{edited[0]}: changed since flam review wrote it (edited by "
                                "hand?); not overwritten — move it aside to go on", 409)
        # Applied before logging, since the log line carries the outputs' checksums; undone
        # below when the log cannot be written.
        previous = review_file.events.get(event_id)
        _set_event(review_file, event_id, after)
        outputs = self._outputs_of(review_file)
        entry = {"seq": self._seq + 1, "time": _now(), "file": review_file.stem,
                 "event": event_id, "action": action, "before": before, "after": after, **extra,
                 "outputs": {path.name[len(Path(review_file.stem).name):]: _sha(data)
                             for path, data in outputs.items()}}
        try:
            self._append(entry)
        except OSError:
            _set_event(review_file, event_id, None if previous is None else previous.as_dict())
            raise
        self._note(review_file, entry)
        try:
            self._write_outputs(review_file)
        except OSError as exc:  # the log holds the decision; the files follow on the next write
            raise DecisionError(f"decision saved in {LOG_NAME}, but {exc.filename}: "
                                f"{exc.strerror or exc}; the reviewed files are rewritten on the "
                                "next decision or restart", 507) from exc
        return {"event": event_id, "after": after, "seq": entry["seq"]}

    def _append(self, entry: dict) -> None:
        log = self.directory / LOG_NAME
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with open(log, "ab") as handle:
            handle.write(line.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())

    def _write_outputs(self, review_file: ReviewFile) -> None:
        for path, data in self._outputs_of(review_file).items():
            if _sha_of_file(path) != _sha(data):
                write_text_atomic(path, data.decode("utf-8"))

    @staticmethod
    def _times(review_file: ReviewFile, onset, offset) -> tuple[float, float]:
        try:
            onset, offset = float(onset), float(offset)
        except (TypeError, ValueError):
            raise DecisionError("onset and offset must be numbers") from None
        if not (math.isfinite(onset) and math.isfinite(offset)):
            raise DecisionError("onset and offset must be finite")
        onset, offset = max(0.0, onset), min(review_file.duration, offset)
        if offset <= onset:
            raise DecisionError(f"offset ({offset:g} s) must come after onset ({onset:g} s), "
                                f"inside the file (0–{review_file.duration:g} s)")
        return round(onset, 6), round(offset, 6)

    @staticmethod
    def _label(label) -> str:
        if not isinstance(label, str):
            raise DecisionError("label must be text")
        text = " ".join(label.replace("\x00", " ").split())
        if not text:
            raise DecisionError("label is empty")
        if len(text) > MAX_LABEL_CHARACTERS:
            raise DecisionError(f"label longer than {MAX_LABEL_CHARACTERS} characters")
        return text

    # -- summaries and export --------------------------------------------------------------
    def summaries(self) -> list[dict]:
        with self._lock:
            return [f.summary() for f in sorted(self.files.values(), key=lambda f: f.stem)]

    def events_of(self, stem: str) -> tuple[dict, list[dict]]:
        """(summary, events in time order) of one file, consistent with each other even while
        another request decides."""
        with self._lock:
            review_file = self.file(stem)
            return review_file.summary(), [e.as_dict() for e in review_file.ordered_events()]

    def export_table(self) -> tuple[str, list[str]]:
        """One DCASE table (``filename onset offset event_label``) of every file's accepted and
        added events, for `flam eval sed` or training; warnings name files left unfinished."""
        rows, warnings = ["\t".join(REVIEWED_COLUMNS) + "\n"], []
        for review_file in sorted(self.files.values(), key=lambda f: f.stem):
            rows.append(reviewed_table_rows(review_file.file, review_file.reviewed_events()))
            pending = review_file.summary()["pending"]
            if pending:
                warnings.append(f"{review_file.file}: {pending} event(s) not reviewed yet; "
                                "left out")
        return "".join(rows), warnings
