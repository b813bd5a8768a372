"""One settings value for detection and grounding, validated where it is made, and the
Detector that pairs it with a model: the library, the CLI and eval --audio share both."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from flamcli.detection import Detector, iter_detect
from flamcli.settings import DEFAULT_GROUND_MEDIAN_FILTER, DEFAULT_MIN_DURATION
from flamcli.settings import DetectionSettings, QueryError, SettingsError


def test_settings_import_no_torch():
    code = "import sys, flamcli.settings; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_queries_are_cleaned_and_thresholds_resolved_once():
    settings = DetectionSettings.create(["dog\tbarks", "dog barks", "rain"],
                                        {"rain": 0.2, "*": 0.6})
    assert settings.queries == ("dog barks", "rain")
    assert len(settings.query_warnings) == 2  # the tab, and the repeat
    assert settings.thresholds(0.9) == [0.6, 0.2]
    plain = DetectionSettings.create(["a", "b"], {"b": 0.3})
    assert plain.default_threshold is None and plain.thresholds(0.9) == [0.9, 0.3]
    explicit = DetectionSettings.create(["a", "b  c"], 0.6, query_thresholds={"b c": 0.2})
    assert explicit.thresholds(0.9) == [0.6, 0.2]
    assert DetectionSettings.create(["a", "b"], query_thresholds={"b": 0.3}) == plain
    assert DetectionSettings.create(["a"], 0.4).thresholds(0.9) == [0.4]


@pytest.mark.parametrize("kwargs, setting, words", [
    ({"threshold": 1.5}, "threshold", "probabilities in [0, 1]"),
    ({"threshold": {"cat": 0.5}}, "threshold", "unknown query: 'cat'"),
    ({"threshold": {"dog": "high"}}, "threshold", "not a number"),
    ({"median_filter": 0}, "median_filter", "whole number of frames"),
    ({"median_filter": 2.5}, "median_filter", "whole number of frames"),
    ({"min_duration": -1.0}, "min_duration", "zero or more"),
    ({"merge_gap": float("nan")}, "merge_gap", "zero or more"),
    ({"overlap": float("inf")}, "overlap", "zero or more"),
    ({"batch_size": 0}, "batch_size", "one or more"),
])
def test_a_bad_setting_names_itself(kwargs, setting, words):
    threshold = kwargs.pop("threshold", None)
    with pytest.raises(SettingsError) as caught:
        DetectionSettings.create(["dog"], threshold, **kwargs)
    assert caught.value.setting == setting and words in str(caught.value)


def test_empty_queries_are_a_query_error():
    with pytest.raises(QueryError, match="query 2 is empty"):
        DetectionSettings.create(["dog", "  "])
    with pytest.raises(QueryError, match="no query"):
        DetectionSettings.create([])


def test_grounding_has_its_own_defaults_and_the_record_is_detects():
    grounding = DetectionSettings.for_grounding(["siren"])
    assert grounding.median_filter == DEFAULT_GROUND_MEDIAN_FILTER
    assert grounding.min_duration == DEFAULT_MIN_DURATION
    assert DetectionSettings.for_grounding(["siren"], median_filter=1).median_filter == 1
    record = DetectionSettings.create(["a"], overlap=1.25, unbiased=False).record()
    assert record == {"median_filter": 3, "min_duration": 0.0, "merge_gap": 0.0,
                      "overlap": 1.25, "approximate": True}


def test_the_detector_checks_the_overlap_against_the_model(debug_model):
    with pytest.raises(SettingsError) as caught:
        Detector(debug_model, DetectionSettings.create(["dog"], overlap=10.0))
    assert caught.value.setting == "overlap" and caught.value.value == 10.0


def test_a_detector_runs_like_iter_detect_and_encodes_text_once(debug_model, make_audio,
                                                                monkeypatch):
    clips = [make_audio("a.wav", seconds=3.0), make_audio("b.wav", seconds=12.0, freq=880.0)]
    settings = DetectionSettings.create(["dog", "rain"], {"rain": 0.4}, median_filter=1)
    detector = Detector(debug_model, settings)
    assert detector.thresholds == [debug_model.config.presence_threshold, 0.4]
    calls = []
    real = debug_model.encode_text
    monkeypatch.setattr(debug_model, "encode_text", lambda texts: calls.append(1) or real(texts))
    first, second = detector(clips[:1]), detector(clips)
    assert len(calls) == 1  # the queries' embeddings are kept between runs
    expected = list(iter_detect(debug_model, clips, ["dog", "rain"], threshold={"rain": 0.4},
                                median_filter_frames=1))
    for got, want in zip(second, expected):
        assert got.file == want.file and got.events == want.events
        np.testing.assert_array_equal(got.scores, want.scores)
    # alone or batched with b.wav's windows: the same up to the GEMM's summation order
    np.testing.assert_allclose(first[0].scores, second[0].scores, atol=1e-6)


def test_the_cli_names_the_option_of_a_bad_setting(cli, make_audio, tmp_path):
    clip = make_audio("a.wav", seconds=2.0)
    result = cli("detect", clip, "dog", "-m", "debug", "-t", "cat=0.5")
    assert result.exit_code == 2 and "--threshold: threshold given for unknown query" in result.stderr
    (tmp_path / "gt.tsv").write_text("filename\tonset\toffset\tevent_label\na.wav\t0\t1\tdog\n")
    result = cli("eval", "sed", "-g", tmp_path / "gt.tsv", "--audio", clip.parent,
                 "-m", "debug", "--overlap", "10")
    assert result.exit_code == 2 and "--overlap 10:" in result.stderr and result.stdout == ""


def test_one_queries_file_reader_for_detect_and_eval(cli, make_audio, tmp_path):
    from flamcli.settings import read_queries

    path = tmp_path / "q.txt"
    path.write_bytes("\ufeffdog barks\n\n# a comment\n  rain  \n".encode())
    assert read_queries(path) == ["dog barks", "  rain  "]  # cleaned later, with the others
    path.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(SettingsError, match="not UTF-8"):
        read_queries(path)
    clip = make_audio("a.wav", seconds=2.0)
    (tmp_path / "gt.tsv").write_text("filename\tonset\toffset\tevent_label\na.wav\t0\t1\tdog\n")
    for command in (["detect", clip, "-m", "debug"],
                    ["eval", "sed", "-g", tmp_path / "gt.tsv", "--audio", clip.parent, "-m", "debug"]):
        result = cli(*command, "--queries", path)
        assert result.exit_code == 2 and f"--queries {path}: not UTF-8 text" in result.stderr
