#!/usr/bin/env python
"""Kill flam's long jobs at random moments, rerun them, and check nothing is lost or torn.

Three jobs, each first run once uninterrupted (the reference), then ``--kills`` times started,
SIGKILLed at a random moment and checked, then rerun to the end and checked again:

* ``detect``: `flam detect DIR -o OUT` over 2000 one-second files and one 10-hour file
  (debug model: the point is the file handling, not the model). After every kill each output
  file must be either absent or byte-identical to the reference's, with no ``*.part`` left by
  a finished rerun; after every rerun the folder must equal the reference. Peak RSS of every
  run is recorded: it must not grow with the number of files or the length of the recording.
* ``synth``: `flam synth sed` (1500 mixtures, 2 workers), resumable: the finished folder must
  equal the reference byte for byte.
* ``train``: `flam train --resume latest` (debug config, 80 steps, checkpoint every 5), each
  round from an empty folder: the final weights must equal the uninterrupted run's exactly.

    python bench/kill_resume.py                        # the figures in docs/benchmarks.md
    python bench/kill_resume.py --jobs detect --files 200 --hours 1 --kills 2   # a quick look
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

FLAM = [sys.executable, "-m", "flamcli"]
ENV = {**os.environ, "FLAM_NO_PROGRESS": "1", "OMP_NUM_THREADS": "2"}


# -- inputs --------------------------------------------------------------------------------------
def make_inputs(work: Path, files: int, hours: float) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    short = work / f"short-{files}"
    if not (short / f"c{files - 1:04d}.wav").exists():
        short.mkdir(parents=True, exist_ok=True)
        for n in range(files):
            tone = np.sin(2 * np.pi * (300 + n % 700) * np.arange(16000) / 16000)
            sf.write(short / f"c{n:04d}.wav", (0.2 * tone + 0.01 * rng.standard_normal(16000))
                     .astype(np.float32), 16000)
    long = work / f"long-{hours:g}h.flac"
    if not long.exists():
        with sf.SoundFile(str(long), "w", 16000, 1, format="FLAC") as out:
            for block in range(int(hours * 360)):  # 10 s blocks
                t = np.arange(160000) / 16000
                tone = 0.2 * np.sin(2 * np.pi * (200 + 37 * (block % 20)) * t) * (block % 3 == 0)
                out.write((tone + 0.002 * rng.standard_normal(160000)).astype(np.float32))
    return short, long


def make_corpus(work: Path) -> Path:
    corpus = work / "corpus"
    manifest = corpus / "corpus.csv"
    if manifest.exists():
        return manifest
    corpus.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rows = ["path,kind,label"]
    for n in range(6):
        sf.write(corpus / f"bg{n}.wav", (0.05 * rng.standard_normal(16000 * 12)).astype(np.float32), 16000)
        rows.append(f"bg{n}.wav,background,")
    for n, label in enumerate(["dog barks", "bell rings", "horn honks", "bird sings"] * 5):
        t = np.arange(int(16000 * rng.uniform(0.8, 2.5))) / 16000
        sound = np.sin(2 * np.pi * (300 + 150 * (n % 4)) * t) * np.hanning(len(t))
        sf.write(corpus / f"ev{n}.wav", (0.4 * sound).astype(np.float32), 16000)
        rows.append(f"ev{n}.wav,event,{label}")
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


# -- running and killing ----------------------------------------------------------------------------
def run(args: list[str], kill_after: float | None = None) -> dict:
    """Run flam; SIGKILL it after ``kill_after`` seconds (None: to the end). Peak RSS from
    wait4 (the child alone); stderr goes to a file, so a chatty child can never block."""
    import tempfile

    began = time.monotonic()
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen([*FLAM, *args], env=ENV, stdout=subprocess.DEVNULL,
                                   stderr=errors)
        killed = False
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if kill_after is not None and time.monotonic() - began >= kill_after:
                process.send_signal(signal.SIGKILL)
                killed = True
                _, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.02)
        process.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
    if not killed and process.returncode != 0:
        raise RuntimeError(f"flam {' '.join(args)} exited {process.returncode}: {stderr[-2000:]}")
    return {"seconds": round(time.monotonic() - began, 2), "killed": killed,
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "exit": process.returncode}


def digests(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            out[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def compare_partial(folder: Path, reference: dict[str, str], allow: tuple[str, ...] = ()) -> dict:
    """After a kill: every file complete (equal to the reference) or absent; *.part files and
    names in ``allow`` (a job's own bookkeeping) aside."""
    found = digests(folder)
    torn = [name for name, digest in found.items()
            if not name.endswith(".part") and not name.startswith(allow)
            and reference.get(name) != digest]
    parts = [name for name in found if name.endswith(".part")]
    return {"files": len(found), "torn": torn[:5], "n_torn": len(torn), "part_files": len(parts)}


def cycle(name: str, args: list[str], out: Path, kills: int, expected_seconds: float,
          reference: dict, rng: random.Random, allow: tuple[str, ...] = (),
          prepare=None) -> list[dict]:
    rounds = []
    for k in range(kills):
        if prepare:
            prepare()
        when = rng.uniform(0.15, 0.9) * expected_seconds
        killed = run(args, kill_after=when)
        after_kill = compare_partial(out, reference, allow)
        rerun = run(args)
        final = digests(out)
        same = final == reference
        rounds.append({"kill_at_s": round(when, 2), "killed": killed["killed"], **after_kill,
                       "rerun_seconds": rerun["seconds"], "rerun_peak_rss_mb": rerun["peak_rss_mb"],
                       "identical_after_rerun": same,
                       "differs": sorted(set(final) ^ set(reference))[:5] if not same else []})
        print(f"{name} kill {k + 1}: at {when:.1f} s, {after_kill['n_torn']} torn, "
              f"{after_kill['part_files']} .part; rerun identical: {same}", flush=True)
    return rounds


# -- the jobs ---------------------------------------------------------------------------------------
def job_detect(work: Path, files: int, hours: float, kills: int, rng: random.Random) -> dict:
    short, long = make_inputs(work, files, hours)
    result = {}
    for label, source in (("2000 short files" if files == 2000 else f"{files} short files", short),
                          (f"{hours:g}-hour file", long)):
        out = work / f"detect-{source.name}"
        shutil.rmtree(out, ignore_errors=True)
        args = ["detect", str(source), "dog barks", "a bell", "-m", "debug", "-t", "0.11", "-o",
                str(out), "--no-plot", "--quiet"]
        first = run(args)
        reference = digests(out)
        rounds = cycle(f"detect {label}", args, out, kills, first["seconds"], reference, rng,
                       prepare=lambda out=out: shutil.rmtree(out, ignore_errors=True))
        result[label] = {"uninterrupted": first, "outputs": len(reference), "rounds": rounds}
    one = work / "detect-one"
    shutil.rmtree(one, ignore_errors=True)
    result["one short file"] = {"uninterrupted": run(
        ["detect", str(sorted(short.glob("*.wav"))[0]), "dog barks", "a bell", "-m", "debug", "-o",
         str(one), "--no-plot", "--quiet"])}
    return result


def job_synth(work: Path, kills: int, rng: random.Random) -> dict:
    manifest = make_corpus(work)
    out = work / "synth"
    shutil.rmtree(out, ignore_errors=True)
    args = ["synth", "sed", str(manifest), "-o", str(out), "-n", "1500", "--workers", "2",
            "--sample-rate", "16000", "--seed", "3", "--quiet"]
    first = run(args)
    reference = digests(out)
    shutil.rmtree(out)
    rounds = cycle("synth", args, out, kills, first["seconds"], reference, rng,
                   prepare=lambda: shutil.rmtree(out, ignore_errors=True))
    return {"uninterrupted": first, "outputs": len(reference), "rounds": rounds}


def job_train(work: Path, kills: int, rng: random.Random) -> dict:
    """Each round from an empty folder: killed at a random moment of what an uninterrupted run
    takes, then `--resume latest` to the end; every weight must equal the reference's (the
    safetensors file itself is not compared byte for byte: its writer orders the metadata
    header differently from process to process)."""
    from safetensors.torch import load_file
    import torch

    manifest = make_corpus(work)
    reference_dir = work / "train-ref"
    shutil.rmtree(reference_dir, ignore_errors=True)
    common = ["--data", str(manifest), "--config", "debug", "--max-steps", "80", "--batch-size",
              "2", "--checkpoint-every", "5", "--seed", "9", "--device", "cpu", "--threads", "1",
              "--quiet"]
    first = run(["train", *common, "--output", str(reference_dir)])
    reference = load_file(str(reference_dir / "model.safetensors"))
    out = work / "train"
    args = ["train", *common, "--output", str(out), "--resume", "latest"]
    rounds = []
    for k in range(kills):
        shutil.rmtree(out, ignore_errors=True)
        when = rng.uniform(0.1, 0.9) * first["seconds"]
        killed = run(args, kill_after=when)
        latest = out / "checkpoints" / "latest"
        at = latest.read_text().strip() if latest.exists() else None
        final = run(args)
        weights = load_file(str(out / "model.safetensors"))
        same = weights.keys() == reference.keys() and all(
            torch.equal(weights[name], reference[name]) for name in weights)
        steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
        rounds.append({"kill_at_s": round(when, 2), "killed": killed["killed"], "resumed_from": at,
                       "resume_seconds": final["seconds"], "resume_peak_rss_mb": final["peak_rss_mb"],
                       "identical_weights": same, "metric_steps_in_order": steps == list(range(1, 81))})
        print(f"train kill {k + 1}: at {when:.1f} s, resumed from {at}; weights identical: {same}",
              flush=True)
    return {"uninterrupted": first, "rounds": rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", default="detect,synth,train")
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--hours", type=float, default=10.0)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/flam-bench-kill"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "kill_resume.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    results = {"kills": args.kills, "seed": args.seed}
    if args.out.exists():  # jobs not run this time keep their earlier results
        results = {**json.loads(args.out.read_text()), **results}
    jobs = args.jobs.split(",")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name, job in (("detect", lambda: job_detect(args.work, args.files, args.hours,
                                                     args.kills, rng)),
                      ("synth", lambda: job_synth(args.work, args.kills, rng)),
                      ("train", lambda: job_train(args.work, args.kills, rng))):
        if name in jobs:
            results[name] = job()
            args.out.write_text(json.dumps(results, indent=1) + "\n")  # after every job
    print(json.dumps(results)[:4000])


if __name__ == "__main__":
    main()
