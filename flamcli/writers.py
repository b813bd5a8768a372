"""Output formats behind one interface: tsv, csv, json, jsonl, audacity, scores.

A writer receives results one file at a time (``write_result``) so row formats stream to a
pipe as files finish; whole-document formats (json) emit in ``close``. Numbers always use
``.`` as the decimal separator, whatever the locale.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, TextIO

from .files import atomic_path

if TYPE_CHECKING:  # annotations only: the writers import no torch, so the CLI's logs can use them
    from .detection import FileResult

FORMATS = ("tsv", "csv", "json", "jsonl", "audacity", "scores")
DCASE_COLUMNS = ("filename", "onset", "offset", "event_label", "confidence")


def interval_text(onset: float, offset: float, decimals: int = 3) -> tuple[str, str]:
    """An event's onset and offset as text with ``decimals`` places, never of zero length.

    Plain rounding would write an event shorter than half a unit (e.g. 0.5 ms at 3 places:
    a 1-sample file) as ``0.000 0.000``, which flam eval and sed_scores_eval reject as
    onset >= offset. Such an event is widened outwards instead (onset rounded down, offset
    up, at least one unit apart) so that it still covers the detected span; every other
    event is rounded as before, so ordinary output is unchanged.
    """
    start, end = f"{onset:.{decimals}f}", f"{offset:.{decimals}f}"
    if float(end) > float(start) or not (math.isfinite(onset) and math.isfinite(offset)):
        return start, end
    unit = Decimal(1).scaleb(-decimals)
    low = Decimal(repr(float(onset))).quantize(unit, ROUND_FLOOR)  # repr: the float's digits
    high = max(Decimal(repr(float(offset))).quantize(unit, ROUND_CEILING), low + unit)
    return f"{low:.{decimals}f}", f"{high:.{decimals}f}"


def tsv_row(cells: list) -> str:
    """One tab-separated line, quoted as csv does: a tab, newline or quote inside a cell (a
    file name may hold them) stays in its column; ordinary cells are written as they are."""
    out = io.StringIO()
    csv.writer(out, delimiter="\t", lineterminator="\n").writerow(cells)
    return out.getvalue()


def label_text(text: str) -> str:
    """Label-track text: no tabs/newlines (they would split the line), never empty."""
    return " ".join(text.split()) or "?"


class ResultWriter:
    def __init__(self, stream: TextIO, metadata: dict | None = None):
        self.stream = stream
        self.metadata = metadata or {}
        self.started = False

    def write_result(self, result: FileResult) -> None:
        if not self.started:
            self.started = True
            self.begin(result)
        self.write(result)
        self.stream.flush()

    def begin(self, result: FileResult) -> None:
        pass

    def write(self, result: FileResult) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stream.flush()


class DelimitedWriter(ResultWriter):
    """DCASE event table: ``filename onset offset event_label confidence``."""

    delimiter = "\t"

    def __init__(self, stream, metadata=None):
        super().__init__(stream, metadata)
        self.rows = csv.writer(stream, delimiter=self.delimiter, lineterminator="\n")
        self.rows.writerow(DCASE_COLUMNS)
        self.started = True

    def write(self, result: FileResult) -> None:
        for e in result.events:
            self.rows.writerow([e.file, *interval_text(e.onset, e.offset), e.query,
                                f"{e.confidence:.4f}"])


class TsvWriter(DelimitedWriter):
    delimiter = "\t"


class CsvWriter(DelimitedWriter):
    delimiter = ","


def result_record(result: FileResult) -> dict:
    record = {
        "file": result.file,
        "duration": round(result.duration, 6),
        "queries": result.queries,
        "thresholds": dict(zip(result.queries, result.thresholds)),
        "events": [
            {"onset": e.onset, "offset": e.offset, "query": e.query, "confidence": e.confidence}
            for e in result.events
        ],
    }
    if result.warnings:
        record["warnings"] = result.warnings
    if result.error:
        record = {"file": result.file, "error": result.error}
    return record


class JsonWriter(ResultWriter):
    """One document: ``{"model": …, "files": [...], "errors": [...]}``."""

    def __init__(self, stream, metadata=None):
        super().__init__(stream, metadata)
        self.files, self.errors = [], []

    def write(self, result: FileResult) -> None:
        (self.errors if result.error else self.files).append(result_record(result))

    def close(self) -> None:
        document = {**self.metadata, "files": self.files, "errors": self.errors}
        self.stream.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        super().close()


class JsonlWriter(ResultWriter):
    """One event per line: ``{"file", "onset", "offset", "query", "confidence", "model"}``,
    ``model`` the same object as in ``json`` output and `flam ground`'s lines
    (``{"name", "source", …}``)."""

    def write(self, result: FileResult) -> None:
        model = self.metadata.get("model")
        for e in result.events:
            line = {**e.as_dict(), "model": model}
            self.stream.write(json.dumps(line, ensure_ascii=False) + "\n")


class AudacityWriter(ResultWriter):
    """Label-track lines ``START<TAB>END<TAB>query (confidence)`` with 6 decimals."""

    def write(self, result: FileResult) -> None:
        self.stream.write(audacity_labels(result))


def audacity_labels(result: FileResult, with_confidence: bool = True) -> str:
    lines = []
    for e in sorted(result.events, key=lambda e: (e.onset, e.offset)):
        text = f"{e.query} ({e.confidence:.2f})" if with_confidence else e.query
        start, end = interval_text(e.onset, e.offset, decimals=6)
        lines.append(f"{start}\t{end}\t{label_text(text)}\n")
    return "".join(lines)


class ScoresWriter(ResultWriter):
    """The sed_scores_eval frame table ``onset offset <query>…``.

    With several files on one stream a leading ``filename`` column tells them apart.
    """

    def __init__(self, stream, metadata=None, multiple_files: bool = False):
        super().__init__(stream, metadata)
        self.multiple_files = multiple_files

    def begin(self, result: FileResult) -> None:
        header = ["onset", "offset", *result.queries]
        if self.multiple_files:
            header.insert(0, "filename")
        self.stream.write("\t".join(header) + "\n")

    def write(self, result: FileResult) -> None:
        if result.error:
            return
        filename = result.file if self.multiple_files else None
        self.stream.write(score_table_text(result, header=False, filename=filename))


def score_table_text(result: FileResult, header: bool = True, filename: str | None = None) -> str:
    """Frame probabilities with 9 significant digits: every float32 value round-trips exactly.
    ``filename``: a leading column naming the file (quoted as in :func:`tsv_row`)."""
    out = io.StringIO()
    if header:
        out.write("\t".join(["onset", "offset", *result.queries]) + "\n")
    prefix = "" if filename is None else tsv_row([filename])[:-1] + "\t"
    edges = result.timestamps
    for row, scores in enumerate(result.scores.tolist()):
        values = "\t".join(f"{v:.9g}" for v in scores)
        out.write(f"{prefix}{edges[row]:.6f}\t{edges[row + 1]:.6f}\t{values}\n")
    return out.getvalue()


def events_table_text(result: FileResult) -> str:
    out = io.StringIO()
    TsvWriter(out).write_result(result)
    return out.getvalue()


def one_line(text: str) -> str:
    """``text`` with its control characters shown as escapes (``\\n``, ``\\x1b``): a file name
    holding a newline cannot split a message, nor start a fake ``error:`` line."""
    if text.isprintable():
        return text
    out = []
    for character in text:
        if character.isprintable() or character == " ":
            out.append(character)
        else:
            escaped = repr(character)[1:-1]  # '\n', '\x1b', '\u2028'
            out.append(escaped if escaped != character else f"\\x{ord(character):02x}")
    return "".join(out)


# -- flam ground ---------------------------------------------------------------------------------
GROUNDING_FORMATS = ("text", "json", "jsonl", "tsv")


def answer_record(result, answer) -> dict:
    """One (file, query) answer; also readable as a SpotSound-style grounding row."""
    record = {"file": result.file, **answer.as_dict(),
              "model": result.model.as_dict() if result.model else None}
    record["audio_path"] = result.file
    record["caption"] = answer.query
    record["annotations"] = [[a, b] for a, b, _ in record["intervals"]]
    return record


def human_line(answer, prefix: str) -> str:
    """``dog barks: 1.20-2.40 s (0.93)``, or why it is absent."""
    if answer.present:
        windows = ", ".join(f"{a:.2f}-{b:.2f} s ({c:.2f})" for a, b, c in answer.intervals)
        return f"{prefix}{answer.query}: {windows}"
    if answer.too_short:  # say why a peak above the threshold is still "absent"
        return (f"{prefix}{answer.query}: absent (max {answer.presence:.2f}, above "
                f"{answer.threshold:.3g} for less than --min-duration)")
    return f"{prefix}{answer.query}: absent (max {answer.presence:.2f})"


class GroundingWriter:
    """`flam ground`'s stdout: ``text`` (a line per query, the file first when there are
    several), ``jsonl`` (a record per answer), ``tsv`` (a row per window, or one empty row for
    an absent query) as results arrive; ``json`` (every record) at :meth:`close`."""

    TSV_HEADER = "file\tquery\tpresent\tpresence\tstart\tend\tconfidence\n"

    def __init__(self, fmt: str, stream: TextIO, multiple_files: bool = False):
        if fmt not in GROUNDING_FORMATS:
            raise ValueError(f"unknown grounding format {fmt!r}")
        self.fmt, self.stream, self.multiple_files = fmt, stream, multiple_files
        self.records: list[dict] = []
        if fmt == "tsv":
            stream.write(self.TSV_HEADER)

    def write_result(self, result) -> None:
        for answer in result.answers:
            if self.fmt == "text":
                prefix = f"{one_line(result.file)}: " if self.multiple_files else ""
                self.stream.write(human_line(answer, prefix) + "\n")
            elif self.fmt == "jsonl":
                self.stream.write(json.dumps(answer_record(result, answer)) + "\n")
            elif self.fmt == "tsv":
                for a, b, c in answer.intervals or [(None, None, None)]:
                    cells = [result.file, answer.query, str(answer.present).lower(),
                             f"{answer.presence:.6f}"] + (
                        ["", "", ""] if a is None else [*interval_text(a, b), f"{c:.6f}"])
                    self.stream.write(tsv_row(cells))
            else:
                self.records.append(answer_record(result, answer))
        self.stream.flush()

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write(json.dumps(self.records, indent=1) + "\n")
        self.stream.flush()


def get_writer(fmt: str, stream: TextIO, metadata: dict | None = None,
               multiple_files: bool = False) -> ResultWriter:
    writers = {"tsv": TsvWriter, "csv": CsvWriter, "json": JsonWriter, "jsonl": JsonlWriter,
               "audacity": AudacityWriter}
    if fmt == "scores":
        return ScoresWriter(stream, metadata, multiple_files=multiple_files)
    if fmt not in writers:
        raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    return writers[fmt](stream, metadata)


DETECT_RECORD_SUFFIX = ".detect.json"  # what `flam review` reads back (flamcli.review)
DETECT_RECORD_FORMAT = "flam-detect-record/1"


def write_file_outputs(result: FileResult, directory, plot: bool = True,
                       settings: dict | None = None) -> list:
    """Per-file outputs under ``directory``, each written atomically:
    ``<stem>.events.tsv``, ``<stem>.labels.txt`` (Audacity), ``<stem>.scores.tsv``, ``<stem>.png``
    and, last, ``<stem>.detect.json``: which audio file the result came from, the queries,
    thresholds and ``settings`` used, detect's events at full precision and the checksums of
    the files above (so that `flam review` can tell a track edited by hand). Written last, its
    presence means the other files of that stem are complete.
    """
    from pathlib import Path

    base = Path(directory) / result.stem
    written, checksums = [], {}
    for suffix, text in (
        (".events.tsv", events_table_text(result)),
        (".labels.txt", audacity_labels(result)),
        (".scores.tsv", score_table_text(result)),
    ):
        target = base.parent / (base.name + suffix)
        data = text.encode("utf-8")
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
        checksums[suffix[1:]] = hashlib.sha256(data).hexdigest()
        written.append(target)
    if plot:
        from .plots import plot_result

        target = base.parent / (base.name + ".png")
        with atomic_path(target) as tmp:
            plot_result(result, tmp)
        written.append(target)
    target = base.parent / (base.name + DETECT_RECORD_SUFFIX)
    record = detect_record(result, target.parent, settings or {}, checksums)
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    written.append(target)
    return written


def detect_record(result: FileResult, record_dir, settings: dict, checksums: dict) -> dict:
    """The ``<stem>.detect.json`` document (see :func:`write_file_outputs`). The audio path is
    kept absolute and relative to the record, so a folder moved together with its recordings
    still finds them."""
    import os

    audio = os.path.abspath(result.path) if result.path is not None else None
    try:
        relative = os.path.relpath(audio, os.path.abspath(record_dir)) if audio else None
    except ValueError:  # another drive on Windows
        relative = None
    return {
        "format": DETECT_RECORD_FORMAT,
        "file": result.file,
        "audio": audio,
        "audio_relative": relative,
        "duration": result.duration,
        "sample_rate": result.sample_rate,
        "frame_seconds": result.frame_seconds,
        "queries": result.queries,
        "thresholds": dict(zip(result.queries, result.thresholds)),
        "settings": settings,
        "model": result.model.as_dict() if result.model else None,
        "events": [{"onset": e.onset, "offset": e.offset, "query": e.query,
                    "confidence": e.confidence} for e in result.events],
        "outputs": checksums,
    }
