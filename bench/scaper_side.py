#!/usr/bin/env python
"""Scaper 1.6.5 side of the ``flam synth sed`` benchmark: N soundscapes from a flam corpus manifest.

Runs INSIDE the separate bench virtual environment (Scaper is no dependency of flamcli and needs
numpy<2 and pandas<2.3). Build it once, as root, with only PyPI and Debian reachable::

    apt-get update && apt-get install -y libsox-dev sox        # soxbindings compiles against libsox
    python3.11 -m venv /tmp/scaper-venv
    /tmp/scaper-venv/bin/pip install --upgrade pip
    /tmp/scaper-venv/bin/pip install "scaper==1.6.5" "numpy<2" "pandas<2.3"
    /tmp/scaper-venv/bin/python -c "import scaper; print(scaper.__version__)"     # 1.6.5

(resolved 2026-11: numpy 1.26.4, pandas 2.2.3, scipy 1.17.1, soxbindings 1.2.3 built from sdist,
sox 1.4.0, jams 0.3.5, pyloudnorm 0.2.0, soundfile 0.14.0.)

What it does::

    /tmp/scaper-venv/bin/python bench/scaper_side.py MANIFEST.csv -o OUT -n 200 --seed 0 --workers 2

1. Corpus layout (NOT timed, reported as ``prepare_s``). Scaper wants ``fg/<label>/*`` and
   ``bg/<label>/*``. Every manifest row (``kind`` event → fg, background → bg) is converted ONCE to
   a 48 kHz mono 16-bit WAV copy (sox resampler via soxbindings, the same one Scaper uses) under
   ``--prepared-dir`` (default: a cache folder keyed by the manifest's content, reused by later
   runs). With ``--prepare symlink`` the original files are linked instead and Scaper decodes and
   resamples them on every use. The label is the row's first tag, else its first caption, else its
   parent folder name, cleaned to ``[a-z0-9_]``.
   The default (WAV copies) favours Scaper: it never decodes MP3/Vorbis or resamples in the timed
   region, while ``flam synth sed`` reads the corpus as it is.
2. Generation (timed). W worker processes (fork) each build a ``scaper.Scaper(10, fg, bg)`` with
   sr 48000, mono, ref_db -50, 10 ms fades (Scaper's defaults), wait on a barrier, then each
   renders its contiguous share of the N mixtures (N/W each). Mixture i uses its own
   ``RandomState([seed, i])``, so the set of mixtures does not depend on W. Per mixture: one
   background (random label, random file, random offset), 1–3 events (``randint(1, 4)``) with random
   label, random file, the whole clip (``source_time`` 0, duration capped at 10 s), onset
   uniform in [0, 10) s (Scaper moves it earlier when the clip would run past the end) and SNR
   uniform in [-5, 20] dB; ``fix_clipping=True``. Written as Scaper normally does:
   ``OUT/soundscape_NNNNNN.wav`` (Scaper writes 32-bit PCM), ``.jams`` and ``.txt``
   (onset, offset, label). The rate is N / (last worker end − first worker start).
3. One JSON line on stdout: ``mixtures_per_s``, ``generation_s``, ``prepare_s``, per-worker times,
   versions. Warnings and progress go to stderr.

``--verify`` re-reads every written WAV afterwards (untimed) and checks 48 kHz, 480000 frames.
BLAS/OpenMP thread pools are pinned to 1 per process (set before numpy is imported) so W workers
use W cores, as a user running Scaper in a process pool would.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

DURATION = 10.0
SAMPLE_RATE = 48_000
REF_DB = -50
MIN_EVENTS, MAX_EVENTS = 1, 3
SNR_DB = (-5.0, 20.0)


# -- corpus -----------------------------------------------------------------------------------
def _label(row: dict, path: Path) -> str:
    for field in ("tags", "captions"):
        first = (row.get(field) or "").split("|")[0].strip()
        if first:
            break
    else:
        first = path.parent.name or "sound"
    return re.sub(r"[^a-z0-9]+", "_", first.lower()).strip("_") or "sound"


def read_manifest(manifest: Path) -> list[dict]:
    """Rows of a flam corpus manifest (CSV with header; ``path`` relative to its folder)."""
    rows = []
    with open(manifest, newline="", encoding="utf-8") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            kind = (row.get("kind") or "").strip().lower()
            if kind not in ("event", "background"):
                print(f"scaper_side: row {i + 2}: kind {kind!r} skipped", file=sys.stderr)
                continue
            path = Path(row["path"])
            if not path.is_absolute():
                path = manifest.parent / path
            rows.append({"path": path.resolve(), "kind": kind, "label": _label(row, path),
                         "index": i})
    if not any(r["kind"] == "event" for r in rows) or not any(
            r["kind"] == "background" for r in rows):
        raise SystemExit(f"scaper_side: {manifest} needs at least one event and one background")
    return rows


def prepare(rows: list[dict], dest: Path, mode: str) -> float:
    """Lay out fg/<label>/ and bg/<label>/ under dest once; returns its seconds (0: cached)."""
    stamp = dest / ".ready"
    if stamp.exists():
        return 0.0
    import logging

    import numpy as np
    import soundfile as sf
    import sox

    logging.getLogger("sox").setLevel(logging.ERROR)  # the harmless set_output_format notice
    t0 = time.perf_counter()
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for r in rows:
        folder = tmp / ("fg" if r["kind"] == "event" else "bg") / r["label"]
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{r['index']:05d}_{re.sub(r'[^A-Za-z0-9_-]+', '_', r['path'].stem)}"
        if mode == "symlink":
            os.symlink(r["path"], folder / (stem + r["path"].suffix.lower()))
            continue
        audio, sr = sf.read(str(r["path"]), always_2d=True, dtype="float64")
        if audio.shape[0] == 0:
            print(f"scaper_side: {r['path']} is empty, skipped", file=sys.stderr)
            continue
        tfm = sox.Transformer()
        tfm.convert(samplerate=SAMPLE_RATE, n_channels=1, bitdepth=None)
        tfm.set_output_format(rate=SAMPLE_RATE, channels=1)
        mono = tfm.build_array(input_array=audio, sample_rate_in=sr).reshape(-1)
        peak = float(np.max(np.abs(mono))) if mono.size else 0.0
        if peak > 1.0:  # the sox resampler can overshoot a full-scale input slightly
            mono = mono / peak
        sf.write(str(folder / (stem + ".wav")), mono, SAMPLE_RATE, subtype="PCM_16")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    stamp.write_text("ok\n")
    return time.perf_counter() - t0


def default_prepared_dir(manifest: Path, rows: list[dict], mode: str) -> Path:
    h = hashlib.sha256(mode.encode())
    h.update(manifest.read_bytes())
    for r in rows:
        h.update(str(r["path"]).encode() + b"\0")
    return Path("/tmp/scaper-bench-prepared") / h.hexdigest()[:16]


# -- generation -------------------------------------------------------------------------------
def _worker(wid, lo, hi, seed, fg, bg, out, barrier, queue):
    try:
        import warnings

        import numpy as np
        import scaper

        warnings.filterwarnings("ignore")
        sc = scaper.Scaper(DURATION, fg, bg, random_state=0)
        sc.sr = SAMPLE_RATE
        sc.n_channels = 1
        sc.ref_db = REF_DB
        barrier.wait()
        t0 = time.perf_counter()
        for i in range(lo, hi):
            rs = np.random.RandomState([seed, i])
            sc.set_random_state(rs)
            sc.reset_bg_event_spec()
            sc.reset_fg_event_spec()
            sc.add_background(label=("choose", []), source_file=("choose", []),
                              source_time=("uniform", 0, 1e6))  # Scaper clamps to the file
            for _ in range(int(rs.randint(MIN_EVENTS, MAX_EVENTS + 1))):
                sc.add_event(label=("choose", []), source_file=("choose", []),
                             source_time=("const", 0), event_time=("uniform", 0, DURATION),
                             event_duration=("const", DURATION), snr=("uniform", *SNR_DB),
                             pitch_shift=None, time_stretch=None)
            base = os.path.join(out, f"soundscape_{i:06d}")
            sc.generate(base + ".wav", base + ".jams", txt_path=base + ".txt",
                        allow_repeated_label=True, allow_repeated_source=True,
                        fix_clipping=True, disable_instantiation_warnings=True)
        queue.put({"worker": wid, "mixtures": hi - lo, "t0": t0, "t1": time.perf_counter()})
    except BaseException as exc:  # report, never hang the parent
        try:
            barrier.abort()
        except Exception:
            pass
        queue.put({"worker": wid, "error": f"{type(exc).__name__}: {exc}"})
        raise


def generate(n: int, seed: int, workers: int, fg: Path, bg: Path, out: Path) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    barrier, queue = ctx.Barrier(workers), ctx.Queue()
    bounds = [n * w // workers for w in range(workers + 1)]
    procs = [ctx.Process(target=_worker, args=(w, bounds[w], bounds[w + 1], seed, str(fg),
                                               str(bg), str(out), barrier, queue))
             for w in range(workers)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise SystemExit("scaper_side: worker failed: " + "; ".join(errors))
    t0 = min(r["t0"] for r in results)
    t1 = max(r["t1"] for r in results)
    per = sorted(({"worker": r["worker"], "mixtures": r["mixtures"], "seconds": r["t1"] - r["t0"]}
                  for r in results), key=lambda r: r["worker"])
    return {"generation_s": t1 - t0, "per_worker": per}


def verify(out: Path, n: int) -> dict:
    import soundfile as sf

    wavs = sorted(out.glob("soundscape_*.wav"))
    bad = [w.name for w in wavs
           if (lambda i: i.samplerate != SAMPLE_RATE or i.frames != int(DURATION * SAMPLE_RATE))(
               sf.info(str(w)))]
    jams = len(list(out.glob("soundscape_*.jams")))
    txt = len(list(out.glob("soundscape_*.txt")))
    ok = len(wavs) == jams == txt == n and not bad
    return {"ok": ok, "wav": len(wavs), "jams": jams, "txt": txt, "bad": bad[:5]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Scaper 1.6.5 side of the flam synth sed benchmark (run in /tmp/scaper-venv).",
        epilog="See the module docstring for the venv recipe and exactly what is timed.")
    ap.add_argument("manifest", type=Path, help="flam corpus manifest (CSV)")
    ap.add_argument("-o", "--out", type=Path, required=True,
                    help="output folder (a previous run's soundscape_* files are deleted first)")
    ap.add_argument("-n", "--count", type=int, default=100, help="soundscapes (default 100)")
    ap.add_argument("--seed", type=int, default=0, help="mixture i uses RandomState([seed, i])")
    ap.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--prepare", choices=("copy", "symlink"), default="copy",
                    help="copy: 48 kHz mono WAV copies (default); symlink: link the originals")
    ap.add_argument("--prepared-dir", type=Path,
                    help="where fg/ and bg/ go (default: cache under /tmp/scaper-bench-prepared)")
    ap.add_argument("--verify", action="store_true",
                    help="afterwards (untimed) check every WAV is 48 kHz and 10 s")
    args = ap.parse_args(argv)
    if args.count < 1 or args.workers < 1:
        ap.error("--count and --workers must be >= 1")

    import scaper

    manifest = args.manifest.resolve()
    rows = read_manifest(manifest)
    prepared = args.prepared_dir or default_prepared_dir(manifest, rows, args.prepare)
    prepare_s = prepare(rows, prepared, args.prepare)
    if args.out.exists():  # only ever delete a previous run's output
        foreign = [p.name for p in args.out.iterdir() if not p.name.startswith("soundscape_")]
        if foreign:
            raise SystemExit(f"scaper_side: {args.out} holds other files ({foreign[:3]}); "
                             "give an empty or new folder")
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)

    gen = generate(args.count, args.seed, args.workers, prepared / "fg", prepared / "bg",
                   args.out.resolve())
    result = {
        "tool": "scaper", "scaper": scaper.__version__, "n": args.count, "workers": args.workers,
        "seed": args.seed, "duration_s": DURATION, "sample_rate": SAMPLE_RATE,
        "events": [MIN_EVENTS, MAX_EVENTS], "snr_db": list(SNR_DB), "ref_db": REF_DB,
        "prepare": args.prepare, "prepared_dir": str(prepared),
        "prepare_s": round(prepare_s, 3), "generation_s": round(gen["generation_s"], 4),
        "mixtures_per_s": round(args.count / gen["generation_s"], 3),
        "per_worker": gen["per_worker"], "out": str(args.out),
        "labels": {"fg": sorted({r["label"] for r in rows if r["kind"] == "event"}),
                   "bg": sorted({r["label"] for r in rows if r["kind"] == "background"})},
    }
    if args.verify:
        result["verify"] = verify(args.out, args.count)
    print(json.dumps(result), flush=True)
    return 0 if result.get("verify", {"ok": True})["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
