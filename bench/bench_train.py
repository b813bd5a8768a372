#!/usr/bin/env python
"""Benchmark ``flam train``: debug-config clips/s on CPU, and ring vs all-gather loss memory.

1. **Throughput**: ``flam train`` (the library call) on the debug config, CPU, batch
   ``--batch-size`` from a tiny rendered `flam synth` folder (tones + noise, 16 kHz); the first
   ``--warmup`` steps are dropped and the median clips/s of the rest is reported.
2. **Loss memory**: world sizes 2 and 4, gloo on 127.0.0.1, each rank one process holding
   random normalised frames [N, T, D] and text blocks [5N, D] (leaf tensors, so only the loss
   is measured). The SED + sigmoid loss runs forward + backward, three ways, each in fresh
   processes: ``ring`` (flamcli.training: a block at a time, logits recomputed in backward),
   ``ring-nockpt`` (the ring with autograd keeping every hop's logits) and ``allgather``
   (texts all-gathered with gradients, local frames × all texts in one go, the usual
   implementation). Peak memory = the rank's peak RSS during the loss minus its RSS just
   before it, with VmHWM reset through /proc/self/clear_refs after a small warm-up run and
   glibc's mmap threshold fixed at 64 KiB (freed tensors are returned to the OS).

Examples::

    python bench/bench_train.py --quick   # → bench/results/train-quick.json
    python bench/bench_train.py           # → bench/results/train.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def hwm_mb() -> float:
    """Peak RSS since the last reset_peak() (VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5" resets VmHWM to the current RSS
        f.write("5")


# ---------------------------------------------------------------------------------------------
# 2. loss memory


def _memory_worker(rank, world, rendezvous, mode, n, t, d, result_dir):
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from flamcli.training import FlamLoss, LossConfig, LossInputs, build_text_slots
    from flamcli.training import losses as L
    from flamcli.training import ring

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=world)

    def run(n):
        g = torch.Generator().manual_seed(rank)
        frames = F.normalize(torch.randn(n, t, d, generator=g), dim=-1).requires_grad_()
        glob = F.normalize(torch.randn(n, d, generator=g), dim=-1).requires_grad_()
        labels = [{f"r{rank}c{i}e{k}": [[0.0, 5.0]] for k in range(4)} for i in range(n)]
        negs = [[f"r{rank}c{i}neg"] for i in range(n)]
        slots = build_text_slots(labels, negs, t, 10.0)
        c = slots.capacity
        emb = F.normalize(torch.randn(c, d, generator=g), dim=-1).requires_grad_()
        alpha = torch.full((c,), 10.0, requires_grad=True)
        beta = torch.full((c,), -8.0, requires_grad=True)
        inputs = LossInputs(frames, glob, emb, alpha, beta, slots)
        scale = torch.tensor(2.3, requires_grad=True)
        dist.barrier()
        reset_peak()
        before = rss_mb()
        start = time.perf_counter()
        if mode in ("ring", "ring-nockpt"):
            loss_fn = FlamLoss(LossConfig(checkpoint_blocks=(mode == "ring"), prior_weight=0.0))
            total = loss_fn(inputs, scale).total
        else:  # all-gather: every rank gathers all text blocks (with gradients) at once
            loss_fn = FlamLoss(LossConfig(prior_weight=0.0))
            block = torch.cat([emb, alpha[:, None], beta.detach()[:, None]], 1)
            blocks = ring.all_gather_grad(block, None)
            all_ids = ring.all_gather_plain(slots.ids)
            canonical = ring.canonical_slots(all_ids)
            include = torch.cat([slots.text_mask if s == rank else
                                 canonical[s] & ~torch.isin(all_ids[s], slots.ids)
                                 for s in range(world)])
            targets = torch.zeros(n, world * c, t)
            targets[:, rank * c:(rank + 1) * c] = slots.targets
            present = torch.zeros(n, world * c)
            present[:, rank * c:(rank + 1) * c] = slots.present
            sed, sig = L._block_terms(frames, glob, slots.audio_mask, targets, present, blocks,
                                      include[None, :].expand(n, -1), scale.exp(),
                                      loss_fn.global_bias, True)
            total = sed + sig
        total.backward()
        dist.barrier()
        return time.perf_counter() - start, before

    run(2)  # warm-up: lazy initialisation (gloo pairs, kernels) is not the loss's memory
    seconds, before = run(n)
    result = {"rank": rank, "peak_extra_mb": hwm_mb() - before, "seconds": seconds}
    Path(result_dir, f"{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def measure_memory(world: int, mode: str, n: int, t: int, d: int) -> dict:
    import torch.multiprocessing as mp

    # A fixed mmap threshold: freed tensors go back to the OS, so RSS tracks live memory.
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_memory_worker, args=(world, os.path.join(tmp, "rendezvous"), mode, n, t, d, tmp),
                 nprocs=world)
        ranks = [json.loads(Path(tmp, f"{r}.json").read_text()) for r in range(world)]
    return {"world": world, "mode": mode, "clips_per_rank": n, "text_slots_per_rank": 5 * n,
            "frames": t, "dim": d,
            "peak_extra_mb_max": max(r["peak_extra_mb"] for r in ranks),
            "peak_extra_mb_ranks": [round(r["peak_extra_mb"], 1) for r in ranks],
            "seconds": max(r["seconds"] for r in ranks)}


