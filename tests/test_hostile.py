"""What a careless or hostile user did to flam (issue: ~300 hostile cases), each a test.

Special files as outputs, symlink loops, options past any sense, closed and full standard
streams, impossible recipes, orphaned workers and leftovers of killed runs, text that would
split a line, and inputs that were once accepted quietly. `bench/hostile.py` replays the same
cases (and more) against an installed flam for a reviewer.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

DEBUG = ("-m", "debug")
FLAM = [sys.executable, "-m", "flamcli"]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``flam …`` through bash, for redirections (``>&-``, ``2>/dev/full``)."""
    flam = " ".join(FLAM)
    return subprocess.run(["bash", "-c", command.replace("flam ", flam + " ", 1)], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "FLAM_NO_PROGRESS": "1"})


# -- outputs that are not regular files ---------------------------------------------------------
def test_a_fifo_as_output_is_written_into_not_replaced(flam, tmp_path):
    fifo = tmp_path / "recipe.fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    code, _, err = flam("synth", "recipe", "sed", "-o", fifo)
    reader.join(timeout=20)
    assert code == 0, err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still a FIFO
    assert json.loads(received[0])["recipe"] == "sed"


def test_a_symlink_as_output_replaces_its_target_and_stays_a_link(flam, tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target.name)
    code, _, err = flam("synth", "recipe", "ground", "-o", link)
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == "real.json"
    assert json.loads(target.read_text())["recipe"] == "ground"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="Linux's /dev/full")
@pytest.mark.parametrize("command", [
    ("synth", "recipe", "sed"),
    ("eval", "ground", "-g", "{truth}", "--predictions", "{truth}"),
])
def test_dev_full_as_output_is_one_line_and_stays_a_device(flam, tmp_path, command):
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps([{"audio_path": "a.wav", "caption": "dog", "annotations": [[1, 2]]}]))
    before = os.stat("/dev/full")
    code, out, err = flam(*[part.format(truth=truth) for part in command], "-o", "/dev/full")
    assert code == 3 and out == ""
    assert error_lines(err) == ["error: /dev/full: No space left on device"] or \
        error_lines(err) == ["error: /dev/full: cannot write (No space left on device)"]
    after = os.stat("/dev/full")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


def test_a_directory_as_output_file_is_refused(flam, tmp_path):
    code, _, err = flam("synth", "recipe", "sed", "-o", tmp_path)
    assert code == 3 and error_lines(err) == [f"error: {tmp_path}: Is a directory"]


# -- inputs ---------------------------------------------------------------------------------------
def test_a_symlink_loop_among_inputs_is_one_line_and_the_rest_runs(flam, tmp_path, make_audio):
    loop = tmp_path / "loop.wav"
    loop.symlink_to(loop.name)
    good = make_audio("good.wav", seconds=1.0)
    code, out, err = flam("detect", loop, good, "dog", *DEBUG, "-t", "0")
    assert code == 3, err
    assert error_lines(err) == [f"error: {loop}: a symbolic link loop, not a file"]
    assert out.splitlines()[1].startswith(str(good))
    code, out, err = flam("detect", str(tmp_path / "*.wav"), "dog", *DEBUG, "-t", "0")
    assert code == 3 and len(error_lines(err)) == 1 and str(good) in out


@pytest.mark.parametrize("special", ["fifo.wav", "/dev/zero", "/dev/urandom"])
def test_pipes_and_devices_as_input_are_named_as_such(flam, tmp_path, make_audio, special):
    if special == "fifo.wav":
        special = tmp_path / special
        os.mkfifo(special)
    good = make_audio("good.wav", seconds=1.0)
    code, out, err = flam("detect", special, good, "dog", *DEBUG, "-t", "0")
    assert code == 3
    assert error_lines(err) == [f"error: {special}: not a regular file (a pipe or device); "
                                "flam reads audio files"]
    assert str(good) in out


def test_dash_twice_is_a_usage_error(flam, make_audio, monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(str(make_audio("a.wav")) + "\n"))
    code, out, err = flam("detect", "-", "-", "dog", *DEBUG)
    assert code == 2 and out == ""
    assert error_lines(err) == ["error: '-' given twice: stdin can be read once (use -q - for a "
                                "query that is a dash)"]


def test_same_names_are_only_mentioned_when_outputs_are_written(flam, tmp_path, make_audio):
    a, b = make_audio("x/a.wav", seconds=1.0), make_audio("y/a.wav", seconds=1.0)
    _, _, err = flam("detect", a, b, "dog", *DEBUG)
    assert "-2" not in err
    _, _, err = flam("detect", a, b, "dog", *DEBUG, "-o", tmp_path / "out")
    assert f"{b}: its output files are named a-2.*" in err
    assert (tmp_path / "out" / "a-2.events.tsv").is_file()


