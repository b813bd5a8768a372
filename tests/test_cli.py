"""`flam detect` through the real CLI: formats, outputs, and every kind of bad input."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import EXAMPLES, REPO, tone

EXAMPLE = EXAMPLES / "dog_park.flac"
DCASE_HEADER = ["filename", "onset", "offset", "event_label", "confidence"]


def parse_tsv(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines()]


def test_main_job_prints_a_dcase_tsv(cli):
    result = cli("detect", EXAMPLE, "dog barks", "--model", "debug", "-t", "0.1")
    assert result.exit_code == 0, result.stderr
    rows = parse_tsv(result.stdout)
    assert rows[0] == DCASE_HEADER
    assert len(rows) > 1
    for name, onset, offset, label, confidence in rows[1:]:
        assert name == str(EXAMPLE) and label == "dog barks"
        assert 0 <= float(onset) < float(offset) <= 30.0
        assert 0.1 <= float(confidence) <= 1
    assert "model: debug" in result.stderr


def test_output_dir_writes_events_labels_scores_and_plot(cli, tmp_path):
    out = tmp_path / "out"
    result = cli("detect", EXAMPLE, "dog barks", "speech", "-m", "debug", "-o", out, "-t", "0.1")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "dog_park.detect.json", "dog_park.events.tsv", "dog_park.labels.txt", "dog_park.png",
        "dog_park.scores.tsv"]
    assert (out / "dog_park.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Audacity label track: START<TAB>END<TAB>TEXT, 6 decimals, no header, no blank lines
    labels = (out / "dog_park.labels.txt").read_text(encoding="utf-8")
    lines = labels.splitlines()
    assert lines and labels.endswith("\n")
    for line in lines:
        assert re.fullmatch(r"\d+\.\d{6}\t\d+\.\d{6}\t(dog barks|speech) \(\d\.\d\d\)", line), line
    scores = parse_tsv((out / "dog_park.scores.tsv").read_text())
    assert scores[0] == ["onset", "offset", "dog barks", "speech"]
    assert len(scores) - 1 == 96  # 30 s / 0.3125 s
    events = parse_tsv((out / "dog_park.events.tsv").read_text())
    assert events[0] == DCASE_HEADER and len(events) - 1 == len(lines)
    assert not list(out.glob(".*.part"))  # no temporary files left behind


@pytest.mark.parametrize("fmt", ["tsv", "csv", "json", "jsonl", "audacity", "scores"])
def test_every_format_parses(cli, fmt, make_audio):
    clip = make_audio("a.wav", seconds=4.0)
    result = cli("detect", clip, "dog barks", "cat", "-m", "debug", "-f", fmt, "-t", "0")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    if fmt in ("tsv", "csv"):
        rows = list(csv.reader(io.StringIO(out), delimiter="\t" if fmt == "tsv" else ","))
        assert rows[0] == DCASE_HEADER and len(rows) == 3  # threshold 0: one event per query
        assert {r[3] for r in rows[1:]} == {"dog barks", "cat"}
    elif fmt == "json":
        document = json.loads(out)
        assert document["model"]["name"] == "debug"
        (entry,) = document["files"]
        assert entry["duration"] == pytest.approx(4.0) and len(entry["events"]) == 2
    elif fmt == "jsonl":
        lines = [json.loads(line) for line in out.splitlines()]
        assert {line["query"] for line in lines} == {"dog barks", "cat"}
        model = {"name": "debug", "source": "built-in (random weights, for tests only)"}
        assert all(line["model"] == model and line["offset"] == pytest.approx(4.0) for line in lines)
    elif fmt == "audacity":
        assert all(len(line.split("\t")) == 3 for line in out.splitlines())
    else:
        rows = parse_tsv(out)
        assert rows[0] == ["onset", "offset", "dog barks", "cat"] and len(rows) == 14


def test_scores_format_has_a_filename_column_for_several_files(cli, make_audio):
    a, b = make_audio("a.wav", seconds=1.0), make_audio("b.wav", seconds=1.0)
    result = cli("detect", a, b, "dog", "-m", "debug", "-f", "scores")
    rows = parse_tsv(result.stdout)
    assert rows[0] == ["filename", "onset", "offset", "dog"]
    assert {r[0] for r in rows[1:]} == {str(a), str(b)}


def test_queries_from_options_and_file(cli, make_audio, tmp_path):
    clip = make_audio("a.wav")
    qfile = tmp_path / "q.txt"
    qfile.write_text("# comment\nrain\n\nthunder\n")
    result = cli("detect", clip, "-q", "dog", "--queries", qfile, "-m", "debug", "-f", "scores")
    assert parse_tsv(result.stdout)[0] == ["onset", "offset", "dog", "rain", "thunder"]


def test_paths_on_stdin_directories_and_globs(cli, make_audio, tmp_path):
    a = make_audio("d/a.wav")
    b = make_audio("d/sub/b.ogg")
    result = cli("detect", "-", "dog", "-m", "debug", "-f", "json", input=f"{a}\n{b}\n")
    assert [f["file"] for f in json.loads(result.stdout)["files"]] == [str(a), str(b)]
    result = cli("detect", tmp_path / "d", "dog", "-m", "debug", "-f", "json")
    assert [f["file"] for f in json.loads(result.stdout)["files"]] == [
        str(tmp_path / "d" / "a.wav"), str(tmp_path / "d" / "sub" / "b.ogg")]
    result = cli("detect", str(tmp_path / "d" / "**" / "*.ogg"), "dog", "-m", "debug", "-f", "json")
    assert [f["file"] for f in json.loads(result.stdout)["files"]] == [str(b)]
    # an unquoted shell glob: several audio paths, then the query
    result = cli("detect", a, b, "dog", "-m", "debug", "-f", "json")
    assert len(json.loads(result.stdout)["files"]) == 2


def test_a_mistyped_path_or_empty_stdin_is_an_input_error(cli, make_audio, tmp_path):
    a = make_audio("a.wav")
    # A second path that does not exist is reported, not searched for as a sound called
    # "missing.wav"; the good file is still processed.
    result = cli("detect", a, tmp_path / "missing.wav", f"{tmp_path}/nothere/", "dog", "-m",
                 "debug", "-f", "scores", "-t", "0")
    assert result.exit_code == 3
    assert "missing.wav: no such file" in result.stderr
    assert "nothere" in result.stderr
    header, *rows = parse_tsv(result.stdout)
    assert header == ["filename", "onset", "offset", "dog"]
    assert rows and {row[0] for row in rows} == {str(a)}
    # `-` with nothing on stdin is an error like an empty directory, for ground too (where
    # exit 0 would claim every query was found).
    for command in ("detect", "ground"):
        result = cli(command, "-", "dog", "-m", "debug", input="\n\n")
        assert result.exit_code == 3
        assert "-: no audio paths on standard input" in result.stderr


def make_bad_inputs(tmp_path, make_audio):
    """Every kind of bad input the issue lists, each beside a good file."""
    bad = {}
    bad["missing"] = tmp_path / "missing.wav"
    bad["empty"] = tmp_path / "empty.wav"
    bad["empty"].write_bytes(b"")
    flac = make_audio("whole.flac", seconds=6.0, rate=22_050)
    data = flac.read_bytes()
    bad["truncated"] = tmp_path / "truncated.flac"
    bad["truncated"].write_bytes(data[: len(data) // 3])
    bad["corrupt"] = tmp_path / "corrupt.wav"
    bad["corrupt"].write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4)
    bad["not_audio"] = tmp_path / "notes.mp3"
    bad["not_audio"].write_text("this is a text file\n" * 50)
    nan = tone(2.0, 16_000)
    nan[5000:5010] = np.inf
    bad["nan"] = make_audio("nan.wav", data=nan, subtype="FLOAT")
    bad["no_audio_dir"] = tmp_path / "nothing"
    bad["no_audio_dir"].mkdir()
    (bad["no_audio_dir"] / "readme.txt").write_text("x")
    return bad


def test_each_bad_input_gets_one_line_and_the_rest_is_processed(cli, tmp_path, make_audio):
    good = make_audio("good.wav", seconds=2.0)
    bad = make_bad_inputs(tmp_path, make_audio)
    for kind, path in bad.items():
        result = cli("detect", path, good, "dog", "-m", "debug", "-f", "json")
        assert result.exit_code == 3, (kind, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, (kind, result.stderr)
        assert str(path) in errors[0], (kind, errors)
        assert "Traceback" not in result.stderr
        document = json.loads(result.stdout)
        assert [f["file"] for f in document["files"]] == [str(good)], kind


def test_truncated_file_error_says_so(cli, tmp_path, make_audio):
    bad = make_bad_inputs(tmp_path, make_audio)
    result = cli("detect", bad["truncated"], "dog", "-m", "debug")
    assert result.exit_code == 3
    assert re.search(r"truncated|not a readable", result.stderr)


def test_silent_file_is_processed_with_a_warning(cli, make_audio):
    silent = make_audio("silent.wav", data=np.zeros(16_000 * 3, np.float32))
    result = cli("detect", silent, "dog", "-m", "debug", "-f", "json")
    assert result.exit_code == 0
    assert f"warning: {silent}: audio is silent" in result.stderr
    assert json.loads(result.stdout)["files"][0]["warnings"] == ["audio is silent (all samples are zero)"]


def test_empty_query_is_a_usage_error_as_in_ground(cli, make_audio):
    clip = make_audio("a.wav")
    for command in ("detect", "ground"):
        result = cli(command, clip, "dog", "-q", "   ", "-m", "debug")
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr == "error: query 2 is empty\n"
        result = cli(command, clip, "-q", "", "-m", "debug")
        assert result.exit_code == 2 and "query 1 is empty" in result.stderr


def test_query_with_tabs_and_newlines_is_cleaned(cli, make_audio):
    clip = make_audio("a.wav")
    result = cli("detect", clip, "dog\tbarks\nloudly", "-m", "debug", "-f", "scores")
    assert result.exit_code == 0
    assert "replaced by spaces" in result.stderr
    assert parse_tsv(result.stdout)[0] == ["onset", "offset", "dog barks loudly"]


def test_usage_errors_exit_2(cli, make_audio):
    clip = make_audio("a.wav")
    assert cli("detect", clip, "dog", "-m", "debug", "-t", "1.5").exit_code == 2
    assert cli("detect", clip, "dog", "-m", "debug", "-t", "cat=x").exit_code == 2
    result = cli("detect", clip, "dog", "-m", "debug", "-t", "0.5", "-t", "0.9")
    assert result.exit_code == 2 and "two default thresholds" in result.stderr
    result = cli("ground", clip, "dog", "-m", "debug", "-t", "dog=0.5", "-t", "dog=0.9")
    assert result.exit_code == 2 and "two thresholds for 'dog'" in result.stderr
    result = cli("detect", clip, "dog", "-m", "debug", "-t", "cat=0.3")
    assert result.exit_code == 2 and "unknown query" in result.stderr
    assert cli("detect", clip, "dog", "-m", "debug", "-f", "xml").exit_code == 2
    for overlap in ("20", "10"):  # a whole window (10 s) is too much overlap as well
        result = cli("detect", clip, "dog", "-m", "debug", "--overlap", overlap)
        assert result.exit_code == 2 and f"--overlap {overlap}:" in result.stderr
        assert result.stdout == ""  # refused before any output
    other = make_audio("b.wav")
    result = cli("detect", clip, other, "dog", "-m", "debug", "-f", "audacity")
    assert result.exit_code == 2 and "-f audacity" in result.stderr and result.stdout == ""
    result = cli("detect", clip, "dog", "-m", "debug", "--device", "gpu")
    assert result.exit_code == 2 and "gpu" in result.stderr
    import torch

    if not torch.cuda.is_available():  # a usage error, not "model could not be loaded"
        for command in ("detect", "ground"):
            result = cli(command, clip, "dog", "-m", "debug", "--device", "cuda")
            assert result.exit_code == 2 and "CUDA is not available" in result.stderr
    result = cli("detect", clip, "dog", "-m", "debug", "--queries", "/nonexistent/q.txt")
    assert result.exit_code == 2


def test_version_and_help(cli):
    from flamcli import __version__

    assert cli("--version").stdout.strip() == f"flam {__version__}"
    assert cli("detect", "--version").stdout.strip() == f"flam {__version__}"
    help_text = cli("detect", "--help").stdout
    for option in ("--format", "--output", "--threshold", "--median-filter", "--min-duration",
                   "--merge-gap", "--model", "--device", "--batch-size", "--threads", "--quiet"):
        assert option in help_text


def test_models_lists_the_registry(cli):
    result = cli("models", "--json")
    listed = {m["name"]: m for m in json.loads(result.stdout)}
    assert "debug" in listed
    # The listed threshold is the one flam detect and flam ground use by default.
    from flamcli.models.registry import load_model

    for name in ("debug", "flam-tiny"):
        assert listed[name]["presence_threshold"] == load_model(name).config.presence_threshold
    # piped (as here), a TSV with a header; a table when asked (the default on a terminal)
    lines = [line.split("\t") for line in cli("models").stdout.splitlines()]
    assert lines[0] == ["name", "source", "presence_threshold", "licence", "description"]
    by_name = {fields[0]: fields for fields in lines[1:]}
    assert all(len(fields) == 5 for fields in lines)
    assert by_name["flam-tiny"][2] == f"{listed['flam-tiny']['presence_threshold']:g}"
    assert by_name["debug"][1] == "built-in"
    table = cli("models", "-f", "table").stdout
    assert "threshold" in table and "flam-tiny" in table and "\t" not in table


def test_python_dash_m_and_console_script_in_a_real_process(make_audio):
    clip = make_audio("a.wav", seconds=2.0)
    proc = subprocess.run(
        [sys.executable, "-m", "flamcli", "detect", str(clip), "dog", "-m", "debug", "-t", "0"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split("\t") == DCASE_HEADER
    assert len(proc.stdout.splitlines()) == 2


def test_usage_errors_are_one_line_and_exit_codes_survive_the_entry_point(make_audio):
    clip = make_audio("a.wav", seconds=2.0)
    flam = [sys.executable, "-m", "flamcli"]
    bad = subprocess.run(flam + ["detect", str(clip), "dog", "--bogus"], capture_output=True,
                         text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    lines = bad.stderr.strip().splitlines()  # the program is named as invoked: python -m flamcli
    assert len(lines) == 1 and re.fullmatch(
        r"error: (.+) detect: No such option: --bogus \(see \1 detect -h\)", lines[0]), lines
    # a command's own code still comes out: ground's "absent" is 1, its help 0
    absent = subprocess.run(flam + ["ground", str(clip), "dog", "-m", "debug", "-t", "1"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert absent.returncode == 1 and "dog: absent" in absent.stdout, absent.stderr
    helped = subprocess.run(flam + ["ground", "-h"], capture_output=True, text=True, cwd=REPO,
                            timeout=120)
    assert helped.returncode == 0 and " ground [OPTIONS]" in helped.stdout


def test_closed_stderr_gives_141_not_grounds_absent(make_audio, tmp_path):
    """`flam ground … 2>&1 | head -1`: when the log's reader goes away, rich would exit 1,
    which for ground means "absent"."""
    clip = make_audio("a.wav", seconds=2.0)
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stderr now fails with EPIPE
    try:
        with open(tmp_path / "out.txt", "w") as out:
            proc = subprocess.run([sys.executable, "-m", "flamcli", "ground", str(clip), "dog",
                                   "-m", "debug"], stdout=out, stderr=write_end, cwd=REPO,
                                  timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 141


def test_closed_or_full_stdout_gives_documented_codes(make_audio):
    clip = make_audio("a.wav", seconds=2.0)
    command = [sys.executable, "-m", "flamcli", "detect", str(clip), "dog", "-m", "debug", "-t", "0"]
    # The reader went away (`| head`): 141 like other Unix tools, not 1 (ground's "absent").
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    proc.stdout.close()
    stderr = proc.communicate(timeout=120)[1].decode()
    assert proc.returncode == 141, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    # A full device under stdout is an output failure named as such, not a bug report.
    with open("/dev/full", "w") as full:
        proc = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, cwd=REPO,
                              timeout=120)
    assert proc.returncode == 3
    assert "standard output: could not write" in proc.stderr and "Traceback" not in proc.stderr


def test_torchrun_splits_files_and_rank_zero_writes_all(make_audio, tmp_path):
    clips = [make_audio(f"d/c{i}.wav", seconds=1.0 + i) for i in range(3)]
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "flamcli", "detect", str(tmp_path / "d"), "dog", "-m", "debug", "-f", "json",
         "-o", str(out), "--no-plot", "--threads", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert [f["file"] for f in document["files"]] == [str(c) for c in clips]
    assert sorted(p.name for p in out.glob("*.scores.tsv")) == [
        "c0.scores.tsv", "c1.scores.tsv", "c2.scores.tsv"]
    # a table: one header (from rank 0 only), then every file's events in input order
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "flamcli", "detect", str(tmp_path / "d"), "dog", "-m", "debug", "-t", "0",
         "--threads", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("filename\tonset") and lines.count(lines[0]) == 1
    assert [line.split("\t")[0] for line in lines[1:]] == [str(c) for c in clips]


def test_resampled_stereo_mp3_example(cli):
    result = cli("detect", EXAMPLES / "sounds", "dog", "-m", "debug", "-f", "json")
    files = json.loads(result.stdout)["files"]
    assert [f["file"].rsplit("/", 1)[-1] for f in files] == ["cat.mp3", "dog.mp3"]
    assert files[1]["duration"] == pytest.approx(sf.info(str(EXAMPLES / "sounds" / "dog.mp3")).duration, abs=0.05)


def test_output_dir_is_still_accepted_as_the_old_name_of_output(cli, make_audio, tmp_path):
    clip = make_audio("clip.wav", seconds=2.0)
    old = cli("detect", clip, "a tone", "-m", "debug", "--output-dir", tmp_path / "old", "--no-plot")
    assert old.exit_code == 0, old.stderr
    assert (tmp_path / "old" / "clip.events.tsv").is_file()
    assert "--output-dir" not in cli("detect", "--help").stdout  # hidden, not advertised
    both = cli("detect", clip, "a tone", "-m", "debug", "-o", tmp_path / "a",
               "--output-dir", tmp_path / "b")
    assert both.exit_code == 2 and "two output folders" in both.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
