"""A corpus of labelled clips: the manifest format and ``flam synth index``.

A manifest lists audio clips with their captions, tags and kind (``event`` or
``background``). It is CSV (``|`` between list items; ``\\|`` and ``\\\\`` stand for a ``|``
and a backslash within an item) or JSONL (real lists); paths are relative to the manifest's
folder unless absolute. Columns::

    path, kind, captions, tags, source, licence, duration, sample_rate, channels, sha256
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..audio import AUDIO_EXTENSIONS, AudioError, probe, read_blocks, readable_name
from ..files import sha256_of, write_text_atomic

KINDS = ("event", "background")
# Longest event in FLAM's recipe (§6: "items < 10 s"), and the words marking an ambience.
EVENT_MAX_SECONDS = 10.0
BACKGROUND_WORDS = ("ambience", "ambiance", "ambient", "atmosphere", "atmos", "roomtone")
# Quieter than this everywhere (about -80 dBFS) counts as silent.
SILENCE_PEAK = 1e-4
# Shorter than one 20 ms label frame cannot carry a label.
MIN_CLIP_SECONDS = 0.02


class CorpusError(Exception):
    """A manifest or corpus cannot be used (the message says why and where)."""


@dataclass
class Clip:
    path: str
    kind: str
    captions: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    source: str = ""
    licence: str = ""
    duration: float = 0.0
    sample_rate: int = 0
    channels: int = 0
    sha256: str = ""

    @property
    def label(self) -> str:
        """The name the clip's occurrences are labelled with: first caption, else first tag."""
        return (self.captions or self.tags or [Path(self.path).stem])[0]

    def words(self) -> set[str]:
        """Content words of captions and tags, for 'is this related to that' checks."""
        return content_words(" ".join(self.captions + self.tags))


@dataclass
class Skipped:
    path: str
    reason: str
    failed: bool = False  # unreadable (an input error), as opposed to deliberately left out


STOPWORDS = {"a", "an", "the", "of", "in", "on", "at", "and", "or", "with", "to", "from",
             "is", "are", "sound", "sounds", "noise", "some", "someone", "something", "by"}


def content_words(text: str) -> set[str]:
    """Lower-case words without stopwords, crudely singularised ("dogs" → "dog")."""
    words = set()
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in STOPWORDS or len(word) < 2:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        words.add(word)
    return words


def words_from_name(name: str) -> str:
    """``dog_bark2`` → ``dog bark``; ``DogBark-01`` → ``dog bark``."""
    name = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    name = re.sub(r"[_\-.+]+", " ", name)
    name = re.sub(r"\d+", " ", name)
    return " ".join(name.lower().split())


# ---------------------------------------------------------------------------------------------
# Manifest files


