"""Training data: pre-rendered ``flam synth sed`` folders and on-the-fly synthesis.

Every example is addressed by a global index, and everything random about it (which file,
which mixture, the augmentations) is drawn from ``(seed, index)``. The data position of a run
is therefore just a number (examples consumed), and a resumed run sees exactly the examples
an uninterrupted run would have seen, whatever the world size of each rank's slice.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio import resample


class DataError(Exception):
    """The training data cannot be used (the message names the file and the problem)."""


class DataUsageError(DataError):
    """A data option (--data, --tags) names nothing usable as such: refused before training,
    as `flam synth` refuses a missing or malformed manifest."""


@dataclass
class Example:
    audio: np.ndarray  # float32 mono at the model rate, exactly one window long
    labels: dict[str, list[list[float]]]  # description → [[onset, offset], …] seconds
    negatives: list[str] = field(default_factory=list)
    id: str = ""
    # Descriptions that fit the clip but are not its labels (its events' tags and replaced
    # captions): not negatives for it (see build_text_slots).
    unlabelled: list[str] = field(default_factory=list)


@dataclass
class Augment:
    """The FLAM paper's augmentations (appendix C.5–C.8), each with a probability (0 = off)."""

    tag_rate: float = 0.5  # a description is replaced by one of its clip's tags
    downsample_rate: float = 0.3  # audio goes down to a lower rate and back
    # Target rates as fractions of the model rate: 16 and 32 kHz of FLAM's 48 kHz.
    downsample_fractions: tuple[float, ...] = (1 / 3, 2 / 3)
    # Not replaced by a tag: replaced by one of its other phrasings (later manifest captions).
    phrase_rate: float = 0.3


def reword_labels(labels: dict[str, list], rng: np.random.Generator, aug: Augment,
                  tags: dict[str, list[str]], phrasings: dict[str, list[str]]
                  ) -> tuple[dict[str, list], list[str]]:
    """The caption augmentations of one example: each description replaced by one of its tags
    (``tag_rate``) or else by another phrasing (``phrase_rate``), drawn from ``rng``; with the
    descriptions that fit the example without labelling it (see build_text_slots)."""
    fitting = {other for text in labels
               for other in [text, *(tags.get(text) or []), *(phrasings.get(text) or [])]}
    if (aug.tag_rate > 0 and tags) or (aug.phrase_rate > 0 and phrasings):
        reworded: dict[str, list] = {}
        for text, intervals in labels.items():
            its_tags = tags.get(text) or []
            its_phrasings = phrasings.get(text) or []
            if its_tags and aug.tag_rate > 0 and rng.random() < aug.tag_rate:
                text = its_tags[int(rng.integers(len(its_tags)))]
            elif its_phrasings and aug.phrase_rate > 0 and rng.random() < aug.phrase_rate:
                text = its_phrasings[int(rng.integers(len(its_phrasings)))]
            reworded.setdefault(text, []).extend(intervals)
        labels = reworded
    return labels, sorted(fitting - set(labels))


def fit_window(audio: np.ndarray, samples: int) -> np.ndarray:
    out = np.zeros(samples, dtype=np.float32)
    n = min(samples, len(audio))
    out[:n] = audio[:n]
    return out


