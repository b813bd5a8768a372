#!/usr/bin/env python
"""flam vs upstream OpenFLAM 1.0.2 on the OpenFLAM v1-base architecture, side by side.

Sections (``--sections``), each measurement in a fresh process, flam and upstream interleaved
(the side that goes first alternates from pair to pair), same inputs, same thread count:

  audio     the audio branch on 10 s 48 kHz clips (flam ``embed_audio_frames``, upstream
            ``get_local_audio_features``: HTSAT + projection + L2 normalisation), per batch size;
            each of these processes also measures this CPU's fp32 peak right before, with a
            4096³ matmul through MKL (``torch.mm``) and through oneDNN
  pipeline  one clip and 10 queries from strings to the [1, 10, 32] unbiased frame
            probabilities (flam ``encode_text`` + ``embed_audio_frames`` + ``frame_probabilities``,
            upstream ``get_local_similarity(.., cross_product=True)``); the two outputs are
            compared, which checks that both sides did the same work
  load      flam loading the converted safetensors directory vs the ``.pth`` checkpoint
            (``registry.load_model_directory`` / ``load_openflam_directory``): wall time and
            peak RSS, with the RSS baseline before the load
  flops     FlopCounterMode count of one clip through each side's audio branch (flam's counted
            on its reference path: nn.Linear + unfused attention, which FlopCounterMode sees)

Weights: no real weights can be downloaded here, and speed does not depend on them, so both
sides use the same seeded random full-size state dict (``tests/reference/seeded_state.py``),
written once as ``open_flam_oct17.pth`` and converted with ``convert_openflam``. Upstream runs in
its own venv (``--upstream-python``, built as in ``tests/reference/make_golden.py``) through
``bench/upstream_side.py``; flam never imports it.

Examples::

    python bench/bench_openflam.py                 # full run → bench/results/openflam.json
    python bench/bench_openflam.py --quick         # ~5 min smoke run → openflam-quick.json
    python bench/bench_openflam.py --sections load --pairs 5
    python bench/bench_openflam.py --threads 1,2 --batches 1,8 --pairs 3

flam chooses its GEMM path per machine (``flamcli.models.linear``: both timed once, the
answer kept in flam's cache); ``FLAM_ONEDNN_LINEAR=0`` in a flam worker's environment forces
nn.Linear's default (MKL) GEMMs, and ``--ablation`` adds such a run per audio pair.
``--isa native,avx2`` (the default) measures every audio and pipeline setting twice: as the CPU
is, and capped to AVX2 in every worker of both sides (``ATEN_CPU_CAPABILITY=avx2``,
``ONEDNN_MAX_CPU_ISA=AVX2``, ``MKL_ENABLE_INSTRUCTIONS=AVX2``, ``FBGEMM_ENABLE_INSTRUCTIONS=AVX2``),
so an AVX-512 machine also reports the common case. ``--int8`` (the default) adds flam with
``--precision int8`` (``flamcli.models.int8``) to every audio and pipeline setting; the pipeline
reports its largest probability difference from flam's fp32 output.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import cpu_info, rss_now_mib, snapshot_code
from bench_detect import QUERIES as DETECT_QUERIES

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

CLIP_SAMPLES = 480_000  # 10 s at 48 kHz, the only input upstream accepts
N_CLIPS = 8
STATE_SEED = 0

QUERIES = DETECT_QUERIES[:10]  # the detect benchmark's first ten


# -- helpers shared with upstream_side.py (stdlib at import time; torch imported lazily) --------
def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(function):
    start = time.perf_counter()
    out = function()
    return time.perf_counter() - start, out


def summarise(call_seconds: list[float], batch: int) -> dict:
    return {"median_s_per_clip": statistics.median(call_seconds) / batch,
            "best_s_per_clip": min(call_seconds) / batch}


def fp32_peak(size: int = 4096, repeats: int = 2) -> dict:
    """Best GFLOP/s of a size³ fp32 matmul, through MKL (torch.mm) and through oneDNN.

    Both are full fp32 (IEEE inputs, fp32 accumulation). On AMD CPUs MKL runs its AVX2 code
    while oneDNN runs AVX-512, so the oneDNN number is the better estimate of the CPU's peak.
    """
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    flop = 2 * size**3
    runs = {"mkl_mm": lambda: torch.mm(a, b)}
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        # a · bᵀ: the same op flam's Linear layers use.
        runs["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    out = {"size": size}
    with torch.inference_mode():
        for name, run in runs.items():
            run()  # warm-up
            best = min(timed(run)[0] for _ in range(repeats))
            out[f"{name}_gflops"] = flop / best / 1e9
    return out


# -- setup (a worker process) -------------------------------------------------------------------
def make_clips(n: int):
    """n deterministic 10 s 48 kHz clips: noise, tones, beeps, a chirp (float32 [n, samples])."""
    import numpy as np

    t = np.arange(CLIP_SAMPLES) / 48_000
    clips = []
    for i in range(n):
        rng = np.random.default_rng(1000 + i)
        clip = (0.05 * rng.standard_normal(CLIP_SAMPLES)
                + 0.2 * np.sin(2 * np.pi * 220.0 * (1 + i) * t) * (t < 2.0 + i)
                + 0.3 * np.sin(2 * np.pi * 3000.0 * t) * ((t % 2.0) < 0.3)
                + 0.1 * np.sin(2 * np.pi * (100.0 * t + 200.0 * t**2)))
        clips.append(clip.astype(np.float32))
    return np.stack(clips)


def setup_worker(spec: dict) -> dict:
    """Clips, the seeded checkpoint + tokenizer files, and its safetensors conversion."""
    import numpy as np

    from flamcli.models.convert import OPENFLAM_CHECKPOINT, convert_openflam

    work = Path(spec["work_dir"])
    ckpt_dir = work / "checkpoint"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    np.save(work / "clips.npy", make_clips(N_CLIPS))
    # The reference harness writes the seeded checkpoint (tests/reference/README.md).
    written = subprocess.run(
        [sys.executable, str(REPO / "tests" / "reference" / "seeded_state.py"),
         "--seed", str(STATE_SEED), "-o", str(ckpt_dir / OPENFLAM_CHECKPOINT)],
        check=True, capture_output=True, text=True)
    sizes = json.loads(written.stdout)
    weight_bytes, n_params = sizes["weight_bytes"], sizes["parameters"]
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(Path(spec["roberta_dir"]) / name, ckpt_dir / name)
    converted = work / "converted"
    shutil.rmtree(converted, ignore_errors=True)
    convert_openflam(ckpt_dir / OPENFLAM_CHECKPOINT, ckpt_dir / "vocab.json",
                     ckpt_dir / "merges.txt", converted)
    return {"weight_bytes": weight_bytes, "parameters": n_params,
            "pth_bytes": (ckpt_dir / OPENFLAM_CHECKPOINT).stat().st_size,
            "safetensors_bytes": (converted / "model.safetensors").stat().st_size}


# -- flam workers ---------------------------------------------------------------------------------
def load_flam(work: Path, precision: str = "fp32"):
    from flamcli.models.int8 import quantize_int8
    from flamcli.models.registry import load_model_directory

    build_s, model = timed(lambda: load_model_directory(work / "converted"))
    if precision == "int8":
        quantize_s, _ = timed(lambda: quantize_int8(model))
        build_s += quantize_s
    return model, build_s


def flam_audio_worker(spec: dict) -> dict:
    import numpy as np
    import torch

    model, build_s = load_flam(Path(spec["work_dir"]), spec.get("precision", "fp32"))
    clips = torch.from_numpy(np.load(spec["clips"])[: spec["batch"]])
    peak = fp32_peak(spec["peak_size"], spec["peak_repeats"]) if spec["peak_size"] else None
    with torch.inference_mode():
        first_s, _ = timed(lambda: model.embed_audio_frames(clips))
        times = [timed(lambda: model.embed_audio_frames(clips))[0]
                 for _ in range(spec["repeats"])]
    return {"build_s": build_s, "first_call_s": first_s, "call_s": times,
            **summarise(times, spec["batch"]), "peak": peak}


def flam_pipeline_worker(spec: dict) -> dict:
    import numpy as np
    import torch

    model, build_s = load_flam(Path(spec["work_dir"]), spec.get("precision", "fp32"))
    clip = torch.from_numpy(np.load(spec["clips"])[:1])
    queries = list(spec["queries"])

    def run():
        with torch.inference_mode():
            text = model.encode_text(queries)
            return model.frame_probabilities(model.embed_audio_frames(clip), text)

    first_s, probs = timed(run)
    times = [timed(run)[0] for _ in range(spec["repeats"])]
    np.save(spec["probs_out"], probs.numpy().astype(np.float32))
    ids, _ = model.tokenizer(queries)
    return {"build_s": build_s, "first_call_s": first_s, "call_s": times,
            **summarise(times, 1), "token_shape": list(ids.shape)}


def flam_load_worker(spec: dict) -> dict:
    """Load the model one way and report wall time and RSS before/after (this process only)."""
    import gc

    import torch  # imported before the baseline: it is not part of the load

    from flamcli.models.convert import load_openflam_directory
    from flamcli.models.registry import load_model_directory

    work = Path(spec["work_dir"])
    gc.collect()
    baseline_peak, baseline_now = peak_rss_mib(), rss_now_mib()
    if spec["source"] == "safetensors":
        wall_s, model = timed(lambda: load_model_directory(work / "converted"))
    else:
        ckpt_dir = work / "checkpoint"
        wall_s, model = timed(lambda: load_openflam_directory(ckpt_dir,
                                                              ckpt_dir / "open_flam_oct17.pth"))
    after_load = {"source": spec["source"], "load_s": wall_s,
                  "baseline_peak_rss_mib": baseline_peak, "baseline_rss_mib": baseline_now,
                  "rss_after_load_mib": rss_now_mib(), "peak_rss_after_load_mib": peak_rss_mib()}
    # safetensors tensors are views of a file mapping: their pages become resident (counted in
    # RSS, shared with the page cache) only when first read. Read every weight once, as a run
    # eventually does, and report the RSS then too.
    tensors = list(model.parameters()) + list(model.buffers())
    with torch.no_grad():
        checksum = sum(float(t.sum()) for t in tensors)  # no dtype conversion: no copies
    return {**after_load, "rss_after_touch_mib": rss_now_mib(),
            "peak_rss_after_touch_mib": peak_rss_mib(), "weights_checksum": checksum,
            "parameters_loaded": sum(p.numel() for p in model.parameters())}


def flam_flops_worker(spec: dict) -> dict:
    """Count on the reference path: FlopCounterMode cannot see oneDNN's or flash-SDPA's ops."""
    import numpy as np
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from flamcli.models import linear

    model, _ = load_flam(Path(spec["work_dir"]))
    clip = torch.from_numpy(np.load(spec["clips"])[:1])
    # nn.Linear's aten GEMMs, which FlopCounterMode counts (oneDNN's op it does not see: the
    # count was 0.92 GFLOP per clip while the flag set here named a module that had moved).
    linear.FORCED = False
    linear.use_onednn.cache_clear()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), counter:
        model.embed_audio_frames(clip)
    by_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    return {"gflop_per_clip": counter.get_total_flops() / 1e9, "gflop_by_op":
            {op: n / 1e9 for op, n in sorted(by_op.items())}}


# Instruction-set caps for a run, honoured by torch's own kernels (ATen), oneDNN and MKL alike:
# "avx2" measures the common laptop and cloud case on any x86 machine that has more.
ISA_CAPS = {"native": {},
            "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                     "MKL_ENABLE_INSTRUCTIONS": "AVX2", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}}


FLAM_WORKERS = {"setup": setup_worker, "audio": flam_audio_worker,
                "pipeline": flam_pipeline_worker, "load": flam_load_worker,
                "flops": flam_flops_worker}


def worker_main(spec: dict) -> int:
    import torch

    torch.set_num_threads(spec["threads"])
    result = FLAM_WORKERS[spec["kind"]](spec)
    result.update(side=spec["side"], kind=spec["kind"], threads=spec["threads"],
                  batch=spec.get("batch", 1), torch_threads=torch.get_num_threads(),
                  cpu_capability=torch.backends.cpu.get_cpu_capability(),
                  peak_rss_mib=peak_rss_mib(), rss_end_mib=rss_now_mib())
    print(json.dumps(result))
    return 0


# -- orchestration --------------------------------------------------------------------------------
def run_worker(spec: dict, args) -> dict:
    """One measurement in a fresh interpreter: flam workers in this python, upstream's in its
    venv; returns the worker's JSON line."""
    label = " ".join(f"{k}={spec[k]}" for k in ("side", "kind", "threads", "batch", "source")
                     if k in spec)
    print(f"  {label} …", file=sys.stderr, flush=True)
    env = dict(os.environ)
    if spec["side"] == "upstream":
        command = [args.upstream_python, str(HERE / "upstream_side.py"), json.dumps(spec)]
        env["HF_HUB_OFFLINE"] = "1"
    else:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
        # The snapshot of flamcli/ first: edits made during the run cannot change it.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.code, env.get("PYTHONPATH")]))
        if spec["side"] == "flam-mkl":
            env["FLAM_ONEDNN_LINEAR"] = "0"
        if spec["side"] == "flam-int8":
            spec = {**spec, "precision": "int8"}
            command[-1] = json.dumps(spec)
    env.update(ISA_CAPS.get(spec.get("isa", "native"), {}))
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"measurement {label} failed (exit {proc.returncode})")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["isa"] = spec.get("isa", "native")
    brief = {k: round(v, 4) for k, v in result.items()
             if k in ("median_s_per_clip", "load_s", "peak_rss_mib", "gflop_per_clip")}
    print(f"    {brief}", file=sys.stderr, flush=True)
    return result


