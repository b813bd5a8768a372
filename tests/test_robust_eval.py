"""Bad inputs to `flam eval`, and flam's own outputs that `flam eval` must read back:
one line naming the file and row, exit 3, never a traceback."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest


def write_json(path, rows):
    path.write_text(json.dumps(rows))
    return path


def one_line_error(result, *fragments):
    assert result.exit_code == 3, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert result.stdout == ""


@pytest.fixture
def grounding(tmp_path):
    truth = write_json(tmp_path / "g.json", [
        {"audio_path": "a.wav", "caption": "dog", "annotations": [[0, 2]]},
        {"audio_path": "a.wav", "caption": "bird", "annotations": []}])
    predicted = write_json(tmp_path / "p.json", [
        {"audio_path": "a.wav", "caption": "dog", "annotations": [[0, 1]], "present": True},
        {"audio_path": "a.wav", "caption": "bird", "annotations": [], "present": False}])
    return truth, predicted


# -- malformed eval ground inputs -----------------------------------------------------------
def test_eval_ground_non_numeric_score_is_one_line(cli, tmp_path, grounding):
    truth, _ = grounding
    predicted = write_json(tmp_path / "p_score.json", [
        {"audio_path": "a.wav", "caption": "dog", "annotations": [[0, 1]], "score": 0.7},
        {"audio_path": "a.wav", "caption": "bird", "annotations": [], "score": "high"}])
    result = cli("eval", "ground", "-g", truth, "--predictions", predicted)
    one_line_error(result, "p_score.json: row 2", "'score'", "'high'")
    # flam ground -f json's "presence" is read the same way
    predicted = write_json(tmp_path / "p_presence.json", [
        {"audio_path": "a.wav", "caption": "dog", "annotations": [], "presence": [1]}])
    result = cli("eval", "ground", "-g", truth, "--predictions", predicted)
    one_line_error(result, "p_presence.json: row 1", "'presence'")


@pytest.mark.parametrize("which", ["-g", "--predictions"])
def test_eval_ground_binary_file_is_one_line(cli, make_audio, grounding, which):
    truth, predicted = grounding
    wav = make_audio("clip.wav", seconds=0.5)
    args = {"-g": truth, "--predictions": predicted}
    args[which] = wav
    result = cli("eval", "ground", "-g", args["-g"], "--predictions", args["--predictions"])
    one_line_error(result, f"{wav}: not UTF-8 text")


# -- a ground-truth row without annotations -------------------------------------------------
def test_eval_ground_truth_row_without_annotations_is_malformed(cli, tmp_path, grounding):
    _, predicted = grounding
    truth = write_json(tmp_path / "g_noann.json", [
        {"audio_path": "a.wav", "caption": "dog", "annotations": [[0, 2]]},
        {"audio_path": "a.wav", "caption": "bird"}])
    result = cli("eval", "ground", "-g", truth, "--predictions", predicted)
    one_line_error(result, "g_noann.json: row 2: missing annotations")
    # An empty list is still a negative, and predictions may leave the key out.
    truth = write_json(tmp_path / "g_empty.json", [
        {"audio_path": "a.wav", "caption": "dog", "annotations": [[0, 2]]},
        {"audio_path": "a.wav", "caption": "bird", "annotations": []}])
    predicted = write_json(tmp_path / "p.json", [
        {"audio_path": "a.wav", "caption": "dog", "annotations": [[0, 1]]},
        {"audio_path": "a.wav", "caption": "bird"}])
    result = cli("eval", "ground", "-g", truth, "--predictions", predicted)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["positives"] == 1 and report["negatives"] == 1
    assert report["presence_accuracy_negative"] == 1.0


# -- a score table covering part of its clip ------------------------------------------------
def _sed_inputs(tmp_path, frames_a: int):
    """Clips a (3 s) and b (3 s), 0.5 s frames; a's table has ``frames_a`` frames."""
    (tmp_path / "gt.tsv").write_text("filename\tonset\toffset\tevent_label\n"
                                     "a.wav\t0.5\t1.5\tdog\nb.wav\t\t\t\n")
    (tmp_path / "d.tsv").write_text("filename\tduration\na.wav\t3\nb.wav\t3\n")
    scores = tmp_path / "scores"
    scores.mkdir(exist_ok=True)
    for name, frames in (("a", frames_a), ("b", 6)):
        rows = ["onset\toffset\tdog"]
        rows += [f"{i * 0.5}\t{(i + 1) * 0.5}\t{0.9 if name == 'a' and i in (1, 2) else 0.1}"
                 for i in range(frames)]
        (scores / f"{name}.scores.tsv").write_text("\n".join(rows) + "\n")
    return scores


def test_eval_sed_truncated_score_table_fails(cli, tmp_path):
    scores = _sed_inputs(tmp_path, frames_a=2)  # 1 s of a 3 s clip
    result = cli("eval", "sed", "-g", tmp_path / "gt.tsv", "-d", tmp_path / "d.tsv",
                 "--scores", scores)
    one_line_error(result, "a.scores.tsv", "'a'", "end at 1.000 s", "3.000 s")