def _is_bound(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def check_labels(labels) -> None:
    """ValueError unless ``labels`` maps descriptions to [[onset, offset], …] in seconds."""
    if not isinstance(labels, dict) or not all(
            isinstance(v, list) and all(isinstance(iv, list) and len(iv) == 2 for iv in v)
            for v in labels.values()):
        raise ValueError("labels must map descriptions to [[onset, offset], …]")
    for text, intervals in labels.items():
        for onset, offset in intervals:
            if not (_is_bound(onset) and _is_bound(offset) and onset <= offset):
                raise ValueError(f"labels[{text!r}]: [{onset!r}, {offset!r}] is not an "
                                 "interval of seconds (two finite numbers, onset <= offset)")


def clip_labels(labels: dict, seconds: float) -> dict:
    out = {}
    for text, intervals in labels.items():
        kept = [[float(a), float(min(b, seconds))] for a, b in intervals if a < seconds]
        out[text] = kept
    return out


class TrainingData:
    """Base: ``example(index)`` with augmentations from ``(seed, index)``."""

    def __init__(self, sample_rate: int, window_seconds: float, seed: int = 0,
                 augment: Augment | None = None, tags: dict[str, list[str]] | None = None,
                 phrasings: dict[str, list[str]] | None = None):
        self.sample_rate = sample_rate
        self.window_seconds = window_seconds
        self.samples = int(round(sample_rate * window_seconds))
        self.seed = seed
        self.augment = augment or Augment(tag_rate=0.0, downsample_rate=0.0, phrase_rate=0.0)
        self.tags = tags or {}
        self.phrasings = phrasings or {}
        self.skipped: list = []  # corpus clips left out (flamcli.synth Skipped), to report

    def raw(self, index: int) -> Example:
        raise NotImplementedError

    def example(self, index: int) -> Example:
        ex = self.raw(index)
        rng = np.random.default_rng([self.seed, 7919, index])
        aug = self.augment
        ex.labels, ex.unlabelled = reword_labels(ex.labels, rng, aug, self.tags, self.phrasings)
        if aug.downsample_rate > 0 and rng.random() < aug.downsample_rate:
            fraction = aug.downsample_fractions[int(rng.integers(len(aug.downsample_fractions)))]
            low = max(1000, int(round(self.sample_rate * fraction / 100)) * 100)
            ex.audio = fit_window(resample(resample(ex.audio, self.sample_rate, low), low,
                                            self.sample_rate), self.samples)
        return ex

    def batch(self, start: int, size: int) -> list[Example]:
        return [self.example(start + i) for i in range(size)]

    def describe(self) -> str:
        raise NotImplementedError


class FolderData(TrainingData):
    """A ``flam synth sed`` output folder: ``audio/<id>.*`` with ``meta/<id>.json`` labels."""

    def __init__(self, folder: str | Path, **kw):
        super().__init__(**kw)
        self.folder = Path(folder)
        meta_dir = self.folder / "meta"
        if not meta_dir.is_dir():  # a usage error, like a --data that does not exist
            raise DataUsageError(f"--data {self.folder}: not a `flam synth` output folder "
                                 "(no meta/) nor a corpus manifest")
        self.items: list[tuple[Path, Path]] = []
        for meta in sorted(meta_dir.glob("*.json")):
            audio = next(iter(sorted((self.folder / "audio").glob(meta.stem + ".*"))), None)
            if audio is None:
                raise DataError(f"{meta}: no audio file audio/{meta.stem}.*")
            self.items.append((meta, audio))
        if not self.items:
            raise DataUsageError(f"--data {self.folder}: empty dataset (no meta/*.json)")
        self._order: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.items)

    def position(self, index: int) -> int:
        epoch, offset = divmod(index, len(self.items))
        if epoch not in self._order:
            self._order = {epoch: np.random.default_rng([self.seed, epoch]).permutation(
                len(self.items))}
        return int(self._order[epoch][offset])

    def raw(self, index: int) -> Example:
        from ..audio import AudioError, probe, read_blocks

        meta_path, audio_path = self.items[self.position(index)]
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
            labels = meta["labels"]
            check_labels(labels)
            negatives = meta.get("negatives", [])
            if not isinstance(negatives, list) or not all(isinstance(t, str) for t in negatives):
                raise ValueError("negatives must be a list of descriptions")
            if not labels and not negatives:
                raise ValueError("no descriptions (labels or negatives)")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{meta_path}: malformed metadata: {exc}") from None
        try:
            # flam's own reader: NaN or infinite samples are named here, not later as a
            # non-finite loss that looks like a learning-rate problem.
            rate = probe(audio_path).sample_rate
            audio = np.concatenate(list(read_blocks(audio_path)))
        except AudioError as exc:
            raise DataError(f"{audio_path}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a data error
            raise DataError(f"{audio_path}: cannot read audio: {exc}") from None
        audio = resample(audio, rate, self.sample_rate)
        return Example(fit_window(audio, self.samples), clip_labels(labels, self.window_seconds),
                       list(negatives), meta_path.stem)

    def describe(self) -> str:
        return f"{self.folder} ({len(self.items)} pre-rendered mixtures)"


class SynthData(TrainingData):
    """Mixtures made on the fly from a corpus manifest (flamcli.synth.SynthDataset)."""

    def __init__(self, manifest: str | Path, recipe=None, **kw):
        from ..synth import AudioBank, CorpusError, RecipeError, SedRecipe, read_manifest
        from ..synth.mixing import bank_notes, check_bank

        super().__init__(**kw)
        self.manifest = Path(manifest)
        try:
            clips = read_manifest(self.manifest)
        except CorpusError as exc:  # its message names the manifest (and line)
            raise DataUsageError(str(exc)) from None
        if not clips:
            raise DataError(f"{self.manifest}: empty manifest")
        try:
            self.recipe = recipe or SedRecipe(sample_rate=self.sample_rate,
                                              duration=self.window_seconds)
            self.recipe.validate()
            self.bank, self.skipped = AudioBank.load(clips, self.recipe)
            # Checked here, before training (not at the first example), and its notes
            # logged once rather than for every example.
            check_bank(self.bank, self.recipe, self.skipped)
            for note in bank_notes(self.bank, self.recipe):
                logging.getLogger(__name__).warning(note)
        except (CorpusError, RecipeError) as exc:
            raise DataUsageError(f"{self.manifest}: {exc}") from None
        if not self.tags:
            self.tags = manifest_tags(clips)
        if not self.phrasings:
            self.phrasings = manifest_phrasings(clips)

    def raw(self, index: int) -> Example:
        from ..synth import make_mixture

        mixture = make_mixture(self.bank, self.recipe, self.seed, index)  # the seed's index-th
        audio = resample(mixture.audio, self.recipe.sample_rate, self.sample_rate)
        return Example(fit_window(audio, self.samples),
                       clip_labels(mixture.labels, self.window_seconds),
                       list(mixture.plan["negatives"]), mixture.id)

    def describe(self) -> str:
        return f"{self.manifest} (on-the-fly synthesis, seed {self.seed})"


def manifest_tags(clips) -> dict[str, list[str]]:
    """{label: its clip's tags}, for caption→tag replacement."""
    return {c.label: [t for t in c.tags if t != c.label] for c in clips if c.tags}


def manifest_phrasings(clips) -> dict[str, list[str]]:
    """{label: its other captions}: a manifest row's later captions rephrase the first."""
    out: dict[str, list[str]] = {}
    for clip in clips:
        for text in clip.captions[1:]:
            if text != clip.label and text not in out.setdefault(clip.label, []):
                out[clip.label].append(text)
    return {k: v for k, v in out.items() if v}


def open_data(path: str | Path, sample_rate: int, window_seconds: float, seed: int = 0,
              augment: Augment | None = None, tags_manifest: str | Path | None = None,
              recipe=None) -> TrainingData:
    """A synth output folder, or a corpus manifest (.csv/.jsonl) for on-the-fly mixtures.

    ``recipe`` (a SedRecipe) shapes on-the-fly mixtures; a pre-rendered folder refuses it.
    """
    path = Path(path)
    tags = phrasings = None
    if tags_manifest:
        from ..synth import CorpusError, read_manifest

        try:
            clips = read_manifest(tags_manifest)
        except CorpusError as exc:
            raise DataUsageError(f"--tags {exc}") from None
        tags = manifest_tags(clips)
        phrasings = manifest_phrasings(clips)
    kw = dict(sample_rate=sample_rate, window_seconds=window_seconds, seed=seed,
              augment=augment, tags=tags, phrasings=phrasings)
    if path.is_dir():
        if recipe is not None:
            raise DataUsageError(f"{path}: a recipe shapes mixtures made on the fly from a "
                                 "manifest; this folder's mixtures are already rendered")
        return FolderData(path, **kw)
    if path.is_file() and path.suffix.lower() in (".csv", ".jsonl", ".json"):
        return SynthData(path, recipe=recipe, **kw)
    if not path.exists():
        raise DataUsageError(f"--data {path}: no such folder or manifest")
    raise DataUsageError(f"--data {path}: expected a `flam synth` output folder or a "
                         ".csv/.jsonl manifest")
