"""Write many mixtures to a folder (parallel, resumable) or stream them to training.

Layout of an output folder::

    OUT/synth.json            recipe, seed and corpus fingerprint (a rerun must match)
    OUT/audio/<id>.flac       the mixtures
    OUT/meta/<id>.json        per mixture: every source, offset, gain and seed, the labels
                              on the 20 ms frame grid and the negatives (re-renderable)
    OUT/ground_truth.tsv      DCASE: filename onset offset event_label
    OUT/durations.tsv         filename duration
    OUT/grounding.json        [{audio_path, caption, annotations}]: positives and negatives

A mixture is finished when its metadata file exists; both files are written atomically, audio
first, so a killed run leaves nothing half-written and a rerun skips what is done.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..files import atomic_path, write_text_atomic
from .corpus import Clip, Skipped
from .mixing import (AudioBank, Mixture, bank_notes, check_bank, make_mixture, mixture_id,
                     render)
from .recipe import Recipe, RecipeError


class SynthError(Exception):
    """The output folder cannot be used for this run (the message says why)."""


@dataclass
class SynthSummary:
    out: Path
    total: int
    made: int
    skipped_existing: int
    skipped_clips: list[Skipped] = field(default_factory=list)
    events: int = 0
    backgrounds: int = 0
    notes: list[str] = field(default_factory=list)  # requests the corpus could only partly meet


def corpus_fingerprint(bank: AudioBank) -> str:
    digest = hashlib.sha256()
    for entry in sorted(bank.events + bank.backgrounds, key=lambda e: e.clip.path):
        digest.update(f"{entry.clip.kind}\0{entry.clip.label}\0{entry.clip.sha256}\0"
                      f"{len(entry.audio)}\n".encode())
    return digest.hexdigest()


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float in [-1, 1] → int16, rounded (libsndfile's own float conversion is much slower)."""
    return np.round(np.clip(audio, -1.0, 32767 / 32768) * 32768).astype(np.int16)


def write_mixture(mixture: Mixture, out: Path, audio_format: str) -> None:
    import soundfile as sf

    # Encode in memory and write once: libsndfile's many small writes and header seeks
    # cost several times more on this kind of disk.
    encoded = io.BytesIO()
    sf.write(encoded, to_pcm16(mixture.audio), mixture.plan["sample_rate"],
             format=audio_format.upper(), subtype="PCM_16")
    with atomic_path(out / "audio" / f"{mixture.id}.{audio_format}") as tmp:
        tmp.write_bytes(encoded.getbuffer())
    meta = mixture.metadata()
    write_text_atomic(out / "meta" / f"{mixture.id}.json", json.dumps(meta, indent=1) + "\n")


def _is_done(out: Path, recipe: Recipe, index: int) -> bool:
    ident = mixture_id(recipe, index)
    return ((out / "meta" / f"{ident}.json").exists()
            and (out / "audio" / f"{ident}.{recipe.audio_format}").exists())


def _holds_mixtures(out: Path) -> bool:
    """Whether ``out`` holds any mixture's audio or metadata (finished or not)."""
    return any(any(folder.iterdir()) for folder in (out / "audio", out / "meta")
               if folder.is_dir())


# Set in the parent before the pool forks: workers inherit the decoded corpus for free.
_WORKER: dict = {}


def _render_batch(indices: list[int]) -> list[int]:
    bank, recipe, seed, out = (_WORKER[k] for k in ("bank", "recipe", "seed", "out"))
    for index in indices:
        write_mixture(make_mixture(bank, recipe, seed, index), out, recipe.audio_format)
    return indices


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start: start + size]


