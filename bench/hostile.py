#!/usr/bin/env python
"""Replay hostile and careless inputs against the installed `flam` and check each answer.

Every case runs the real command in a scratch folder and states what a user is promised: the
exit code, one clear `error:` line (never a traceback or an "internal error"), and what must be
left on disk. The same cases are tests in tests/test_hostile.py and tests/test_robust_*.py;
this script lets a reviewer replay them, add their own, and see the answers side by side.

    python bench/hostile.py              # all cases, a table on stdout, exit 1 if any fails
    python bench/hostile.py -k stderr    # the cases whose name holds "stderr"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf


@dataclass
class Case:
    name: str
    command: str  # bash, run in the scratch folder; `flam` is this Python's flam
    codes: tuple[int, ...]  # accepted exit codes
    says: str = ""  # text the stderr must hold
    check: str = ""  # a bash test that must succeed afterwards (e.g. the device is intact)


def prepare(root: Path) -> None:
    rng = np.random.default_rng(0)
    sf.write(root / "good.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    os.symlink("loop.wav", root / "loop.wav")
    os.mkfifo(root / "fifo.wav")
    (root / "deep.json").write_text("[" * 100_000)
    (root / "truth.json").write_text(json.dumps(
        [{"audio_path": "good.wav", "caption": "dog", "annotations": [[0.1, 0.5]]}]))
    (root / "conflict.jsonl").write_text(
        '{"audio_path": "good.wav", "caption": "dog", "annotations": [[0.1, 0.5]]}\n'
        '{"audio_path": "good.wav", "caption": "dog", "annotations": []}\n')
    (root / "bad.scores.tsv").write_text("onset\toffset\tdog\n0\t1\t2.5\n")
    (root / "truth.tsv").write_text("filename\tonset\toffset\tevent_label\nbad\t0\t0.5\tdog\n")
    (root / "dur.tsv").write_text("filename\tduration\nbad\t1\n")
    (root / "big.json").write_text(json.dumps({"recipe": "sed", "events": [100000, 100000]}))
    (root / "missing.csv").write_text("path,kind,label\nmissing.wav,event,dog\n")
    (root / "empty").mkdir()
    (root / "real.json").write_text("{}")
    os.symlink("real.json", root / "link.json")
    os.mkfifo(root / "out.fifo")
    (root / "q.txt").write_text("\n".join(f"query {n} " + "z" * 80 for n in range(2000)))


CASES = [
    Case("a symlink loop among inputs", "flam detect loop.wav good.wav dog -m debug", (3,),
         "a symbolic link loop"),
    Case("a FIFO as input", "flam detect fifo.wav good.wav dog -m debug", (3,), "not a regular file"),
    Case("/dev/zero as input", "flam detect /dev/zero good.wav dog -m debug", (3,), "not a regular file"),
    Case("/dev/urandom as input", "flam detect /dev/urandom dog -m debug", (3,), "not a regular file"),
    Case("a missing name holding a newline", "flam detect $'x\\nerror: fake.wav' dog -m debug", (3,),
         "x\\nerror: fake.wav: no such file"),
    Case("'-' twice", "echo good.wav | flam detect - - dog -m debug", (2,), "given twice"),
    Case("a NUL byte in a query", "flam detect good.wav $'dog\\x01barks' -m debug -t 0", (0,),
         "control characters replaced"),
    Case("--median-filter 1e9", "flam detect good.wav dog -m debug --median-filter 1000000000", (2,),
         "--median-filter"),
    Case("--batch-size past 64 bits", "flam detect good.wav dog -m debug --batch-size 99999999999999999999999",
         (2,), "--batch-size"),
    Case("--overlap 9.99", "flam detect good.wav dog -m debug --overlap 9.99", (2,), "rounds to 32 frames"),
    Case("--revision ../..", "flam detect good.wav dog -m debug --revision ../..", (2,), "not a Hub revision"),
    Case("train --lr 1e300", "flam train --data empty --output t --lr 1e300", (2,), "--lr"),
    Case("train --data an empty folder", "flam train --data empty --output t", (2,),
         "not a `flam synth` output folder"),
    Case("eval ground: JSON 100000 deep", "flam eval ground -g truth.json --predictions deep.json", (3,),
         "nested too deeply"),
    Case("eval ground: two answers to one question",
         "flam eval ground -g truth.json --predictions conflict.jsonl", (3,), "differently; keep one"),
    Case("eval sed: a score of 2.5", "flam eval sed --scores bad.scores.tsv -g truth.tsv -d dur.tsv", (3,),
         "not a probability"),
    Case("recipe: 100000 events", "flam synth sed missing.csv -o s --recipe big.json -n 1", (2,),
         "at most 60 fit"),
    Case("manifest: a missing file", "flam synth sed missing.csv -o s -n 1", (2, 3), "missing.wav: no such file"),
    Case("-o /dev/full", "flam synth recipe sed -o /dev/full", (3,), "/dev/full: No space left",
         "test -c /dev/full"),
    Case("-o a FIFO", "(cat out.fifo > fifo.txt &) ; flam synth recipe sed -o out.fifo", (0,), "",
         "test -p out.fifo && sleep 0.5 && grep -q recipe fifo.txt"),
    Case("-o a symlink", "flam synth recipe sed -o link.json", (0,), "",
         "test -L link.json && grep -q recipe real.json"),
    Case("-o a folder", "flam synth recipe sed -o empty", (3,), "Is a directory"),
    Case("stdout closed", "flam detect good.wav dog -m debug >&-", (3,), "standard output"),
    Case("stdout on a full disk", "flam detect good.wav dog -m debug -t 0 > /dev/full", (3,),
         "could not write"),
    Case("stderr closed", "flam ground good.wav dog -m debug 2>&-", (3,)),
    Case("stderr full", "flam ground good.wav dog -m debug 2>/dev/full", (3,)),
    Case("stdout read by head", "flam detect good.wav dog -m debug -t 0 -f scores | head -1", (0,)),
    Case("2000 long queries with --quiet",
         "flam detect good.wav --queries q.txt -m debug -o o2k --quiet 2> err.txt; test ! -s err.txt",
         (0,)),
]


def run(case: Case, root: Path, flam: str) -> tuple[bool, int, str, float]:
    command = case.command.replace("flam ", flam + " ")
    began = time.monotonic()
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], cwd=root, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "FLAM_NO_PROGRESS": "1"})
    seconds = time.monotonic() - began
    code = done.returncode
    if "| head" in case.command:  # the pipeline's status is head's or flam's 141
        code = 0 if code in (0, 141) else code
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    ok = (code in case.codes and case.says in done.stderr and "Traceback" not in done.stderr
          and "internal error" not in done.stderr and len(errors) <= 1)
    if ok and case.check:
        ok = subprocess.run(["bash", "-c", case.check], cwd=root).returncode == 0
    first = (errors or done.stderr.strip().splitlines() or [""])[0]
    return ok, code, first, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", default="", help="only cases whose name holds this text")
    args = parser.parse_args()
    flam = " ".join(shlex.quote(p) for p in (sys.executable, "-m", "flamcli"))
    failures = 0
    print("| case | exit | expected | first stderr line | seconds | ok |\n|---|---:|---|---|---:|---|")
    with tempfile.TemporaryDirectory(prefix="flam-hostile-") as scratch:
        root = Path(scratch)
        prepare(root)
        for case in CASES:
            if args.k not in case.name:
                continue
            ok, code, first, seconds = run(case, root, flam)
            failures += not ok
            shown = first.replace("|", "\\|")[:110]
            print(f"| {case.name} | {code} | {'/'.join(map(str, case.codes))} | {shown} | "
                  f"{seconds:.1f} | {'yes' if ok else '**NO**'} |")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
