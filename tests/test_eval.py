"""flam eval: native metrics against sed_scores_eval goldens, hand-computed cases, the CLI."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from flamcli.evaluation import sed_metrics as m
from flamcli.evaluation.grounding import (average_precision, evaluate_grounding,
                                          evaluate_lighthouse, set_iou)
from flamcli.evaluation.inputs import EvalInputError, read_audacity, read_scores
from flamcli.evaluation.retrieval import classification_metrics, recall_at_k, retrieval_metrics
from flamcli.evaluation.sed import evaluate_sed

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "data" / "eval_sed_golden.json"
sys.path.insert(0, str(HERE / "reference"))

# Measured max |flam − sed_scores_eval| over the goldens and 150 extra random cases: 0 (every
# number bit-identical). 1e-9 leaves room for other BLAS/CPU builds only.
TOL = 1e-9


# -- helpers -------------------------------------------------------------------------------------
def case_inputs(case):
    clips = case["clips"]
    scores = {c: (np.array(v["timestamps"]), np.array(v["scores"])) for c, v in clips.items()}
    gt = {c: [tuple(e) for e in v["events"]] for c, v in clips.items()}
    durations = {c: v["duration"] for c, v in clips.items()}
    return scores, gt, durations, case["queries"]


def native_metrics(case) -> dict:
    """flam's numbers in the layout of make_eval_golden.reference_metrics."""
    scores, gt, durations, queries = case_inputs(case)
    out = {}
    for name, settings in (("psds1", m.PSDS1), ("psds2", m.PSDS2)):
        r = m.psds(scores, gt, durations, queries, **settings)
        out[name] = {"value": r.psds, "per_class": r.per_class, "etpr": r.etpr, "efpr": r.efpr}
    out["auroc"], _ = m.segment_auroc(scores, gt, durations, queries, segment_length=0.3125)
    out["mpauc"], _ = m.segment_auroc(scores, gt, durations, queries, segment_length=1.0,
                                      max_fpr=0.1)
    collar = m.collar_statistics(scores, gt, queries, onset_collar=.2, offset_collar=.2,
                                 offset_collar_rate=.2)
    segments = m.segment_statistics(scores, gt, durations, queries, segment_length=1.0)
    for threshold in (0.5, 0.7):
        r = m.fscore_at(collar, threshold)
        out[f"event_f1@{threshold}"] = {"f": r.f, "p": r.p, "r": r.r}
        r = m.fscore_at(segments, threshold)
        out[f"segment_f1@{threshold}"] = {"f": r.f, "p": r.p, "r": r.r}
    r = m.best_fscore(collar)
    out["event_f1_best"] = {"f": r.f, "p": r.p, "r": r.r, "thresholds": r.thresholds}
    return out


def max_difference(expected, actual, path="") -> tuple[float, str]:
    """Largest |difference| between nested dicts / lists of numbers, and where."""
    if isinstance(expected, dict):
        worst = (0.0, path)
        for key, value in expected.items():
            if key == "sed_scores_eval":
                continue
            worst = max(worst, max_difference(value, actual[key], f"{path}.{key}"))
        return worst
    if isinstance(expected, list):
        actual = np.asarray(actual, dtype=float)
        expected = np.asarray(expected, dtype=float)
        if expected.shape != actual.shape:
            return (math.inf, f"{path} shape {expected.shape} vs {actual.shape}")
        return (float(np.max(np.abs(expected - actual), initial=0.0)), path)
    if expected == actual:  # includes ±inf thresholds
        return (0.0, path)
    return (abs(float(expected) - float(actual)), path)


# -- equality with sed_scores_eval 0.0.4 ---------------------------------------------------------
@pytest.fixture(scope="module")
def golden():
    return json.loads(GOLDEN.read_text())


def test_golden_made_with_reference_version(golden):
    assert golden["made_with"]["sed_scores_eval"] == "0.0.4"
    assert len(golden["cases"]) >= 6


@pytest.mark.parametrize("index", range(6))
def test_equal_to_sed_scores_eval_golden(golden, index):
    case = golden["cases"][index]
    difference, where = max_difference(case["expected"], native_metrics(case))
    assert difference <= TOL, f"seed {case['seed']}: {where} differs by {difference}"


def test_golden_cases_cover_the_protocol(golden):
    """Absent queries (negatives), event-free clips, ties and non-trivial PSDS are all in."""
    negatives = ties = 0
    for case in golden["cases"]:
        for clip in case["clips"].values():
            labels = {e[2] for e in clip["events"]}
            negatives += len(set(case["queries"]) - labels)
            values = np.asarray(clip["scores"])
            ties += len(np.unique(values)) < values.size
    assert negatives > 20 and ties > 5
    assert max(c["expected"]["psds1"]["value"] for c in golden["cases"]) > 0.1


