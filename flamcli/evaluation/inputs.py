"""Readers for evaluation inputs. Every problem raises :class:`EvalInputError` with one line
naming the file (and line or row) so that the CLI can print it as is.

Formats (DCASE's, sed_scores_eval's and Audacity's, as those tools read and write them):

* DCASE event table (TSV, or CSV by extension): header with ``filename onset offset
  event_label`` (any order, extra columns such as ``confidence`` allowed); a row with empty
  onset/offset/label lists an event-free clip. Clip id = file name without its extension.
* Durations: ``filename duration``.
* Score tables (sed_scores_eval layout): ``onset offset <query>…`` per clip, one file per clip
  named ``<clip_id>.tsv`` or ``<clip_id>.scores.tsv`` (what ``flam detect -o`` writes), in a
  folder (searched recursively; sub-folders are part of the id), or one table with a leading
  ``filename`` column (``flam detect -f scores`` over several files).
* Audacity label tracks ``START<TAB>END<TAB>TEXT``: one file per clip (``<clip_id>.txt`` or
  ``<clip_id>.labels.txt``); a trailing ``(0.87)`` score in the text is dropped.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np


class EvalInputError(ValueError):
    """An evaluation input is missing or malformed; the message names file and line."""


class Segment(NamedTuple):
    """A labelled stretch of a clip as evaluation sees it, whether ground truth or a hard
    prediction read from a file: no file name and no confidence, unlike a detection
    (:class:`flamcli.events.Event`). A tuple, so segments sort by time."""

    onset: float
    offset: float
    label: str


def clip_id(filename: str) -> str:
    """DCASE convention: the file name without its last extension (sub-folders kept)."""
    name = filename.strip().replace("\\", "/")
    stem, dot, ext = name.rpartition(".")
    return stem if dot and "/" not in ext and stem else name


def match_clip_ids(table: dict, clips, source: str) -> tuple[dict, list[str]]:
    """Re-key ``table`` (per-clip predictions) to the evaluation's clip ids → (table, notes).

    ``flam detect`` run on a folder names each clip by its path (``mixtures/audio/sed_000000``)
    while ground truth names it by file (``sed_000000``): a predicted id that is not a clip is
    taken as the clip it ends with after a ``/`` (or that ends with it), when exactly one does.
    """
    clips = set(clips)
    by_name: dict[str, list[str]] = {}
    for clip in clips:
        by_name.setdefault(clip.rsplit("/", 1)[-1], []).append(clip)
    out, moved = {}, []
    for key, value in table.items():
        target = key
        if key not in clips:
            fits = [c for c in by_name.get(key.rsplit("/", 1)[-1], [])
                    if key.endswith("/" + c) or c.endswith("/" + key)]
            if len(fits) == 1 and fits[0] not in table:
                target = fits[0]
                moved.append((key, target))
        if target in out:
            raise EvalInputError(f"{source}: clips {key!r} and another both name {target!r}")
        out[target] = value
    notes = [f"{source}: {len(moved)} clip(s) matched to the evaluation set by their path's "
             f"end (e.g. {moved[0][0]!r} as {moved[0][1]!r})"] if moved else []
    return out, notes


def clean_label(text: str) -> str:
    return " ".join(str(text).split())


def _number(text, where: str, what: str, comma: bool = False) -> float:
    """A finite number from table text or a JSON value (a list or an object is not one)."""
    try:
        value = float(text.strip().replace(",", ".") if comma else text)
    except (ValueError, TypeError, AttributeError):
        raise EvalInputError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise EvalInputError(f"{where}: {what} {text!r} is not a finite number")
    return value


def open_text(path: Path) -> str:
    """A text input's contents, or an EvalInputError naming it (missing, a folder, binary)."""
    path = Path(path)
    if not path.exists():
        raise EvalInputError(f"{path}: no such file")
    if path.is_dir():
        raise EvalInputError(f"{path}: is a directory, expected a file")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise EvalInputError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise EvalInputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _rows(path: Path, required: tuple[str, ...]):
    """(line number, {column: text}) for each data row of a delimited table with a header."""
    stream = io.StringIO(open_text(path))
    delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    first_line = stream.readline()
    if not first_line.strip():
        raise EvalInputError(f"{path}: empty file (expected a header with {', '.join(required)})")
    header = [h.strip() for h in next(csv.reader([first_line], delimiter=delimiter))]
    missing = [c for c in required if c not in header]
    if missing:
        sep = "tab" if delimiter == "\t" else "comma"
        raise EvalInputError(f"{path}:1: header lacks column(s) {', '.join(missing)} "
                             f"({sep}-separated header found: {header})")
    # csv reads the stream itself, not split lines, so that a quoted file name holding a
    # newline (as flam detect -f tsv writes it) stays one field.
    reader = csv.reader(stream, delimiter=delimiter)
    try:
        for fields in reader:
            number = reader.line_num + 1  # the header line was read before csv started
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) < len(header):
                fields = fields + [""] * (len(header) - len(fields))
            elif len(fields) > len(header) and any(f.strip() for f in fields[len(header):]):
                raise EvalInputError(f"{path}:{number}: {len(fields)} fields, header has "
                                     f"{len(header)}")
            yield number, dict(zip(header, fields))
    except csv.Error as exc:
        raise EvalInputError(f"{path}:{reader.line_num + 1}: {exc}") from None


