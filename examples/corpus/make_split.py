#!/usr/bin/env python3
"""val7.csv / train4.csv / val4.csv from manifest.csv (run in the corpus folder, or give it as the argument).

val7   = the manifest rows whose sha256 is in run 7's validation-clips.csv.
train4 = first-batch clips (24 Debian + ovos + espeak-ng) not in val7
         + the training part of flam's split_clips over the second-batch clips alone.
val4   = val7 + the validation part of that split (fraction 0.15, seed 0).
Rows are copied verbatim from manifest.csv (same header, paths relative to this folder).
"""
import collections
import csv
import io
import sys
from pathlib import Path

from flamcli.synth.corpus import read_manifest, split_clips

HERE = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else Path.cwd()
RUN7 = Path(__file__).resolve().parents[2] / "bench" / "results" / "flam-tiny-run7"
PACKAGES_TXT = Path("/work/shared/corpus/packages.txt")

names = [l.split("#", 1)[0].strip() for l in PACKAGES_TXT.read_text().splitlines()]
names = [n.split()[0] for n in names if n]
SECOND = set(names[names.index("0ad-data"):])
FIRST = set(names) - SECOND
assert len(SECOND) == 15 and len(FIRST) == 26, (len(FIRST), len(SECOND))

text = (HERE / "manifest.csv").read_text(encoding="utf-8")
reader = csv.DictReader(io.StringIO(text))
header = reader.fieldnames
rows = list(reader)
by_sha = {}
for r in rows:
    assert r["sha256"] not in by_sha, f"duplicate sha256 {r['sha256']}"
    by_sha[r["sha256"]] = r


def package(row):
    return row["source"].split(":", 1)[1].split("=", 1)[0]


unknown = {package(r) for r in rows} - FIRST - SECOND
assert not unknown, f"clips from packages not in packages.txt: {unknown}"

val7_ref = list(csv.DictReader(open(RUN7 / "validation-clips.csv", encoding="utf-8")))
train7_ref = list(csv.DictReader(open(RUN7 / "train-clips.csv", encoding="utf-8")))
val7_sha = [r["sha256"] for r in val7_ref]
missing = [r["path"] for r in val7_ref if r["sha256"] not in by_sha]
missing_train = [r["path"] for r in train7_ref if r["sha256"] not in by_sha]
print(f"run 7 validation clips found: {len(val7_sha) - len(missing)} of {len(val7_sha)}")
for p in missing:
    print(f"  MISSING (val7): {p}")
print(f"run 7 training clips found: {len(train7_ref) - len(missing_train)} of {len(train7_ref)}")
for p in missing_train[:20]:
    print(f"  missing (train7): {p}")

val7 = [by_sha[s] for s in val7_sha if s in by_sha]
val7_set = {r["sha256"] for r in val7}
assert all(package(r) in FIRST for r in val7)

first_train = [r for r in rows if package(r) in FIRST and r["sha256"] not in val7_set]
second_rows = [r for r in rows if package(r) in SECOND]
assert not {r["sha256"] for r in second_rows} & val7_set

# flam's own splitter over the second-batch clips alone
clips = {c.sha256: c for c in read_manifest(HERE / "manifest.csv")}
second_clips = [clips[r["sha256"]] for r in second_rows]
tr, va = split_clips(second_clips, fraction=0.15, seed=0)
second_train = [by_sha[c.sha256] for c in tr]
second_val = [by_sha[c.sha256] for c in va]

train4 = first_train + second_train
val4 = val7 + second_val
t, v = {r["sha256"] for r in train4}, {r["sha256"] for r in val4}
assert not t & v, "a clip is in both train4 and val4"
assert len(t) == len(train4) and len(v) == len(val4)
assert len(train4) + len(val4) == len(rows), "every manifest clip is in exactly one split"


def write(name, subset):
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    w.writeheader()
    w.writerows(subset)
    (HERE / name).write_text(out.getvalue(), encoding="utf-8")
    print(f"{name}: {len(subset)} clips")


write("val7.csv", val7)
write("train4.csv", train4)
write("val4.csv", val4)

# report
stats = collections.defaultdict(collections.Counter)
for split, subset in (("train", train4), ("val", val4)):
    for r in subset:
        stats[package(r)][f"{split}_{r['kind']}"] += 1
print(f"\n{'package':32s} {'train ev':>8s} {'train bg':>8s} {'val ev':>7s} {'val bg':>7s}")
for p in names:
    s = stats.get(p, {})
    print(f"{p:32s} {s.get('train_event',0):8d} {s.get('train_background',0):8d} "
          f"{s.get('val_event',0):7d} {s.get('val_background',0):7d}")
bg_train = sum(float(r["duration"]) for r in train4 if r["kind"] == "background")
bg_val = sum(float(r["duration"]) for r in val4 if r["kind"] == "background")
print(f"\nbackground minutes: train4 {bg_train/60:.1f}, val4 {bg_val/60:.1f}")
caps = {r["captions"].split("|")[0] for r in rows}
caps2 = {r["captions"].split("|")[0] for r in second_rows}
caps1 = {r["captions"].split("|")[0] for r in rows if package(r) in FIRST}
print(f"distinct captions (labels): {len(caps)} (first batch {len(caps1)}, second batch adds {len(caps2 - caps1)})")
print("val4 second-batch labels:", len({r['captions'].split('|')[0] for r in second_val}))