def import_sed_scores_eval():
    """sed_scores_eval 0.0.4, the last release on PyPI, made to run on today's stack without
    touching its maths:

    * it imports ``sed_eval`` → ``dcase_util``, which imports setuptools' ``pkg_resources`` at
      module level (removed in setuptools 81) for version reports that sed_scores_eval never
      calls: an empty module stands in;
    * under pandas 3 (copy-on-write) the arrays it takes out of DataFrames are read-only, and
      its Cython kernel cannot view them: it gets writable copies of the same values.
    """
    import importlib.util
    import types

    if importlib.util.find_spec("pkg_resources") is None:
        sys.modules.setdefault("pkg_resources", types.ModuleType("pkg_resources"))
    import sed_scores_eval.base_modules.statistics as statistics

    kernel = statistics.onset_offset_curves
    if not getattr(kernel, "copies_inputs", False):
        def writable(scores, timestamps, candidates=None):
            arrays = [np.array(a, dtype=np.float64) for a in (scores, timestamps)]
            if candidates is not None:
                arrays.append(np.array(candidates, dtype=np.float64))
            return kernel(*arrays)

        writable.copies_inputs = True
        statistics.onset_offset_curves = writable


def test_live_sed_scores_eval():
    """Fresh random cases against the reference itself (a test dependency)."""
    import_sed_scores_eval()
    from make_eval_golden import make_case, reference_metrics

    import secrets

    # New cases every run (the seed is in the message to replay a failure), one quantised.
    for seed, quantise in ((secrets.randbelow(10**9), None), (secrets.randbelow(10**9), 20),
                           (secrets.randbelow(10**9), None)):
        case = make_case(seed, n_clips=6, quantise=quantise)
        difference, where = max_difference(reference_metrics(case), native_metrics(case))
        assert difference <= TOL, f"seed {seed} quantise {quantise}: {where} differs by {difference}"


# -- hand-computed SED cases ---------------------------------------------------------------------
def test_calibration_error_worked_by_hand():
    from flamcli.evaluation.sed import calibration

    # 10 frames of 1 s; the event covers frame centres 3.5 … 9.5 (frames 3–9).
    # Bin [0.1, 0.2): frames 0–4 at 0.15, 2 of 5 positive → |0.4 − 0.15| = 0.25
    # Bin [0.8, 0.9): frames 5–9 at 0.85, 5 of 5 positive → |1.0 − 0.85| = 0.15
    # ECE = (5 · 0.25 + 5 · 0.15) / 10 = 0.2
    scores = {"a": frames([0.15] * 5 + [0.85] * 5)}
    result = calibration(scores, {"a": [(3.0, 10.0, "dog")]}, ["dog"])
    assert result["ece"] == pytest.approx(0.2)
    assert result["frames"] == [0, 5, 0, 0, 0, 0, 0, 0, 5, 0]
    assert result["observed"][1] == pytest.approx(0.4) and result["observed"][8] == 1.0
    assert result["mean_predicted"][1] == pytest.approx(0.15)

    # Calibrated: a quarter of the 0.25 frames are positive, three quarters of the 0.75 ones.
    scores = {"a": frames([0.25] * 4 + [0.75] * 4)}
    truth = {"a": [(0.0, 1.0, "dog"), (4.0, 7.0, "dog")]}
    assert calibration(scores, truth, ["dog"])["ece"] == pytest.approx(0.0, abs=1e-12)


def test_calibration_edges_clipping_and_queries():
    from flamcli.evaluation.sed import calibration

    # Two queries; a frame whose centre is exactly an offset is outside, exactly an onset
    # inside; 1.0 and a clipped 1.4 land in the last bin, a clipped −0.3 in the first, 0.1 in
    # the second. Events of a label that is not a query count for nothing.
    timestamps = np.arange(5.0)
    values = np.array([[1.0, -0.3], [1.4, 0.1], [0.1, 0.1], [0.0, 0.95]])
    truth = {"a": [(0.5, 1.5, "dog"), (2.5, 4.0, "cat"), (0.0, 4.0, "bird")]}
    result = calibration({"a": (timestamps, values)}, truth, ["dog", "cat"])
    # dog: centres 0.5 (in: onset), 1.5 (out: offset), 2.5, 3.5 (out); cat: 2.5, 3.5 in
    assert result["frames"] == [2, 3, 0, 0, 0, 0, 0, 0, 0, 3]
    # bin 0: dog@3.5 (0.0, neg), cat@0.5 (0.0 clipped, neg) → observed 0, predicted 0
    # bin 1: dog@2.5 (0.1, neg), cat@1.5 (0.1, neg), cat@2.5 (0.1, pos) → 1/3 against 0.1
    # bin 9: dog@0.5 (1.0, pos), dog@1.5 (1.0 clipped, neg), cat@3.5 (0.95, pos)
    #        → observed 2/3, predicted (1 + 1 + 0.95)/3
    expected = (2 * 0.0 + 3 * abs(1 / 3 - 0.1) + 3 * abs(2 / 3 - 2.95 / 3)) / 8
    assert result["ece"] == pytest.approx(expected)
    assert math.isnan(calibration({}, {}, ["dog"])["ece"])


