#!/usr/bin/env python
"""Benchmark ``flam detect`` (the library call behind it): throughput, peak memory, query cost.

Every measurement runs in a fresh subprocess, so ``ru_maxrss`` (the peak resident set size)
belongs to that measurement alone. Inside it the model is built first (timed separately), then
only the ``detect()`` call is timed; text encoding is part of it, as it is part of a real run.

Models are random-weight builds of the real architectures — timing does not depend on weights:
``base``  = OpenFLAM-v1-base shape (HTSAT-base + RoBERTa-base, 48 kHz, ~197 M parameters);
``debug`` = the tiny built-in debug model (16 kHz);
``tiny``  = flam-tiny, the small bundled model (CNN audio tower + MiniLM, 16 kHz);
``sfx``   = flam-sfx, the bundled model with the pretrained aisfx tower (+ MiniLM, 44.1 kHz).

Sections (``--sections``):
  throughput  every model × thread count on the long file (default 1 h, 44.1 kHz stereo WAV)
  rss         peak RSS on the short file vs the long file (does memory grow with length?)
  queries     base model, 1 query vs 20 distinct queries on the query file (default 10 min)

Examples::

    python bench/bench_detect.py --quick                 # ~2 min smoke run on a 2-minute file
    python bench/bench_detect.py --fresh                 # the full run in docs/benchmarks.md
    python bench/bench_detect.py --sections queries --query-minutes 10
    python bench/bench_detect.py --models debug --threads 1,2 --hours 0.25

Audio is generated once (numpy + soundfile, in 10 s blocks, never held whole) into
``--audio-dir`` (default /tmp/flam-bench) and reused if already there.
Results go to ``--out`` (JSON, default bench/results/detect.json) and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from benchlib import cpu_info, rss_now_mib, snapshot_code

SAMPLE_RATE = 44_100
CHANNELS = 2
BLOCK_SECONDS = 10

QUERIES = [
    "dog barks",
    "a car horn honks",
    "a person speaking",
    "glass breaking",
    "a baby crying",
    "footsteps on a wooden floor",
    "rain falling on a roof",
    "a door slams shut",
    "an alarm clock ringing",
    "birds chirping",
    "a siren wailing",
    "applause from a crowd",
    "a cat meowing",
    "music playing on a piano",
    "water running from a tap",
    "a telephone ringing",
    "thunder rumbling",
    "a vacuum cleaner",
    "keyboard typing",
    "an engine idling",
]
assert len(set(QUERIES)) == 20


# -- audio --------------------------------------------------------------------------------------
def make_audio(path: Path, seconds: float) -> Path:
    """44.1 kHz stereo 16-bit WAV: coloured noise + a few slowly moving tones + beeps.

    Generated block by block with a per-block seed, so the 1-minute file is exactly the
    first minute of the 1-hour file, and nothing larger than a 10 s block is ever in memory.
    """
    import numpy as np
    import soundfile as sf

    frames_total = int(round(seconds * SAMPLE_RATE))
    if path.exists():
        try:
            if sf.info(str(path)).frames == frames_total:
                return path
        except Exception:
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial.wav")
    block = BLOCK_SECONDS * SAMPLE_RATE
    with sf.SoundFile(str(tmp), "w", SAMPLE_RATE, CHANNELS, subtype="PCM_16") as out:
        written = 0
        index = 0
        while written < frames_total:
            n = min(block, frames_total - written)
            rng = np.random.default_rng(index)
            t = (written + np.arange(n)) / SAMPLE_RATE
            noise = rng.standard_normal((n, CHANNELS)).astype(np.float32)
            noise = np.cumsum(noise, axis=0) * 0.002 + noise * 0.05  # some low-frequency tilt
            noise -= noise.mean(axis=0)
            f1 = 220.0 * (1 + (index % 7))
            tone = 0.1 * np.sin(2 * np.pi * f1 * t) + 0.05 * np.sin(2 * np.pi * 3 * f1 * t)
            beep = 0.2 * np.sin(2 * np.pi * 1000.0 * t) * ((t % 3.0) < 0.4)
            signal = noise + (tone + beep)[:, None].astype(np.float32)
            out.write(np.clip(signal, -1, 1).astype(np.float32))
            written += n
            index += 1
    tmp.replace(path)
    return path


# -- one measurement (runs in its own process) -------------------------------------------------
def build_model(name: str):
    import torch

    if name == "base":
        from flamcli.models.config import openflam_v1_base_config
        from flamcli.models.flam import FlamModel
        from flamcli.models.text import TextTokenizer, byte_tokenizer

        torch.manual_seed(0)
        cfg = openflam_v1_base_config()
        model = FlamModel(cfg, TextTokenizer(byte_tokenizer(), cfg.text)).eval()
    elif name == "debug":
        from flamcli.models.registry import build_debug_model

        model = build_debug_model()
    elif name in ("tiny", "sfx"):
        # The bundled model when installed; else its architecture with random weights
        # (timing does not depend on the weights).
        from flamcli.models.config import flam_sfx_config, flam_tiny_config
        from flamcli.models.registry import bundled_model_dir, load_model

        bundled, architecture = {"tiny": ("flam-tiny", flam_tiny_config),
                                 "sfx": ("flam-sfx", flam_sfx_config)}[name]
        if bundled_model_dir(bundled) is not None:
            model = load_model(bundled, device="cpu")
        else:
            from flamcli.models.flam import FlamModel
            from flamcli.models.text import TextTokenizer, byte_tokenizer

            torch.manual_seed(0)
            cfg = architecture()
            model = FlamModel(cfg, TextTokenizer(byte_tokenizer(), cfg.text)).eval()
    else:
        raise SystemExit(f"unknown model {name!r}")
    return model


def text_worker(spec: dict) -> dict:
    """Cost of encoding 1 vs 20 queries, in one process, alternating, best of ``repeats``."""
    import torch

    torch.set_num_threads(spec["threads"])
    model = build_model(spec["model"])
    timings = {1: [], 20: []}
    with torch.inference_mode():
        model.encode_text(QUERIES)  # warm-up
        for _ in range(spec["repeats"]):
            for n in (1, 20):
                t = time.perf_counter()
                model.encode_text(QUERIES[:n])
                timings[n].append(time.perf_counter() - t)
    ids, mask = model.tokenizer(QUERIES)
    return {**spec, "encode_s_1": min(timings[1]), "encode_s_20": min(timings[20]),
            "tokens_padded": list(ids.shape), "tokens_mean": float(mask.sum(1).float().mean())}


def worker(spec: dict) -> dict:
    import resource

    import torch

    if spec.get("kind") == "text":
        return text_worker(spec)
    torch.set_num_threads(spec["threads"])
    t0 = time.perf_counter()
    model = build_model(spec["model"])
    build_s = time.perf_counter() - t0
    rss_after_build = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    from flamcli.detection import detect

    queries = QUERIES[: spec["queries"]]
    last = [time.perf_counter()]
    trace = []  # (audio s done, current RSS MiB, peak RSS MiB) at every 5 % of the file
    step = [0.0]

    def progress(p):  # a heartbeat in the log for long runs, and the RSS trace
        now = time.perf_counter()
        if p.seconds_total and p.seconds_done >= step[0]:
            trace.append((round(p.seconds_done, 1), round(rss_now_mib(), 1),
                          round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)))
            step[0] = p.seconds_done + 0.05 * p.seconds_total
        if now - last[0] > 60:
            last[0] = now
            print(f"    … {p.seconds_done:.0f}/{p.seconds_total:.0f} audio s", file=sys.stderr,
                  flush=True)

    t1 = time.perf_counter()
    results = detect(model, [spec["file"]], queries, batch_size=spec["batch_size"],
                     progress=progress)
    detect_s = time.perf_counter() - t1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    (result,) = results
    if result.error is not None:
        raise SystemExit(f"detect failed: {result.error}")
    import flamcli

    return {
        **spec,
        "flamcli": flamcli.__file__,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "model_rate": model.sample_rate,
        "audio_s": result.duration,
        "frames": int(result.scores.shape[0]),
        "build_s": build_s,
        "detect_s": detect_s,
        "x_realtime": result.duration / detect_s,
        "rss_after_build_mib": rss_after_build / 1024,
        "peak_rss_mib": peak / 1024,
        "rss_trace": trace,
    }


def measure(spec: dict) -> dict:
    """Run one measurement in a fresh interpreter; returns its result dict."""
    print(f"  running {spec['label']} …", file=sys.stderr, flush=True)
    env = dict(os.environ)
    if spec.get("code"):  # run against the snapshot, not the (possibly changing) working tree
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [spec["code"], env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    if proc.returncode:
        raise SystemExit(f"measurement {spec['label']} failed (exit {proc.returncode})")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if spec.get("kind") != "text":
        print(f"    {fmt_row(result)}", file=sys.stderr, flush=True)
    return result


# -- reporting ----------------------------------------------------------------------------------
HEADER = ("| model | threads | file | queries | audio s | build s | detect wall s "
          "| x real time | s / 10 s window | peak RSS MiB | RSS after build MiB |\n"
          "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")


def windows(r: dict) -> int:
    # 10 s windows, 7.5 s hop: one window, then one per started hop of the remainder.
    import math

    return 1 + max(0, math.ceil((r["audio_s"] - 10.0) / 7.5))


def fmt_row(r: dict) -> str:
    return (f"| {r['model']} | {r['threads']} | {r['file_label']} | {r['queries']} "
            f"| {r['audio_s']:.0f} | {r['build_s']:.1f} | {r['detect_s']:.1f} "
            f"| {r['x_realtime']:.1f} | {r['detect_s'] / windows(r):.3f} "
            f"| {r['peak_rss_mib']:.0f} | {r['rss_after_build_mib']:.0f} |")


def table(rows: list[dict]) -> str:
    return "\n".join([HEADER, *map(fmt_row, rows)])


def label_for(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def machine() -> dict:
    import torch

    cpu, _ = cpu_info()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform(),
            "date": _dt.date.today().isoformat()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2-minute long file, 1-minute short file, 2-minute query file")
    ap.add_argument("--hours", type=float, default=1.0, help="long file length (default 1)")
    ap.add_argument("--short-minutes", type=float, default=1.0,
                    help="short file for the RSS comparison (default 1)")
    ap.add_argument("--query-minutes", type=float, default=10.0,
                    help="file for the 1-vs-20-query comparison (default 10)")
    ap.add_argument("--models", default="base,debug", help="comma list of base, debug, tiny, sfx")
    ap.add_argument("--threads", default="1,2", help="comma list of thread counts")
    ap.add_argument("--query-threads", type=int, default=1,
                    help="thread count for the query comparison (default 1)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="repeats (alternating) of the 1- and 20-query runs; the minimum counts")
    ap.add_argument("--sections", default="throughput,rss,queries")
    ap.add_argument("--batch-size", type=int, default=8, help="as `flam detect` (default 8)")
    ap.add_argument("--audio-dir", type=Path, default=Path("/tmp/flam-bench"))
    ap.add_argument("--fresh", action="store_true",
                    help="start a new results file instead of replacing sections of --out")
    ap.add_argument("--no-snapshot", action="store_true",
                    help="import flamcli from the working tree instead of a copy taken at start")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parent / "results" / "detect.json")
    args = ap.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0

    if args.quick:
        args.hours, args.short_minutes, args.query_minutes = 2 / 60, 1.0, 2.0
        if args.out == ap.get_default("out"):
            args.out = args.out.with_name("detect-quick.json")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}

    long_s = round(args.hours * 3600)
    short_s = round(args.short_minutes * 60)
    query_s = round(args.query_minutes * 60)
    files = {}

    def audio(seconds: int) -> tuple[str, str]:
        if seconds not in files:
            label = label_for(seconds)
            path = args.audio_dir / f"bench-{seconds}s-44k1-stereo.wav"
            print(f"audio: {path} ({label}) …", file=sys.stderr, flush=True)
            t = time.perf_counter()
            make_audio(path, seconds)
            print(f"  ready in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
            files[seconds] = (str(path), label)
        return files[seconds]

    args.audio_dir.mkdir(parents=True, exist_ok=True)
    code, provenance = (None, {}) if args.no_snapshot else snapshot_code(args.audio_dir)
    command = " ".join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    report = {}
    if args.out.exists() and not args.fresh:  # re-running a subset replaces only those sections
        try:
            report = json.loads(args.out.read_text())
        except ValueError:
            report = {}
    report.update({"machine": machine(), "batch_size": args.batch_size})
    for key in ("throughput", "rss", "queries"):
        report.setdefault(key, None)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        args.out.write_text(json.dumps(report, indent=2) + "\n")

    def section(name):
        return {"command": command, "date": report["machine"]["date"], "code": provenance}

    def spec(model, n_threads, seconds, n_queries, section):
        path, label = audio(seconds)
        return {"label": f"{section}: {model} {n_threads}t {label} {n_queries}q", "model": model,
                "threads": n_threads, "file": path, "file_label": label, "queries": n_queries,
                "batch_size": args.batch_size, "code": code}

    long_runs = {}  # (model, threads) → result on the long file with 1 query
    if "throughput" in sections:
        report["throughput"] = {**section("throughput"), "runs": []}
        for model in models:
            for n in threads:
                r = measure(spec(model, n, long_s, 1, "throughput"))
                long_runs[(model, n)] = r
                report["throughput"]["runs"].append(r)
                save()

    if "rss" in sections:
        report["rss"] = {**section("rss"), "models": []}
        for model in models:
            short = measure(spec(model, 1, short_s, 1, "rss"))
            long = long_runs.get((model, 1)) or measure(spec(model, 1, long_s, 1, "rss"))
            ratio = long["peak_rss_mib"] / short["peak_rss_mib"]
            report["rss"]["models"].append({
                "model": model, "threads": 1, "short": short, "long": long,
                "ratio_long_over_short": ratio, "within_10_percent": abs(ratio - 1) <= 0.10})
            save()

    if "queries" in sections:
        pairs = []
        for _ in range(args.repeats):  # alternate, so slow phases of a shared machine hit both
            one = measure(spec("base", args.query_threads, query_s, 1, "queries"))
            twenty = measure(spec("base", args.query_threads, query_s, 20, "queries"))
            pairs.append({"q1": one, "q20": twenty, "ratio": twenty["detect_s"] / one["detect_s"]})
        best1 = min(p["q1"]["detect_s"] for p in pairs)
        best20 = min(p["q20"]["detect_s"] for p in pairs)
        ratios = sorted(p["ratio"] for p in pairs)
        text = measure({"label": "queries: text encoding 1 vs 20", "kind": "text",
                        "model": "base", "threads": args.query_threads, "repeats": 5,
                        "code": code})
        extra = text["encode_s_20"] - text["encode_s_1"]
        report["queries"] = {
            **section("queries"), "model": "base", "threads": args.query_threads,
            "file_label": label_for(query_s), "queries": QUERIES, "pairs": pairs,
            "detect_s_1_best": best1, "detect_s_20_best": best20,
            "ratio_best": best20 / best1, "ratio_pairs_median": ratios[len(ratios) // 2],
            "text": text, "ratio_predicted": (best1 + extra) / best1,
            "below_1_2": best20 / best1 < 1.2,
        }
        save()

    # -- markdown -------------------------------------------------------------------------------
    m = report["machine"]
    print(f"\n### flam detect benchmark — {m['cpu']}, {m['cores']} cores, torch {m['torch']}, "
          f"batch size {report['batch_size']}\n")
    if report["throughput"]:
        t = report["throughput"]
        print(f"#### Throughput (1 query) — `{t['command']}`, {t['date']}\n")
        print(table(t["runs"]) + "\n")
    if report["rss"]:
        r = report["rss"]
        print(f"#### Peak RSS vs file length (1 thread, 1 query) — `{r['command']}`, {r['date']}\n")
        print("| model | short file | peak RSS MiB | long file | peak RSS MiB | long / short |\n"
              "|---|---|---:|---|---:|---:|")
        for x in r["models"]:
            sh, lo = x["short"], x["long"]
            print(f"| {x['model']} | {sh['file_label']} | {sh['peak_rss_mib']:.0f} "
                  f"| {lo['file_label']} | {lo['peak_rss_mib']:.0f} "
                  f"| {x['ratio_long_over_short']:.3f} |")
        print()
        for x in r["models"]:
            trace = x["long"].get("rss_trace") or []
            if trace:
                points = ", ".join(f"{a:.0f} s: {now:.0f}/{peak:.0f}" for a, now, peak in trace)
                print(f"{x['model']} {x['long']['file_label']} RSS trace (audio s: current/peak "
                      f"MiB): {points}\n")
    if report["queries"]:
        q = report["queries"]
        print(f"#### 20 queries vs 1 query (base, {q['threads']} thread(s), {q['file_label']} "
              f"file) — `{q['command']}`, {q['date']}\n")
        print(table([x for p in q["pairs"] for x in (p["q1"], p["q20"])]) + "\n")
        tx = q["text"]
        print(f"20-query / 1-query detect time: best-of-{len(q['pairs'])} **{q['ratio_best']:.3f}** "
              f"({q['detect_s_20_best']:.1f} s / {q['detect_s_1_best']:.1f} s); median of "
              f"adjacent pairs {q['ratio_pairs_median']:.3f}; text encoding alone "
              f"{tx['encode_s_1']:.3f} s (1 query) vs {tx['encode_s_20']:.3f} s (20 queries, "
              f"padded to {tx['tokens_padded'][1]} byte tokens) → predicted "
              f"{q['ratio_predicted']:.3f}\n")
    print(f"results: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
