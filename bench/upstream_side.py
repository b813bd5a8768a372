"""The upstream OpenFLAM side of ``bench_openflam.py``: run ONLY by /tmp/upstream-venv's python.

Upstream ``openflam`` 1.0.2 is licensed for non-commercial research only; flam never imports it.
This helper is the bench's only contact with it and runs in the separate virtual environment
built as described in ``tests/reference/make_golden.py`` (whose offline, monkeypatched
``build_upstream`` it reuses: RoBERTa from a hand-written config, the tokenizer from
``--roberta-dir``, the checkpoint download pointed at a local ``.pth``).

Usage (done by bench_openflam.py, one measurement per process)::

    /tmp/upstream-venv/bin/python bench/upstream_side.py '{"kind": "audio", ...}'

It prints one JSON line with the result, like bench_openflam.py's own workers.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bench_openflam import fp32_peak, summarise, timed
from benchlib import rss_now_mib

# The one bench script that reaches into tests/: it runs in the upstream venv, where flamcli is
# not installed, and the offline build of upstream's model is the parity harness's
# (make_golden.build_upstream), which must stay one piece of code so that the speed and the
# parity comparisons run the same upstream model.
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests" / "reference"))


def build(spec: dict):
    from make_golden import build_upstream  # noqa: E402  (imports upstream lazily)

    start = time.perf_counter()
    flam = build_upstream(Path(spec["roberta_dir"]), Path(spec["checkpoint"]), attn="sdpa")
    return flam, time.perf_counter() - start


def audio(spec: dict) -> dict:
    """Upstream's audio branch (``get_local_audio_features``: HTSAT + projection + normalise)."""
    import numpy as np
    import torch

    flam, build_s = build(spec)
    clips = torch.from_numpy(np.load(spec["clips"])[: spec["batch"]])
    peak = fp32_peak(spec["peak_size"], spec["peak_repeats"]) if spec["peak_size"] else None
    with torch.inference_mode():
        first_s, _ = timed(lambda: flam.get_local_audio_features(clips))
        times = [timed(lambda: flam.get_local_audio_features(clips))[0]
                 for _ in range(spec["repeats"])]
    return {"build_s": build_s, "first_call_s": first_s, "call_s": times,
            **summarise(times, spec["batch"]), "peak": peak}


def pipeline(spec: dict) -> dict:
    """One clip and the queries through upstream's public API: audio + text + scores."""
    import numpy as np
    import torch

    flam, build_s = build(spec)
    clip = torch.from_numpy(np.load(spec["clips"])[:1])
    queries = list(spec["queries"])

    def run():
        return flam.get_local_similarity(clip, queries, method="unbiased", cross_product=True)

    first_s, probs = timed(run)
    times = [timed(run)[0] for _ in range(spec["repeats"])]
    np.save(spec["probs_out"], probs.numpy().astype(np.float32))
    tokens = flam.model.tokenize(queries)["input_ids"]
    return {"build_s": build_s, "first_call_s": first_s, "call_s": times,
            **summarise(times, 1), "token_shape": list(tokens.shape)}


def flops(spec: dict) -> dict:
    """FLOPs of one clip through upstream's audio branch, counted by FlopCounterMode."""
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    flam, _ = build(spec)
    clip = torch.from_numpy(np.load(spec["clips"])[:1])
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        flam.get_local_audio_features(clip)
    by_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    return {"gflop_per_clip": counter.get_total_flops() / 1e9, "gflop_by_op":
            {op: n / 1e9 for op, n in sorted(by_op.items())}}


def main() -> int:
    spec = json.loads(sys.argv[1])
    import torch

    torch.set_num_threads(spec["threads"])
    result = {"audio": audio, "pipeline": pipeline, "flops": flops}[spec["kind"]](spec)
    import resource

    result.update(side="upstream", kind=spec["kind"], threads=spec["threads"],
                  batch=spec.get("batch", 1), torch_threads=torch.get_num_threads(),
                  peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  rss_end_mib=rss_now_mib())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
