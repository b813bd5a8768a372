"""Median filter, thresholds, runs, gap merging, minimum duration."""

from __future__ import annotations

import numpy as np

from flamcli.events import find_runs, median_filter, scores_to_events


def test_median_filter_mirrors_edges_and_size_one_is_identity():
    x = np.array([[0.9], [0.1], [0.8], [0.7], [0.0]], dtype=np.float32)
    # reflect edges: [0.9 | 0.9 0.1 0.8 0.7 0.0 | 0.0]
    expected = [0.9, 0.8, 0.7, 0.7, 0.0]
    np.testing.assert_allclose(median_filter(x, 3)[:, 0], expected)
    np.testing.assert_array_equal(median_filter(x, 1), x)
    # a single-frame spike is removed, a two-frame event survives size 3
    spike = np.array([0, 0, 1, 0, 0, 1, 1, 0], dtype=np.float32)[:, None]
    np.testing.assert_array_equal(median_filter(spike, 3)[:, 0], [0, 0, 0, 0, 0, 1, 1, 0])


def test_find_runs():
    assert find_runs(np.array([1, 1, 0, 1, 0, 0, 1], bool)) == [(0, 2), (3, 4), (6, 7)]
    assert find_runs(np.zeros(4, bool)) == []
    assert find_runs(np.array([], bool)) == []


def events(scores, **kw):
    scores = np.asarray(scores, dtype=np.float32)[:, None]
    options = dict(frame_seconds=0.5, duration=len(scores) * 0.5, thresholds=[0.5], file="f")
    options.update(kw)
    return [(e.onset, e.offset, e.confidence) for e in scores_to_events(scores, ["q"], **options)]


def test_threshold_runs_and_confidence_is_peak():
    assert events([0.1, 0.6, 0.9, 0.2, 0.7]) == [(0.5, 1.5, 0.9), (2.0, 2.5, 0.7)]
    assert events([0.1, 0.6, 0.9, 0.2, 0.7], thresholds=[0.8]) == [(1.0, 1.5, 0.9)]


def test_merge_gap_then_min_duration():
    scores = [0.9, 0.1, 0.9, 0.1, 0.1, 0.9]
    assert events(scores) == [(0.0, 0.5, 0.9), (1.0, 1.5, 0.9), (2.5, 3.0, 0.9)]
    assert events(scores, merge_gap=0.5) == [(0.0, 1.5, 0.9), (2.5, 3.0, 0.9)]
    assert events(scores, merge_gap=0.5, min_duration=1.0) == [(0.0, 1.5, 0.9)]


def test_offset_is_clipped_to_the_file_end():
    assert events([0.1, 0.9, 0.9], duration=1.2) == [(0.5, 1.2, 0.9)]


def test_events_sorted_by_onset_across_queries():
    scores = np.array([[0.1, 0.9], [0.9, 0.1]], dtype=np.float32)
    out = scores_to_events(scores, ["a", "b"], 1.0, 2.0, [0.5, 0.5], file="x")
    assert [(e.query, e.onset) for e in out] == [("b", 0.0), ("a", 1.0)]