def test_eval_sed_table_short_by_under_one_frame_is_accepted(cli, tmp_path):
    # A system that drops the last partial frame ends less than one frame early.
    scores = _sed_inputs(tmp_path, frames_a=5)  # ends at 2.5 s of 3 s: within one frame
    result = cli("eval", "sed", "-g", tmp_path / "gt.tsv", "-d", tmp_path / "d.tsv",
                 "--scores", scores)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["clips"] == 2


# -- tabs and newlines in file names --------------------------------------------------------
def parse_tsv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline=""), delimiter="\t"))


def test_ground_tsv_keeps_a_tab_in_a_file_name_in_its_column(cli, make_audio):
    odd = make_audio("tab\tname.wav", seconds=2.0)
    result = cli("ground", odd, "dog barks", "-m", "debug", "--device", "cpu", "-f", "tsv",
                 "-t", "0", "--min-duration", "0")
    assert result.exit_code == 0, result.stderr
    rows = parse_tsv(result.stdout)
    assert rows[0] == ["file", "query", "present", "presence", "start", "end", "confidence"]
    assert len(rows) > 1 and all(len(row) == 7 for row in rows)
    assert {row[0] for row in rows[1:]} == {str(odd)}


def test_ground_tsv_ordinary_names_are_unchanged(cli, make_audio):
    plain = make_audio("plain name.wav", seconds=2.0)
    args = (plain, "dog barks", "-m", "debug", "--device", "cpu", "-t", "0",
            "--min-duration", "0")
    tsv = cli("ground", *args, "-f", "tsv")
    records = json.loads(cli("ground", *args, "-f", "json").stdout)
    expected = ["file\tquery\tpresent\tpresence\tstart\tend\tconfidence"]
    for r in records:
        for a, b, c in r["intervals"] or [(None, None, None)]:
            expected.append("\t".join([r["file"], r["query"], str(r["present"]).lower(),
                                       f"{r['presence']:.6f}"]
                                      + (["", "", ""] if a is None
                                         else [f"{a:.3f}", f"{b:.3f}", f"{c:.6f}"])))
    assert tsv.stdout == "\n".join(expected) + "\n"


def test_detect_scores_with_odd_file_names_reads_back_in_eval(cli, make_audio, tmp_path):
    odd = make_audio("new\nline.wav", seconds=2.0)
    tab = make_audio("tab\tname.wav", seconds=2.0, freq=880.0)
    result = cli("detect", odd, tab, "dog", "-m", "debug", "--device", "cpu", "-f", "scores")
    assert result.exit_code == 0, result.stderr
    rows = parse_tsv(result.stdout)
    assert rows[0] == ["filename", "onset", "offset", "dog"]
    assert all(len(row) == 4 for row in rows) and {r[0] for r in rows[1:]} == {str(odd), str(tab)}
    table = tmp_path / "all.tsv"
    table.write_text(result.stdout)
    # flam eval reads the table back, each clip under its own name
    with open(tmp_path / "gt.tsv", "w", newline="") as handle:
        out = csv.writer(handle, delimiter="\t", lineterminator="\n")
        out.writerow(["filename", "onset", "offset", "event_label"])
        out.writerow([str(odd), "0.5", "1.5", "dog"])
        out.writerow([str(tab), "", "", ""])
    with open(tmp_path / "d.tsv", "w", newline="") as handle:
        out = csv.writer(handle, delimiter="\t", lineterminator="\n")
        out.writerow(["filename", "duration"])
        out.writerows([[str(odd), "2"], [str(tab), "2"]])
    result = cli("eval", "sed", "-g", tmp_path / "gt.tsv", "-d", tmp_path / "d.tsv",
                 "--scores", table)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["clips"] == 2


# -- events shorter than the written precision ----------------------------------------------
def test_sub_millisecond_event_is_written_with_a_length_and_read_back(cli, make_audio, tmp_path):
    one = make_audio("one.wav", data=np.array([0.3], dtype=np.float32))  # 1 sample: 62.5 µs
    out = tmp_path / "out"
    result = cli("detect", one, "dog", "-m", "debug", "--device", "cpu", "-t", "0.0001",
                 "-o", out, "--no-plot")
    assert result.exit_code == 0, result.stderr
    events = parse_tsv((out / "one.events.tsv").read_text())
    assert len(events) == 2 and float(events[1][1]) < float(events[1][2])
    labels = (out / "one.labels.txt").read_text().split("\t")
    assert float(labels[0]) < float(labels[1])
    (tmp_path / "gt.tsv").write_text("filename\tonset\toffset\tevent_label\n"
                                     "one.wav\t0\t0.00005\tdog\n")
    (tmp_path / "d.tsv").write_text("filename\tduration\none.wav\t0.0000625\n")
    result = cli("eval", "sed", "-g", tmp_path / "gt.tsv", "-d", tmp_path / "d.tsv",
                 "--events", out / "one.events.tsv")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["event_f1"] == 1.0


def test_interval_text_widens_only_events_that_would_vanish():
    from flamcli.writers import interval_text

    assert interval_text(1.2344, 2.5) == ("1.234", "2.500")  # ordinary: plain rounding
    assert interval_text(0.0, 0.0000625) == ("0.000", "0.001")
    assert interval_text(1.0006, 1.0009) == ("1.000", "1.001")  # still covers the event
    assert interval_text(2.0, 2.0) == ("2.000", "2.001")
    assert interval_text(0.0, 0.0000625, decimals=6) == ("0.000000", "0.000063")
