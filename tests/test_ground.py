"""`flam ground`: present/absent answers, grep-like exit codes, formats, the embedding cache."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import flamcli
from flamcli.detection import FileResult
from flamcli.events import Event
from flamcli.settings import DEFAULT_GROUND_MEDIAN_FILTER, DEFAULT_OVERLAP
from flamcli.writers import human_line
from flamcli.grounding import answers_from_detection, ground
from flamcli.embedding_cache import CACHE_FORMAT


@pytest.fixture
def clip(make_audio):
    return make_audio("clip.wav", seconds=24.0, rate=16000)


def presence_of(debug_model, path, query, overlap=DEFAULT_OVERLAP):
    """The highest frame probability, smoothed as flam ground smooths by default."""
    [result] = flamcli.detect(debug_model, [path], [query], overlap=overlap,
                              median_filter_frames=DEFAULT_GROUND_MEDIAN_FILTER)
    return float(result.scores[:, 0].max())


def test_answers_from_detection_present_absent_and_top_k():
    result = FileResult(
        file="a.wav", path=None, stem="a", queries=["dog", "cat"],
        scores=np.array([[0.9, 0.1], [0.2, 0.3], [0.8, 0.2]], dtype=np.float32),
        events=[Event("a.wav", 5.0, 6.0, "dog", 0.8), Event("a.wav", 0.0, 1.0, "dog", 0.9),
                Event("a.wav", 9.0, 9.5, "dog", 0.6)],
    )
    dog, cat = answers_from_detection(result)
    assert dog.present and dog.intervals == [(0.0, 1.0, 0.9), (5.0, 6.0, 0.8), (9.0, 9.5, 0.6)]
    assert dog.presence == pytest.approx(0.9)
    assert not cat.present and cat.intervals == [] and cat.presence == pytest.approx(0.3)
    top2 = answers_from_detection(result, top_k=2)[0]
    assert top2.intervals == [(0.0, 1.0, 0.9), (5.0, 6.0, 0.8)]  # most confident, time order


def test_library_presence_follows_the_threshold(debug_model, clip):
    peak = presence_of(debug_model, clip, "dog barks")
    [below] = ground(debug_model, [clip], ["dog barks"], threshold=peak * 0.5, min_duration=0)
    [above] = ground(debug_model, [clip], ["dog barks"], threshold=min(1.0, peak * 1.5))
    assert below.answers[0].present and below.answers[0].intervals
    assert not above.answers[0].present and above.answers[0].intervals == []
    assert above.answers[0].presence == pytest.approx(peak)
    # A single query works and min_duration removes short windows.
    [long_only] = ground(debug_model, [clip], ["dog barks"], threshold=peak * 0.5,
                         min_duration=1000.0)
    assert not long_only.answers[0].present
    # … and says so: the peak passed the threshold, only too briefly.
    answer = long_only.answers[0]
    assert answer.threshold == pytest.approx(peak * 0.5) and answer.too_short
    assert not above.answers[0].too_short
    assert human_line(answer, "") == (f"dog barks: absent (max {peak:.2f}, above "
                                      f"{peak * 0.5:.3g} for less than --min-duration)")
    assert human_line(above.answers[0], "") == f"dog barks: absent (max {peak:.2f})"
    assert answer.as_dict()["threshold"] == pytest.approx(peak * 0.5, abs=1e-6)


def test_default_threshold_is_the_models_presence_threshold(debug_model, clip, monkeypatch):
    peak = presence_of(debug_model, clip, "dog barks")
    monkeypatch.setattr(debug_model.config, "presence_threshold", min(1.0, peak * 1.5))
    [absent] = ground(debug_model, [clip], ["dog barks"])
    assert not absent.answers[0].present
    monkeypatch.setattr(debug_model.config, "presence_threshold", peak * 0.5)
    [present] = ground(debug_model, [clip], ["dog barks"], min_duration=0)
    assert present.answers[0].present
    # a per-query threshold overrides it for that query only; the rest keep the model's
    [mixed] = ground(debug_model, [clip], ["dog barks", "a siren"], min_duration=0,
                     threshold={"a siren": 1.0})
    assert [a.present for a in mixed.answers] == [True, False]


def test_cli_exit_codes_like_grep(debug_model, clip, make_audio, cli):
    peak = presence_of(debug_model, clip, "dog barks")
    low, high = f"{peak * 0.5:.6f}", f"{min(1.0, peak * 1.5):.6f}"
    found = cli("ground", clip, "dog barks", "--model", "debug", "-t", low, "--min-duration", "0")
    assert found.exit_code == 0
    assert re.fullmatch(r"dog barks: (\d+\.\d\d-\d+\.\d\d s \(\d\.\d\d\)(, )?)+\n", found.stdout)
    missing = cli("ground", clip, "dog barks", "--model", "debug", "-t", high)
    assert missing.exit_code == 1
    assert missing.stdout == f"dog barks: absent (max {peak:.2f})\n"
    # Mixed: one query found, one absent → 1.
    mixed = cli("ground", clip, "dog barks", "--model", "debug", "--min-duration", "0",
                "-t", low, "-t", f"a siren={high}", "-q", "a siren")
    assert mixed.exit_code == 1
    # Errors outrank absence: an empty query is a usage error; a bad file exits 3 and the
    # good file is still answered.
    empty = cli("ground", clip, "", "--model", "debug")
    assert empty.exit_code == 2 and "query 1 is empty" in empty.stderr
    broken = make_audio("broken.wav", seconds=1.0)
    broken.write_bytes(b"RIFF0000WAVEjunk")
    partial = cli("ground", clip, broken, "dog barks", "--model", "debug")
    assert partial.exit_code == 3
    assert "broken.wav" in partial.stderr and "Traceback" not in partial.stderr
    assert "clip.wav: dog barks:" in partial.stdout


def test_cli_formats(debug_model, clip, cli):
    peak = presence_of(debug_model, clip, "dog barks")
    args = ["--model", "debug", "-t", f"{peak * 0.5:.6f}", "--min-duration", "0"]
    records = json.loads(cli("ground", clip, "dog barks", "a siren", "-f", "json", *args).stdout)
    assert [r["query"] for r in records] == ["dog barks", "a siren"]
    for record in records:
        assert set(record) >= {"file", "query", "present", "presence", "intervals", "model",
                               "audio_path", "caption", "annotations"}
        assert record["model"]["name"] == "debug"
        assert record["present"] == bool(record["intervals"])
        assert record["annotations"] == [i[:2] for i in record["intervals"]]
    lines = cli("ground", clip, "dog barks", "-f", "jsonl", *args).stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["query"] == "dog barks"
    tsv = cli("ground", clip, "dog barks", "-f", "tsv", *args).stdout.splitlines()
    assert tsv[0] == "file\tquery\tpresent\tpresence\tstart\tend\tconfidence"
    assert all(row.split("\t")[2] == "true" for row in tsv[1:])


def test_embedding_cache_gives_identical_scores_without_the_audio_tower(
        debug_model, clip, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    plain = flamcli.detect(debug_model, [clip], ["dog barks", "rain"])[0]
    single = flamcli.detect(debug_model, [clip], ["dog barks"])[0]
    first = flamcli.detect(debug_model, [clip], ["dog barks"], cache_dir=cache)[0]
    assert list((cache / f"v{CACHE_FORMAT}").rglob("*.npz"))

    import flamcli.inference as inference

    class NoDecoding:
        def __init__(self, *args, **kwargs):
            raise AssertionError("the audio was decoded although it is cached")

    monkeypatch.setattr(inference, "WindowStream", NoDecoding)
    calls = []
    original = debug_model.embed_audio_frames
    monkeypatch.setattr(debug_model, "embed_audio_frames",
                        lambda waves: calls.append(len(waves)) or original(waves))
    again = flamcli.detect(debug_model, [clip], ["dog barks", "rain"], cache_dir=cache)[0]
    assert calls == []
    assert np.array_equal(again.scores, plain.scores)
    # (One query and two queries differ in the last float32 bit: matmul shapes differ.)
    assert np.array_equal(first.scores, single.scores)
    assert again.duration == plain.duration and again.events == plain.events


def test_embedding_cache_follows_content_and_model(make_audio, tmp_path):
    from flamcli.models.registry import build_debug_model

    debug_model = build_debug_model()  # its own copy: this test changes the weights
    cache = tmp_path / "cache"
    path = make_audio("a.wav", seconds=12.0, rate=16000)
    flamcli.detect(debug_model, [path], ["dog"], cache_dir=cache)
    # New content under the same name is embedded again, never served stale.
    make_audio("a.wav", seconds=12.0, rate=16000, seed=5)
    fresh = flamcli.detect(debug_model, [path], ["dog"])[0]
    cached = flamcli.detect(debug_model, [path], ["dog"], cache_dir=cache)[0]
    assert np.array_equal(fresh.scores, cached.scores)
    assert len(list((cache / f"v{CACHE_FORMAT}").rglob("*.npz"))) == 2
    # Another model (other weights) gets its own entries.
    import torch

    with torch.no_grad():
        next(debug_model.parameters()).add_(0.5)
    flamcli.detect(debug_model, [path], ["dog"], cache_dir=cache)
    assert len(list((cache / f"v{CACHE_FORMAT}").iterdir())) == 2


def test_overlap_reaches_the_model_windows(debug_model, clip, cli):
    wide = presence_of(debug_model, clip, "dog barks", overlap=5.0)
    default = presence_of(debug_model, clip, "dog barks")
    assert wide != pytest.approx(default, abs=1e-6)  # the 24 s clip is stitched differently
    [answer] = ground(debug_model, [clip], ["dog barks"], overlap=5.0)[0].answers
    assert answer.presence == pytest.approx(wide, abs=1e-6)
    [record] = json.loads(cli("ground", clip, "dog barks", "-m", "debug", "--overlap", "5",
                              "-f", "json").stdout)
    assert record["presence"] == pytest.approx(wide, abs=1e-4)
    result = cli("ground", clip, "dog barks", "-m", "debug", "--overlap", "10")
    assert result.exit_code == 2 and "--overlap 10:" in result.stderr and result.stdout == ""
