"""Plan and render one mixture: placement, levels, fades, A-weighted relabelling, negatives.

A mixture is made in two steps so that it can always be re-rendered exactly:

* ``plan_sed`` / ``plan_ground`` draw every random choice from one generator seeded by
  ``(seed, recipe, index)`` and return a JSON-able plan (clips, sample offsets, gains);
* ``render`` turns a plan into audio and frame labels, deterministically.

Labels follow FLAM's relabelling: each placed event piece is measured with A-weighted RMS on a
20 ms frame grid; frames more than ``active_db`` below the event's loudest frame are inactive;
short gaps are filled and blips removed. Labels therefore say where the event's energy is,
not merely where the clip was pasted.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..audio import AudioError, read_blocks, resample
from ..events import find_runs
from .corpus import Clip, CorpusError, Skipped, content_words
from .recipe import GroundRecipe, Recipe, RecipeError, SedRecipe

RECIPE_CODES = {"sed": 1, "ground": 2}
BACKGROUND_CROSSFADE = 0.05  # seconds, where a short background is looped


def mixture_id(recipe: Recipe, index: int) -> str:
    return f"{recipe.name}_{index:06d}"


def mixture_rng(seed: int, recipe: Recipe, index: int) -> np.random.Generator:
    """One generator per mixture: the result never depends on the order or the worker."""
    return np.random.default_rng([int(seed), RECIPE_CODES[recipe.name], int(index)])


# ---------------------------------------------------------------------------------------------
# Levels


def _a_weighting_power(n_fft: int, sample_rate: int) -> np.ndarray:
    """IEC 61672 A-weighting as a power gain per rFFT bin (0 dB at 1 kHz)."""
    f2 = np.fft.rfftfreq(n_fft, 1.0 / sample_rate) ** 2
    ra = (12194.0**2 * f2**2) / (
        (f2 + 20.6**2) * np.sqrt((f2 + 107.7**2) * (f2 + 737.9**2)) * (f2 + 12194.0**2))
    ra[0] = 0.0
    return (ra * 10 ** (2.0 / 20)) ** 2


class LevelMeter:
    """A-weighted RMS level (dB) per frame of a fixed grid."""

    def __init__(self, sample_rate: int, hop: float, window: float):
        self.hop = round(hop * sample_rate)
        self.window = max(self.hop, round(window * sample_rate))
        self.weights = _a_weighting_power(self.window, sample_rate)
        self.taper = np.hanning(self.window + 2)[1:-1].astype(np.float64)
        # Scale so a full-scale 1 kHz sine reads about -3 dB, like a plain RMS meter.
        self.norm = 2.0 / (np.sum(self.taper**2) * self.window)

    def levels(self, signal: np.ndarray, first_frame: int, n_frames: int,
               signal_start: int) -> np.ndarray:
        """Levels of frames ``first_frame …`` of a timeline holding ``signal`` at ``signal_start``.

        Frame k is centred on ((k + 0.5) · hop); samples outside ``signal`` count as silence.
        """
        if n_frames <= 0:
            return np.zeros(0)
        half = self.window // 2
        centre0 = first_frame * self.hop + self.hop // 2
        begin = centre0 - half  # timeline sample of the first window's first sample
        span = (n_frames - 1) * self.hop + self.window
        local = np.zeros(span, dtype=np.float64)
        a = max(begin, signal_start)
        b = min(begin + span, signal_start + len(signal))
        if b > a:
            local[a - begin: b - begin] = signal[a - signal_start: b - signal_start]
        frames = np.lib.stride_tricks.sliding_window_view(local, self.window)[:: self.hop]
        frames = frames[:n_frames] * self.taper
        power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2) @ self.weights
        return 10.0 * np.log10(power * self.norm + 1e-20)


# ---------------------------------------------------------------------------------------------
# The decoded corpus


@dataclass
class BankClip:
    clip: Clip
    audio: np.ndarray  # float32 mono at the bank's rate
    level_db: float  # RMS of the active part (frames within 30 dB of the loudest), dBFS
    peak_level_db: float  # loudest A-weighted frame, dB (relabelling reference; events only)
    words: set[str] = field(default_factory=set)


class AudioBank:
    """The corpus decoded once, mono, at the mixture rate, with per-clip levels.

    Decoding happens before any mixture is planned, so a clip that fails to decode is skipped
    up front and every worker sees the same corpus: output never depends on the worker count.
    """

    def __init__(self, events: list[BankClip], backgrounds: list[BankClip], sample_rate: int,
                 meter: LevelMeter):
        self.events = events
        self.backgrounds = backgrounds
        self.sample_rate = sample_rate
        self.meter = meter
        self.by_path = {c.clip.path: c for c in events + backgrounds}

    @property
    def nbytes(self) -> int:
        return sum(c.audio.nbytes for c in self.events + self.backgrounds)

    @classmethod
    def load(cls, clips: Iterable[Clip], recipe: Recipe,
             on_clip: Callable[[int, int, str], None] | None = None,
             cache: bool = True) -> tuple["AudioBank", list[Skipped]]:
        """Decode every clip (or take it from the decoded-clip cache) and measure its levels.

        Decoded, resampled clips are cached under ``$FLAM_CACHE/synth/`` keyed by the clip's
        sha256 and the rate, so a second run over the same corpus skips decoding.
        """
        clips = list(clips)
        sr = recipe.sample_rate
        meter = LevelMeter(sr, recipe.label_hop, recipe.label_window)
        events, backgrounds, skipped = [], [], []
        for number, clip in enumerate(clips, 1):
            if on_clip:
                on_clip(number, len(clips), clip.path)
            try:
                audio = _decoded(clip, sr, cache)
            except AudioError as exc:
                skipped.append(Skipped(clip.path, str(exc), failed=True))
                continue
            except Exception as exc:  # unreadable header, vanished file
                skipped.append(Skipped(clip.path, f"not readable ({exc.__class__.__name__}: {exc})",
                                       failed=True))
                continue
            if len(audio) < meter.hop:
                skipped.append(Skipped(clip.path, "shorter than one 20 ms frame"))
                continue
            if float(np.abs(audio).max()) < 1e-4:
                skipped.append(Skipped(clip.path, "silent"))
                continue
            # The loudest A-weighted frame is the relabelling reference: events only.
            peak_level = float(meter.levels(audio, 0, max(1, len(audio) // meter.hop), 0).max()
                               ) if clip.kind == "event" else 0.0
            entry = BankClip(clip, audio, _active_rms_db(audio, meter.hop), peak_level,
                             clip.words())
            (events if clip.kind == "event" else backgrounds).append(entry)
        return cls(events, backgrounds, sr, meter), skipped


# Bump when decoding or resampling changes, so stale cached clips are never used.
DECODE_VERSION = 1
def _decoded(clip: Clip, sample_rate: int, use_cache: bool) -> np.ndarray:
    """Mono float32 at ``sample_rate``; from the cache when this clip was decoded before."""
    import soundfile as sf

    from ..files import atomic_path
    from ..files import flam_cache_dir

    cached = None
    if use_cache and len(clip.sha256) == 64:
        cached = (flam_cache_dir() / "synth" / f"v{DECODE_VERSION}" / clip.sha256[:2]
                  / f"{clip.sha256}-{sample_rate}.npy")
        if cached.exists():
            try:
                return np.load(cached)
            except (OSError, ValueError):
                pass  # a damaged cache file: decode again and replace it
    if not Path(clip.path).exists():  # libsndfile would only say "System error."
        raise AudioError("no such file")
    rate = sf.info(str(clip.path)).samplerate
    blocks = list(read_blocks(_path(clip)))
    audio = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    audio = np.ascontiguousarray(resample(audio, rate, sample_rate), dtype=np.float32)
    if cached is not None:
        try:
            with atomic_path(cached) as tmp:
                with open(tmp, "wb") as handle:
                    np.save(handle, audio)
        except OSError:
            pass  # a read-only cache only costs speed
    return audio


def _path(clip: Clip):
    return Path(clip.path)


def _active_rms_db(audio: np.ndarray, hop: int) -> float:
    """RMS over the frames within 30 dB of the loudest: silence around an event is not level."""
    n = max(1, len(audio) // hop)
    frames = audio[: n * hop].astype(np.float64).reshape(n, hop) if len(audio) >= hop else \
        audio.astype(np.float64)[None, :]
    power = (frames**2).mean(axis=1)
    active = power >= power.max() * 1e-3
    return 10.0 * math.log10(power[active].mean() + 1e-20)


# ---------------------------------------------------------------------------------------------
# Planning


class _Timeline:
    """Placed pieces, for the concurrency limit and the gap between pieces of one label."""

    def __init__(self, total: int, max_concurrent: int):
        self.total = total
        self.max_concurrent = max_concurrent
        self.pieces: list[tuple[int, int, str]] = []  # (start, end, label)

    def fits(self, start: int, end: int, label: str, min_gap: int) -> bool:
        points = [start] + [s for s, _, _ in self.pieces if start < s < end]
        for t in points:
            if sum(1 for s, e, _ in self.pieces if s <= t < e) + 1 > self.max_concurrent:
                return False
        if min_gap:
            for s, e, lab in self.pieces:
                if lab == label and s - min_gap < end and start < e + min_gap:
                    return False
        return True

    def place(self, length: int, label: str, rng: np.random.Generator,
              min_gap: int = 0, tries: int = 50) -> int | None:
        if length > self.total:
            return None
        for _ in range(tries):
            start = int(rng.integers(0, self.total - length + 1))
            if self.fits(start, start + length, label, min_gap):
                self.pieces.append((start, start + length, label))
                return start
        return None


def _background_pieces(bank: AudioBank, rng: np.random.Generator, total: int,
                       index: int | None = None) -> list[dict]:
    """One background clip cropped to ``total`` samples, looped with crossfades if shorter."""
    if index is None:
        index = int(rng.integers(len(bank.backgrounds)))
    clip = bank.backgrounds[index]
    length = len(clip.audio)
    if length >= total:
        start = int(rng.integers(0, length - total + 1))
        return [{"path": clip.clip.path, "clip_start": start, "length": total, "onset": 0,
                 "fade": 0}]
    xfade = min(round(BACKGROUND_CROSSFADE * bank.sample_rate), length // 4)
    pieces, onset = [], 0
    start = int(rng.integers(0, length - 2 * xfade + 1))
    while True:
        remaining = total - onset
        take = min(length - start, remaining)
        pieces.append({"path": clip.clip.path, "clip_start": start, "length": take,
                       "onset": onset, "fade": xfade})
        if take == remaining:
            return pieces
        onset += take - xfade  # the next loop overlaps this one by the crossfade
        start = 0


def _pick(candidates: list, rng: np.random.Generator):
    return candidates[int(rng.integers(len(candidates)))]


def _event_chances(candidates: list[BankClip], balance: float) -> np.ndarray | None:
    """Each clip's chance of being drawn: (clips sharing its caption)^-balance, normalised, so
    rare captions are heard more often; None for balance 0 (FLAM's uniform draw)."""
    if balance == 0:
        return None
    counts = Counter(c.clip.label for c in candidates)
    weights = np.array([counts[c.clip.label] ** -balance for c in candidates])
    return weights / weights.sum()


def _pick_event(candidates: list[BankClip], chances: np.ndarray | None,
                rng: np.random.Generator) -> BankClip:
    """An event clip; uniform chances keep FLAM's draw and its random stream."""
    if chances is None:
        return _pick(candidates, rng)
    return candidates[int(rng.choice(len(candidates), p=chances))]


def _event_gain(clip: BankClip, background_dbfs: float, rng, recipe: Recipe) -> float:
    return round(background_dbfs + float(rng.uniform(*recipe.event_db)) - clip.level_db, 4)


def _negatives(bank: AudioBank, present: set[str], avoid_words: set[str], count: int,
               rng: np.random.Generator) -> list[str]:
    """Captions absent from the mixture that share no content word with what is in it."""
    labels = sorted({c.clip.label for c in bank.events})
    candidates = [label for label in labels
                  if label not in present and not (content_words(label) & avoid_words)]
    if not candidates or count <= 0:
        return []
    chosen = rng.choice(len(candidates), size=min(count, len(candidates)), replace=False)
    return [candidates[int(i)] for i in chosen]


def _related_words(bank: AudioBank, paths: Iterable[str]) -> set[str]:
    words: set[str] = set()
    for path in paths:
        words |= bank.by_path[path].words
    return words


def _occurrence(clip: BankClip, group: int, mode: str, clip_start: int, length: int,
                onset: int, gain_db: float, recipe: Recipe) -> dict:
    return {"path": clip.clip.path, "label": clip.clip.label, "group": group, "mode": mode,
            "clip_start": clip_start, "length": length, "onset": onset, "gain_db": gain_db,
            "fade": round(recipe.fade * recipe.sample_rate)}


def _new_plan(bank: AudioBank, recipe: Recipe, seed: int, index: int, rng, total: int) -> dict:
    """The parts every plan starts with: identity, length and a background at a drawn level."""
    background_dbfs = round(float(rng.uniform(*recipe.background_dbfs)), 4)
    plan = {"id": mixture_id(recipe, index), "recipe": recipe.name, "seed": int(seed),
            "index": int(index), "sample_rate": recipe.sample_rate, "samples": total,
            "background_dbfs": background_dbfs, "occurrences": []}
    if recipe.augments_background():
        plan.update(_augmented_background(bank, recipe, rng, total, background_dbfs))
        return plan
    background = _background_pieces(bank, rng, total)
    gain = round(background_dbfs - bank.by_path[background[0]["path"]].level_db, 4)
    for piece in background:
        piece["gain_db"] = gain
    plan["background"] = background
    return plan


def _playback_speed(speed: float) -> float:
    """Speeds on a 1/40 grid: resampling then uses a short kernel (rates share a big factor)."""
    return round(speed * 40) / 40


def _augmented_background(bank: AudioBank, recipe: Recipe, rng, total: int,
                          background_dbfs: float) -> dict:
    """Background pieces of one or more layers, each layer with a speed and a direction.

    Layer 0 sits at ``background_dbfs``; extra layers are other recordings ``layer_db`` below
    it. A layer at speed s reads ``s · total`` source samples and is resampled to ``total``.
    """
    layers_wanted = int(rng.integers(recipe.background_layers[0],
                                     recipe.background_layers[1] + 1))
    count = min(layers_wanted, len(bank.backgrounds))
    chosen = rng.choice(len(bank.backgrounds), size=count, replace=False)
    pieces, layers = [], []
    for layer, index in enumerate(int(i) for i in chosen):
        speed = _playback_speed(float(rng.uniform(*recipe.background_speed)))
        reverse = bool(rng.random() < recipe.background_reverse_rate)
        source = math.ceil(total * speed)
        relative = 0.0 if layer == 0 else float(rng.uniform(*recipe.layer_db))
        gain = round(background_dbfs + relative - bank.backgrounds[index].level_db, 4)
        for piece in _background_pieces(bank, rng, source, index):
            pieces.append({**piece, "gain_db": gain, "layer": layer})
        layers.append({"samples": source, "speed": speed, "reverse": reverse})
    tilt = float(rng.uniform(-recipe.background_tilt_db, recipe.background_tilt_db))
    return {"background": pieces, "background_layers": layers,
            "background_tilt_db": round(tilt, 3)}


def _event_variation(recipe: Recipe, rng, length: int, total: int) -> dict:
    """An event's drawn speed and spectral tilt (SED recipes with event augmentation only;
    other plans get no keys, so they stay as they were). A speed that would stretch the clip
    past the mixture plays it at its own speed."""
    if not (isinstance(recipe, SedRecipe) and recipe.augments_events()):
        return {}
    speed = _playback_speed(float(rng.uniform(*recipe.event_speed)))
    tilt = round(float(rng.uniform(-recipe.event_tilt_db, recipe.event_tilt_db)), 3)
    if _played_length(length, speed, recipe.sample_rate) > total:
        speed = 1.0
    variation = {"speed": speed, "tilt_db": tilt}
    # Drawn only when asked for, so recipes without reverb keep their random stream.
    if recipe.event_reverb_rate > 0 and rng.random() < recipe.event_reverb_rate:
        variation["reverb"] = {"rt60": round(float(rng.uniform(*recipe.event_rt60)), 3),
                               "db": round(float(rng.uniform(*recipe.event_reverb_db)), 2),
                               "seed": int(rng.integers(2**31))}
    return variation


def _read_rate(rate: int, speed: float) -> int:
    """The rate a clip played at ``speed`` is read at: ``speed · rate`` snapped to a multiple of
    rate/k, the largest whole fraction of the rate with k ≥ 40. Read and write rates then share
    that factor and the resampling kernel stays short. At 16 or 48 kHz that is rate/40, so the
    1/40 speed grid is exact; at 44.1 kHz it is 1050 Hz (1/42): reading at
    round(44100 · 1.025) = 45203 Hz instead would share no factor but 1 with 44,100 and build a
    kernel of gigabytes."""
    k = next(k for k in range(40, rate + 1) if rate % k == 0)
    unit = rate // k
    return max(unit, round(rate * speed / unit) * unit)


def _played_length(samples: int, speed: float, rate: int) -> int:
    """Samples that ``samples`` source samples last when played at ``speed`` (read at rate
    ``speed · rate``, written at ``rate``: the resampler's own output length)."""
    if speed == 1.0:
        return samples
    return math.ceil(samples * rate / _read_rate(rate, speed))


def _played_at(audio: np.ndarray, speed: float, rate: int) -> np.ndarray:
    """``audio`` played at ``speed``× (read at rate speed·rate, written at rate): pitch moves
    with it, and it lasts exactly ``_played_length`` samples (the length the plan placed)."""
    if speed == 1.0:
        return audio
    played = _played_length(len(audio), speed, rate)
    audio = resample(audio, _read_rate(rate, speed), rate)[:played]
    return np.pad(audio, (0, played - len(audio)))


def _add_negatives(plan: dict, bank: AudioBank, recipe: Recipe, rng) -> dict:
    occurrences = plan["occurrences"]
    present = {o["label"] for o in occurrences}
    avoid = _related_words(bank, [o["path"] for o in occurrences]
                           + sorted({b["path"] for b in plan["background"]}))
    plan["negatives"] = _negatives(bank, present, avoid, recipe.negatives, rng)
    return plan


def plan_sed(bank: AudioBank, recipe: SedRecipe, seed: int, index: int) -> dict:
    """FLAM's recipe: one background, a few events, splits and repeats, ≤ N at once."""
    rng = mixture_rng(seed, recipe, index)
    total = round(recipe.duration * recipe.sample_rate)
    plan = _new_plan(bank, recipe, seed, index, rng, total)
    background_dbfs = plan["background_dbfs"]
    timeline = _Timeline(total, recipe.max_concurrent)
    usable = [c for c in bank.events if len(c.audio) <= total]
    min_piece = round(recipe.min_piece * recipe.sample_rate)
    chances = _event_chances(usable, recipe.event_balance)
    occurrences, dropped = plan["occurrences"], 0
    for group in range(int(rng.integers(recipe.events[0], recipe.events[1] + 1))):
        clip = _pick_event(usable, chances, rng)
        gain = _event_gain(clip, background_dbfs, rng, recipe)
        length = len(clip.audio)
        variation = _event_variation(recipe, rng, length, total)
        u = float(rng.random())
        if u < recipe.split_rate:
            pieces = int(rng.integers(recipe.split_pieces[0], recipe.split_pieces[1] + 1))
            pieces = min(pieces, length // min_piece)
            mode = "split" if pieces >= 2 else "single"
        elif u < recipe.split_rate + recipe.repeat_rate:
            pieces = int(rng.integers(recipe.repeat_times[0], recipe.repeat_times[1] + 1))
            mode = "repeat"
        else:
            pieces, mode = 1, "single"
        if mode == "split":
            spare = length - pieces * min_piece
            cuts = np.sort(rng.integers(0, spare + 1, size=pieces - 1))
            bounds = np.concatenate([[0], cuts + np.arange(1, pieces) * min_piece, [length]])
            spans = [(int(a), int(b - a)) for a, b in zip(bounds[:-1], bounds[1:])]
        else:
            spans = [(0, length)] * pieces
        for clip_start, piece_length in spans:
            played = _played_length(piece_length, variation.get("speed", 1.0), recipe.sample_rate)
            onset = timeline.place(played, clip.clip.label, rng)
            if onset is None:
                dropped += 1
                continue
            occurrences.append({**_occurrence(clip, group, mode, clip_start, piece_length, onset,
                                              gain, recipe), **variation})
    plan["dropped_pieces"] = dropped
    return _add_negatives(plan, bank, recipe, rng)


def ground_constraints(bank: AudioBank, recipe: GroundRecipe) -> None:
    """Refuse a request no clip can satisfy, with the numbers that make it impossible."""
    shortest_clip = min(len(c.audio) for c in bank.events) / recipe.sample_rate
    budget = recipe.max_density * recipe.duration[0] - 2 * recipe.label_hop
    if shortest_clip >= budget:
        raise RecipeError(
            f"impossible: the shortest event is {shortest_clip:.2f} s, but targets must cover "
            f"less than {recipe.max_density * 100:g}% of a {recipe.duration[0]:g} s clip "
            f"({max(budget, 0):.2f} s); raise duration or max_density")


def plan_ground(bank: AudioBank, recipe: GroundRecipe, seed: int, index: int) -> dict:
    """A long clip with short hidden targets, distractor events and absent-event queries."""
    rng = mixture_rng(seed, recipe, index)
    sr = recipe.sample_rate
    hop = round(recipe.label_hop * sr)
    total = round(float(rng.uniform(*recipe.duration)) * sr / hop) * hop
    plan = _new_plan(bank, recipe, seed, index, rng, total)
    background_dbfs = plan["background_dbfs"]
    timeline = _Timeline(total, recipe.max_concurrent)
    # Each occurrence may gain up to two partial frames when labelled on the grid.
    budget = recipe.max_density * total - 2 * hop
    min_gap = round(recipe.min_gap * sr)
    occurrences, targets = plan["occurrences"], []
    target_words: set[str] = set()
    for group in range(recipe.targets):
        candidates = [c for c in bank.events
                      if len(c.audio) + 2 * hop < budget and c.clip.label not in targets
                      and not (c.words & target_words)]
        if not candidates:
            break
        clip = _pick(candidates, rng)
        times = int(rng.integers(recipe.occurrences[0], recipe.occurrences[1] + 1))
        times = max(1, min(times, int(budget // (len(clip.audio) + 2 * hop))))
        gain = _event_gain(clip, background_dbfs, rng, recipe)
        placed = 0
        for _ in range(times):
            onset = timeline.place(len(clip.audio), clip.clip.label, rng, min_gap=min_gap)
            if onset is None:
                continue
            placed += 1
            occurrences.append(_occurrence(clip, group, "target", 0, len(clip.audio), onset,
                                           gain, recipe))
        if placed:
            targets.append(clip.clip.label)
            target_words |= clip.words
    per_minute = float(rng.uniform(*recipe.distractors_per_minute))
    distractors = [c for c in bank.events if not (c.words & target_words)
                   and c.clip.label not in targets]
    for number in range(round(per_minute * total / sr / 60) if distractors else 0):
        clip = _pick(distractors, rng)
        gain = _event_gain(clip, background_dbfs, rng, recipe)
        onset = timeline.place(len(clip.audio), clip.clip.label, rng)
        if onset is None:
            continue
        occurrences.append(_occurrence(clip, recipe.targets + number, "distractor", 0,
                                       len(clip.audio), onset, gain, recipe))
    plan["targets"] = targets
    return _add_negatives(plan, bank, recipe, rng)


# ---------------------------------------------------------------------------------------------
# Rendering


def _envelope(length: int, fade: int) -> np.ndarray | None:
    fade = min(fade, length // 2)
    if fade <= 0:
        return None
    envelope = np.ones(length, dtype=np.float32)
    ramp = (np.arange(fade, dtype=np.float32) + 0.5) / fade
    envelope[:fade] = ramp
    envelope[length - fade:] = ramp[::-1]
    return envelope


def _piece_audio(bank: AudioBank, piece: dict, rate: int) -> np.ndarray:
    """One planned piece: cut, level, then (events with augmentation) speed, tilt and reverb,
    faded."""
    source = bank.by_path[piece["path"]].audio
    audio = source[piece["clip_start"]: piece["clip_start"] + piece["length"]]
    if len(audio) != piece["length"]:
        raise CorpusError(f"{piece['path']}: shorter than the plan expects (changed on disk?)")
    audio = audio * np.float32(10 ** (piece["gain_db"] / 20))
    audio = _played_at(audio, piece.get("speed", 1.0), rate)
    if piece.get("tilt_db"):
        audio = _tilted(audio, piece["tilt_db"], rate)
    if piece.get("reverb"):
        audio = _reverberant(audio, piece["reverb"], rate)
    envelope = _envelope(len(audio), piece["fade"])
    return audio if envelope is None else audio * envelope


TILT_LIMIT_DB = 18.0  # the tilt stops growing this far from 1 kHz (in dB)


def _fast_fft_length(n: int) -> int:
    """The smallest length ≥ n with no prime factor above 5 (n itself when it has none)."""
    best = 1 << max(0, (n - 1).bit_length())
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            candidate = power35
            while candidate < n:
                candidate *= 2
            best = min(best, candidate)
            power35 *= 3
        power5 *= 5
    return best


def _tilted(audio: np.ndarray, tilt_db: float, rate: int) -> np.ndarray:
    """The spectrum tilted by ``tilt_db`` per octave about 1 kHz, at the same RMS level: the
    tilt changes colour, not loudness."""
    total = len(audio)
    if not total:
        return audio
    signal = audio.astype(np.float64)
    n_fft = _fast_fft_length(total)  # an event clip's length can be prime: slow to transform
    spectrum = np.fft.rfft(signal, n=n_fft)
    octaves = np.log2(np.maximum(np.fft.rfftfreq(n_fft, 1.0 / rate), 20.0) / 1000.0)
    gain_db = np.clip(tilt_db * octaves, -TILT_LIMIT_DB, TILT_LIMIT_DB)
    tilted = np.fft.irfft(spectrum * 10 ** (gain_db / 20), n=n_fft)[:total]
    return _at_level_of(tilted, signal)


def _at_level_of(changed: np.ndarray, original: np.ndarray) -> np.ndarray:
    """``changed`` scaled to ``original``'s RMS level (both float64), as float32: an effect
    that changes colour or space must not change loudness, which the recipe set."""
    before = float(np.sqrt(np.mean(original**2)))
    after = float(np.sqrt(np.mean(changed**2)))
    return (changed * (before / after if after > 0 else 0.0)).astype(np.float32)


def _reverberant(audio: np.ndarray, reverb: dict, rate: int) -> np.ndarray:
    """``audio`` in a synthetic room: the direct sound plus its convolution with exponentially
    decaying Gaussian noise (−60 dB after ``rt60`` s), ``db`` below the direct sound in energy,
    at the dry RMS level and length (the tail past the piece is cut; the fade covers the cut)."""
    rt60, n = float(reverb["rt60"]), len(audio)
    if not n:
        return audio
    taps = max(1, min(round(rt60 * rate), 4 * n))
    noise = np.random.default_rng(int(reverb["seed"])).standard_normal(taps)
    response = noise * np.exp(-6.9078 * np.arange(taps) / (rt60 * rate))  # ln(1000): −60 dB
    response *= 10 ** (float(reverb["db"]) / 20) / np.sqrt(np.sum(response**2))
    n_fft = _fast_fft_length(n + taps - 1)
    dry = audio.astype(np.float64)
    wet = np.fft.irfft(np.fft.rfft(dry, n_fft) * np.fft.rfft(response, n_fft), n_fft)[:n]
    return _at_level_of(dry + wet, dry)


def _augmented_background_audio(plan: dict, bank: AudioBank) -> np.ndarray:
    """Render every layer (backwards and resampled as planned), sum, then tilt the spectrum."""
    total, rate = plan["samples"], plan["sample_rate"]
    mix = np.zeros(total, dtype=np.float32)
    for number, layer in enumerate(plan["background_layers"]):
        audio = np.zeros(layer["samples"], dtype=np.float32)
        for piece in plan["background"]:
            if piece.get("layer", 0) == number:
                end = piece["onset"] + piece["length"]
                audio[piece["onset"]: end] += _piece_audio(bank, piece, rate)
        if layer["reverse"]:
            audio = np.ascontiguousarray(audio[::-1])
        audio = _played_at(audio, layer["speed"], rate)
        n = min(total, len(audio))
        mix[:n] += audio[:n]
    tilt = plan.get("background_tilt_db", 0.0)
    return _tilted(mix, tilt, rate) if tilt else mix


def smooth_frames(active: np.ndarray, recipe: Recipe, event_frames: int) -> np.ndarray:
    """FLAM's label smoothing: fill short gaps, then drop blips of long events."""
    active = active.copy()
    runs = find_runs(active)
    for (_, end), (start, _) in zip(runs[:-1], runs[1:]):
        if start - end < recipe.fill_gap_frames:
            active[end:start] = True
    if event_frames > recipe.min_run_event_frames:
        for start, end in find_runs(active):
            if end - start < recipe.min_run_frames:
                active[start:end] = False
    return active


@dataclass
class Mixture:
    plan: dict
    audio: np.ndarray  # float32 mono at plan["sample_rate"]
    labels: dict[str, list[list[float]]]  # label → [[onset, offset], …] in seconds
    frame_hop: float

    @property
    def id(self) -> str:
        return self.plan["id"]

    @property
    def duration(self) -> float:
        return len(self.audio) / self.plan["sample_rate"]

    def metadata(self) -> dict:
        return {**self.plan, "duration": self.duration, "label_hop": self.frame_hop,
                "labels": self.labels}


def render(plan: dict, bank: AudioBank, recipe: Recipe) -> Mixture:
    """Audio and A-weighted frame labels of a plan (deterministic)."""
    total = plan["samples"]
    meter = bank.meter
    if "background_layers" in plan:
        mix = _augmented_background_audio(plan, bank)
    else:
        mix = np.zeros(total, dtype=np.float32)
        for piece in plan["background"]:
            end = piece["onset"] + piece["length"]
            mix[piece["onset"]: end] += _piece_audio(bank, piece, plan["sample_rate"])
    n_frames = math.ceil(total / meter.hop)
    masks: dict[str, np.ndarray] = {}
    for piece in plan["occurrences"]:
        audio = _piece_audio(bank, piece, plan["sample_rate"])
        onset = piece["onset"]
        mix[onset: onset + len(audio)] += audio
        first = onset // meter.hop
        last = min(n_frames, math.ceil((onset + len(audio)) / meter.hop))
        levels = meter.levels(audio, first, last - first, onset)
        reference = bank.by_path[piece["path"]].peak_level_db + piece["gain_db"]
        active = smooth_frames(levels >= reference + recipe.active_db, recipe, last - first)
        mask = masks.setdefault(piece["label"], np.zeros(n_frames, dtype=bool))
        mask[first:last] |= active
    peak = float(np.abs(mix).max()) if total else 0.0
    mix_gain = 1.0
    if peak > recipe.peak_limit:
        mix_gain = recipe.peak_limit / peak
        mix *= np.float32(mix_gain)
    plan = {**plan, "mix_gain": round(mix_gain, 6)}
    hop_s = meter.hop / recipe.sample_rate
    duration = total / recipe.sample_rate
    labels = {}
    for label in sorted(masks):
        runs = find_runs(masks[label])
        if runs:
            labels[label] = [[round(a * hop_s, 6), round(min(b * hop_s, duration), 6)]
                             for a, b in runs]
    return Mixture(plan, mix, labels, hop_s)


def frame_targets(labels: dict[str, list[list[float]]], queries: list[str], n_frames: int,
                  duration: float) -> np.ndarray:
    """[n_frames, len(queries)] fraction of each model frame covered by each query's labels.

    Training targets at any frame rate (FLAM: 32 frames per 10 s) from the 20 ms labels.
    """
    targets = np.zeros((n_frames, len(queries)), dtype=np.float32)
    frame = duration / n_frames
    for column, query in enumerate(queries):
        for onset, offset in labels.get(query, []):
            first, last = int(onset // frame), min(n_frames - 1, int(math.ceil(offset / frame)) - 1)
            for k in range(first, last + 1):
                overlap = min(offset, (k + 1) * frame) - max(onset, k * frame)
                targets[k, column] = min(1.0, targets[k, column] + max(0.0, overlap) / frame)
    return targets


def make_mixture(bank: AudioBank, recipe: Recipe, seed: int, index: int) -> Mixture:
    planner = plan_sed if isinstance(recipe, SedRecipe) else plan_ground
    plan = planner(bank, recipe, seed, index)
    for piece in plan["background"] + plan["occurrences"]:
        piece["sha256"] = bank.by_path[piece["path"]].clip.sha256  # provenance beyond the path
    return render(plan, bank, recipe)


def bank_notes(bank: AudioBank, recipe: Recipe) -> list[str]:
    """What the recipe asks for that this corpus can only partly give (mixtures are still made)."""
    notes = []
    most = recipe.background_layers[1]
    if most > len(bank.backgrounds):
        notes.append(f"the recipe layers up to {most} different background recordings, but the "
                     f"corpus has {len(bank.backgrounds)}: mixtures use at most "
                     f"{len(bank.backgrounds)}")
    return notes


def check_bank(bank: AudioBank, recipe: Recipe, skipped: list | None = None) -> None:
    """Refuse corpora and requests that cannot make a single mixture; ``skipped`` (from
    :meth:`AudioBank.load`) lets the refusal name a clip that could not be read."""
    try:
        _check_bank(bank, recipe)
    except CorpusError as exc:
        failed = [item for item in skipped or [] if item.failed]
        if not failed:
            raise
        raise CorpusError(f"{exc}; {len(failed)} clip(s) could not be read, e.g. "
                          f"{failed[0].path}: {failed[0].reason}") from None


def _check_bank(bank: AudioBank, recipe: Recipe) -> None:
    if not bank.backgrounds:
        raise CorpusError("the corpus has no usable background clip (kind=background)")
    if not bank.events:
        raise CorpusError("the corpus has no usable event clip (kind=event)")
    if isinstance(recipe, SedRecipe):
        total = round(recipe.duration * recipe.sample_rate)
        if not any(len(c.audio) <= total for c in bank.events):
            shortest = min(len(c.audio) for c in bank.events) / recipe.sample_rate
            raise RecipeError(
                f"impossible: every event is longer than the {recipe.duration:g} s mixture "
                f"(shortest {shortest:.2f} s)")
    else:
        ground_constraints(bank, recipe)
