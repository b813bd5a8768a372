"""How fast `flam ground` answers a NEW query about a 1-hour recording whose frame embeddings
are cached (`--cache DIR`), compared with answering it from the audio.

    python bench/bench_ground.py                      # base architecture (random weights), 1 h
    python bench/bench_ground.py --model debug        # the tiny debug model
    python bench/bench_ground.py --model tiny         # flam-tiny, the bundled model
    python bench/bench_ground.py --seconds 600        # a shorter file

Steps, in one process with the model loaded once (as a library user or a server would):
1. cold: `ground(model, [file], [q0], cache_dir=DIR)` on an empty cache: decodes the file,
   runs the audio tower on every window and stores the frame embeddings (timed; skipped
   with --cache-dir pointing at a filled cache, which also warms the model up);
2. warm: for each of several NEW queries, `ground(..., [q_i], cache_dir=DIR)` (timed each):
   text tower + reading the cache + scoring + events; the audio is not decoded;
3. the scores of a warm answer are checked against a run without the cache (must be equal).
The CLI's own start-up (Python, imports, model load) is measured separately with
`flam ground --cache` in a fresh process and reported beside it.
Results: bench/results/ground.json; the audio is made by bench_detect.py's generator.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_detect import build_model, machine, make_audio

HERE = Path(__file__).resolve().parent


NEW_QUERIES = ["a car horn honks", "glass breaking", "a person speaking", "birds chirping",
               "a door slams shut"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["base", "debug", "tiny"], default="base")
    ap.add_argument("--seconds", type=float, default=3600.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--audio-dir", type=Path, default=Path("/tmp/flam-bench"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ground.json")
    ap.add_argument("--cache-dir", type=Path,
                    help="Reuse this cache (skips the cold pass when it already holds the file).")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    import flamcli
    from flamcli.grounding import ground

    torch.set_num_threads(args.threads)
    label = f"{int(args.seconds)}s"
    audio = make_audio(args.audio_dir / f"bench-{label}-44k1-stereo.wav", args.seconds)
    model = build_model(args.model)
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="flam-ground-cache-"))
    reused = bool(list(cache.rglob("*.npz")))

    start = time.perf_counter()
    ground(model, [audio], ["dog barks"], cache_dir=cache)  # cold unless the cache was reused
    cold = None if reused else time.perf_counter() - start
    entry_bytes = sum(p.stat().st_size for p in cache.rglob("*.npz"))

    warm = []
    for query in NEW_QUERIES:
        start = time.perf_counter()
        [result] = ground(model, [audio], [query], cache_dir=cache)
        warm.append(time.perf_counter() - start)
        assert result.ok, result.error

    # Same answer as from the audio (identical scores, checked on the last query).
    [from_cache] = flamcli.detect(model, [audio], [NEW_QUERIES[-1]], cache_dir=cache)
    [from_audio] = flamcli.detect(model, [audio], [NEW_QUERIES[-1]])
    identical = bool(np.array_equal(from_cache.scores, from_audio.scores))

    cli = None
    names = {"debug": "debug", "tiny": "flam-tiny"}  # base has no loadable name without weights
    if args.model in names:
        env = dict(os.environ, FLAM_NO_PROGRESS="1")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "flamcli", "ground", str(audio), "a siren",
                        "--model", names[args.model], "--cache", str(cache), "--quiet",
                        "--threads", str(args.threads)], env=env, capture_output=True)
        cli = time.perf_counter() - start

    result = {
        "command": "python bench/bench_ground.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine(), "model": args.model, "threads": args.threads,
        "audio_seconds": args.seconds, "cold_s": None if cold is None else round(cold, 3),
        "cache_entry_mib": round(entry_bytes / 2**20, 1),
        "warm_s": [round(w, 3) for w in warm], "warm_median_s": round(sorted(warm)[len(warm) // 2], 3),
        "warm_max_s": round(max(warm), 3), "identical_scores": identical,
        "cli_fresh_process_s": None if cli is None else round(cli, 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(args.out.read_text()) if args.out.exists() else {}
    existing[f"{args.model}-{label}"] = result
    args.out.write_text(json.dumps(existing, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