def frames(values, frame=1.0):
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    return np.arange(len(values) + 1) * frame, values


def test_perfect_and_inverted_scores():
    truth = {"a": [(2.0, 4.0, "dog")], "b": []}
    perfect = {"a": frames([0, 0, 1, 1, 0, 0]), "b": frames([0] * 6)}
    inverted = {"a": frames([1, 1, 0, 0, 1, 1]), "b": frames([1] * 6)}
    durations = {"a": 6.0, "b": 6.0}
    args = (truth, durations, ["dog"])
    assert m.psds(perfect, *args, **m.PSDS1).psds == 1.0
    assert m.psds(inverted, *args, **m.PSDS1).psds == 0.0
    assert m.segment_auroc(perfect, *args, segment_length=1.0)[0]["mean"] == 1.0
    assert m.segment_auroc(inverted, *args, segment_length=1.0)[0]["mean"] == 0.0
    assert m.segment_auroc(perfect, *args, segment_length=1.0, max_fpr=0.1)[0]["mean"] == 1.0
    collar = m.collar_statistics(perfect, truth, ["dog"], onset_collar=.2, offset_collar=.2,
                                 offset_collar_rate=.2)
    assert m.fscore_at(collar, 0.5).f["dog"] == 1.0
    best = m.best_fscore(collar)
    assert best.f["dog"] == 1.0 and best.thresholds["dog"] == 0.5


def test_empty_predictions_and_negatives():
    truth = {"a": [(1.0, 3.0, "dog")], "b": []}
    silent = {"a": frames([0.1] * 4), "b": frames([0.1] * 4)}
    durations = {"a": 4.0, "b": 4.0}
    collar = m.collar_statistics(silent, truth, ["dog"], onset_collar=.2, offset_collar=.2)
    result = m.fscore_at(collar, 0.5)
    assert result.f["dog"] == 0.0 and result.r["dog"] == 0.0 and result.p["dog"] == 1.0
    # a detection on the negative clip is a false positive: P = 1/2, R = 1, F = 2/3
    firing = {"a": frames([0, 1, 1, 0]), "b": frames([0, 0, 1, 0])}
    collar = m.collar_statistics(firing, truth, ["dog"], onset_collar=.2, offset_collar=.2)
    result = m.fscore_at(collar, 0.5)
    assert (result.p["dog"], result.r["dog"]) == (0.5, 1.0)
    assert result.f["dog"] == pytest.approx(2 / 3)
    # segments: two right in "a", one wrong in "b": P = 2/3, R = 1, F = 0.8
    segments = m.segment_statistics(firing, truth, durations, ["dog"], segment_length=1.0)
    assert m.fscore_at(segments, 0.5).f["dog"] == pytest.approx(0.8)


def test_collar_and_offset_rate():
    truth = {"a": [(1.0, 6.0, "x")]}

    def f1(onset, offset):
        values = np.zeros(100)
        values[int(onset * 10):int(offset * 10)] = 1
        stats = m.collar_statistics({"a": frames(values, 0.1)}, truth, ["x"], onset_collar=.2,
                                    offset_collar=.2, offset_collar_rate=.2)
        return m.fscore_at(stats, 0.5).f["x"]

    assert f1(1.2, 6.0) == 1.0  # onset within 200 ms
    assert f1(1.3, 6.0) == 0.0  # onset 300 ms late
    assert f1(1.0, 7.0) == 1.0  # offset 1 s late is within 20% of 5 s
    assert f1(1.0, 7.1) == 0.0


def test_psds_counts_a_fragmented_detection_once():
    """Two detections inside one reference: both pass the DTC, together they pass the GTC."""
    truth = {"a": [(0.0, 10.0, "x")]}
    values = np.zeros(20)
    values[0:9] = 1
    values[11:20] = 1
    result = m.psds({"a": frames(values, 0.5)}, truth, {"a": 3600.0}, ["x"], **m.PSDS1)
    assert result.psds == 1.0  # TPR 1 at zero false positives


