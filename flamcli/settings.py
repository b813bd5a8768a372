"""What decides a detection or grounding answer, besides the model and the audio: one value.

:class:`DetectionSettings` holds the queries, their thresholds, the median filter, the minimum
event length, the merge gap, the window overlap and the batch size. It is validated where it
is made (one :class:`SettingsError` line naming the setting), and then handed on unchanged: the
CLI's ``detect``, ``ground``, ``review`` and ``eval --audio`` and a Python caller build the same
value and give it to :class:`flamcli.detection.Detector`, so every setting is resolved and
checked once. Torch-free, so that building it costs nothing.

The one check that needs the model, whether the overlap leaves room in its window, is made by
the :class:`~flamcli.detection.Detector` that pairs the two.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Iterable, Mapping


# The defaults of every setting, here so the CLI can show them without importing torch. The
# threshold has none of its own: it is the model's (FlamConfig.presence_threshold).
DEFAULT_MEDIAN_FILTER = 3  # frames, as in FLAM's evaluation (§5.2)
# The presence defaults of `flam ground` (and `flam eval ground --audio`), chosen from refusal
# of absent queries against recall of present ones on a held-out `flam synth ground` set with
# bench/ground_presence.py (docs/benchmarks.md, "flam ground: presence defaults"). The
# threshold is the model's own (FlamConfig.presence_threshold, flam detect's default too).
# Measured on flam-tiny: a median filter only removed short true events (recall fell more
# than refusal rose) and no minimum beyond one 0.3125 s frame helped, so a single frame above
# the threshold is evidence; 0.3 s still drops slivers from finer-grained models.
DEFAULT_MIN_DURATION = 0.3  # seconds: shorter windows are not evidence of presence
DEFAULT_GROUND_MEDIAN_FILTER = 1  # frames (1 = off)
# Seconds between consecutive model windows on long files. 5 s (twice the audio-model work)
# localised flam-tiny's events slightly better and refused no more (docs/benchmarks.md).
DEFAULT_OVERLAP = 2.5
MAX_MEDIAN_FILTER = 1001  # frames; the paper uses 3 (--median-filter's upper bound)
DEFAULT_BATCH_SIZE = 8  # model windows per forward pass


class SettingsError(ValueError):
    """A setting that cannot work; ``setting`` names it (``threshold``, ``overlap``, …) and
    ``value`` is the value refused (when one value is), so that the CLI can point at its option.
    """

    def __init__(self, setting: str, message: str, value=None):
        super().__init__(message if value is None else
                         f"{setting.replace('_', ' ')} {value!r}: {message}")
        self.setting, self.value, self.reason = setting, value, message


class QueryError(SettingsError):
    """No usable query remains, or a threshold names a query that is not asked."""

    def __init__(self, message: str, setting: str = "queries"):
        super().__init__(setting, message)


def clean_queries(queries: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
    """Validate queries → (usable queries, warnings, errors), one line per problem.

    Tabs and newlines would break TSV columns and label tracks, so they become spaces (with a
    warning); empty queries are errors; repeated queries are kept once.
    """
    usable, warnings, errors = [], [], []
    for position, raw in enumerate(queries, 1):
        raw = str(raw)
        # Other control characters (a NUL, an escape sequence) would reach tables and label
        # tracks raw: they become spaces too.
        visible = "".join(" " if unicodedata.category(c) == "Cc" else c for c in raw)
        text = " ".join(visible.split())
        if not text:
            errors.append(f"query {position} is empty")
            continue
        if visible != raw or any(c in raw for c in "\t\n\r\v\f") or text != raw.strip():
            warnings.append(f"query {raw!r}: tabs, newlines and control characters replaced "
                            f"by spaces → {text!r}")
        if text in usable:
            warnings.append(f"query {text!r} given more than once; scored once")
            continue
        usable.append(text)
    return usable, warnings, errors


def read_queries(path) -> list[str]:
    """A queries file: one query per line; blank lines and lines starting with # are skipped.
    Raises :class:`SettingsError` (``queries_file``) naming the file when it cannot be read."""
    from pathlib import Path

    path = Path(path)
    try:
        # utf-8-sig: files saved by Notepad or Excel start with a byte-order mark, which would
        # otherwise become an invisible first character of the first query.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise SettingsError("queries_file", f"{path}: not UTF-8 text") from None
    except IsADirectoryError:
        raise SettingsError("queries_file", f"{path}: is a directory, expected a file") from None
    except FileNotFoundError:
        raise SettingsError("queries_file", f"{path}: no such file") from None
    except OSError as exc:
        raise SettingsError("queries_file",
                            f"{path}: cannot read ({exc.strerror or exc.__class__.__name__})"
                            ) from None
    return [line for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _probability(setting: str, value, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(setting, f"{what} {value!r} is not a number") from None
    if not 0.0 <= number <= 1.0:
        raise SettingsError(setting, f"{what} {number:g}: thresholds are probabilities in [0, 1]")
    return number


@dataclass(frozen=True)
class DetectionSettings:
    """Validated when made; build it with :meth:`create` (detection's defaults) or
    :meth:`for_grounding` (grounding's)."""

    queries: tuple[str, ...]
    #: None: the model's own (``config.presence_threshold``).
    default_threshold: float | None = None
    #: Thresholds of single queries, overriding the default.
    query_thresholds: Mapping[str, float] = field(default_factory=dict)
    median_filter: int = DEFAULT_MEDIAN_FILTER  # frames, 1 = off
    min_duration: float = 0.0  # seconds: shorter events are dropped
    merge_gap: float = 0.0  # seconds: closer events of one query are joined
    overlap: float = DEFAULT_OVERLAP  # seconds between model windows on long files
    batch_size: int = DEFAULT_BATCH_SIZE
    unbiased: bool = True  # p/(p+σ(β)); False: σ(α·cos), the approximate probabilities
    #: What cleaning the queries changed (tabs replaced, repeats dropped), for the caller to show.
    query_warnings: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.queries:
            raise QueryError("no query given")
        if self.default_threshold is not None:
            object.__setattr__(self, "default_threshold",
                               _probability("threshold", self.default_threshold, "threshold"))
        unknown = sorted(set(self.query_thresholds) - set(self.queries))
        if unknown:
            raise QueryError(f"threshold given for unknown query: {unknown[0]!r}", "threshold")
        object.__setattr__(self, "query_thresholds", {
            q: _probability("threshold", v, f"threshold of {q!r}")
            for q, v in self.query_thresholds.items()})
        if not (isinstance(self.median_filter, int) and 1 <= self.median_filter <= MAX_MEDIAN_FILTER):
            raise SettingsError("median_filter", f"a whole number of frames from 1 to "
                                                 f"{MAX_MEDIAN_FILTER}", self.median_filter)
        for name in ("min_duration", "merge_gap", "overlap"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value < float("inf")):
                raise SettingsError(name, "seconds, zero or more", value)
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise SettingsError("batch_size", "one or more", self.batch_size)

    @classmethod
    def create(cls, queries: Iterable[str],
               threshold: float | Mapping[str, float | None] | None = None, *,
               query_thresholds: Mapping[str, float] | None = None,
               **settings) -> "DetectionSettings":
        """Queries are cleaned (:func:`clean_queries`; an empty one is a :class:`QueryError`).
        ``threshold``: None (the model's own) or one value for every query;
        ``query_thresholds``: query → value, overriding it for those queries.

        ``threshold`` may also be a mapping of query → value, for the library's older spelling
        in which the key ``"*"`` set the default; it is still accepted."""
        usable, warnings, errors = clean_queries(queries)
        if errors:
            raise QueryError(errors[0])
        default, per_query = threshold, dict(query_thresholds or {})
        if isinstance(threshold, Mapping):
            per_query = {**{q: v for q, v in threshold.items() if q != "*"}, **per_query}
            default = threshold.get("*")
        # Queries are matched as cleaned: "dog  barks" sets the threshold of "dog barks".
        per_query = {" ".join(str(q).split()): v for q, v in per_query.items() if v is not None}
        return cls(tuple(usable), default, per_query, query_warnings=tuple(warnings),
                   **settings)

    @classmethod
    def for_grounding(cls, queries: Iterable[str],
                      threshold: float | Mapping[str, float | None] | None = None,
                      **settings) -> "DetectionSettings":
        """:meth:`create` with grounding's defaults (:data:`DEFAULT_GROUND_MEDIAN_FILTER`,
        :data:`DEFAULT_MIN_DURATION`): no median filter, which would erase short true events,
        and a minimum duration, so that a sliver above the threshold is not presence."""
        settings.setdefault("median_filter", DEFAULT_GROUND_MEDIAN_FILTER)
        settings.setdefault("min_duration", DEFAULT_MIN_DURATION)
        return cls.create(queries, threshold, **settings)

    def thresholds(self, model_default: float) -> list[float]:
        """One threshold per query, in query order; ``model_default`` fills what is not set."""
        default = model_default if self.default_threshold is None else self.default_threshold
        return [float(self.query_thresholds.get(q, default)) for q in self.queries]

    def record(self) -> dict:
        """The settings besides queries and thresholds, as `flam detect -o` records them."""
        return {"median_filter": self.median_filter, "min_duration": self.min_duration,
                "merge_gap": self.merge_gap, "overlap": self.overlap,
                "approximate": not self.unbiased}