# -- options past any sense -------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ("detect", "{audio}", "dog", "-m", "debug", "--median-filter", "1000000000"),
    ("detect", "{audio}", "dog", "-m", "debug", "--batch-size", "99999999999999999999999"),
    ("detect", "{audio}", "dog", "-m", "debug", "--threads", str(2 ** 70)),
    ("train", "--data", "{folder}", "--output", "{folder}/t", "--lr", "1e300"),
    ("train", "--data", "{folder}", "--output", "{folder}/t", "--seed", str(2 ** 64)),
    ("synth", "sed", "{folder}/m.csv", "-o", "{folder}/s", "--workers", "100000"),
])
def test_absurd_numbers_are_usage_errors_not_crashes(flam, tmp_path, make_audio, args):
    audio = make_audio("a.wav", seconds=1.0)
    code, out, err = flam(*[a.format(audio=audio, folder=tmp_path) for a in args])
    assert code == 2, err
    assert len(error_lines(err)) == 1 and "internal error" not in err


def test_json_nested_100000_deep_is_one_line(flam, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps([{"audio_path": "a.wav", "caption": "dog", "annotations": []}]))
    code, _, err = flam("eval", "ground", "-g", truth, "--predictions", deep)
    assert code == 3 and error_lines(err) == [f"error: {deep}: JSON nested too deeply"]
    code, _, err = flam("synth", "sed", tmp_path / "m.csv", "-o", tmp_path / "s", "--recipe", deep)
    assert code == 2 and "nested too deeply" in err and "internal error" not in err


def test_the_median_filter_works_in_bounded_chunks_with_the_same_result(monkeypatch):
    from flamcli import events

    scores = np.random.default_rng(0).random((3000, 3)).astype(np.float32)
    whole = events.median_filter(scores, 9)
    monkeypatch.setattr(events, "MEDIAN_CHUNK_VALUES", 100)  # 3 frames per chunk
    assert np.array_equal(events.median_filter(scores, 9), whole)
    reference = np.stack([np.median(np.pad(scores, ((4, 4), (0, 0)), mode="symmetric")[i:i + 9],
                                    axis=0) for i in range(3000)])
    assert np.array_equal(whole, reference.astype(np.float32))


# -- standard streams ---------------------------------------------------------------------------------
@pytest.fixture
def audio_dir(tmp_path, make_audio):
    make_audio("a.wav", seconds=1.0)
    return tmp_path


@pytest.mark.parametrize("command", ["detect a.wav dog -m debug", "ground a.wav dog -m debug",
                                     "synth recipe sed", "models"])
def test_a_closed_stdout_is_exit_3_with_one_line(audio_dir, command):
    done = shell(f"flam {command} >&-", audio_dir)
    assert done.returncode == 3, done.stderr
    assert error_lines(done.stderr) == ["error: standard output: could not write: Bad file "
                                        "descriptor (standard output is closed)"]


@pytest.mark.parametrize("command", ["detect a.wav dog -m debug", "ground a.wav dog -m debug",
                                     "synth recipe sed", "models"])
@pytest.mark.parametrize("stderr", ["2>/dev/full", "2>&-"])
def test_a_full_or_closed_stderr_loses_messages_not_the_output(audio_dir, command, stderr):
    """The work is done and stdout complete; when messages were lost the exit code is 3
    (never `flam ground`'s 1, "absent"), else the run's own."""
    normal = shell(f"flam {command}", audio_dir)
    broken = shell(f"flam {command} {stderr}", audio_dir)
    assert broken.stdout == normal.stdout and normal.stdout
    assert normal.returncode in (0, 1)
    assert broken.returncode == (3 if normal.stderr else normal.returncode), broken.stderr


# -- impossible recipes, orphans, leftovers ----------------------------------------------------------------
@pytest.mark.parametrize("recipe, says", [
    ({"recipe": "sed", "events": [100000, 100000]}, "events: at most 60 fit a 10 s clip"),
    ({"recipe": "sed", "events": [1000, 1000]}, "not 1000"),
    ({"recipe": "ground", "occurrences": [1, 100000]}, "at most 100 targets of 1000"),
])
def test_impossible_event_counts_are_refused_by_name_at_once(flam, tmp_path, recipe, says):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(recipe))
    began = time.monotonic()
    code, _, err = flam("synth", recipe["recipe"], tmp_path / "m.csv", "-o", tmp_path / "s",
                        "--recipe", path, "-n", "1")
    assert code == 2 and says in err and time.monotonic() - began < 10


