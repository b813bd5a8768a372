"""Decoding, downmixing, streaming resampling and windowing."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from flamcli.audio import (AudioError, StreamingResampler, WindowStream, expand_inputs, probe,
                           read_blocks)
from conftest import EXAMPLES, tone


@pytest.mark.parametrize("orig,new", [(44_100, 48_000), (22_050, 16_000), (11_025, 48_000),
                                      (96_000, 16_000), (8_000, 48_000)])
def test_streaming_resample_equals_whole_signal(orig, new):
    x = np.random.default_rng(1).standard_normal(int(orig * 7.3)).astype(np.float32)
    whole = AF.resample(torch.from_numpy(x), orig, new).numpy()
    blocks = (x[i:i + 10_007] for i in range(0, len(x), 10_007))  # odd block size on purpose
    streamed = np.concatenate(list(StreamingResampler(orig, new, block_seconds=0.5).stream(blocks)))
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=2e-6)


def test_stereo_is_averaged_to_mono(make_audio):
    left = tone(1.0, 8000, freq=300)
    right = tone(1.0, 8000, freq=500, seed=3)
    path = make_audio("st.wav", rate=8000, data=np.stack([left, right], axis=1), subtype="FLOAT")
    mono = np.concatenate(list(read_blocks(path)))
    np.testing.assert_allclose(mono, (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("seconds,expected_windows", [(3.0, 1), (10.0, 1), (10.5, 2), (17.5, 2),
                                                      (17.6, 3), (25.0, 3)])
def test_window_count_and_zero_padding(make_audio, seconds, expected_windows):
    rate = 16_000
    data = tone(seconds, rate)
    path = make_audio("w.wav", rate=rate, data=data, subtype="FLOAT")
    stream = WindowStream(path, rate, window=10 * rate, hop=int(7.5 * rate))
    windows = list(stream)
    assert len(windows) == expected_windows
    assert stream.total_samples == len(data)
    for w in windows:
        assert w.samples.shape == (10 * rate,)
        assert w.start == w.index * int(7.5 * rate)
        np.testing.assert_array_equal(w.samples[: w.valid], data[w.start: w.start + w.valid])
        assert not w.samples[w.valid:].any()  # padded with zeros, never stretched
    assert windows[-1].start + windows[-1].valid == len(data)


def test_formats_decode(tmp_path):
    data = tone(2.0, 22_050)
    for ext, fmt in (("wav", "WAV"), ("flac", "FLAC"), ("ogg", "OGG")):
        path = tmp_path / f"a.{ext}"
        sf.write(str(path), data, 22_050, format=fmt)
        info = probe(path)
        assert info.sample_rate == 22_050 and abs(info.duration - 2.0) < 0.01
    mp3 = probe(EXAMPLES / "sounds" / "dog.mp3")
    assert mp3.format == "MP3" and mp3.sample_rate == 48_000


def test_unsupported_and_unreadable_files_raise_one_line(tmp_path):
    aiff = tmp_path / "a.aiff"
    sf.write(str(aiff), tone(0.5, 8000), 8000, format="AIFF")
    with pytest.raises(AudioError, match="unsupported audio format AIFF"):
        probe(aiff)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all" * 100)
    with pytest.raises(AudioError, match="not a readable audio file"):
        probe(junk)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty file"):
        probe(empty)
    with pytest.raises(AudioError, match="no such file"):
        probe(tmp_path / "missing.wav")


def test_nan_samples_are_reported_with_their_time(make_audio):
    data = tone(2.0, 8000)
    data[12_000] = np.nan
    path = make_audio("nan.wav", rate=8000, data=data, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"NaN or infinite samples \(first at 1.500 s\)"):
        list(read_blocks(path))


def test_expand_inputs_dirs_globs_stdin_and_problems(tmp_path, make_audio, caplog):
    a = make_audio("set/a.wav")
    b = make_audio("set/sub/b.flac")
    make_audio("set/sub/a.wav")  # same stem as set/a.wav in another folder: kept apart
    (tmp_path / "set" / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    inputs, problems = expand_inputs([str(tmp_path / "set"), str(tmp_path / "empty"),
                                      str(tmp_path / "nomatch*.wav")])
    assert [i.stem for i in inputs] == ["a", "sub/a", "sub/b"]
    assert len(problems) == 2
    assert "no audio files found" in problems[0] and "empty" in problems[0]
    assert "no file matches" in problems[1]
    import io

    inputs, problems = expand_inputs(["-"], stdin=io.StringIO(f"{a}\n\n{b}\n{a}\n"))
    assert [i.path for i in inputs] == [a, b] and not problems  # duplicates collapse
    inputs, _ = expand_inputs([str(tmp_path / "set" / "**" / "*.flac")])
    assert [i.path for i in inputs] == [b]
    # Two files named a.wav given one by one: the second's outputs get another name, which
    # the CLI says (once, and only when it writes outputs: see test_hostile).
    other = make_audio("elsewhere/a.wav")
    inputs, _ = expand_inputs([str(a), str(other)])
    assert [i.stem for i in inputs] == ["a", "a-2"]
    assert [i.shares_name_with for i in inputs] == [None, "a"]