def test_nested_and_multiple_segments():
    truth = {"a": [(0.5, 1.5, "x"), (3.0, 3.2, "x")]}
    scores = {"a": frames([0, 1, 0, 0, 0], 1.0)}
    stats = m.segment_statistics(scores, truth, {"a": 5.0}, ["x"], segment_length=1.0)
    # reference segments 0, 1, 3; detected: segment 1 → P 1, R 1/3
    result = m.fscore_at(stats, 0.5)
    assert result.p["x"] == 1.0 and result.r["x"] == pytest.approx(1 / 3)


def test_evaluate_sed_open_vocabulary_protocol():
    truth = {"a": [(1.0, 2.0, "dog")], "b": []}
    scores = {"a": frames([[0, 0], [1, 0], [0, 0]]), "b": frames([[0, 0], [0, 1], [0, 0]])}
    result = evaluate_sed(scores, ["dog", "cat"], truth, {"a": 3.0, "b": 3.0})
    report = result.report
    assert report["scored_queries"] == ["dog"] and report["queries_without_events"] == ["cat"]
    assert report["event_f1"] == 1.0 and report["psds1"] == 1.0
    assert any("without any" in w for w in result.warnings)
    with pytest.raises(EvalInputError, match="no scores for clip 'c'"):
        evaluate_sed(scores, ["dog"], truth, {"a": 3.0, "b": 3.0, "c": 1.0})


# -- grounding -----------------------------------------------------------------------------------
def test_set_iou_hand_cases():
    assert set_iou([[0, 1]], [[2, 3]]) == 0.0  # disjoint
    assert set_iou([[2, 4]], [[0, 10]]) == pytest.approx(0.2)  # nested
    assert set_iou([[0, 2], [4, 6]], [[1, 5]]) == pytest.approx(2 / 6)  # multiple
    assert set_iou([[0, 2], [1, 3]], [[0, 3]]) == 1.0  # overlapping predictions merge
    assert set_iou([], [[0, 3]]) == 0.0  # empty prediction
    assert set_iou([[8, 12]], [[8, 10]], duration=10.0) == 1.0  # clipped to the file
    assert math.isnan(set_iou([], []))


def row(path, caption, annotations, **extra):
    return {"audio_path": path, "caption": caption, "annotations": annotations,
            "where": "x: row 1", **extra}


def test_grounding_metrics_and_reconstructed_joint_f1():
    truth = [row("a.wav", "dog", [[0, 2]]), row("a.wav", "cat", [[4, 6]]),
             row("b.wav", "dog", [[1, 3]]), row("b.wav", "bird", [])]
    predicted = [row("a.wav", "dog", [[0, 2]], present=True),          # IoU 1: TP
                 row("a.wav", "cat", [[4, 5]], present=True),          # IoU .5: TP at .5
                 row("b.wav", "dog", [], present=False),               # missed: FN
                 row("b.wav", "bird", [[0, 1]], present=True)]         # negative: FP
    report = evaluate_grounding(truth, predicted)
    assert report["miou"] == pytest.approx(0.5)
    assert (report["r1@0.3"], report["r1@0.5"], report["r1@0.7"]) == pytest.approx((2 / 3, 2 / 3, 1 / 3))
    assert report["presence_accuracy_positive"] == pytest.approx(2 / 3)
    assert report["presence_accuracy_negative"] == 0.0
    assert report["joint_f1_counts"] == {"tp": 2, "fp": 1, "fn": 1, "iou_threshold": 0.5}
    assert report["joint_f1"] == pytest.approx(4 / 6)
    assert "joint_f1" in report["reconstructed"]
    # a mislocalised positive counts as both FP and FN
    strict = evaluate_grounding(truth, predicted, joint_iou=0.7)
    assert strict["joint_f1_counts"]["fp"] == 2 and strict["joint_f1_counts"]["fn"] == 2


def test_grounding_matches_rows_by_file_name_and_reports_missing():
    truth = [row("bench/audio/a.wav", "dog", [[0, 1]])]
    assert evaluate_grounding(truth, [row("a.wav", "dog", [[0, 1]], present=True)])["miou"] == 1.0
    with pytest.raises(EvalInputError, match="no prediction for row 1"):
        evaluate_grounding(truth, [row("a.wav", "cat", [], present=False)])


