"""Bad inputs through the real CLI: each ends in one line naming the culprit and the right exit
code, and never stops the other inputs (a damaged cache entry, truncated audio, binary data on
stdin, long queries, undecodable file names, BOMs, unwritable outputs, empty queries)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

DEBUG = ("-m", "debug")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def rows(stdout: str) -> list[list[str]]:
    return [line.split("\t") for line in stdout.splitlines()[1:]]

def streamed_flac(tmp_path: Path) -> Path:
    """A FLAC written to a pipe, not a file (a seekable output would get its length written
    back): its header records no length."""
    script = ("import sys, numpy as np, soundfile as sf\n"
              "with sf.SoundFile(sys.stdout.buffer, 'w', 16000, 1, format='FLAC') as f:\n"
              "    f.write((0.3 * np.sin(np.arange(16000) / 5)).astype('float32'))\n")
    streamed = tmp_path / "streamed.flac"
    streamed.write_bytes(subprocess.run([sys.executable, "-c", script], check=True,
                                        stdout=subprocess.PIPE).stdout)
    return streamed



# -- a damaged embedding-cache entry ------------------------------------------------------


@pytest.mark.parametrize("damage", ["empty", "cut in half", "not a zip"])
def test_a_damaged_cache_entry_is_computed_again_and_overwritten(cli, make_audio, tmp_path,
                                                                 damage):
    first, second = make_audio("first.wav", seconds=2.0), make_audio("second.wav", seconds=1.0)
    cache = tmp_path / "cache"
    fresh = cli("detect", first, second, "dog", *DEBUG, "-t", "0", "--cache", cache)
    assert fresh.exit_code == 0, fresh.stderr
    entries = sorted(cache.glob("v*/*/*.npz"))
    assert len(entries) == 2
    good = {entry: entry.read_bytes() for entry in entries}
    damaged = entries[0]
    damaged.write_bytes({"empty": b"", "cut in half": good[damaged][: len(good[damaged]) // 2],
                         "not a zip": b"PK\x03\x04 garbage"}[damage])

    again = cli("detect", first, second, "dog", *DEBUG, "-t", "0", "--cache", cache)
    assert again.exit_code == 0, again.stderr
    assert again.stdout == fresh.stdout  # both files, the same scores
    assert damaged.read_bytes() == good[damaged]  # rewritten whole


def test_a_damaged_hash_stamp_is_recomputed(cli, make_audio, tmp_path):
    clip = make_audio("a.wav", seconds=1.0)
    cache = tmp_path / "cache"
    assert cli("detect", clip, "dog", *DEBUG, "--cache", cache).exit_code == 0
    for stamp in (cache / "stamps").glob("*.json"):
        stamp.write_text("[]")  # valid JSON, not a stamp
    result = cli("detect", clip, "dog", *DEBUG, "--cache", cache)
    assert result.exit_code == 0, result.stderr


# -- truncated WAV, OGG and MP3 -----------------------------------------------------------


def cut_in_half(path: Path) -> Path:
    data = path.read_bytes()
    cut = path.with_name("cut_" + path.name)
    cut.write_bytes(data[: len(data) // 2])
    return cut


def test_truncated_wav_ogg_and_mp3_are_failed_inputs_and_the_rest_still_run(cli, make_audio):
    good = make_audio("good.wav", seconds=2.0)
    cut = [cut_in_half(make_audio(f"clip.{ext}", seconds=4.0)) for ext in ("wav", "ogg", "mp3")]
    result = cli("detect", *cut, good, "dog", *DEBUG, "-t", "0")
    assert result.exit_code == 3, result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 3, result.stderr
    for path, line in zip(cut, errors):
        assert line.startswith(f"error: {path}: truncated"), line
    assert [row[0] for row in rows(result.stdout)] == [str(good)]
    wav_line = errors[0]
    assert "holds 2.00 s of the 4.00 s its header declares" in wav_line


def test_complete_files_and_streamed_wavs_are_not_called_truncated(cli, make_audio):
    # Odd lengths, so that a decoder's padding or a frame count rounded to MPEG frames shows.
    complete = [make_audio(f"ok.{ext}", seconds=1.337) for ext in ("wav", "ogg", "mp3", "flac")]
    # A WAV written to a pipe has a placeholder data size: unfinished by design, not cut.
    streamed = make_audio("streamed.wav", seconds=1.0)
    data = bytearray(streamed.read_bytes())
    at = data.find(b"data")
    data[4:8] = data[at + 4: at + 8] = struct.pack("<I", 0xFFFFFFFF)
    streamed.write_bytes(bytes(data))
    result = cli("detect", *complete, streamed, "dog", *DEBUG, "-t", "0")
    assert result.exit_code == 0, result.stderr
    assert len(rows(result.stdout)) == 5


def test_a_wav_a_few_samples_short_is_counted_in_samples(cli, make_audio):
    import soundfile as sf

    clip = make_audio("short.wav", seconds=1.0)
    declared = sf.info(clip).frames
    clip.write_bytes(clip.read_bytes()[:-2])  # one 16-bit mono sample short
    result = cli("detect", clip, "dog", *DEBUG)
    assert result.exit_code == 3, result.stderr
    assert error_lines(result.stderr) == [
        f"error: {clip}: truncated: holds {declared - 1} samples of the {declared} its header "
        "declares"]


def test_a_flac_streamed_without_its_length_is_never_sized_from_the_header(cli, make_audio,
                                                                           tmp_path):
    """A FLAC written to a pipe does not record its length: libsndfile reports SF_COUNT_MAX
    frames, which once sized an exabyte buffer (MemoryError, exit 5, every input lost)."""
    import soundfile as sf

    streamed = streamed_flac(tmp_path)
    assert sf.info(streamed).frames >= 1 << 62  # the "unknown length" marker
    good = make_audio("good.wav", seconds=1.0)
    result = cli("detect", streamed, good, "dog", *DEBUG, "-t", "0")
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert result.exit_code == 3, result.stderr  # libsndfile cannot decode such a stream
    assert len(error_lines(result.stderr)) == 1
    assert error_lines(result.stderr)[0].startswith(f"error: {streamed}: decoding failed")
    assert [row[0] for row in rows(result.stdout)] == [str(good)]


def test_garbage_named_mp3_is_called_corrupt_not_missing(cli, tmp_path):
    garbage = tmp_path / "noise.mp3"
    garbage.write_bytes(bytes(range(256)) * 12)
    result = cli("detect", garbage, "dog", *DEBUG)
    assert result.exit_code == 3, result.stderr
    assert error_lines(result.stderr) == [
        f"error: {garbage}: not a readable audio file (unrecognised format or corrupt data)"]


# -- NUL bytes and binary data on stdin ---------------------------------------------------


def test_a_nul_byte_on_stdin_is_one_bad_line_and_other_paths_still_run(cli, make_audio):
    good = make_audio("good.wav", seconds=1.0)
    result = cli("detect", "-", "dog", *DEBUG, "-t", "0",
                 input=f"{good}\nnul\0other.wav\n".encode())
    assert result.exit_code == 3, result.stderr
    assert error_lines(result.stderr) == [
        "error: -: line 2: not a path (contains a NUL byte): `-` reads newline-separated file "
        "paths, not NUL-separated ones or audio"]
    assert [row[0] for row in rows(result.stdout)] == [str(good)]


def test_find_print0_output_on_stdin_is_reported_not_a_crash(cli, make_audio):
    paths = [make_audio(f"c{i}.wav", seconds=1.0) for i in range(2)]
    result = cli("detect", "-", "dog", *DEBUG, input=b"".join(bytes(p) + b"\0" for p in paths))
    assert result.exit_code == 3, result.stderr
    assert error_lines(result.stderr) == [
        "error: -: line 1: not a path (contains a NUL byte): `-` reads newline-separated file "
        "paths, not NUL-separated ones or audio"]


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg"])
def test_audio_piped_into_dash_says_dash_reads_paths(cli, make_audio, ext):
    clip = make_audio(f"a.{ext}", seconds=2.0)
    result = cli("detect", "-", "dog", *DEBUG, input=clip.read_bytes())
    assert result.exit_code == 3, result.stderr
    assert error_lines(result.stderr) == [
        "error: -: standard input holds audio data, not file paths: `-` reads newline-separated "
        "paths; give the audio file itself as AUDIO"]


def test_binary_data_on_stdin_is_named_briefly(cli):
    garbage = b"".join(bytes([1, 2, 3, 10]) for _ in range(50))  # 50 "lines" of control bytes
    result = cli("detect", "-", "dog", *DEBUG, input=garbage)
    assert result.exit_code == 3, result.stderr
    errors = error_lines(result.stderr)
    assert errors[0] == ("error: -: line 1: not a path (binary data): `-` reads "
                         "newline-separated file paths, not audio")
    assert errors[-1] == "error: -: 47 more lines that are not paths were skipped"
    assert len(errors) == 4


# -- a positional query longer than a file name may be -----------------------------------


def test_a_positional_query_longer_than_a_file_name_is_a_query(cli, make_audio):
    clip = make_audio("a.wav", seconds=1.0)
    long_query = " ".join(["a large dog barks loudly at the mailman"] * 8)  # > 255 bytes
    result = cli("detect", clip, long_query, *DEBUG, "-t", "0")
    assert result.exit_code == 0, result.stderr
    assert rows(result.stdout)[0][3] == long_query


def test_an_audio_path_longer_than_the_file_system_allows_is_one_failed_input(cli, make_audio,
                                                                              tmp_path):
    good = make_audio("good.wav", seconds=1.0)
    too_long = str(tmp_path / ("x" * 300 + "/clip.wav"))
    result = cli("detect", good, too_long, "dog", *DEBUG, "-t", "0")
    assert result.exit_code == 3, result.stderr
    assert len(error_lines(result.stderr)) == 1 and too_long in result.stderr
    assert [row[0] for row in rows(result.stdout)] == [str(good)]


# -- file names that are not UTF-8 -------------------------------------------------------


def test_a_file_name_that_is_not_utf8_is_read_and_shown_escaped(cli, make_audio, tmp_path):
    source = make_audio("source.wav", seconds=1.0)
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/bad\xffname.wav"))
    odd.write_bytes(source.read_bytes())
    result = cli("detect", odd, "dog", *DEBUG, "-t", "0", "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout.splitlines()[0])
    assert record["file"] == f"{tmp_path}/bad\\xffname.wav"  # printable, like `ls -b`
    # The same name read from stdin (a path list is bytes, like file names).
    piped = cli("detect", "-", "dog", *DEBUG, "-t", "0", input=bytes(odd) + b"\n")
    assert piped.exit_code == 0, piped.stderr


# -- a query file with a byte-order mark -------------------------------------------------


def test_a_queries_file_with_a_utf8_bom(cli, make_audio, tmp_path):
    clip = make_audio("a.wav", seconds=1.0)
    queries = tmp_path / "queries.txt"
    queries.write_bytes("dog barks\ncar horn\n".encode("utf-8-sig"))
    result = cli("detect", clip, "--queries", queries, *DEBUG, "-f", "json",
                 "-t", "dog barks=0", "-t", "0.5")
    assert result.exit_code == 0, result.stderr
    labels = {event["query"] for event in json.loads(result.stdout)["files"][0]["events"]}
    assert "dog barks" in labels and not any("\ufeff" in label for label in labels)


# -- a failed atomic write names the user's path -----------------------------------------


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_failed_atomic_write_names_the_path_asked_for(cli, make_audio):
    from flamcli.files import write_text_atomic

    with pytest.raises(OSError) as caught:
        write_text_atomic("/proc/flam-out.json", "{}")
    assert caught.value.filename == "/proc/flam-out.json"
    # through the entry point: one line naming --output, no hidden .part name
    proc = subprocess.run([sys.executable, "-m", "flamcli", "synth", "recipe", "sed", "-o",
                           "/proc/flam-out.json"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 3
    assert proc.stderr.startswith("error: /proc/flam-out.json: ") and ".part" not in proc.stderr
    # and per file in `flam detect -o`
    clip = make_audio("a.wav", seconds=1.0)
    result = cli("detect", clip, "dog", *DEBUG, "-o", "/proc/sys", "--no-plot")
    assert result.exit_code == 3
    assert "/proc/sys/a.events.tsv" in result.stderr and ".part" not in result.stderr


# -- an empty query ----------------------------------------------------------------------


def test_an_empty_query_is_a_usage_error_and_nothing_runs(cli, make_audio):
    clip = make_audio("a.wav", seconds=1.0)
    result = cli("detect", clip, "", "dog", *DEBUG)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == ["error: query 1 is empty"]  # not even the model line
    # the same line and code as flam ground
    grounded = cli("ground", clip, "", "dog", *DEBUG)
    assert (grounded.exit_code, grounded.stderr) == (result.exit_code, result.stderr)
    only_blank = cli("detect", clip, "-q", "  ", *DEBUG)
    assert only_blank.exit_code == 2 and only_blank.stderr == "error: query 1 is empty\n"


@pytest.mark.parametrize("fmt", ["RF64", "W64"])
@pytest.mark.parametrize("channels, subtype", [(1, "PCM_16"), (2, "PCM_24")])
def test_a_cut_rf64_or_w64_is_called_truncated(cli, tmp_path, make_audio, fmt, channels, subtype):
    import soundfile as sf

    clip = tmp_path / f"long.{fmt.lower()}"
    frames = 48_000
    data = np.zeros((frames, channels), dtype=np.float32) + 0.1
    sf.write(str(clip), data, 16_000, format=fmt, subtype=subtype)
    whole = clip.read_bytes()
    good = make_audio("good.wav", seconds=1.0)
    result = cli("detect", clip, good, "dog", *DEBUG, "-t", "0")
    assert result.exit_code == 0, result.stderr  # the whole file is fine
    clip.write_bytes(whole[: len(whole) // 2])
    result = cli("detect", clip, good, "dog", *DEBUG, "-t", "0")
    assert result.exit_code == 3, result.stderr
    [line] = error_lines(result.stderr)
    assert line.startswith(f"error: {clip}: truncated: holds ") and "of the 3.00 s its header declares" in line
    assert [row[0] for row in rows(result.stdout)] == [str(good)]


def test_a_stream_without_its_length_is_not_decoded_to_be_measured(tmp_path, monkeypatch):
    """probe() gives an upper bound from the file size instead of decoding the whole file
    once more before the real pass."""
    import soundfile as sf

    from flamcli import audio

    streamed = streamed_flac(tmp_path)
    assert sf.info(streamed).frames >= 1 << 62
    decoded = []
    original = audio.read_blocks
    monkeypatch.setattr(audio, "read_blocks", lambda *a, **k: decoded.append(a) or original(*a, **k))
    info = audio.probe(streamed)
    assert decoded == [] and not info.length_known
    assert info.frames == streamed.stat().st_size // 2  # an upper bound for 16-bit mono