def interleaved(sides: list[str], pairs: int):
    """A B, B A, A B, …: each side goes first equally often, so drift in the machine's load
    does not favour one of them."""
    for pair in range(pairs):
        yield pair, (sides if pair % 2 == 0 else sides[::-1])


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise_audio(runs: list[dict], flops: dict) -> list[dict]:
    """Per thread count and batch: medians over processes (each a median of its calls), and the
    best call of any process; rates and fractions of the fp32 peak measured in those processes.
    """
    rows = []
    upstream_gflop = flops.get("upstream", {}).get("gflop_per_clip")
    flam_gflop = flops.get("flam", {}).get("gflop_per_clip")
    for isa, threads in sorted({(r.get("isa", "native"), r["threads"]) for r in runs}):
        of_isa = [r for r in runs if r.get("isa", "native") == isa]
        peaks = [r["peak"] for r in of_isa if r["threads"] == threads and r.get("peak")]
        peak = {"mkl": med([p.get("mkl_mm_gflops") for p in peaks]),
                "onednn": med([p.get("onednn_gflops") for p in peaks]),
                "mkl_best": max((p.get("mkl_mm_gflops", 0) for p in peaks), default=None),
                "onednn_best": max((p.get("onednn_gflops", 0) for p in peaks), default=None)}
        for batch in sorted({r["batch"] for r in of_isa if r["threads"] == threads}):
            sel = [r for r in of_isa if r["threads"] == threads and r["batch"] == batch]
            by_side = {s: [r for r in sel if r["side"] == s]
                       for s in ("flam", "upstream", "flam-mkl", "flam-int8")}
            row = {"isa": isa, "threads": threads, "batch": batch,
                   **{f"peak_{k}_gflops": v for k, v in peak.items()}}
            for side, side_runs in by_side.items():
                if not side_runs:
                    continue
                name = side.replace("-", "_")
                median_s = med([r["median_s_per_clip"] for r in side_runs])
                best_s = min(r["best_s_per_clip"] for r in side_runs)
                row[f"{name}_s_per_clip"], row[f"{name}_best_s_per_clip"] = median_s, best_s
                gflop = upstream_gflop if side == "upstream" else flam_gflop  # int8: GOP
                if gflop:
                    row[f"{name}_gflops"] = gflop / median_s
                    row[f"{name}_best_gflops"] = gflop / best_s
                    for kind in ("mkl", "onednn"):
                        if peak[kind]:
                            row[f"{name}_frac_peak_{kind}"] = gflop / median_s / peak[kind]
                            row[f"{name}_best_frac_best_peak_{kind}"] = (
                                gflop / best_s / peak[f"{kind}_best"])
                if upstream_gflop:  # the same clip counted as upstream's work
                    row[f"{name}_upstream_equiv_gflops"] = upstream_gflop / median_s
            if by_side["flam"] and by_side["upstream"]:
                row["speedup_vs_upstream"] = row["upstream_s_per_clip"] / row["flam_s_per_clip"]
                row["speedup_best_vs_best"] = (row["upstream_best_s_per_clip"]
                                               / row["flam_best_s_per_clip"])
                row["speedup_pair_ratios"] = [
                    ru["median_s_per_clip"] / rf["median_s_per_clip"]
                    for rf, ru in zip(by_side["flam"], by_side["upstream"])]
            if by_side["flam"] and by_side["flam-int8"]:
                row["int8_speedup_vs_fp32"] = row["flam_s_per_clip"] / row["flam_int8_s_per_clip"]
                row["int8_speedup_best_vs_best"] = (row["flam_best_s_per_clip"]
                                                    / row["flam_int8_best_s_per_clip"])
            rows.append(row)
    return rows