# ---------------------------------------------------------------------------------------------
# 1. throughput


def measure_throughput(steps: int, batch: int, warmup: int, threads: int) -> dict:
    import torch

    from benchlib import tone_corpus

    from flamcli.synth import SedRecipe, index_directory, read_manifest, synthesize, write_manifest
    from flamcli.training.trainer import TrainConfig, train

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = tone_corpus(Path(tmp) / "corpus")
        clips, _ = index_directory(corpus)
        manifest = write_manifest(clips, corpus / "corpus.csv")
        synthesize(read_manifest(manifest), SedRecipe(sample_rate=16000), Path(tmp) / "mix",
                   32, seed=0)
        cfg = TrainConfig(data=str(Path(tmp) / "mix"), output=str(Path(tmp) / "out"),
                          config="debug", max_steps=steps, batch_size=batch,
                          checkpoint_every=10 ** 6, device="cpu")
        start = time.perf_counter()
        train(cfg, log=lambda m: None)
        wall = time.perf_counter() - start
        rows = [json.loads(x) for x in (Path(tmp) / "out" / "metrics.jsonl").read_text().split("\n")
                if x]
    rates = [r["clips_per_s"] for r in rows[warmup:]]
    return {"config": "debug", "device": "cpu", "threads": threads, "batch_size": batch,
            "steps": steps, "warmup_steps_dropped": warmup,
            "clips_per_s_median": statistics.median(rates), "clips_per_s_max": max(rates),
            "wall_s_including_setup_and_save": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--clips-per-rank", type=int, default=64)
    parser.add_argument("--sections", default="throughput,memory")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    steps = 5 if args.quick else args.steps
    n = 16 if args.quick else args.clips_per_rank
    out = args.output or REPO / "bench" / "results" / ("train-quick.json" if args.quick
                                                      else "train.json")
    results = {"machine": {"cpu": platform.processor() or platform.machine(),
                           "cores": os.cpu_count(), "python": platform.python_version()}}
    import torch

    results["machine"]["torch"] = torch.__version__
    sections = args.sections.split(",")
    if "throughput" in sections:
        results["throughput"] = measure_throughput(steps, args.batch_size, 2, args.threads)
        print(json.dumps(results["throughput"]), flush=True)
    if "memory" in sections:
        results["memory"] = []
        for world in (2, 4):
            for mode in ("ring", "ring-nockpt", "allgather"):
                row = measure_memory(world, mode, n, 32, 512)
                results["memory"].append(row)
                print(json.dumps(row), flush=True)
        for world in (2, 4):
            by = {r["mode"]: r["peak_extra_mb_max"] for r in results["memory"]
                  if r["world"] == world}
            results[f"ring_over_allgather_world{world}"] = by["ring"] / by["allgather"]
        results["requirement_ring_at_most_half_at_world4"] = (
            results["ring_over_allgather_world4"] <= 0.5)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