def test_lighthouse_r1_and_map():
    truth = [{"qid": 1, "relevant_windows": [[20, 30]]}, {"qid": 2, "relevant_windows": [[0, 10]]}]
    predicted = [{"qid": 1, "pred_relevant_windows": [[0, 10, 0.9], [20, 30, 0.5]]},
                 {"qid": 2, "pred_relevant_windows": [[0, 8, 0.7]]}]
    report = evaluate_lighthouse(truth, predicted)
    assert report["r1@0.5"] == 0.5 and report["r1@0.7"] == 0.5  # query 2: IoU 0.8
    # query 1: FP then TP → AP 0.5; query 2: AP 1 up to IoU 0.8, then 0
    assert report["map@0.5"] == pytest.approx(0.75)
    assert report["map@0.75"] == pytest.approx(0.75)
    assert report["map"] == pytest.approx((0.75 * 7 + 0.25 * 3) / 10)
    assert average_precision([[0, 10]], [], [0.5]).tolist() == [0.0]


# -- retrieval and classification ----------------------------------------------------------------
def test_recall_and_accuracy_hand_cases():
    assert recall_at_k(np.eye(3), [{0}, {1}, {2}], ks=(1,)) == {1: 1.0}
    similarity = np.array([[0.1, 0.9, 0.5], [0.2, 0.3, 0.1]])
    assert recall_at_k(similarity, [{0}, {1}], ks=(1, 2, 3)) == {1: 0.5, 2: 0.5, 3: 1.0}
    audio = np.eye(2)
    text = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    report = retrieval_metrics(audio, text, [0, 1, 0])
    assert report["t2a_r@1"] == pytest.approx(2 / 3) and report["a2t_r@1"] == 1.0
    result = classification_metrics(np.eye(3), np.eye(3)[[1, 0, 2]], [0, 0, 2], ["a", "b", "c"])
    # prompts: a ↔ e1, b ↔ e0, c ↔ e2; clip 0 (e0) is wrongly "b", clips 1 and 2 right
    assert result["top1_accuracy"] == pytest.approx(2 / 3) and result["top5_accuracy"] == 1.0


def ranked_similarity(ranks: list[int], items: int) -> np.ndarray:
    """[len(ranks), items]: row i's right item (column i) has exactly ranks[i] items above it."""
    rows = []
    for i, rank in enumerate(ranks):
        others = [j for j in range(items) if j != i]
        row = np.zeros(items)
        for position, j in enumerate(others):  # scores 1.0, 0.9, …: the first `rank` beat it
            row[j] = 1.0 - 0.05 * position - (0.5 if position >= rank else 0.0)
        row[i] = 1.0 - 0.05 * rank - 0.25
        rows.append(row)
    return np.array(rows)


def test_recall_at_10_and_top5_where_chance_is_far_from_one():
    """12 items, the right one ranked 0…11th: R@k must be exactly k/12 (with 2 or 3 items every
    R@10 and top-5 is 1 whatever the model does)."""
    similarity = ranked_similarity(list(range(12)), 12)
    assert recall_at_k(similarity, [{i} for i in range(12)], ks=(1, 5, 10)) == \
        {1: 1 / 12, 5: 5 / 12, 10: 10 / 12}
    # classification: 8 labels, four clips whose label ranks 0th, 4th, 5th and 7th
    labels = [f"l{i}" for i in range(8)]
    full = ranked_similarity([0, 4, 5, 7, 0, 0, 0, 0], 8)[:4]  # clip c's label is c
    result = classification_metrics(full, np.eye(8), [0, 1, 2, 3], labels)
    assert result["top1_accuracy"] == 0.25 and result["top5_accuracy"] == 0.5


# -- readers -------------------------------------------------------------------------------------
def test_audacity_reader(tmp_path):
    track = tmp_path / "clip.labels.txt"
    track.write_text("1.000000\t2,5\tdog barks (0.87)\n\\\t100\t200\nnot-a-number\t1\tx\n"
                     "3\t3\tpoint\n4\t5\n", encoding="utf-8")
    events, warnings = read_audacity(track)
    assert events == [(1.0, 2.5, "dog barks")]
    assert len(warnings) == 3 and "clip.labels.txt:3" in warnings[0]


def test_score_reader_errors(tmp_path):
    folder = tmp_path / "scores"
    folder.mkdir()
    (folder / "a.scores.tsv").write_text("onset\toffset\tdog\n0.0\t0.5\t0.1\n0.5\t1.0\tx\n")
    with pytest.raises(EvalInputError, match=r"a\.scores\.tsv:3: 'x' is not a number"):
        read_scores(folder)
    (folder / "a.scores.tsv").write_text("onset\toffset\tdog\n0.0\t0.5\t0.1\n0.6\t1.0\t0.2\n")
    with pytest.raises(EvalInputError, match="a.scores.tsv:3: frames must be contiguous"):
        read_scores(folder)