def summarise_pipeline(runs: list[dict]) -> list[dict]:
    rows = []
    for isa, threads in sorted({(r.get("isa", "native"), r["threads"]) for r in runs}):
        sel = [r for r in runs if r["threads"] == threads and r.get("isa", "native") == isa]
        f = [r for r in sel if r["side"] == "flam"]
        u = [r for r in sel if r["side"] == "upstream"]
        i8 = [r for r in sel if r["side"] == "flam-int8"]
        fm, um = med([r["median_s_per_clip"] for r in f]), med([r["median_s_per_clip"] for r in u])
        fb = min((r["best_s_per_clip"] for r in f), default=None)
        ub = min((r["best_s_per_clip"] for r in u), default=None)
        rows.append({"isa": isa, "threads": threads, "flam_s": fm, "upstream_s": um,
                     "flam_best_s": fb, "upstream_best_s": ub,
                     "speedup_vs_upstream": um / fm if fm and um else None,
                     "speedup_best_vs_best": ub / fb if fb and ub else None,
                     "speedup_pair_ratios": [b["median_s_per_clip"] / a["median_s_per_clip"]
                                             for a, b in zip(f, u)],
                     "flam_first_call_s": med([r["first_call_s"] for r in f]),
                     "upstream_first_call_s": med([r["first_call_s"] for r in u]),
                     "flam_token_shape": f[0]["token_shape"] if f else None,
                     "upstream_token_shape": u[0]["token_shape"] if u else None,
                     "max_abs_prob_diff": med([r.get("max_abs_prob_diff") for r in u])})
        if i8:
            im = med([r["median_s_per_clip"] for r in i8])
            rows[-1].update(
                int8_s=im, int8_best_s=min(r["best_s_per_clip"] for r in i8),
                int8_speedup_vs_fp32=fm / im if fm else None,
                int8_speedup_vs_upstream=um / im if um else None,
                int8_max_abs_prob_diff_vs_fp32=max(r["max_abs_prob_diff_vs_fp32"] for r in i8))
    return rows