def test_synth_workers_end_with_a_killed_parent(train_data, tmp_path):
    _, manifest = train_data
    process = subprocess.Popen([*FLAM, "synth", "sed", str(manifest), "-o", str(tmp_path / "s"),
                                "-n", "400", "--workers", "2", "--sample-rate", "16000"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def children() -> list[int]:
        found = []
        for stat_file in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat_file.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == process.pid:  # the parent pid
                found.append(int(stat_file.parent.name))
        return found

    deadline = time.monotonic() + 60
    while len(children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = children()
    assert len(workers) >= 2, "the workers never started"
    process.kill()
    process.wait()
    deadline = time.monotonic() + 10
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()
                 and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]]
    assert not alive, f"workers {alive} outlived their parent"


def test_a_rerun_removes_what_a_killed_run_left_half_written(flam, tmp_path, make_audio):
    audio = make_audio("a.wav", seconds=1.0)
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # a pid now unused
    stale = out / f".a.events.tsv.{dead}.k3j2.part"
    stale.write_text("half")
    live = out / f".a.events.tsv.{os.getpid()}.x9.part"  # a writer still running: kept
    live.write_text("in progress")
    code, _, err = flam("detect", audio, "dog", *DEBUG, "-o", out, "--no-plot")
    assert code == 0, err
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "a.detect.json", "a.events.tsv", "a.labels.txt", "a.scores.tsv"]


# -- one clear line ---------------------------------------------------------------------------------------
def test_a_newline_in_a_name_cannot_forge_a_line(flam, tmp_path, make_audio):
    forged = str(tmp_path / "x\nerror: all good.wav")
    good = make_audio("good.wav", seconds=1.0)
    code, _, err = flam("detect", forged, good, "dog", *DEBUG)
    assert code == 3
    assert error_lines(err) == [f"error: {tmp_path}/x\\nerror: all good.wav: no such file"]
    code, out, _ = flam("ground", good, make_audio("x\ny.wav", seconds=1.0), "dog", *DEBUG)
    assert [line.split(": ")[0] for line in out.splitlines()] == [str(good), f"{tmp_path}/x\\ny.wav"]


def test_control_characters_in_a_query_never_reach_the_outputs(flam, tmp_path, make_audio):
    audio = make_audio("a.wav", seconds=2.0)
    code, out, err = flam("detect", audio, "dog\x00barks\x1b[31m", *DEBUG, "-t", "0",
                          "-o", tmp_path / "out")
    assert code == 0, err
    assert "control characters replaced" in err
    written = "".join(p.read_text() for p in (tmp_path / "out").glob("a.*.t*"))
    for text in (out, written):
        assert "\x00" not in text and "\x1b" not in text and "dog barks [31m" in text


def test_two_thousand_long_queries_leave_stderr_empty_with_quiet(flam, tmp_path, make_audio):
    audio = make_audio("a.wav", seconds=2.0)
    queries = tmp_path / "q.txt"
    queries.write_text("\n".join(f"sound number {n} " + "y" * 60 for n in range(2000)))
    code, _, err = flam("detect", audio, "--queries", queries, *DEBUG, "-o", tmp_path / "out",
                        "--quiet")
    assert code == 0 and err == ""
    assert (tmp_path / "out" / "a.png").is_file()


def test_an_overlap_that_rounds_past_the_window_says_so(flam, make_audio):
    code, _, err = flam("detect", make_audio("a.wav"), "dog", *DEBUG, "--overlap", "9.99")
    assert code == 2
    assert error_lines(err) == ["error: --overlap 9.99: rounds to 32 frames of 0.3125 s (10 s); "
                                "overlaps are whole frames and shorter than one window (32 "
                                "frames, 10 s): at most 9.6875 s"]


# -- no more quiet acceptance --------------------------------------------------------------------------------
def test_a_cache_entry_of_nan_embeddings_is_computed_again(flam, tmp_path, make_audio):
    audio = make_audio("a.wav", seconds=3.0)
    cache = tmp_path / "cache"
    code, first, _ = flam("detect", audio, "dog", *DEBUG, "-f", "scores", "--cache", cache)
    assert code == 0
    [entry] = cache.rglob("*.npz")
    with np.load(entry) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["frames"] = np.full_like(arrays["frames"], np.nan)
    with open(entry, "wb") as handle:
        np.savez(handle, **arrays)
    code, again, err = flam("detect", audio, "dog", *DEBUG, "-f", "scores", "--cache", cache)
    assert code == 0 and again == first and "nan" not in again.lower()
    assert "cached embeddings hold NaN or infinite values; computing them again" in err