# -- CLI -----------------------------------------------------------------------------------------
@pytest.fixture
def sed_files(tmp_path, golden):
    """The first golden case as files: DCASE ground truth, durations, flam-detect score tables."""
    case = golden["cases"][0]
    gt = ["filename\tonset\toffset\tevent_label"]
    durations = ["filename\tduration"]
    scores = tmp_path / "scores"
    scores.mkdir()
    for clip, v in case["clips"].items():
        gt += [f"{clip}.wav\t{e[0]}\t{e[1]}\t{e[2]}" for e in v["events"]] or [f"{clip}.wav\t\t\t"]
        durations.append(f"{clip}.wav\t{v['duration']}")
        ts = v["timestamps"]
        lines = ["onset\toffset\t" + "\t".join(case["queries"])]
        lines += [f"{ts[i]!r}\t{ts[i + 1]!r}\t" + "\t".join(repr(x) for x in r)
                  for i, r in enumerate(v["scores"])]
        (scores / f"{clip}.scores.tsv").write_text("\n".join(lines) + "\n")
    (tmp_path / "gt.tsv").write_text("\n".join(gt) + "\n")
    (tmp_path / "durations.tsv").write_text("\n".join(durations) + "\n")
    return tmp_path, case


SED_KEYS = ("psds1", "psds2", "mpauc", "auroc", "event_f1", "segment_f1")


def test_cli_sed_scores_equals_reference(cli, sed_files):
    folder, case = sed_files
    result = cli("eval", "sed", "-g", folder / "gt.tsv", "-d", folder / "durations.tsv",
                 "--scores", folder / "scores", "--plots", folder / "plots")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(SED_KEYS) <= set(report)
    expected = case["expected"]
    assert abs(report["psds1"] - expected["psds1"]["value"]) <= TOL
    assert abs(report["psds2"] - expected["psds2"]["value"]) <= TOL
    assert abs(report["auroc"] - expected["auroc"]["mean"]) <= TOL
    assert abs(report["mpauc"] - expected["mpauc"]["mean"]) <= TOL
    assert abs(report["event_f1"] - expected["event_f1@0.5"]["f"]["macro_average"]) <= TOL
    assert abs(report["segment_f1"] - expected["segment_f1@0.5"]["f"]["macro_average"]) <= TOL
    for name in ("psd_roc.png", "f1_threshold.png", "calibration.png"):
        assert (folder / "plots" / name).stat().st_size > 1000
    assert "psds1" in result.stderr  # the table


def test_cli_sed_output_file_and_events(cli, sed_files, tmp_path):
    folder, case = sed_files
    events = tmp_path / "pred.tsv"
    lines = ["filename\tonset\toffset\tevent_label\tconfidence"]
    for clip, v in case["clips"].items():
        lines += [f"{clip}.wav\t{e[0]}\t{e[1]}\t{e[2]}\t0.9" for e in v["events"]]
    events.write_text("\n".join(lines) + "\n")
    out = tmp_path / "report.json"
    result = cli("eval", "sed", "-g", folder / "gt.tsv", "-d", folder / "durations.tsv",
                 "--events", events, "-o", out, "--quiet")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    report = json.loads(out.read_text())
    assert report["event_f1"] == 1.0 and report["segment_f1"] == 1.0
    assert report["psds1"] is None and report["hard_predictions"] is True


def test_cli_sed_matches_predictions_named_by_path(cli, sed_files, tmp_path):
    # `flam detect mixtures/audio "…"` names clips by path; the ground truth by file name.
    folder, case = sed_files
    table = ["filename\tonset\toffset\t" + "\t".join(case["queries"])]
    for clip in case["clips"]:
        rows = (folder / "scores" / f"{clip}.scores.tsv").read_text().splitlines()[1:]
        table += [f"mixtures/audio/{clip}.wav\t{row}" for row in rows]
    (tmp_path / "all.tsv").write_text("\n".join(table) + "\n")
    result = cli("eval", "sed", "-g", folder / "gt.tsv", "-d", folder / "durations.tsv",
                 "--scores", tmp_path / "all.tsv")
    assert result.exit_code == 0, result.stderr
    assert "matched to the evaluation set by their path's end" in result.stderr
    assert abs(json.loads(result.stdout)["psds1"] - case["expected"]["psds1"]["value"]) <= TOL
    events = ["filename\tonset\toffset\tevent_label"]
    for clip, v in case["clips"].items():
        events += [f"mixtures/audio/{clip}.wav\t{e[0]}\t{e[1]}\t{e[2]}" for e in v["events"]]
    (tmp_path / "pred.tsv").write_text("\n".join(events) + "\n")
    result = cli("eval", "sed", "-g", folder / "gt.tsv", "-d", folder / "durations.tsv",
                 "--events", tmp_path / "pred.tsv")
    assert result.exit_code == 0 and json.loads(result.stdout)["event_f1"] == 1.0
    # Predictions for other clips only: an input error, not F1 = 0.
    (tmp_path / "other.tsv").write_text("filename\tonset\toffset\tevent_label\n"
                                        "elsewhere.wav\t0.0\t1.0\tdog\n")
    result = cli("eval", "sed", "-g", folder / "gt.tsv", "-d", folder / "durations.tsv",
                 "--events", tmp_path / "other.tsv")
    assert result.exit_code == 3
    assert "no predicted clip is in the evaluation set" in result.stderr


