"""Shared by the bench scripts: the machine they ran on, a frozen copy of flamcli/, and how a
result file is written."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_now_mib() -> float:
    """Current (not peak) resident set size."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def cpu_info() -> tuple[str, str]:
    """(CPU model name, its flags line) from /proc/cpuinfo; platform's name elsewhere."""
    name, flags = platform.processor(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name == platform.processor():
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    return name, flags


def snapshot_code(scratch: Path) -> tuple[str, dict]:
    """Copy flamcli/ aside so that edits made during a long run cannot change or break it.

    Returns the folder to put on PYTHONPATH and provenance (git head, dirty flag, content hash).
    """
    digest = hashlib.sha256()
    for f in sorted((REPO / "flamcli").rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts:
            digest.update(f.relative_to(REPO).as_posix().encode() + b"\0" + f.read_bytes())
    code = Path(scratch) / f"code-{digest.hexdigest()[:12]}"
    if not code.exists():
        tmp = Path(scratch) / f"{code.name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(REPO / "flamcli", tmp / "flamcli",
                        ignore=shutil.ignore_patterns("__pycache__"))
        tmp.rename(code)

    def git(*args):
        try:
            return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True,
                                  text=True, check=True).stdout.strip()
        except Exception:
            return None

    return str(code), {"git_head": git("rev-parse", "--short", "HEAD"),
                       "flamcli_dirty": bool(git("status", "--porcelain", "--", "flamcli")),
                       "flamcli_sha256_12": digest.hexdigest()[:12]}


def write_result(path: Path, result) -> None:
    """Write a result as indented JSON (creating its folder) and echo it on stdout."""
    text = json.dumps(result, indent=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    print(text)


def mixture_plan(folder: Path, audio_path: str) -> dict | None:
    """The plan `flam synth` kept for a mixture (its events and background), if any."""
    meta = Path(folder) / "meta" / (Path(audio_path).stem + ".json")
    return json.loads(meta.read_text()) if meta.is_file() else None


def background_names(plan: dict) -> list[str]:
    """The background recordings a mixture was made on (several when layered), by file stem."""
    return sorted({Path(b["path"]).stem for b in plan.get("background", [])})


def tone_corpus(root: Path) -> Path:
    """A small labelled corpus of tones (events in labelled folders) and noise (backgrounds in
    amb/), enough for flam synth and flam train to run on: throughput does not depend on what
    the audio holds."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(7)
    events = {"animals/dog_bark.wav": (500.0, 0.8, 44100), "animals/cat_meow.flac": (900.0, 1.6, 22050),
              "bells/bell_ring.wav": (2000.0, 2.4, 48000), "vehicles/car_horn.wav": (3100.0, 1.2, 16000)}
    for name, (freq, seconds, rate) in events.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(round(seconds * rate)) / rate
        pad = np.zeros(round(0.15 * rate))
        sf.write(path, np.concatenate([pad, 0.3 * np.sin(2 * np.pi * freq * t), pad]), rate)
    (root / "amb").mkdir(exist_ok=True)
    sf.write(root / "amb" / "forest_ambience.flac", 0.05 * rng.standard_normal(22050 * 80), 22050)
    sf.write(root / "amb" / "rain_ambiance.wav", 0.05 * rng.standard_normal(16000 * 7), 16000)
    return root

