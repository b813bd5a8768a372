"""Recipes: every number that shapes a synthetic mixture, with documented defaults.

``SedRecipe`` follows FLAM's data recipe (the FLAM paper, §4 and appendix C.4); where the paper's
number is lost we choose one and say so. ``GroundRecipe`` builds SpotSound-style long clips in
which the target events cover less than 10% of the clip. Recipes save to and load from small
JSON files (``--recipe FILE``; ``flam synth sed --save-recipe FILE`` writes the defaults).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..files import write_text_atomic


class RecipeError(ValueError):
    """A recipe asks for something impossible or malformed (the message names the field)."""


def _converted(value, kind: type):
    """``value`` as a field of type ``kind``; a whole-number field refuses 2.7 instead of
    silently truncating it to 2."""
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"expected a whole number, not {json.dumps(value)}")
    return kind(value)


@dataclass
class Recipe:
    """Fields shared by every recipe."""

    sample_rate: int = 48000  # FLAM's model rate
    audio_format: str = "flac"  # flac or wav (16-bit PCM)
    # Background level (RMS, dBFS) is drawn in this range; events are placed relative to it.
    background_dbfs: tuple[float, float] = (-35.0, -20.0)
    # Event level relative to the background (RMS of the event's active part, dB).
    # FLAM's range is lost ("offset from [lost] dB"); -5…+10 dB keeps events audible but not
    # always dominant.
    event_db: tuple[float, float] = (-5.0, 10.0)
    fade: float = 0.010  # 10 ms fade in and out per event piece (FLAM)
    max_concurrent: int = 3  # at most 3 events at once (FLAM)
    # Relabelling (FLAM): A-weighted RMS per event on a frame grid; frames quieter than
    # ``active_db`` below the event's loudest frame are inactive. The paper's hop (1200 at
    # 48 kHz = 25 ms) contradicts its own "50 Hz, 10 frames = 200 ms"; we use the 50 Hz reading:
    # 20 ms hop, 40 ms window, so the smoothing rules below mean exactly 200 ms and 40 ms.
    label_hop: float = 0.020
    label_window: float = 0.040
    active_db: float = -25.0  # the paper's threshold is lost
    fill_gap_frames: int = 10  # negative gaps shorter than this between positives → positive
    min_run_frames: int = 2  # positive runs shorter than this are dropped …
    min_run_event_frames: int = 10  # … when the event is longer than this
    negatives: int = 2  # absent captions (unrelated to the background) per mixture
    peak_limit: float = 0.89  # mixtures louder than -1 dBFS are scaled down: never clipped
    # Background augmentation, off by default so existing recipes make the same mixtures. A
    # model trained on a few dozen ambience recordings learns those recordings; varying them
    # (layered, faster or slower, backwards, brighter or darker) makes unheard ambiences less
    # likely to be mistaken for events.
    background_layers: tuple[int, int] = (1, 1)  # different ambience recordings layered
    layer_db: tuple[float, float] = (-10.0, 0.0)  # each extra layer's level relative to the first
    background_speed: tuple[float, float] = (1.0, 1.0)  # playback-rate factor per layer
    background_reverse_rate: float = 0.0  # probability that a layer plays backwards
    background_tilt_db: float = 0.0  # spectral tilt drawn in ±this many dB per octave

    name = "recipe"

    def validate(self) -> None:
        def check(condition: bool, message: str) -> None:
            if not condition:
                raise RecipeError(message)

        # JSON allows NaN and Infinity: a one-sided check such as "x >= 0" lets NaN through,
        # and an infinite end passes "low <= high". Refuse them here, by name, first.
        for item in fields(self):
            value = getattr(self, item.name)
            numbers = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
                raise RecipeError(f"{item.name} must be finite, not {json.dumps(value)}")
        check(8000 <= self.sample_rate <= 192000, "sample_rate must be 8000–192000")
        check(self.audio_format in ("flac", "wav"), "audio_format must be flac or wav")
        for name in ("background_dbfs", "event_db"):
            low, high = getattr(self, name)
            check(low <= high, f"{name}: low must not exceed high")
        check(-120 <= self.background_dbfs[0] and self.background_dbfs[1] < 0,
              "background_dbfs must be -120 dBFS or more and below 0 dBFS")
        check(-60 <= self.event_db[0] and self.event_db[1] <= 60, "event_db must be within ±60 dB")
        check(0 <= self.fade <= 0.5, "fade must be 0–0.5 s")
        check(self.max_concurrent >= 1, "max_concurrent must be at least 1")
        # A hop under 1 ms rounds to 0 samples at 8 kHz (a division by zero when labelling);
        # windows over 1 s no longer say where in a 10 s mixture an event is.
        check(0.001 <= self.label_hop <= self.label_window <= 1.0,
              "label_hop and label_window: need 0.001 ≤ label_hop ≤ label_window ≤ 1 s")
        # Frames quieter than active_db below the loudest are inactive: at 0 dB or above no
        # frame (or only the loudest) is, and every label would be empty.
        check(-120 <= self.active_db < 0, "active_db must be -120 dB or more and below 0 dB")
        for name in ("fill_gap_frames", "min_run_frames", "min_run_event_frames"):
            check(getattr(self, name) >= 0, f"{name} must be ≥ 0")
        check(self.negatives >= 0, "negatives must be ≥ 0")
        check(0 < self.peak_limit < 1, "peak_limit must be between 0 and 1")
        check(1 <= self.background_layers[0] <= self.background_layers[1] <= 4,
              "background_layers: need 1 ≤ low ≤ high ≤ 4")
        check(self.layer_db[0] <= self.layer_db[1] <= 0,
              "layer_db: need low ≤ high ≤ 0 (extra layers are never louder than the first)")
        check(0.5 <= self.background_speed[0] <= self.background_speed[1] <= 2.0,
              "background_speed: need 0.5 ≤ low ≤ high ≤ 2")
        check(0 <= self.background_reverse_rate <= 1, "background_reverse_rate must be 0–1")
        check(0 <= self.background_tilt_db <= 6, "background_tilt_db must be 0–6 dB per octave")

    def augments_background(self) -> bool:
        return (self.background_layers != (1, 1) or self.background_speed != (1.0, 1.0)
                or self.background_reverse_rate > 0 or self.background_tilt_db > 0)

    # -- files ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"recipe": self.name, **asdict(self)}

    def save(self, path: str | Path) -> Path:
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict, where: str = "recipe") -> "Recipe":
        data = dict(data)
        kind = data.pop("recipe", cls.name)
        if kind != cls.name:
            raise RecipeError(f"{where}: a {kind!r} recipe, not {cls.name!r}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise RecipeError(f"{where}: unknown field(s) {', '.join(unknown)}")
        values = {}
        defaults = cls()
        for key, value in data.items():
            default = getattr(defaults, key)
            try:
                if isinstance(default, tuple):
                    if not isinstance(value, (list, tuple)) or len(value) != 2:
                        raise ValueError("expected [low, high]")
                    value = tuple(_converted(v, type(default[0])) for v in value)
                elif isinstance(default, bool):
                    value = bool(value)
                else:
                    value = _converted(value, type(default))
            except (TypeError, ValueError, OverflowError) as exc:  # int(Infinity) overflows
                raise RecipeError(f"{where}: field {key}: {exc}") from None
            values[key] = value
        recipe = cls(**values)
        try:
            recipe.validate()
        except RecipeError as exc:
            raise RecipeError(f"{where}: {exc}") from None
        return recipe

    @classmethod
    def load(cls, path: str | Path) -> "Recipe":
        path = Path(path)
        try:
            # utf-8-sig: a recipe edited in Notepad starts with a byte-order mark.
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except FileNotFoundError:
            raise RecipeError(f"{path}: no such recipe file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RecipeError(f"{path}: not a recipe ({exc})") from None
        except RecursionError:
            raise RecipeError(f"{path}: not a recipe (JSON nested too deeply)") from None
        if not isinstance(data, dict):
            raise RecipeError(f"{path}: not a recipe (a JSON object)")
        return cls.from_dict(data, str(path))


@dataclass
class SedRecipe(Recipe):
    """FLAM's 10 s training mixtures: one background and a few events with frame labels."""

    duration: float = 10.0  # FLAM
    # Events per mixture (FLAM's count is lost): drawn uniformly from this range.
    events: tuple[int, int] = (1, 4)
    split_rate: float = 0.10  # FLAM: 10% of events are split …
    split_pieces: tuple[int, int] = (2, 3)  # … into this many pieces (lost; our choice) …
    min_piece: float = 0.5  # … each at least 0.5 s (FLAM)
    repeat_rate: float = 0.10  # FLAM: another 10% are repeated …
    repeat_times: tuple[int, int] = (2, 3)  # … this many times in all (lost; our choice)
    # Event augmentation, off by default like the background's. Held-out clips of a class come
    # from other recordings (another dog, another microphone); playing each event a little
    # faster or slower (pitch moves with it) and brighter or darker teaches the class, not
    # the clip.
    event_speed: tuple[float, float] = (1.0, 1.0)  # playback-rate factor per event
    event_tilt_db: float = 0.0  # spectral tilt per event, ±this many dB per octave
    # A room around the source: this share of events is convolved with a synthetic impulse
    # response (exponentially decaying noise) of reverberation time event_rt60 seconds, mixed
    # event_reverb_db below (or above) the direct sound; the level stays the event's own.
    event_reverb_rate: float = 0.0
    event_rt60: tuple[float, float] = (0.2, 1.0)
    event_reverb_db: tuple[float, float] = (-12.0, 0.0)
    # Which clip plays: FLAM draws every clip equally often (0), so a caption with 40 clips
    # is heard 20 times as often as one with 2 and the model learns the common captions far
    # more than the rare ones. A clip's weight is (clips sharing its caption)^-event_balance:
    # 1 draws every caption equally often (and replays single clips until they are learnt by
    # heart), 0.5 is in between.
    event_balance: float = 0.0

    name = "sed"

    def validate(self) -> None:
        super().validate()
        if not 0.5 <= self.duration <= 600:
            raise RecipeError("duration must be 0.5–600 s")
        for name in ("events", "split_pieces", "repeat_times"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise RecipeError(f"{name}: need 0 < low ≤ high")
        if self.split_pieces[0] < 2 or self.repeat_times[0] < 2:
            raise RecipeError("split_pieces and repeat_times start at 2")
        if not (0 <= self.split_rate and 0 <= self.repeat_rate
                and self.split_rate + self.repeat_rate <= 1):
            raise RecipeError("split_rate and repeat_rate must be ≥ 0 and sum to at most 1")
        if self.min_piece <= 0:
            raise RecipeError("min_piece must be positive")
        # More events than can overlap in the clip would make the placement search run for
        # minutes (100000) or quietly give up (1000 became about 21): refused by name.
        capacity = max(1, int(self.max_concurrent * self.duration / self.min_piece))
        if self.events[1] > capacity:
            raise RecipeError(f"events: at most {capacity} fit a {self.duration:g} s clip "
                              f"(max_concurrent {self.max_concurrent} × duration / min_piece "
                              f"{self.min_piece:g} s), not {self.events[1]}")
        if not 0.5 <= self.event_speed[0] <= self.event_speed[1] <= 2.0:
            raise RecipeError("event_speed: need 0.5 ≤ low ≤ high ≤ 2")
        if not 0 <= self.event_tilt_db <= 6:
            raise RecipeError("event_tilt_db must be 0–6 dB per octave")
        if not 0 <= self.event_reverb_rate <= 1:
            raise RecipeError("event_reverb_rate must be 0–1")
        if not 0.05 <= self.event_rt60[0] <= self.event_rt60[1] <= 3.0:
            raise RecipeError("event_rt60: need 0.05 ≤ low ≤ high ≤ 3 s")
        if not -30 <= self.event_reverb_db[0] <= self.event_reverb_db[1] <= 10:
            raise RecipeError("event_reverb_db: need −30 ≤ low ≤ high ≤ 10 dB")
        if not 0 <= self.event_balance <= 1:
            raise RecipeError("event_balance must be 0–1")

    def augments_events(self) -> bool:
        return (self.event_speed != (1.0, 1.0) or self.event_tilt_db > 0
                or self.event_reverb_rate > 0)


@dataclass
class GroundRecipe(Recipe):
    """SpotSound-style needles in a haystack: long clips, short targets, absent-event queries."""

    # Clip length drawn uniformly from this range: mean 53 s like SpotSound-Bench (53.4 s).
    duration: tuple[float, float] = (30.0, 76.0)
    targets: int = 1  # target captions per clip (each a positive query)
    occurrences: tuple[int, int] = (1, 3)  # occurrences of each target
    max_density: float = 0.10  # each target covers less than this fraction of the clip
    # Other events in the background (labelled, never asked about): a denser haystack.
    distractors_per_minute: tuple[float, float] = (0.0, 4.0)
    event_db: tuple[float, float] = (-5.0, 5.0)  # hidden: at most as loud as +5 dB
    negatives: int = 1
    min_gap: float = 0.5  # between occurrences of one target, so labels never merge

    name = "ground"

    def validate(self) -> None:
        super().validate()
        low, high = self.duration
        if not 1 <= low <= high <= 3600:
            raise RecipeError("duration: need 1 ≤ low ≤ high ≤ 3600 s")
        if not 0 < self.max_density <= 1:
            raise RecipeError("max_density must be in (0, 1]")
        if self.targets < 1:
            raise RecipeError("targets must be at least 1")
        if not 1 <= self.occurrences[0] <= self.occurrences[1]:
            raise RecipeError("occurrences: need 1 ≤ low ≤ high")
        if self.targets > 100 or self.occurrences[1] > 1000:
            raise RecipeError(f"targets ({self.targets}) and occurrences "
                              f"({self.occurrences[1]}): at most 100 targets of 1000 "
                              "occurrences each fit a clip")
        if not 0 <= self.distractors_per_minute[0] <= self.distractors_per_minute[1]:
            raise RecipeError("distractors_per_minute: need 0 ≤ low ≤ high")
        # Between occurrences of one target; longer than the longest clip is meaningless.
        if not 0 <= self.min_gap <= high:
            raise RecipeError(f"min_gap must be 0–{high:g} s (the longest clip)")


RECIPES = {"sed": SedRecipe, "ground": GroundRecipe}