def test_cli_sed_audacity_ground_truth(cli, tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.labels.txt").write_text("1.000000\t2.000000\tdog\n")
    (labels / "b.labels.txt").write_text("")
    scores = tmp_path / "scores"
    scores.mkdir()
    (scores / "a.tsv").write_text("onset\toffset\tdog\n0\t1\t0.1\n1\t2\t0.9\n2\t3\t0.1\n")
    (scores / "b.tsv").write_text("onset\toffset\tdog\n0\t1\t0.1\n1\t2\t0.2\n2\t3\t0.1\n")
    (tmp_path / "d.tsv").write_text("filename\tduration\na.wav\t3\nb.wav\t3\n")
    result = cli("eval", "sed", "-g", labels, "-d", tmp_path / "d.tsv", "--scores", scores)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["event_f1"] == 1.0 and report["auroc"] == 1.0


@pytest.mark.parametrize("problem, message", [
    ("missing", "no such file"),
    ("malformed", "gt.tsv:3: onset 'abc' is not a number"),
    ("no-scores", "no scores for clip 'clip000'"),
    ("header", "gt.tsv:1: header lacks column(s) event_label"),
])
def test_cli_sed_bad_input_is_one_line(cli, sed_files, problem, message):
    folder, _ = sed_files
    gt = folder / "gt.tsv"
    if problem == "missing":
        gt = folder / "nope.tsv"
    elif problem == "malformed":
        lines = gt.read_text().splitlines()
        lines[2] = "clip000.wav\tabc\t2\tdog barks"
        gt.write_text("\n".join(lines) + "\n")
    elif problem == "no-scores":
        (folder / "scores" / "clip000.scores.tsv").unlink()
    else:
        gt.write_text("filename\tonset\toffset\nx.wav\t1\t2\n")
    result = cli("eval", "sed", "-g", gt, "-d", folder / "durations.tsv", "--scores",
                 folder / "scores")
    assert result.exit_code == 3
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_cli_sed_usage_errors(cli, sed_files):
    folder, _ = sed_files
    result = cli("eval", "sed", "-g", folder / "gt.tsv", "-d", folder / "durations.tsv")
    assert result.exit_code == 2 and "exactly one of" in result.stderr
    result = cli("eval", "sed", "-g", folder / "gt.tsv", "--scores", folder / "scores")
    assert result.exit_code == 2 and "--durations" in result.stderr


def test_cli_sed_with_debug_model(cli, make_audio, tmp_path):
    make_audio("clips/a.wav", seconds=4.0)
    make_audio("clips/b.wav", seconds=3.0, freq=880.0)
    (tmp_path / "gt.tsv").write_text("filename\tonset\toffset\tevent_label\n"
                                     "a.wav\t0.5\t2.0\tdog barks\nb.wav\t\t\t\n")
    result = cli("eval", "sed", "-g", tmp_path / "gt.tsv", "--audio", tmp_path / "clips",
                 "--model", "debug", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["clips"] == 2 and report["model"]["name"]
    assert set(SED_KEYS) <= set(report)


def write_json(path, rows):
    path.write_text(json.dumps(rows))
    return path


def test_cli_ground_predictions(cli, tmp_path):
    truth = write_json(tmp_path / "g.json", [
        {"audio_path": "a.wav", "caption": "dog", "annotations": [[0, 2]]},
        {"audio_path": "a.wav", "caption": "bird", "annotations": []}])
    predicted = write_json(tmp_path / "p.json", [
        {"audio_path": "a.wav", "caption": "dog", "annotations": [[0, 1]], "present": True, "score": 0.8},
        {"audio_path": "a.wav", "caption": "bird", "annotations": [], "present": False}])
    result = cli("eval", "ground", "-g", truth, "--predictions", predicted)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    for key in ("miou", "r1@0.3", "r1@0.5", "r1@0.7", "presence_accuracy_positive",
                "presence_accuracy_negative", "joint_f1"):
        assert key in report
    assert report["miou"] == 0.5 and report["presence_accuracy_negative"] == 1.0
    assert "reconstructed" in result.stderr


def test_cli_ground_lighthouse(cli, tmp_path):
    truth = tmp_path / "g.jsonl"
    truth.write_text(json.dumps({"qid": 7, "query": "dog", "duration": 60, "vid": "v",
                                 "relevant_windows": [[10, 20]]}) + "\n")
    predicted = tmp_path / "p.jsonl"
    predicted.write_text(json.dumps({"qid": 7, "vid": "v",
                                     "pred_relevant_windows": [[10, 20, 0.9]]}) + "\n")
    result = cli("eval", "ground", "-g", truth, "--predictions", predicted)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["r1@0.5"] == 1.0 and report["map"] == 1.0


def test_cli_ground_bad_rows(cli, tmp_path):
    truth = write_json(tmp_path / "g.json", [{"audio_path": "a.wav", "caption": "dog",
                                              "annotations": [[3, 1]]}])
    result = cli("eval", "ground", "-g", truth, "--predictions", truth)
    assert result.exit_code == 3 and "g.json: row 1: bad window [3, 1]" in result.stderr


def test_cli_ground_retrieval_classify_with_debug_model(cli, make_audio, tmp_path):
    make_audio("audio/a.wav", seconds=3.0)
    make_audio("audio/b.wav", seconds=12.0, freq=1200.0)  # two windows
    truth = write_json(tmp_path / "g.json", [
        {"audio_path": "a.wav", "caption": "dog barks", "annotations": [[0.5, 1.0]]},
        {"audio_path": "b.wav", "caption": "a siren", "annotations": []}])
    result = cli("eval", "ground", "-g", truth, "--audio", tmp_path / "audio", "--model", "debug",
                 "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    by_model = json.loads(result.stdout)
    assert by_model["queries"] == 2
    # `flam ground -f json` output, given as predictions, gives the same report
    grounded = cli("ground", tmp_path / "audio", "dog barks", "a siren", "--model", "debug",
                   "--device", "cpu", "-f", "json")
    assert grounded.exit_code in (0, 1), grounded.stderr
    (tmp_path / "p.json").write_text(grounded.stdout)
    result = cli("eval", "ground", "-g", truth, "--predictions", tmp_path / "p.json")
    assert result.exit_code == 0, result.stderr
    from_file = json.loads(result.stdout)
    for key in ("miou", "r1@0.5", "presence_accuracy_positive", "presence_accuracy_negative",
                "joint_f1"):
        assert from_file[key] == by_model[key]
    (tmp_path / "captions.csv").write_text("file,caption\na.wav,a dog barks\nb.wav,a siren\n"
                                           "b.wav,sirens wail\n")
    result = cli("eval", "retrieval", "--captions", tmp_path / "captions.csv", "--audio",
                 tmp_path / "audio", "--model", "debug", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    # The command's numbers are the library's metrics on the model's own embeddings, in the
    # right order (R@10 with 2 files would be 1 whatever happened; R@1 is not).
    from flamcli.evaluation.retrieval import embed_audio_files, embed_texts
    from flamcli.models.registry import build_debug_model

    model = build_debug_model()
    files = embed_audio_files(model, [tmp_path / "audio" / "a.wav", tmp_path / "audio" / "b.wav"])
    texts = embed_texts(model, ["a dog barks", "a siren", "sirens wail"])
    expected = retrieval_metrics(files, texts, [0, 1, 1])
    assert report["captions"] == 3 and {k: report[k] for k in expected} == expected
    (tmp_path / "labels.csv").write_text("filename,category\na.wav,dog\nb.wav,siren\n")
    result = cli("eval", "classify", "--labels", tmp_path / "labels.csv", "--audio",
                 tmp_path / "audio", "--model", "debug", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    expected = classification_metrics(files, embed_texts(model, ["dog", "siren"]), [0, 1],
                                      ["dog", "siren"])
    classified = json.loads(result.stdout)
    assert {k: classified[k] for k in ("top1_accuracy", "per_label_top1")} == \
        {k: expected[k] for k in ("top1_accuracy", "per_label_top1")}
    result = cli("eval", "classify", "--labels", tmp_path / "labels.csv", "--audio",
                 tmp_path / "nowhere", "--model", "debug")
    assert result.exit_code == 3 and "'a.wav' not found" in result.stderr
