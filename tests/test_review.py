"""`flam review` without a browser: detect's record, decisions, resume, export, the server's
safety and the media it serves. The page itself is driven in Chromium in test_review_browser."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from flamcli.detection import FileResult
from flamcli.events import Event
from flamcli.review import DecisionError, ReviewError, ReviewFolder, ReviewServer
from flamcli.writers import write_file_outputs

QUERIES = ["dog barks", "car horn"]


def detect_folder(tmp_path: Path, audio: Path, events, name="out", duration=10.0) -> Path:
    """A folder as `flam detect -o` writes it, with chosen events (detect's own writer)."""
    frames = int(duration / 0.5)
    scores = np.zeros((frames, len(QUERIES)), dtype=np.float32)
    for onset, offset, query, confidence in events:
        scores[int(onset / 0.5):int(offset / 0.5), QUERIES.index(query)] = confidence
    result = FileResult(
        file=audio.name, path=audio, stem=audio.stem, queries=QUERIES,
        events=[Event(audio.name, *e) for e in events], scores=scores, frame_seconds=0.5,
        duration=duration, sample_rate=sf.info(str(audio)).samplerate, thresholds=[0.5, 0.6])
    out = tmp_path / name
    write_file_outputs(result, out, plot=False, settings={"median_filter": 3})
    return out


@pytest.fixture
def folder(tmp_path, make_audio):
    audio = make_audio("park.wav", seconds=10.0, rate=16_000)
    return detect_folder(tmp_path, audio, [(1.0, 2.5, "dog barks", 0.91), (4.0, 5.0, "car horn", 0.75),
                                           (6.5, 8.0, "dog barks", 0.66)])


def test_detect_records_where_each_result_came_from(tmp_path, make_audio, cli):
    audio = make_audio("clip.wav", seconds=4.0)
    result = cli("detect", audio, "dog barks", "-t", "0.3", "--median-filter", "5", "-m", "debug",
                 "-o", tmp_path / "out", "--no-plot")
    assert result.exit_code == 0, result.stderr
    record = json.loads((tmp_path / "out" / "clip.detect.json").read_text())
    assert record["audio"] == str(audio.resolve()) and record["audio_relative"] == "../clip.wav"
    assert record["queries"] == ["dog barks"] and record["thresholds"] == {"dog barks": 0.3}
    assert record["settings"]["median_filter"] == 5 and record["model"]["name"] == "debug"
    assert record["duration"] == pytest.approx(4.0)
    events_tsv = (tmp_path / "out" / "clip.events.tsv").read_bytes()
    import hashlib

    assert record["outputs"]["events.tsv"] == hashlib.sha256(events_tsv).hexdigest()


def test_decisions_write_reviewed_files_and_replay(folder):
    review = ReviewFolder.open(folder)
    assert [e.id for e in review.files["park"].ordered_events()] == ["d0", "d1", "d2"]
    review.decide("park", "accept", "d0")
    review.decide("park", "reject", "d1")
    review.decide("park", "move", "d2", onset=6.25, offset=8.5)
    review.decide("park", "relabel", "d2", label="  a dog\tbarking ")
    review.decide("park", "accept", "d2")
    added = review.decide("park", "add", onset=3.0, offset=3.75, label="bird song")
    assert added["event"] == "a0"
    labels = (folder / "park.reviewed.labels.txt").read_text()
    table = (folder / "park.reviewed.tsv").read_text()
    assert labels == ("1.000000\t2.500000\tdog barks\n"
                      "3.000000\t3.750000\tbird song\n"
                      "6.250000\t8.500000\ta dog barking\n")
    assert table == ("filename\tonset\toffset\tevent_label\n"
                     "park.wav\t1.000\t2.500\tdog barks\n"
                     "park.wav\t3.000\t3.750\tbird song\n"
                     "park.wav\t6.250\t8.500\ta dog barking\n")
    log = [json.loads(line) for line in (folder / "review.jsonl").read_text().splitlines()]
    assert [e["action"] for e in log] == ["accept", "reject", "move", "relabel", "accept", "add"]
    assert log[2]["before"]["onset"] == 6.5 and log[2]["after"]["onset"] == 6.25
    assert log[5]["before"] is None and log[5]["after"]["origin"] == "added"
    # Reopening replays the log: same state, resume point at the last decision.
    again = ReviewFolder.open(folder)
    assert {k: v.as_dict() for k, v in again.files["park"].events.items()} == \
        {k: v.as_dict() for k, v in review.files["park"].events.items()}
    assert again.last_decision == {"file": "park", "event": "a0"}


def test_undo_reverts_the_latest_decisions_in_order(folder):
    review = ReviewFolder.open(folder)
    review.decide("park", "accept", "d0")
    review.decide("park", "add", onset=3.0, offset=4.0, label="bird")
    review.decide("park", "move", "d0", onset=0.5, offset=2.5)
    assert review.undo("park")["after"]["onset"] == 1.0  # the move
    assert review.undo("park")["after"] is None  # the added event is gone
    assert "a0" not in review.files["park"].events
    assert (folder / "park.reviewed.labels.txt").read_text() == "1.000000\t2.500000\tdog barks\n"
    reopened = ReviewFolder.open(folder)
    assert reopened.undo("park")["after"]["status"] == "pending"  # undo survives a restart
    assert reopened.undo("park") is None
    assert (folder / "park.reviewed.labels.txt").read_text() == ""


@pytest.mark.parametrize("kwargs, message", [
    (dict(action="move", event_id="d0", onset=3.0, offset=2.0), "must come after onset"),
    (dict(action="move", event_id="d0", onset=float("nan"), offset=2.0), "finite"),
    (dict(action="move", event_id="d0", onset="x", offset=2.0), "numbers"),
    (dict(action="relabel", event_id="d0", label=" \t "), "label is empty"),
    (dict(action="relabel", event_id="d0", label="x" * 501), "longer than 500"),
    (dict(action="relabel", event_id="d0", label=7), "label must be text"),
    (dict(action="accept", event_id="d9"), "no event 'd9'"),
    (dict(action="delete", event_id="d0"), "unknown action"),
    (dict(action="add", onset=11.0, offset=12.0, label="x"), "inside the file"),
])
def test_bad_decisions_are_refused_and_change_nothing(folder, kwargs, message):
    review = ReviewFolder.open(folder)
    action = kwargs.pop("action")
    with pytest.raises(DecisionError, match=message):
        review.decide("park", action, kwargs.pop("event_id", None), **kwargs)
    assert not (folder / "review.jsonl").exists()


def test_a_stale_page_cannot_overwrite_a_newer_decision(folder):
    review = ReviewFolder.open(folder)
    seen = review.files["park"].events["d0"].as_dict()
    review.decide("park", "reject", "d0", expect=seen)
    with pytest.raises(DecisionError, match="changed elsewhere") as caught:
        review.decide("park", "accept", "d0", expect=seen)
    assert caught.value.status == 409


def test_export_writes_one_table_for_the_folder(folder, tmp_path, make_audio, cli):
    other = make_audio("street.wav", seconds=10.0)
    detect_folder(tmp_path, other, [(2.0, 3.0, "car horn", 0.8)], name="out")
    review = ReviewFolder.open(folder)
    review.decide("park", "accept", "d0")
    review.decide("street", "accept", "d0")
    target = tmp_path / "reviewed.tsv"
    result = cli("review", folder, "--export", target)
    assert result.exit_code == 0, result.stderr
    assert target.read_text() == ("filename\tonset\toffset\tevent_label\n"
                                  "park.wav\t1.000\t2.500\tdog barks\n"
                                  "street.wav\t2.000\t3.000\tcar horn\n")
    assert "park.wav: 2 event(s) not reviewed yet" in result.stderr
    # ready for flam eval sed: the export is a ground-truth table it reads
    from flamcli.evaluation.inputs import read_event_table

    assert sorted(read_event_table(target)) == ["park", "street"]
    # to stdout, with no server and no audio needed
    (tmp_path / "park.wav").unlink()
    piped = cli("review", folder, "--export", "-")
    assert piped.exit_code == 0 and piped.stdout == target.read_text()


def test_a_folder_without_detect_outputs_is_a_usage_error(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    result = cli("review", tmp_path / "empty", "--no-browser")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "no flam detect outputs" in result.stderr


def test_moved_audio_is_named_and_nothing_is_served(folder, tmp_path, cli):
    (tmp_path / "park.wav").rename(tmp_path / "elsewhere.wav")
    result = cli("review", folder, "--no-browser")
    assert result.exit_code == 3
    assert "park.wav: audio file moved or deleted (recorded as" in result.stderr
    assert "none of its audio files can be found" in result.stderr and result.stdout == ""


def test_a_folder_moved_with_its_audio_still_finds_it(folder, tmp_path):
    moved = tmp_path / "project"
    moved.mkdir()
    (tmp_path / "park.wav").rename(moved / "park.wav")
    folder.rename(moved / "out")
    review = ReviewFolder.open(moved / "out")
    assert review.files["park"].audio == moved / "out" / ".." / "park.wav"
    assert review.problems == []


def test_a_reviewed_track_edited_by_hand_is_never_overwritten(folder, cli):
    ReviewFolder.open(folder).decide("park", "accept", "d0")
    track = folder / "park.reviewed.labels.txt"
    track.write_text("1.000000\t2.000000\tmy own fix\n")
    result = cli("review", folder, "--no-browser")
    assert result.exit_code == 3 and result.stderr.count("\n") == 1
    assert "park.reviewed.labels.txt: changed since flam review wrote it" in result.stderr
    assert track.read_text() == "1.000000\t2.000000\tmy own fix\n"
    # ... nor during a session: the decision is refused, the file kept
    review = ReviewFolder.open(folder, check_outputs=False)
    with pytest.raises(DecisionError, match="edited by hand"):
        review.decide("park", "reject", "d1")
    assert track.read_text() == "1.000000\t2.000000\tmy own fix\n"


def test_reviewed_files_lost_or_left_behind_by_a_crash_are_rebuilt(folder):
    review = ReviewFolder.open(folder)
    review.decide("park", "accept", "d0")
    review.decide("park", "accept", "d1")
    log = folder / "review.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    # a crash after the log line, before the files: they hold the previous decision's state
    track = folder / "park.reviewed.labels.txt"
    ReviewFolder.open(folder).undo("park")
    text_after_one = track.read_text()
    log.write_text("".join(lines))  # the undo never happened
    track.write_text(text_after_one)
    ReviewFolder.open(folder)
    assert track.read_text().count("\n") == 2
    track.unlink()
    ReviewFolder.open(folder)
    assert track.read_text().count("\n") == 2


def test_a_log_line_cut_off_by_a_crash_is_ignored_with_a_warning(folder):
    review = ReviewFolder.open(folder)
    review.decide("park", "accept", "d0")
    log = folder / "review.jsonl"
    with open(log, "a") as handle:
        handle.write('{"seq": 2, "time": "x", "file": "park", "ev')
    reopened = ReviewFolder.open(folder)
    assert any("incomplete last line" in w for w in reopened.warnings)
    assert (folder / "review.jsonl.incomplete").read_text() == '{"seq": 2, "time": "x", "file": "park", "ev\n'
    reopened.decide("park", "reject", "d1")  # on a line of its own
    assert [json.loads(x)["seq"] for x in log.read_text().splitlines()] == [1, 2]
    assert ReviewFolder.open(folder).files["park"].events["d1"].status == "rejected"


def test_a_damaged_log_in_the_middle_stops_with_one_line(folder):
    ReviewFolder.open(folder).decide("park", "accept", "d0")
    log = folder / "review.jsonl"
    log.write_text("garbage\n" + log.read_text())
    with pytest.raises(ReviewError, match=r"review.jsonl:1: not a review decision"):
        ReviewFolder.open(folder)


# -- the server --------------------------------------------------------------------------------
@pytest.fixture
def server(folder):
    lines = []
    review = ReviewServer(ReviewFolder.open(folder), log=lines.append)
    thread = threading.Thread(target=review.serve_forever, daemon=True)
    thread.start()
    review.lines = lines
    yield review
    review.shutdown()


def request(server, path, *, token=True, data=None, headers=None, method=None):
    url = f"http://127.0.0.1:{server.port}{path}"
    if token:
        url += ("&" if "?" in path else "?") + f"token={server.token}"
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers


def test_server_serves_the_page_and_the_folder(server):
    status, body, headers = request(server, "/")
    assert status == 200 and b"review.js" in body and "default-src 'self'" in headers["Content-Security-Policy"]
    status, body, _ = request(server, "/api/files")
    files = json.loads(body)["files"]
    assert files == [{"stem": "park", "file": "park.wav", "duration": 10.0, "events": 3,
                      "pending": 3, "accepted": 0, "audio": True}]
    status, body, _ = request(server, "/api/file?file=park")
    view = json.loads(body)
    assert view["scores"]["curves"]["dog barks"][2:5] == [0.91, 0.91, 0.91] and view["scores"]["step"] == 0.5
    status, body, _ = request(server, "/api/decision", data=json.dumps(
        {"file": "park", "action": "accept", "event": "d0"}).encode(), method="POST")
    assert status == 200 and json.loads(body)["file"]["pending"] == 2


@pytest.mark.parametrize("path, kwargs, status, line", [
    ("/api/files", dict(token=False), 403, "missing or wrong token"),
    ("/api/files?token=wrong", dict(token=False), 403, "missing or wrong token"),
    ("/api/files", dict(headers={"Host": "evil.example:80"}), 403, "wrong Host header"),
    ("/api/file?file=../../etc/passwd", {}, 404, "no file '../../etc/passwd'"),
    ("/api/audio?file=park&start=0&end=500", {}, 400, "clips are at most 120 s"),
    ("/api/audio?file=park&start=nan&end=5", {}, 400, "start must be finite"),
    ("/api/audio?file=park&start=x&end=5", {}, 400, "start='x' is not a number"),
    ("/etc/passwd", {}, 404, "no such page"),
    ("/static/../../folder.py", {}, 404, "no such page"),
    ("/api/decision", dict(data=b"x" * 70_000, method="POST"), 413, "body larger than"),
    ("/api/decision", dict(data=b"[" * 50_000, method="POST"), 400, "not a JSON object"),
    ("/api/decision", dict(data=b"\xff\xfe", method="POST"), 400, "not a JSON object"),
    ("/api/decision", dict(data=b'{"file": "park", "action": "accept", "event": "d7"}', method="POST"),
     404, "no event 'd7'"),
    ("/api/decision", dict(data=b'{"file": ["park"]}', method="POST"), 400, "file must be"),
])
def test_server_refuses_bad_requests_with_4xx_and_one_line(server, folder, path, kwargs, status, line):
    code, body, _ = request(server, path, **kwargs)
    assert code == status and line in json.loads(body)["error"]
    assert len(server.lines) == 1 and line in server.lines[0] and "Traceback" not in server.lines[0]
    assert not (folder / "review.jsonl").exists()
    assert not list(folder.glob("*.part"))


def test_server_plays_the_file_at_its_own_rate_from_the_requested_place(server, tmp_path):
    status, body, headers = request(server, "/api/audio?file=park&start=2.5&end=3.25")
    assert status == 200 and headers["Content-Type"] == "audio/wav"
    clip, rate = sf.read(io.BytesIO(body))
    original, _ = sf.read(str(tmp_path / "park.wav"), start=40_000, stop=52_000)
    assert rate == 16_000 and len(clip) == 12_000
    assert np.abs(clip - original).max() < 1 / 32_000  # 16-bit rounding only


def test_spectrogram_pictures_are_bounded_and_cached(server, folder):
    from matplotlib.image import imread

    status, body, _ = request(server, "/api/spectrogram?file=park&width=100000")
    picture = imread(io.BytesIO(body))
    assert status == 200 and picture.shape[1] <= 4096 and picture.shape[0] == 64
    cached = list((folder / ".review-cache").glob("*.png"))
    assert len(cached) == 1 and cached[0].read_bytes() == body
    status, zoomed, _ = request(server, "/api/spectrogram?file=park&start=1&end=2&width=512")
    assert status == 200 and imread(io.BytesIO(zoomed)).shape[1] == 50  # 20 ms columns


def test_long_ranges_are_pictured_from_sampled_frames(tmp_path, monkeypatch):
    """A long range reads a few frames per column instead of decoding it whole; the picture
    still shows where the loud part is."""
    from matplotlib.image import imread

    from flamcli.review import media

    rate = 8000
    noise = np.random.default_rng(0).standard_normal(rate * 60).astype(np.float32)
    quiet = 0.001 * noise
    quiet[rate * 30:rate * 40] = 0.3 * noise[rate * 30:rate * 40]  # 50 dB louder, every band
    path = tmp_path / "long.flac"
    sf.write(str(path), quiet, rate)
    reads = []
    original = sf.SoundFile.read

    def counting(self, frames=-1, *args, **kwargs):
        reads.append(frames)
        return original(self, frames, *args, **kwargs)

    monkeypatch.setattr(media, "CONTIGUOUS_SAMPLES", 10_000)
    monkeypatch.setattr(sf.SoundFile, "read", counting)
    picture = imread(io.BytesIO(media.spectrogram_picture(path, 0, 60, 60)))
    assert picture.shape[1] == 60 and sum(reads) < rate * 60 / 4  # 1 s columns, 0.16 s read
    brightness = picture.mean(axis=(0, 2))
    assert brightness[30:40].mean() > brightness[:25].mean() + 0.2


# -- the command ---------------------------------------------------------------------------------
def start_review(args, cwd):
    process = subprocess.Popen([sys.executable, "-m", "flamcli", "review", *map(str, args),
                                "--no-browser"], cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    url = process.stdout.readline().strip()
    return process, url


def test_review_detects_first_then_serves_until_ctrl_c(tmp_path, make_audio):
    make_audio("yard.wav", seconds=3.0)
    process, url = start_review(["yard.wav", "dog barks", "-m", "debug"], tmp_path)
    try:
        assert url.startswith("http://127.0.0.1:") and "token=" in url, process.stderr.read()
        with urllib.request.urlopen(url.replace("/?", "/api/files?"), timeout=10) as response:
            files = json.loads(response.read())["files"]
        assert [f["file"] for f in files] == ["yard.wav"]
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "detecting into yard-review" in err and "every decision is saved" in err
    assert "Traceback" not in err
    assert (tmp_path / "yard-review" / "yard.detect.json").is_file()
    # Run again with the same queries: the review resumes in the same folder.
    process, url = start_review(["yard.wav", "dog barks", "-m", "debug"], tmp_path)
    process.terminate()
    _, err = process.communicate(timeout=20)
    assert process.returncode == 0 and "yard-review: resuming its review" in err
    assert not (tmp_path / "yard-review-2").exists()


def test_a_record_linking_out_of_the_folder_is_skipped(folder, tmp_path, make_audio):
    outside = detect_folder(tmp_path, make_audio("far.wav", seconds=10.0), [], name="elsewhere")
    (folder / "far.detect.json").symlink_to(outside / "far.detect.json")
    review = ReviewFolder.open(folder)
    assert sorted(review.files) == ["park"]
    assert any("links outside" in w for w in review.warnings)


def test_a_port_in_use_is_one_line_and_exit_2(folder, cli):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = cli("review", folder, "--no-browser", "--port", taken.getsockname()[1])
    assert result.exit_code == 2 and result.stdout == ""
    assert "cannot listen on 127.0.0.1" in result.stderr and result.stderr.count("\n") == 1


def test_reviewed_files_that_cannot_be_written_keep_the_decision_in_the_log(folder):
    review = ReviewFolder.open(folder)
    (folder / "park.reviewed.tsv").mkdir()  # a directory where the table should go
    with pytest.raises(DecisionError, match="decision saved in review.jsonl") as caught:
        review.decide("park", "accept", "d0")
    assert caught.value.status == 507
    (folder / "park.reviewed.tsv").rmdir()
    assert ReviewFolder.open(folder).files["park"].events["d0"].status == "accepted"
    assert (folder / "park.reviewed.tsv").read_text().count("\n") == 2


def test_detecting_again_into_a_reviewed_folder_is_refused(folder, tmp_path, cli):
    ReviewFolder.open(folder).decide("park", "accept", "d0")
    before = (folder / "park.detect.json").read_bytes()
    result = cli("review", tmp_path / "park.wav", "a siren", "-o", folder, "-m", "debug", "--no-browser")
    assert result.exit_code == 2 and "already holds a review of other queries" in result.stderr
    assert (folder / "park.detect.json").read_bytes() == before