def synthesize(
    clips: list[Clip],
    recipe: Recipe,
    out: str | Path,
    count: int,
    seed: int = 0,
    workers: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
    on_clip: Callable[[int, int, str], None] | None = None,
) -> SynthSummary:
    """Make mixtures ``0 … count-1`` of ``recipe`` into ``out``; returns what was done.

    The result depends only on (corpus, recipe, seed, index), never on ``workers``.
    """
    recipe.validate()
    if count < 1:
        raise SynthError("count must be at least 1")
    if seed < 0:  # numpy's generators take non-negative seeds only
        raise SynthError(f"seed must be 0 or more, not {seed}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out}: exists and is not a folder")
    bank, skipped = AudioBank.load(clips, recipe, on_clip=on_clip)
    check_bank(bank, recipe, skipped)
    settings = json.loads(json.dumps({"recipe": recipe.to_dict(), "seed": int(seed),
                                      "corpus": corpus_fingerprint(bank)}))
    settings_path = out / "synth.json"
    previous = None
    if settings_path.exists():
        try:
            previous = json.loads(settings_path.read_text(encoding="utf-8"))
            # A folder written before a recipe gained fields lacks them: their defaults
            # leave mixtures unchanged, so it resumes as if they had been written.
            previous["recipe"] = json.loads(json.dumps(
                type(recipe).from_dict(previous["recipe"]).to_dict()))
        except (OSError, json.JSONDecodeError, TypeError, KeyError, RecipeError):
            previous = None
        # Settings left by a run that stopped before writing any mixture guard nothing: a
        # corrected rerun replaces them instead of having to delete the folder by hand.
        if previous != settings and _holds_mixtures(out):
            raise SynthError(
                f"{out} holds mixtures made with another recipe, seed or corpus; "
                "use a new output folder (or delete this one)")
    if previous != settings:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(settings_path, json.dumps(settings, indent=2) + "\n")
    todo = [i for i in range(count) if not _is_done(out, recipe, i)]
    done = count - len(todo)
    if on_progress:
        on_progress(done, count)
    _WORKER.update(bank=bank, recipe=recipe, seed=seed, out=out)
    try:
        if workers <= 1 or len(todo) <= 1:
            for index in todo:
                _render_batch([index])
                done += 1
                if on_progress:
                    on_progress(done, count)
        else:
            # fork: workers share the decoded corpus with the parent instead of re-decoding it.
            context = multiprocessing.get_context(
                "fork" if "fork" in multiprocessing.get_all_start_methods() else None)
            chunk = max(1, min(16, len(todo) // (workers * 4)))
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_die_with_parent,
                                     initargs=(os.getpid(),)) as pool:
                for finished in pool.map(_render_batch, list(_chunks(todo, chunk))):
                    done += len(finished)
                    if on_progress:
                        on_progress(done, count)
    finally:
        _WORKER.clear()
    write_tables(out, recipe, count)
    return SynthSummary(out, count, len(todo), count - len(todo), skipped,
                        len(bank.events), len(bank.backgrounds), bank_notes(bank, recipe))


def _die_with_parent(parent: int) -> None:
    """Worker start-up: a worker waits on its task queue forever once its parent is gone (a
    SIGKILL leaves no one to close the queue), so it ends with the parent: at once through
    Linux's parent-death signal, elsewhere within a second through a watching thread."""
    import signal
    import threading
    import time

    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError, TypeError):
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="flam-parent-watch").start()


def write_tables(out: Path, recipe: Recipe, count: int) -> None:
    """The run's tables, rebuilt from the metadata of mixtures ``0 … count-1``."""
    truth = ["filename\tonset\toffset\tevent_label"]
    durations = ["filename\tduration"]
    grounding = []
    for index in range(count):
        ident = mixture_id(recipe, index)
        meta = json.loads((out / "meta" / f"{ident}.json").read_text(encoding="utf-8"))
        filename = f"{ident}.{recipe.audio_format}"
        durations.append(f"{filename}\t{meta['duration']:.6f}")
        for label, intervals in meta["labels"].items():
            for onset, offset in intervals:
                truth.append(f"{filename}\t{onset:.3f}\t{offset:.3f}\t{label}")
        queries = meta.get("targets") if meta["recipe"] == "ground" else sorted(meta["labels"])
        for caption in queries:
            grounding.append({"audio_path": f"audio/{filename}", "caption": caption,
                              "annotations": meta["labels"].get(caption, [])})
        for caption in meta["negatives"]:
            grounding.append({"audio_path": f"audio/{filename}", "caption": caption,
                              "annotations": []})
    write_text_atomic(out / "ground_truth.tsv", "\n".join(truth) + "\n")
    write_text_atomic(out / "durations.tsv", "\n".join(durations) + "\n")
    write_text_atomic(out / "grounding.json", json.dumps(grounding, indent=1) + "\n")


def rerender(meta: dict, bank: AudioBank, recipe: Recipe) -> Mixture:
    """The mixture a metadata file describes, rendered again from its sources."""
    keys = ("id", "recipe", "seed", "index", "sample_rate", "samples", "background_dbfs",
            "background", "background_layers", "background_tilt_db", "occurrences",
            "negatives", "targets", "dropped_pieces")
    return render({k: meta[k] for k in keys if k in meta}, bank, recipe)