def test_a_read_only_cache_is_said_once(flam, tmp_path, make_audio):
    if os.geteuid() == 0:  # root writes anywhere: make the cache a file's child instead
        cache = tmp_path / "file" / "cache"
        (tmp_path / "file").write_text("not a folder")
    else:
        cache = tmp_path / "cache"
        cache.mkdir(mode=0o500)
    files = [make_audio(f"{n}.wav", seconds=1.0) for n in range(3)]
    code, _, err = flam("detect", *files, "dog", *DEBUG, "--cache", cache)
    assert code == 0
    assert err.count(f"--cache {cache}: cannot store embeddings") == 1


def test_two_different_answers_to_one_question_are_refused(flam, tmp_path):
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps([{"audio_path": "a.wav", "caption": "dog", "annotations": [[1, 2]]}]))
    predictions = tmp_path / "p.jsonl"
    predictions.write_text('{"audio_path": "a.wav", "caption": "dog", "annotations": [[1, 2]]}\n'
                           '{"audio_path": "a.wav", "caption": "dog", "annotations": []}\n')
    code, _, err = flam("eval", "ground", "-g", truth, "--predictions", predictions)
    assert code == 3
    assert error_lines(err) == [f"error: {predictions}: line 1 and line 2 answer ('a.wav', "
                                "'dog') differently; keep one"]
    predictions.write_text('{"audio_path": "a.wav", "caption": "dog", "annotations": [[1, 2]]}\n' * 2)
    code, _, err = flam("eval", "ground", "-g", truth, "--predictions", predictions)
    assert code == 0, err  # the same answer twice is only a repeat


@pytest.mark.parametrize("row, says", [
    ("0.0\t1.0\t2.5", "score 2.5 for 'dog' is not a probability (0–1)"),
    ("0.0\t1.0\t-0.1", "score -0.1 for 'dog' is not a probability (0–1)"),
    ("-1.0\t1.0\t0.5", "a frame starts before 0 s (-1)"),
])
def test_eval_sed_refuses_scores_that_are_not_probabilities(flam, tmp_path, row, says):
    scores = tmp_path / "a.scores.tsv"
    scores.write_text(f"onset\toffset\tdog\n{row}\n1.0\t2.0\t0.5\n")
    truth = tmp_path / "truth.tsv"
    truth.write_text("filename\tonset\toffset\tevent_label\na.wav\t0.5\t1.5\tdog\n")
    durations = tmp_path / "durations.tsv"
    durations.write_text("filename\tduration\na.wav\t2.0\n")
    code, _, err = flam("eval", "sed", "--scores", scores, "-g", truth, "-d", durations)
    assert code == 3
    assert error_lines(err) == [f"error: {scores}:2: {says}"]


def test_train_on_an_empty_folder_is_a_usage_error(flam, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = flam("train", "--data", tmp_path / "empty", "--output", tmp_path / "t")
    assert code == 2 and "not a `flam synth` output folder" in err


def test_a_manifest_row_naming_a_missing_file_names_it(flam, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,kind,label\nmissing.wav,event,dog barks\n")
    code, _, err = flam("synth", "sed", manifest, "-o", tmp_path / "s", "-n", "1")
    assert code in (2, 3)
    assert f"{tmp_path / 'missing.wav'}: no such file" in err and "System error" not in err


def _ctrl_c(*args, **kwargs):
    """What the terminal does on Ctrl-C: SIGINT to the process (main() installs its handler)."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGINT)
    raise AssertionError("SIGINT did not interrupt")


def test_ctrl_c_while_the_model_loads_is_one_line_and_130(flam, make_audio, monkeypatch):
    import flamcli.models.registry as registry

    monkeypatch.setattr(registry, "load_model", _ctrl_c)
    code, out, err = flam("detect", make_audio("a.wav", seconds=1.0), "a tone", "-m", "debug")
    assert code == 130 and out == ""
    assert err.strip().splitlines() == ["error: interrupted"]


def test_ctrl_c_during_detection_is_reported_once(flam, make_audio, monkeypatch):
    import flamcli.detection as detection

    monkeypatch.setattr(detection.Detector, "run", _ctrl_c)
    code, out, err = flam("detect", make_audio("a.wav", seconds=1.0), "a tone", "-m", "debug")
    assert code == 130
    assert [line for line in err.splitlines() if "interrupted" in line] == [
        "error: interrupted: files written so far are complete; nothing is half-written"]


def test_the_entry_point_restores_the_previous_sigint_handler(flam):
    import signal

    before = signal.getsignal(signal.SIGINT)
    flam("--version")
    assert signal.getsignal(signal.SIGINT) is before
