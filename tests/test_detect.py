"""The detection library: exact frame scores, overlap-add stitching, batching, events."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flamcli.detection import detect, iter_detect
from flamcli.settings import QueryError, clean_queries
from flamcli.inference import triangular_weights
from conftest import tone

QUERIES = ["dog barks", "a car horn"]


def model_scores(model, windows: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        frames = model.embed_audio_frames(torch.from_numpy(windows))
        return model.frame_probabilities(frames, model.encode_text(QUERIES)).numpy()  # [B, C, T]


def test_a_ten_second_clip_gives_the_model_frame_scores_exactly(debug_model, make_audio):
    data = tone(10.0, 16_000)
    path = make_audio("ten.wav", rate=16_000, data=data, subtype="FLOAT")
    (result,) = detect(debug_model, path, QUERIES, median_filter_frames=1)
    expected = model_scores(debug_model, data[None])[0].T
    assert result.scores.shape == (32, 2)
    np.testing.assert_allclose(result.scores, expected, atol=1e-6)
    np.testing.assert_allclose(result.timestamps, np.arange(33) * 0.3125)


def test_short_clips_are_padded_not_stretched(debug_model, make_audio):
    data = tone(3.0, 16_000)
    path = make_audio("short.wav", rate=16_000, data=data, subtype="FLOAT")
    (result,) = detect(debug_model, path, QUERIES, median_filter_frames=1)
    padded = np.zeros(160_000, np.float32)
    padded[: len(data)] = data
    expected = model_scores(debug_model, padded[None])[0].T[:10]  # ceil(3 / 0.3125) frames
    np.testing.assert_allclose(result.scores, expected, atol=1e-6)
    assert result.timestamps[-1] == pytest.approx(3.0)
    assert result.duration == pytest.approx(3.0)


def test_long_files_are_stitched_by_overlap_add(debug_model, make_audio):
    rate = 16_000
    data = tone(20.0, rate, freq=700)
    path = make_audio("long.wav", rate=rate, data=data, subtype="FLOAT")
    (result,) = detect(debug_model, path, QUERIES, median_filter_frames=1, overlap=2.5)
    starts = [0, 120_000, 240_000]  # 10 s windows every 7.5 s (24 frames)
    windows = np.zeros((3, 160_000), np.float32)
    for i, s in enumerate(starts):
        chunk = data[s: s + 160_000]
        windows[i, : len(chunk)] = chunk
    per_window = model_scores(debug_model, windows)  # [3, C, 32]
    sums = np.zeros((24 * 2 + 32, 2))
    weights = np.zeros(24 * 2 + 32)
    w = triangular_weights(32)
    for i in range(3):
        sums[24 * i: 24 * i + 32] += per_window[i].T * w[:, None]
        weights[24 * i: 24 * i + 32] += w
    expected = (sums / weights[:, None])[:64]
    assert result.scores.shape == (64, 2)
    np.testing.assert_allclose(result.scores, expected, atol=1e-5)


def test_batching_across_files_does_not_change_scores(debug_model, make_audio):
    paths = [make_audio(f"f{i}.flac", seconds=s, rate=22_050, freq=300 + 100 * i)
             for i, s in enumerate([4.0, 12.0, 1.0])]
    one = detect(debug_model, paths, QUERIES, batch_size=1)
    many = detect(debug_model, paths, QUERIES, batch_size=16)
    assert [r.file for r in one] == [str(p) for p in paths]
    for a, b in zip(one, many):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_failed_inputs_do_not_stop_the_others(debug_model, make_audio, tmp_path):
    good = make_audio("good.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....garbage")
    results = detect(debug_model, [bad, good, tmp_path / "missing.wav"], QUERIES)
    assert [r.ok for r in results] == [False, True, False]
    assert "not a readable audio file" in results[0].error
    assert results[1].scores.shape[1] == 2


def test_progress_reports_every_window_and_file(debug_model, make_audio):
    paths = [make_audio("a.wav", seconds=12.0), make_audio("b.wav", seconds=2.0)]
    seen = []
    detect(debug_model, paths, QUERIES, progress=lambda p: seen.append(
        (p.files_done, p.seconds_done, p.seconds_total)))
    assert seen[-1][0] == 2
    assert seen[-1][1] == pytest.approx(14.0)
    assert seen[-1][2] == pytest.approx(14.0)
    assert [s[1] for s in seen] == sorted(s[1] for s in seen)  # monotonic


def test_per_query_thresholds_and_query_cleaning(debug_model, make_audio):
    path = make_audio("a.wav", seconds=5.0)
    (low,) = detect(debug_model, path, QUERIES, threshold={"*": 0.0, "a car horn": 1.0})
    assert {e.query for e in low.events} == {"dog barks"}
    assert low.thresholds == [0.0, 1.0]
    with pytest.raises(QueryError, match="unknown query"):
        list(iter_detect(debug_model, path, QUERIES, threshold={"cat": 0.3}))
    with pytest.raises(QueryError, match="query 2 is empty"):
        list(iter_detect(debug_model, path, ["dog", "  "]))
    usable, warnings, errors = clean_queries(["dog\tbarks", "dog barks", "", "cat"])
    assert usable == ["dog barks", "cat"] and len(warnings) == 2 and len(errors) == 1


def test_the_default_threshold_is_the_models_own(debug_model, make_audio, tmp_path, cli,
                                                 monkeypatch):
    import json

    from flamcli.models.storage import save_model

    clip = make_audio("a.wav", seconds=3.0)
    # A threshold the debug model's scores straddle, so that some frames pass and some not.
    [probe] = detect(debug_model, [clip], ["dog", "rain"], threshold=0.0, median_filter_frames=1)
    middle = float(np.median(probe.scores[:, 0]))
    monkeypatch.setattr(debug_model.config, "presence_threshold", middle)
    [own] = detect(debug_model, [clip], ["dog", "rain"], median_filter_frames=1)
    assert own.thresholds == [middle, middle]
    dog = [e for e in own.events if e.query == "dog"]
    assert dog and all(e.confidence > middle for e in dog)
    covered = sum(e.offset - e.onset for e in dog)
    assert 0 < covered < own.duration  # the model's own threshold decided, not 0 or 1
    monkeypatch.setattr(debug_model.config, "presence_threshold", 0.77)
    [result] = detect(debug_model, [clip], ["dog", "rain"])
    assert result.thresholds == [0.77, 0.77]
    [mixed] = detect(debug_model, [clip], ["dog", "rain"], threshold={"rain": 0.2})
    assert mixed.thresholds == [0.77, 0.2]  # one query's own value; the others keep the model's
    # through the CLI, from a model directory's config.json; -t still wins
    model_dir = save_model(debug_model, tmp_path / "m")
    assert json.loads((model_dir / "config.json").read_text())["presence_threshold"] == 0.77
    shown = cli("detect", clip, "dog", "-m", model_dir, "-f", "json", "--quiet")
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout)["files"][0]["thresholds"] == {"dog": 0.77}
    given = cli("detect", clip, "dog", "-m", model_dir, "-f", "json", "-t", "0.3", "--quiet")
    assert json.loads(given.stdout)["files"][0]["thresholds"] == {"dog": 0.3}


def test_score_table_is_sed_scores_eval_shaped(debug_model, make_audio):
    (result,) = detect(debug_model, make_audio("a.wav", seconds=4.0), QUERIES)
    table = result.score_table()
    assert list(table.columns) == ["onset", "offset", *QUERIES]
    assert (table["offset"].to_numpy()[:-1] == table["onset"].to_numpy()[1:]).all()  # gapless
    assert table["offset"].iloc[-1] == pytest.approx(4.0)
    assert (table["offset"] > table["onset"]).all()