def _split_list(value: str | list | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    # "|" separates items; "\|" and "\\" are a literal "|" and "\" (see _join_list). Any
    # other backslash is kept as it is, so manifests written before escaping read the same.
    items, current, text, i = [], [], str(value), 0
    while i < len(text):
        char = text[i]
        if char == "\\" and text[i + 1: i + 2] in ("|", "\\"):
            current.append(text[i + 1])
            i += 2
            continue
        if char == "|":
            items.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def _join_list(items: list[str]) -> str:
    """One CSV cell for a list; _split_list reads back exactly these items."""
    return "|".join(str(item).replace("\\", "\\\\").replace("|", "\\|") for item in items)


LIST_FIELDS = ("captions", "tags")


def _clip_from_row(row: dict, where: str) -> Clip:
    # A JSONL row may hold any JSON value: a list or object where one value belongs would
    # otherwise become its Python repr (a path) or a TypeError (a number).
    for key, value in row.items():
        if key in LIST_FIELDS:
            items = value if isinstance(value, list) else [value]
            if any(isinstance(item, (list, dict)) for item in items):
                raise CorpusError(f"{where}: {key} must be a text or a list of texts")
        elif isinstance(value, (list, dict)):
            raise CorpusError(f"{where}: {key} must be a single value, not a JSON "
                              f"{'list' if isinstance(value, list) else 'object'}")
    path = str(row.get("path") or "").strip()
    if not path:
        raise CorpusError(f"{where}: no path")
    kind = str(row.get("kind") or "").strip().lower()
    if kind not in KINDS:
        raise CorpusError(f"{where}: kind must be event or background, not {kind!r}")
    try:
        return Clip(
            path=path, kind=kind,
            captions=_split_list(row.get("captions")), tags=_split_list(row.get("tags")),
            source=str(row.get("source") or ""), licence=str(row.get("licence") or ""),
            duration=float(row.get("duration") or 0.0),
            sample_rate=int(float(row.get("sample_rate") or 0)),
            channels=int(float(row.get("channels") or 0)),
            sha256=str(row.get("sha256") or ""),
        )
    except (ValueError, OverflowError) as exc:  # int(float("inf")) overflows
        raise CorpusError(f"{where}: {exc}") from None


def read_manifest(path: str | Path) -> list[Clip]:
    """Clips of a CSV or JSONL manifest, paths made absolute."""
    path = Path(path)
    try:
        # utf-8-sig: a CSV saved by Excel or Notepad starts with a byte-order mark, which
        # would otherwise become part of the first column's name.
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CorpusError(f"{path}: no such manifest") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CorpusError(f"{path}: cannot read the manifest ({exc})") from None
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((f"{path}:{number}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise CorpusError(f"{path}:{number}: not JSON ({exc.msg})") from None
                except RecursionError:
                    raise CorpusError(f"{path}:{number}: JSON nested too deeply") from None
    else:
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise CorpusError(f"{path}: not a manifest (a CSV header with a path column)")
        rows = [(f"{path}:{n}", row) for n, row in enumerate(reader, 2)]
    clips = []
    for where, row in rows:
        if not isinstance(row, dict):
            raise CorpusError(f"{where}: each line must be a JSON object")
        clip = _clip_from_row(row, where)
        if not Path(clip.path).is_absolute():
            clip.path = str((path.parent / clip.path).resolve())
        clips.append(clip)
    return clips


def manifest_text(clips: Iterable[Clip], fmt: str, relative_to: Path | None = None) -> str:
    """The manifest as CSV or JSONL text; paths relative to ``relative_to`` where possible."""
    def shown(clip_path: str) -> str:
        if relative_to is None:
            return clip_path
        try:
            return str(Path(clip_path).resolve().relative_to(relative_to.resolve()))
        except ValueError:
            return clip_path

    rows = [dict(asdict(c), path=shown(c.path)) for c in clips]
    if fmt == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[f.name for f in fields(Clip)], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _join_list(v) if isinstance(v, list) else v for k, v in row.items()})
    return out.getvalue()


def write_manifest(clips: Iterable[Clip], target: str | Path) -> Path:
    target = Path(target)
    fmt = "jsonl" if target.suffix.lower() in (".jsonl", ".json") else "csv"
    return write_text_atomic(target, manifest_text(clips, fmt, relative_to=target.parent))


# ---------------------------------------------------------------------------------------------
# Indexing a folder tree


def _sidecar(audio: Path) -> dict:
    """Overrides from ``<stem>.json`` (any Clip field) or ``<stem>.txt`` (one caption per line)."""
    json_path, txt_path = audio.with_suffix(".json"), audio.with_suffix(".txt")
    if json_path.exists():
        try:
            # utf-8-sig: sidecars written in Notepad start with a byte-order mark.
            data = json.loads(json_path.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise AudioError(f"unreadable sidecar {json_path.name} "
                             f"({exc if not isinstance(exc, RecursionError) else 'nested too deeply'})") from None
        if not isinstance(data, dict):
            raise AudioError(f"sidecar {json_path.name} is not a JSON object")
        return data
    if txt_path.exists():
        try:
            lines = txt_path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise AudioError(f"unreadable sidecar {txt_path.name} ({exc})") from None
        return {"captions": [line.strip() for line in lines if line.strip()]}
    return {}


def guess_kind(duration: float, words: str, background_words=BACKGROUND_WORDS) -> str | None:
    """FLAM's rule: ambience words mark a background, short clips are events.

    Returns None for a long clip without an ambience word (neither: set its kind in a sidecar).
    """
    if any(w in words.lower() for w in background_words):
        return "background"
    return "event" if duration < EVENT_MAX_SECONDS else None


def _decode_check(path: Path) -> tuple[float, int]:
    """Decode the whole clip once: returns (peak, frames); raises AudioError if unusable."""
    peak, frames = 0.0, 0
    for block in read_blocks(path):
        frames += len(block)
        if len(block):
            peak = max(peak, float(np.abs(block).max()))
    return peak, frames


def index_directory(
    root: str | Path,
    background_words: Iterable[str] = BACKGROUND_WORDS,
    on_file: Callable[[int, int, str], None] | None = None,
) -> tuple[list[Clip], list[Skipped]]:
    """Every usable audio clip under ``root`` (sorted by path), and what was skipped and why."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: not a directory")
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise CorpusError(f"{root}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    background_words = tuple(background_words)
    clips: list[Clip] = []
    skipped: list[Skipped] = []
    seen: dict[str, str] = {}
    for number, path in enumerate(files, 1):
        relative = path.relative_to(root)
        shown = readable_name(str(relative))
        if on_file:
            on_file(number, len(files), shown)
        if shown != str(relative):  # bytes that are not UTF-8: a UTF-8 manifest cannot name it
            skipped.append(Skipped(shown, "its name is not UTF-8, which a manifest cannot hold: "
                                   "rename the file", failed=True))
            continue
        try:
            info = probe(path)
            override = _sidecar(path)
            peak, frames = _decode_check(path)
        except AudioError as exc:
            skipped.append(Skipped(str(relative), str(exc), failed=True))
            continue
        duration = frames / info.sample_rate
        if duration < MIN_CLIP_SECONDS:
            skipped.append(Skipped(str(relative), f"shorter than {MIN_CLIP_SECONDS * 1000:.0f} ms"))
            continue
        if peak < SILENCE_PEAK:
            skipped.append(Skipped(str(relative), "silent"))
            continue
        digest = sha256_of(path)
        if digest in seen:
            skipped.append(Skipped(str(relative), f"duplicate of {seen[digest]}"))
            continue
        seen[digest] = str(relative)
        name_words = words_from_name(path.stem)
        folder_tags = [words_from_name(part) for part in relative.parent.parts]
        captions = _split_list(override.get("captions")) or ([name_words] if name_words else [])
        tags = _split_list(override.get("tags")) or [t for t in folder_tags if t]
        all_words = " ".join([name_words, *captions, *tags, *relative.parent.parts])
        given_kind = override.get("kind")
        kind = str(given_kind or "").strip().lower()
        if kind and kind not in KINDS:
            skipped.append(Skipped(
                str(relative), f"sidecar {path.with_suffix('.json').name}: kind must be "
                f"{' or '.join(KINDS)}, not {given_kind!r}", failed=True))
            continue
        kind = kind or guess_kind(duration, all_words, background_words)
        if kind not in KINDS:
            skipped.append(Skipped(
                str(relative),
                f"{duration:.1f} s without an ambience word: neither an event (< "
                f"{EVENT_MAX_SECONDS:.0f} s) nor a background; give its kind in a sidecar"))
            continue
        if not captions and not tags:
            skipped.append(Skipped(str(relative), "no caption (name has no words, no sidecar)"))
            continue
        clips.append(Clip(
            path=str(path.resolve()), kind=kind, captions=captions, tags=tags,
            source=str(override.get("source") or ""), licence=str(override.get("licence") or ""),
            duration=round(duration, 6), sample_rate=info.sample_rate,
            channels=info.channels, sha256=digest,
        ))
    return clips, skipped


# ---------------------------------------------------------------------------------------------
# Train / validation split by source clip


def split_clips(clips: list[Clip], fraction: float = 0.15, seed: int = 0,
                min_per_label: int = 3) -> tuple[list[Clip], list[Clip]]:
    """(train, validation), split by source clip and by background recording.

    A clip's side depends only on its content hash and the seed, so adding clips never moves
    others. Event labels with fewer than ``min_per_label`` clips stay in training (a
    validation query needs clips the model never heard, and training needs some too); every
    label with enough clips gets at least one validation clip, and at least one background
    goes to validation.
    """
    if not 0 < fraction < 1:
        raise CorpusError("the validation fraction must be between 0 and 1")

    def rank(clip: Clip) -> float:
        key = f"{seed}:{clip.sha256 or clip.path}".encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64

    validation: set[int] = set()
    groups: dict[tuple[str, str], list[int]] = {}
    for index, clip in enumerate(clips):
        key = ("background", "") if clip.kind == "background" else ("event", clip.label)
        groups.setdefault(key, []).append(index)
    for (kind, _), members in groups.items():
        if kind == "event" and len(members) < min_per_label:
            continue
        ordered = sorted(members, key=lambda i: rank(clips[i]))
        chosen = [i for i in ordered if rank(clips[i]) < fraction]
        if not chosen and len(ordered) >= 2:
            chosen = ordered[:1]
        validation.update(chosen[: len(ordered) - 1])  # never the whole group
    train = [c for i, c in enumerate(clips) if i not in validation]
    held_out = [c for i, c in enumerate(clips) if i in validation]
    return train, held_out