def summarise_load(runs: list[dict], weight_bytes: int) -> dict:
    out = {"weight_mib": weight_bytes / 2**20}
    for source in ("safetensors", "pth"):
        sel = [r for r in runs if r["source"] == source]
        if not sel:
            continue
        peak = med([r["peak_rss_after_load_mib"] for r in sel])
        increase = med([r["peak_rss_after_load_mib"] - r["baseline_peak_rss_mib"] for r in sel])
        touched = med([r["peak_rss_after_touch_mib"] for r in sel])
        touched_increase = med([r["peak_rss_after_touch_mib"] - r["baseline_peak_rss_mib"]
                                for r in sel])
        out[source] = {"load_s": med([r["load_s"] for r in sel]), "peak_rss_mib": peak,
                       "baseline_peak_rss_mib": med([r["baseline_peak_rss_mib"] for r in sel]),
                       "peak_increase_mib": increase,
                       "rss_after_load_mib": med([r["rss_after_load_mib"] for r in sel]),
                       "peak_over_weights": peak * 2**20 / weight_bytes,
                       "increase_over_weights": increase * 2**20 / weight_bytes,
                       "peak_rss_after_touch_mib": touched,
                       "peak_increase_after_touch_mib": touched_increase,
                       "increase_after_touch_over_weights": touched_increase * 2**20 / weight_bytes,
                       "peak_after_touch_over_weights": touched * 2**20 / weight_bytes}
    if "safetensors" in out and "pth" in out:
        out["pth_over_safetensors_load_time"] = out["pth"]["load_s"] / out["safetensors"]["load_s"]
        out["pair_ratios"] = [p["load_s"] / s["load_s"] for s, p in zip(
            [r for r in runs if r["source"] == "safetensors"],
            [r for r in runs if r["source"] == "pth"])]
    return out