def merge_touching(events: list[Segment]) -> tuple[list[Segment], int]:
    """Join same-label events that overlap or touch (sed_scores_eval requires disjoint ones)."""
    merged: list[Segment] = []
    joined = 0
    # Plain (onset, offset, label) tuples from library callers are segments too.
    for onset, offset, label in sorted(map(Segment._make, events),
                                       key=lambda e: (e.label, e.onset, e.offset)):
        if merged and merged[-1].label == label and onset <= merged[-1].offset:
            merged[-1] = merged[-1]._replace(offset=max(merged[-1].offset, offset))
            joined += 1
        else:
            merged.append(Segment(onset, offset, label))
    return sorted(merged), joined


def read_event_table(path: Path, *, predictions: bool = False) -> dict[str, list[Segment]]:
    """DCASE events → {clip id: [(onset, offset, label), …]} (event-free clips → [])."""
    path = Path(path)
    out: dict[str, list[Segment]] = {}
    for number, row in _rows(path, ("filename", "onset", "offset", "event_label")):
        where = f"{path}:{number}"
        name = row["filename"].strip()
        if not name:
            raise EvalInputError(f"{where}: empty filename")
        events = out.setdefault(clip_id(name), [])
        label, onset, offset = clean_label(row["event_label"]), row["onset"].strip(), row["offset"].strip()
        if not label and not onset and not offset:
            continue  # a clip without events
        if not label:
            raise EvalInputError(f"{where}: empty event_label")
        start = _number(onset, where, "onset")
        end = _number(offset, where, "offset")
        if start < 0 or end <= start:
            raise EvalInputError(f"{where}: need 0 <= onset < offset, got {onset} … {offset}")
        events.append(Segment(start, end, label))
    return out


def read_durations(path: Path) -> dict[str, float]:
    path = Path(path)
    out = {}
    for number, row in _rows(path, ("filename", "duration")):
        where = f"{path}:{number}"
        value = _number(row["duration"].strip(), where, "duration")
        if value <= 0:
            raise EvalInputError(f"{where}: duration must be positive, got {row['duration']}")
        out[clip_id(row["filename"])] = value
    if not out:
        raise EvalInputError(f"{path}: no clips listed")
    return out


_SCORE_SUFFIX = re.compile(r"\s*\((?:[0-9]*\.?[0-9]+)\)$")