def markdown(results: dict) -> str:
    def fmt(v, digits=3):
        return "–" if v is None else f"{v:.{digits}f}"

    lines = []
    flops = results.get("flops", {})
    if flops:
        lines += ["FLOPs per 10 s clip (FlopCounterMode): " + ", ".join(
            f"{side} {v['gflop_per_clip']:.2f} GFLOP" for side, v in flops.items()), ""]
    if results.get("audio_summary"):
        lines += ["Audio branch, s per 10 s clip: median over processes / best call of any.", "",
                  "| ISA | threads | batch | upstream | flam | flam, MKL GEMMs | speed-up median "
                  "(best) | flam GFLOP/s median (best) | fp32 peak GFLOP/s: MKL mm, oneDNN "
                  "| flam / oneDNN peak median (best) | upstream / MKL peak |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in results["audio_summary"]:
            def pair(side):
                return (f"{fmt(r.get(f'{side}_s_per_clip'))} / "
                        f"{fmt(r.get(f'{side}_best_s_per_clip'))}")

            lines.append(
                f"| {r.get('isa', 'native')} | {r['threads']} | {r['batch']} | {pair('upstream')} | {pair('flam')} "
                f"| {pair('flam_mkl')} | **{fmt(r.get('speedup_vs_upstream'), 2)}x** "
                f"({fmt(r.get('speedup_best_vs_best'), 2)}x) "
                f"| {fmt(r.get('flam_gflops'), 0)} ({fmt(r.get('flam_best_gflops'), 0)}) "
                f"| {fmt(r['peak_mkl_gflops'], 0)}, {fmt(r['peak_onednn_gflops'], 0)} "
                f"| {fmt(r.get('flam_frac_peak_onednn'), 2)} "
                f"({fmt(r.get('flam_best_frac_best_peak_onednn'), 2)}) "
                f"| {fmt(r.get('upstream_frac_peak_mkl'), 2)} |")
        lines.append("")
        int8_rows = [r for r in results["audio_summary"] if r.get("int8_speedup_vs_fp32")]
        if int8_rows:
            lines += ["--precision int8 (audio side's Linear layers in int8), s per 10 s clip: "
                      "median over processes / best call of any.", "",
                      "| ISA | threads | batch | flam fp32 | flam int8 | int8 speed-up median "
                      "(best) | int8 vs upstream median |", "|---|---:|---:|---:|---:|---:|---:|"]
            for r in int8_rows:
                vs_upstream = (r["upstream_s_per_clip"] / r["flam_int8_s_per_clip"]
                               if r.get("upstream_s_per_clip") else None)
                lines.append(
                    f"| {r.get('isa', 'native')} | {r['threads']} | {r['batch']} "
                    f"| {fmt(r['flam_s_per_clip'])} / {fmt(r['flam_best_s_per_clip'])} "
                    f"| {fmt(r['flam_int8_s_per_clip'])} / {fmt(r['flam_int8_best_s_per_clip'])} "
                    f"| **{fmt(r['int8_speedup_vs_fp32'], 2)}x** "
                    f"({fmt(r['int8_speedup_best_vs_best'], 2)}x) | {fmt(vs_upstream, 2)}x |")
            lines.append("")
    if results.get("pipeline_summary"):
        lines += ["One clip + 10 queries, s: median over processes / best call of any.", "",
                  "| ISA | threads | upstream | flam | speed-up median (best) | upstream tokens "
                  "| flam tokens | max abs prob diff |", "|---|---:|---:|---:|---:|---|---|---:|"]
        for r in results["pipeline_summary"]:
            lines.append(f"| {r.get('isa', 'native')} | {r['threads']} | {fmt(r['upstream_s'])} / {fmt(r['upstream_best_s'])} "
                         f"| {fmt(r['flam_s'])} / {fmt(r['flam_best_s'])} "
                         f"| **{fmt(r['speedup_vs_upstream'], 2)}x** "
                         f"({fmt(r['speedup_best_vs_best'], 2)}x) "
                         f"| {r['upstream_token_shape']} | {r['flam_token_shape']} "
                         f"| {fmt(r['max_abs_prob_diff'], 7)} |")
        int8_rows = [r for r in results["pipeline_summary"] if r.get("int8_s")]
        if int8_rows:
            lines += ["", "The same with --precision int8:", "",
                      "| ISA | threads | flam int8 | vs flam fp32 | vs upstream "
                      "| max abs prob diff vs fp32 |", "|---|---:|---:|---:|---:|---:|"]
            for r in int8_rows:
                lines.append(f"| {r['isa']} | {r['threads']} | {fmt(r['int8_s'])} / "
                             f"{fmt(r['int8_best_s'])} | {fmt(r['int8_speedup_vs_fp32'], 2)}x "
                             f"| {fmt(r['int8_speedup_vs_upstream'], 2)}x "
                             f"| {fmt(r['int8_max_abs_prob_diff_vs_fp32'], 4)} |")
        lines.append("")
    load = results.get("load_summary")
    if load and "safetensors" in load:
        lines += [f"Weights: {load['weight_mib']:.0f} MiB.", "",
                  "| source | load s | baseline peak RSS MiB | peak RSS MiB | increase MiB "
                  "| peak / weights | increase / weights | after reading every weight: peak MiB "
                  "| increase / weights |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for source in ("safetensors", "pth"):
            if source in load:
                s = load[source]
                lines.append(f"| {source} | {fmt(s['load_s'], 2)} "
                             f"| {s['baseline_peak_rss_mib']:.0f} | {s['peak_rss_mib']:.0f} "
                             f"| {s['peak_increase_mib']:.0f} | {fmt(s['peak_over_weights'], 2)} "
                             f"| {fmt(s['increase_over_weights'], 2)} "
                             f"| {s['peak_rss_after_touch_mib']:.0f} "
                             f"| {fmt(s['increase_after_touch_over_weights'], 2)} |")
        if "pth_over_safetensors_load_time" in load:
            lines += ["", f".pth / safetensors load time: "
                          f"**{load['pth_over_safetensors_load_time']:.2f}x**"]
    return "\n".join(lines)


def machine() -> dict:
    import torch

    cpu, flags = cpu_info()
    return {"cpu": cpu, "cores": os.cpu_count(), "avx512f": "avx512f" in flags,
            "python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "date": _dt.date.today().isoformat()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog=__doc__.split("\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 thread, batch 1, 1 pair, fewer repeats, no ablation")
    ap.add_argument("--sections", default="flops,audio,pipeline,load",
                    help="comma list of flops,audio,pipeline,load (default: all)")
    ap.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    ap.add_argument("--batches", default="1,8", help="audio batch sizes (default 1,8)")
    ap.add_argument("--pairs", type=int, default=3,
                    help="interleaved flam/upstream process pairs per setting (default 3)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per process (default 3)")
    ap.add_argument("--peak-size", type=int, default=4096,
                    help="matmul size for the fp32 peak (0 = skip; default 4096)")
    ap.add_argument("--ablation", action=argparse.BooleanOptionalAction, default=True,
                    help="also time flam with MKL GEMMs (FLAM_ONEDNN_LINEAR=0) at the largest "
                         "batch (default on; off with --quick)")
    ap.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True,
                    help="also time flam with --precision int8 (audio and pipeline; default on)")
    ap.add_argument("--isa", default="native,avx2",
                    help="instruction-set settings, side by side: native (what the CPU has) and "
                         "avx2 (capped through ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA and "
                         "MKL_ENABLE_INSTRUCTIONS; the common laptop and cloud case)")
    ap.add_argument("--upstream-python", default="/tmp/upstream-venv/bin/python")
    ap.add_argument("--roberta-dir", default="/tmp/roberta-files",
                    help="vocab.json + merges.txt of roberta-base (both sides' tokenizer)")
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/flam-bench/openflam"))
    ap.add_argument("--out", type=Path, default=None,
                    help="results JSON (default bench/results/openflam.json, -quick with --quick)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(json.loads(args.worker))

    if args.quick:
        args.threads, args.batches, args.pairs, args.repeats = "1", "1", 1, 2
        args.ablation = False
    out_path = args.out or HERE / "results" / ("openflam-quick.json" if args.quick
                                               else "openflam.json")
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    threads = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    isas = [i.strip() for i in args.isa.split(",") if i.strip()]
    unknown = set(isas) - set(ISA_CAPS)
    if unknown:
        ap.error(f"--isa: {', '.join(sorted(unknown))} (choose from {', '.join(ISA_CAPS)})")
    if not Path(args.upstream_python).exists() and set(sections) & {"audio", "pipeline",
                                                                     "flops"}:
        ap.error(f"no upstream venv at {args.upstream_python} (see tests/reference/make_golden.py)")
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    args.code, provenance = snapshot_code(work)
    started = time.time()

    base = {"work_dir": str(work), "clips": str(work / "clips.npy"),
            "checkpoint": str(work / "checkpoint" / "open_flam_oct17.pth"),
            "roberta_dir": args.roberta_dir, "repeats": args.repeats,
            "peak_size": args.peak_size, "peak_repeats": 2}
    print("setup: clips, seeded checkpoint, safetensors conversion …", file=sys.stderr)
    setup = run_worker({**base, "side": "flam", "kind": "setup", "threads": max(threads)}, args)
    results = {"machine": machine(), "provenance": provenance, "setup": setup,
               "args": {k: str(v) for k, v in vars(args).items() if k != "worker"},
               "queries": QUERIES, "runs": []}

    def save():
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=1) + "\n")

    if "flops" in sections:
        results["flops"] = {side: run_worker({**base, "side": side, "kind": "flops",
                                              "threads": max(threads)}, args)
                            for side in ("flam", "upstream")}
        save()
    if "audio" in sections:
        audio_runs = []
        for isa, t in [(isa, t) for isa in isas for t in threads]:
            for batch in batches:
                sides = ["flam", "upstream"]
                if args.ablation and batch == max(batches):
                    sides.append("flam-mkl")
                if args.int8:
                    sides.append("flam-int8")
                for pair, order in interleaved(sides, args.pairs):
                    for side in order:
                        r = run_worker({**base, "side": side, "kind": "audio", "threads": t,
                                        "batch": batch, "isa": isa}, args)
                        audio_runs.append({**r, "pair": pair})
                        save()
        results["runs"] += audio_runs
        results["audio_summary"] = summarise_audio(audio_runs, results.get("flops", {}))
        save()
    if "pipeline" in sections:
        pipeline_runs = []
        for isa, t in [(isa, t) for isa in isas for t in threads]:
            sides = ["flam", "upstream"] + (["flam-int8"] if args.int8 else [])
            for pair, order in interleaved(sides, args.pairs):
                pair_runs = {}
                for side in order:
                    probs_out = work / f"probs-{side}.npy"
                    pair_runs[side] = run_worker(
                        {**base, "side": side, "kind": "pipeline", "threads": t, "isa": isa,
                         "queries": QUERIES, "probs_out": str(probs_out),
                         "repeats": max(args.repeats, 5)}, args)
                import numpy as np

                diff = float(np.abs(np.load(work / "probs-flam.npy")
                                    - np.load(work / "probs-upstream.npy")).max())
                pair_runs["upstream"]["max_abs_prob_diff"] = diff
                if "flam-int8" in pair_runs:
                    pair_runs["flam-int8"]["max_abs_prob_diff_vs_fp32"] = float(np.abs(
                        np.load(work / "probs-flam-int8.npy")
                        - np.load(work / "probs-flam.npy")).max())
                for side in order:
                    pipeline_runs.append({**pair_runs[side], "pair": pair})
                save()
        results["runs"] += pipeline_runs
        results["pipeline_summary"] = summarise_pipeline(pipeline_runs)
        save()
    if "load" in sections:
        load_runs = []
        for pair, order in interleaved(["safetensors", "pth"], max(args.pairs, 3)):
            for source in order:
                r = run_worker({**base, "side": "flam", "kind": "load", "threads": 1,
                                "source": source}, args)
                load_runs.append({**r, "pair": pair})
            save()
        results["runs"] += load_runs
        results["load_summary"] = summarise_load(load_runs, setup["weight_bytes"])
    results["wall_s"] = time.time() - started
    results["markdown"] = markdown(results)
    save()
    print(results["markdown"])
    print(f"\nwrote {out_path} ({results['wall_s'] / 60:.1f} min)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