def read_audacity(path: Path, *, strip_score: bool = True) -> tuple[list[Segment], list[str]]:
    """One label track → (events sorted by time, warnings for skipped lines).

    Point labels (start == end) are skipped (an event needs a duration); lines starting with
    a backslash (frequency ranges) are ignored, as Audacity does.
    """
    path = Path(path)
    events, warnings = [], []
    for number, line in enumerate(open_text(path).splitlines(), start=1):
        if not line.strip() or line.startswith("\\"):
            continue
        fields = line.split("\t")
        where = f"{path}:{number}"
        try:
            start = _number(fields[0], where, "start", comma=True)
        except EvalInputError as exc:
            warnings.append(f"{exc}; line skipped")
            continue
        try:
            end = _number(fields[1], where, "end", comma=True) if len(fields) > 1 else start
            text = fields[2] if len(fields) > 2 else ""
        except EvalInputError:  # legacy point label: field 2 is the text
            end, text = start, fields[1]
        label = clean_label(text)
        if strip_score:
            label = _SCORE_SUFFIX.sub("", label)
        if not label:
            warnings.append(f"{where}: label without text; line skipped")
            continue
        if end <= start:
            warnings.append(f"{where}: point label (no duration); line skipped")
            continue
        events.append(Segment(max(0.0, start), end, label))
    return sorted(events), warnings


def _label_files(directory: Path) -> dict[str, Path]:
    found = {}
    for file in sorted(directory.rglob("*.txt")):
        rel = file.relative_to(directory).as_posix()
        key = rel[: -len(".labels.txt")] if rel.endswith(".labels.txt") else rel[: -len(".txt")]
        found[key] = file
    return found


def read_events(path: Path, *, predictions: bool = False):
    """DCASE table, one Audacity label track, or a folder of label tracks →
    ({clip id: events}, warnings)."""
    path = Path(path)
    if not path.exists():
        raise EvalInputError(f"{path}: no such file or directory")
    if path.is_dir():
        files = _label_files(path)
        if not files:
            raise EvalInputError(f"{path}: no Audacity label tracks (*.txt) found")
        out, warnings = {}, []
        for key, file in files.items():
            out[key], more = read_audacity(file)
            warnings += more
        return out, warnings
    if path.suffix.lower() == ".txt":
        name = path.name[: -len(".labels.txt")] if path.name.endswith(".labels.txt") else path.stem
        events, warnings = read_audacity(path)
        return {name: events}, warnings
    return read_event_table(path, predictions=predictions), []


# -- score tables ------------------------------------------------------------------------------
class ScoreTable(tuple):
    """``(timestamps [T + 1], values [T, K])`` of one clip that remembers the file it was read
    from, so that a later check (e.g. coverage of the clip's duration) can name that file."""

    def __new__(cls, timestamps, values, path):
        table = super().__new__(cls, (timestamps, values))
        table.path = str(path)
        return table


def _parse_score_rows(path: Path, header: list[str], rows: list[tuple[int, list[str]]], first: int):
    """Rows of one clip → (timestamps [T + 1], values [T, K])."""
    if not rows:
        raise EvalInputError(f"{path}: no score rows")
    width = len(header)
    data = np.empty((len(rows), width - first))
    for i, (number, fields) in enumerate(rows):
        if len(fields) != width:
            raise EvalInputError(f"{path}:{number}: {len(fields)} fields, header has {width}")
        try:
            data[i] = [float(f) for f in fields[first:]]
        except ValueError:
            bad = next(f for f in fields[first:] if not _is_float(f))
            raise EvalInputError(f"{path}:{number}: {bad!r} is not a number") from None
        if not np.isfinite(data[i]).all():
            raise EvalInputError(f"{path}:{number}: NaN or infinite value")
    onsets, offsets, values = data[:, 0], data[:, 1], data[:, 2:]
    if onsets[0] < 0:
        raise EvalInputError(f"{path}:{rows[0][0]}: a frame starts before 0 s ({onsets[0]:g})")
    outside = (values < 0) | (values > 1)
    if outside.any():  # calibration, thresholds and ECE read scores as probabilities
        row, column = np.argwhere(outside)[0]
        raise EvalInputError(f"{path}:{rows[int(row)][0]}: score {values[row, column]:g} for "
                             f"{header[first + 2 + int(column)]!r} is not a probability (0–1)")
    if (offsets <= onsets).any():
        number = rows[int(np.argmax(offsets <= onsets))][0]
        raise EvalInputError(f"{path}:{number}: frame offset must be greater than its onset")
    gaps = np.abs(offsets[:-1] - onsets[1:]) > 1e-6
    if gaps.any():
        number = rows[int(np.argmax(gaps)) + 1][0]
        raise EvalInputError(f"{path}:{number}: frames must be contiguous (onset equal to the "
                             "previous offset)")
    return np.concatenate((onsets, offsets[-1:])), values


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _score_header(path: Path, line: str) -> tuple[list[str], int]:
    header = [clean_label(h) for h in line.rstrip("\n").split("\t")]
    first = 1 if header[:1] == ["filename"] else 0
    if header[first:first + 2] != ["onset", "offset"] or len(header) < first + 3:
        raise EvalInputError(f"{path}:1: expected a header 'onset<TAB>offset<TAB><query>…' "
                             f"(optionally after 'filename'), found {header[:4]}")
    return header, first


def read_score_table(path: Path) -> tuple[list[str], dict]:
    """One score file → (queries, {clip id: ScoreTable}); a table with a leading ``filename``
    column may hold several clips."""
    path = Path(path)
    stream = io.StringIO(open_text(path))
    first_line = stream.readline()
    if not first_line:
        raise EvalInputError(f"{path}: empty file")
    header, first = _score_header(path, first_line)
    queries = header[first + 2:]
    groups: dict[str, list] = defaultdict(list)
    name = path.name
    key = name[: -len(".scores.tsv")] if name.endswith(".scores.tsv") else path.stem
    # Rows go through csv: a file name holding a tab, newline or quote is written quoted
    # (flam detect -f scores, like -f tsv), and csv reads ordinary rows exactly as split("\t").
    reader = csv.reader(stream, delimiter="\t")
    try:
        for fields in reader:
            if not fields or all(not f.strip() for f in fields):
                continue
            number = reader.line_num + 1  # the header line was read before csv started
            groups[clip_id(fields[0]) if first else key].append((number, fields))
    except csv.Error as exc:
        raise EvalInputError(f"{path}:{reader.line_num + 1}: {exc}") from None
    return queries, {clip: ScoreTable(*_parse_score_rows(path, header, rows, first), path)
                     for clip, rows in groups.items()}


def read_scores(path: Path) -> tuple[list[str], dict]:
    """A folder of per-clip tables (or one multi-clip table) → (queries, {clip id: table}).
    Every table must have the same query columns in the same order."""
    path = Path(path)
    if not path.exists():
        raise EvalInputError(f"{path}: no such file or directory")
    if path.is_file():
        return read_score_table(path)
    files = sorted(path.rglob("*.tsv"))
    if not files:
        raise EvalInputError(f"{path}: no score tables (*.tsv) found")
    queries, out = None, {}
    for file in files:
        rel = file.relative_to(path).as_posix()
        key = rel[: -len(".scores.tsv")] if rel.endswith(".scores.tsv") else rel[: -len(".tsv")]
        if rel.endswith(".events.tsv"):
            continue  # flam detect's event tables sit beside the score tables
        columns, tables = read_score_table(file)
        if queries is None:
            queries = columns
        elif columns != queries:
            raise EvalInputError(f"{file}:1: query columns {columns} differ from "
                                 f"{queries} in the other tables")
        (table,) = tables.values()
        out[key] = table
    if not out:
        raise EvalInputError(f"{path}: no score tables (*.tsv) found")
    return queries, out
