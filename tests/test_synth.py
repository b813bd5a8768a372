"""`flam synth`: corpus indexing, the FLAM and SpotSound recipes, files, determinism, bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from flamcli.synth import (AudioBank, GroundRecipe, RecipeError, SedRecipe, SynthDataset,
                           frame_targets, index_directory, make_mixture, plan_ground, plan_sed,
                           read_manifest, rerender, synthesize, write_manifest)
from flamcli.synth.corpus import CorpusError, content_words, words_from_name
from flamcli.synth.mixing import bank_notes

# Each event is a steady tone at its own frequency between silent pads, so where its energy
# is in a mixture can be measured independently of the labels.
EVENTS = {  # file → (frequency Hz, tone seconds, rate)
    "animals/dog_bark2.wav": (500.0, 0.8, 44100),
    "animals/cat-meow.flac": (900.0, 1.6, 22050),
    "bells/BellRing_01.ogg": (2000.0, 2.4, 48000),
    "vehicles/car_horn.wav": (3100.0, 1.2, 16000),
}
PAD = 0.15  # silence before and after each tone
RAMP = 0.005


def tone_clip(freq: float, seconds: float, rate: int, amplitude: float = 0.3) -> np.ndarray:
    n = round(seconds * rate)
    tone = amplitude * np.sin(2 * np.pi * freq * np.arange(n) / rate)
    ramp = round(RAMP * rate)
    tone[:ramp] *= np.linspace(0, 1, ramp)
    tone[-ramp:] *= np.linspace(1, 0, ramp)
    pad = np.zeros(round(PAD * rate))
    return np.concatenate([pad, tone, pad])


def build_corpus(root: Path, amplitude: float = 0.3) -> Path:
    rng = np.random.default_rng(7)
    for name, (freq, seconds, rate) in EVENTS.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone_clip(freq, seconds, rate, amplitude), rate)
    (root / "amb").mkdir(exist_ok=True)
    sf.write(root / "amb" / "forest_ambience.flac",
             0.05 * rng.standard_normal(22050 * 80), 22050)
    sf.write(root / "amb" / "rain_ambiance.wav", 0.05 * rng.standard_normal(16000 * 7), 16000)
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = build_corpus(tmp_path_factory.mktemp("corpus"))
    clips, skipped = index_directory(root)
    assert not skipped
    manifest = write_manifest(clips, root / "corpus.csv")
    return root, manifest


@pytest.fixture(scope="module")
def clips(corpus):
    return read_manifest(corpus[1])


@pytest.fixture(scope="module")
def bank16(clips):
    return AudioBank.load(clips, SedRecipe(sample_rate=16000))[0]


def digest_tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# Corpus


def test_words_from_names():
    assert words_from_name("dog_bark2") == "dog bark"
    assert words_from_name("BellRing_01") == "bell ring"
    assert words_from_name("cat-meow") == "cat meow"
    assert content_words("Dogs barking in the rain") == {"dog", "barking", "rain"}


def test_index_captions_kinds_and_manifest_roundtrip(corpus, clips):
    by_label = {c.label: c for c in clips}
    assert set(by_label) == {"dog bark", "cat meow", "bell ring", "car horn",
                             "forest ambience", "rain ambiance"}
    assert by_label["dog bark"].kind == "event" and by_label["dog bark"].tags == ["animals"]
    assert by_label["forest ambience"].kind == "background"
    assert by_label["rain ambiance"].kind == "background"  # short, but an ambience word
    assert by_label["cat meow"].sample_rate == 22050
    assert by_label["cat meow"].duration == pytest.approx(1.6 + 2 * PAD, abs=1e-4)
    assert all(Path(c.path).is_absolute() and len(c.sha256) == 64 for c in clips)
    # CSV and JSONL manifests hold the same clips.
    root = corpus[0]
    jsonl = write_manifest(clips, root / "corpus.jsonl")
    assert read_manifest(jsonl) == clips


def test_index_sidecars_duplicates_and_bad_files(tmp_path):
    (tmp_path / "a").mkdir()
    clip = tone_clip(440, 0.5, 16000)
    sf.write(tmp_path / "a" / "thing_1.wav", clip, 16000)
    (tmp_path / "a" / "thing_1.txt").write_text("a kettle whistles\n")
    sf.write(tmp_path / "a" / "z_copy.wav", clip, 16000)  # same bytes as thing_1.wav
    sf.write(tmp_path / "a" / "x2.wav", tone_clip(880, 0.5, 16000), 16000)
    (tmp_path / "a" / "x2.json").write_text(json.dumps(
        {"captions": ["glass breaking"], "tags": ["glass"], "kind": "event",
         "licence": "CC0", "source": "made here"}))
    sf.write(tmp_path / "a" / "long_train.wav", 0.1 * np.ones(16000 * 12), 16000)
    sf.write(tmp_path / "a" / "silent.wav", np.zeros(16000), 16000)
    sf.write(tmp_path / "a" / "blip.wav", 0.5 * np.ones(100), 16000)  # 6 ms
    (tmp_path / "a" / "empty.wav").write_bytes(b"")
    (tmp_path / "a" / "corrupt.flac").write_bytes(b"fLaC" + bytes(200))
    clips, skipped = index_directory(tmp_path)
    assert [(c.label, c.licence) for c in clips] == [("a kettle whistles", ""),
                                                    ("glass breaking", "CC0")]
    reasons = {s.path.split("/")[-1]: s for s in skipped}
    assert reasons["z_copy.wav"].reason == "duplicate of a/thing_1.wav"
    assert reasons["silent.wav"].reason == "silent" and not reasons["silent.wav"].failed
    assert "shorter than" in reasons["blip.wav"].reason
    assert "neither an event" in reasons["long_train.wav"].reason
    assert reasons["empty.wav"].failed and reasons["corrupt.flac"].failed


def test_manifest_errors(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("path,kind\nx.wav,sometimes\n")
    with pytest.raises(CorpusError, match="m.csv:2: kind must be event or background"):
        read_manifest(bad)
    with pytest.raises(CorpusError, match="no such manifest"):
        read_manifest(tmp_path / "missing.csv")
    (tmp_path / "n.csv").write_text("a,b\n1,2\n")
    with pytest.raises(CorpusError, match="not a manifest"):
        read_manifest(tmp_path / "n.csv")


# ---------------------------------------------------------------------------------------------
# Labels follow the energy


def band_levels(audio: np.ndarray, rate: int, freq: float, hop: int) -> np.ndarray:
    """Per-frame level (dB) in a narrow band around ``freq``, on the labels' frame grid."""
    n = len(audio) // hop
    frames = audio[: n * hop].reshape(n, hop) * np.hanning(hop)
    spectrum = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    bins = np.fft.rfftfreq(hop, 1 / rate)
    band = (bins > freq - 60) & (bins < freq + 60)
    return 10 * np.log10(spectrum[:, band].sum(axis=1) + 1e-12)


@pytest.mark.parametrize("recipe", [SedRecipe(sample_rate=16000),
                                    GroundRecipe(sample_rate=16000, duration=(20.0, 30.0),
                                                 distractors_per_minute=(4.0, 8.0))],
                         ids=["sed", "ground"])
def test_labels_are_where_the_energy_is(clips, recipe):
    bank = AudioBank.load(clips, recipe)[0]
    freq_of = {words_from_name(Path(name).stem): f for name, (f, _, _) in EVENTS.items()}
    hop = bank.meter.hop
    checked = 0
    for index in range(25):
        mixture = make_mixture(bank, recipe, seed=11, index=index)
        audio = mixture.audio
        n = len(audio) // hop
        for label, intervals in mixture.labels.items():
            levels = band_levels(audio, recipe.sample_rate, freq_of[label], hop)
            labelled = np.zeros(n, bool)
            for onset, offset in intervals:
                labelled[round(onset / 0.02): round(offset / 0.02)] = True
            near_edge = np.zeros(n, bool)  # frames a label edge may legitimately straddle
            for onset, offset in intervals:
                for edge in (round(onset / 0.02), round(offset / 0.02)):
                    near_edge[max(0, edge - 2): edge + 2] = True
            inside = levels[labelled & ~near_edge]
            outside = levels[~labelled & ~near_edge]
            # Labelled frames hold the tone; every other frame holds at most the background.
            # Short gaps (< 200 ms) between pieces are labelled on purpose and noise in a
            # 120 Hz band fluctuates, so compare robust statistics.
            if len(inside) and len(outside):
                # Measured margins over these seeds: at least 5.9 and 10.7 dB.
                assert np.median(inside) > np.percentile(outside, 99) + 3, (label, index)
                assert np.percentile(inside, 10) > np.median(outside) + 6, (label, index)
                checked += 1
            # Every piece of this label that was placed has labelled frames on its tone.
            for piece in mixture.plan["occurrences"]:
                if piece["label"] != label:
                    continue
                pad = round(PAD * recipe.sample_rate)
                tone_start = max(piece["onset"], piece["onset"] + pad - piece["clip_start"])
                tone_end = piece["onset"] + piece["length"] - max(
                    0, pad - (len(bank.by_path[piece["path"]].audio) - piece["clip_start"]
                              - piece["length"]))
                if tone_end - tone_start < 4 * hop:
                    continue
                frames = labelled[tone_start // hop + 1: tone_end // hop - 1]
                assert frames.mean() > 0.9, (label, index)
    assert checked > 20


def test_relabelling_cuts_silence_and_smooths():
    recipe = SedRecipe(sample_rate=16000)
    from flamcli.synth.mixing import smooth_frames

    active = np.array([1, 1, 0, 0, 0, 1, 1, 1] + [0] * 12 + [1] + [0] * 5 + [1, 1], bool)
    smoothed = smooth_frames(active, recipe, event_frames=30)
    # The 3-frame gap is filled, the 12-frame gap is not; the 1-frame blip is removed because
    # the event is longer than 10 frames.
    assert smoothed[:8].all() and not smoothed[8:20].any()
    assert smoothed[20:].all()  # blip joined to the last run through a 5-frame gap
    lone_blip = np.array([0] * 5 + [1] + [0] * 20, bool)
    assert not smooth_frames(lone_blip, recipe, event_frames=26).any()
    assert smooth_frames(lone_blip, recipe, event_frames=8).sum() == 1


# ---------------------------------------------------------------------------------------------
# Statistics of the recipes


def test_sed_recipe_statistics(bank16):
    recipe = SedRecipe(sample_rate=16000)
    plans = [plan_sed(bank16, recipe, seed=5, index=i) for i in range(600)]
    groups = [{o["group"]: o["mode"] for o in p["occurrences"]} for p in plans]
    counts = np.array([len(g) for g in groups])
    modes = [m for g in groups for m in g.values()]
    n = len(modes)
    # Events per mixture: uniform 1…4, mean 2.5 (sd of the mean ≈ 0.046).
    assert counts.min() >= 1 and counts.max() <= 4
    assert abs(counts.mean() - 2.5) < 0.2
    # Split and repeat rates 10% each (every corpus event is ≥ 1 s, so all are splittable);
    # binomial standard error ≈ 0.008 for ~1500 events: allow 4 sigma.
    se = np.sqrt(0.1 * 0.9 / n)
    assert abs(modes.count("split") / n - 0.1) < 4 * se
    assert abs(modes.count("repeat") / n - 0.1) < 4 * se
    for plan in plans:
        pieces = [(o["onset"], o["onset"] + o["length"]) for o in plan["occurrences"]]
        for t in {s for s, _ in pieces}:
            assert sum(s <= t < e for s, e in pieces) <= recipe.max_concurrent
        by_group: dict[int, list] = {}
        for o in plan["occurrences"]:
            by_group.setdefault(o["group"], []).append(o)
        for group in by_group.values():
            if group[0]["mode"] == "split":
                assert all(o["length"] >= recipe.min_piece * 16000 for o in group)
                clip_length = len(bank16.by_path[group[0]["path"]].audio)
                assert sum(o["length"] for o in group) <= clip_length
            if group[0]["mode"] == "repeat":
                assert 2 <= len(group) + plan["dropped_pieces"] and len(group) <= 3


def test_ground_recipe_statistics_and_density(clips):
    recipe = GroundRecipe(sample_rate=16000)
    bank = AudioBank.load(clips, recipe)[0]
    durations, densities = [], []
    for index in range(300):
        plan = plan_ground(bank, recipe, seed=9, index=index)
        total = plan["samples"] / 16000
        durations.append(total)
        assert 30.0 - 0.02 <= total <= 76.0 + 0.02
        assert len(plan["targets"]) == 1
        target = plan["targets"][0]
        covered = sum(o["length"] for o in plan["occurrences"] if o["label"] == target) / 16000
        densities.append(covered / total)
        assert covered / total < recipe.max_density
    assert abs(np.mean(durations) - 53.0) < 2.0  # uniform 30…76: sd of the mean ≈ 0.77
    # Rendered labels (what grounding.json reports) also stay under 10%.
    for index in range(6):
        mixture = make_mixture(bank, recipe, seed=9, index=index)
        target = mixture.plan["targets"][0]
        coverage = sum(b - a for a, b in mixture.labels[target]) / mixture.duration
        assert 0 < coverage < recipe.max_density


def test_negatives_are_never_present(bank16):
    for recipe, planner in ((SedRecipe(sample_rate=16000, negatives=3), plan_sed),
                            (GroundRecipe(sample_rate=16000, negatives=3), plan_ground)):
        seen = 0
        for index in range(200):
            plan = planner(bank16, recipe, seed=3, index=index)
            present = {o["label"] for o in plan["occurrences"]}
            words = set()
            for piece in plan["occurrences"] + plan["background"][:1]:
                words |= bank16.by_path[piece["path"]].words
            for negative in plan["negatives"]:
                seen += 1
                assert negative not in present
                assert not content_words(negative) & words
        assert seen > 100


# ---------------------------------------------------------------------------------------------
# Files: exact durations, no clipping, determinism, resuming


def test_files_durations_and_tables(clips, tmp_path):
    recipe = SedRecipe(sample_rate=16000)
    out = tmp_path / "out"
    summary = synthesize(clips, recipe, out, 6, seed=2)
    assert summary.made == 6
    durations = (out / "durations.tsv").read_text().splitlines()
    assert durations[0] == "filename\tduration" and len(durations) == 7
    truth = (out / "ground_truth.tsv").read_text().splitlines()
    assert truth[0] == "filename\tonset\toffset\tevent_label"
    grounding = json.loads((out / "grounding.json").read_text())
    for index in range(6):
        info = sf.info(out / "audio" / f"sed_{index:06d}.flac")
        assert (info.frames, info.samplerate, info.channels) == (160000, 16000, 1)
        meta = json.loads((out / "meta" / f"sed_{index:06d}.json").read_text())
        rows = [r for r in grounding if r["audio_path"] == f"audio/sed_{index:06d}.flac"]
        assert {r["caption"] for r in rows if r["annotations"]} == set(meta["labels"])
        assert {r["caption"] for r in rows if not r["annotations"]} == set(meta["negatives"])
        for label, intervals in meta["labels"].items():
            for onset, offset in intervals:
                assert f"sed_{index:06d}.flac\t{onset:.3f}\t{offset:.3f}\t{label}" in truth
                assert 0 <= onset < offset <= 10.0


def test_no_clipping_with_loud_sources(tmp_path):
    root = build_corpus(tmp_path / "loud", amplitude=0.99)
    clips, _ = index_directory(root)
    recipe = SedRecipe(sample_rate=16000, event_db=(15.0, 20.0), background_dbfs=(-6.0, -3.0),
                       events=(3, 4))
    out = tmp_path / "out"
    synthesize(clips, recipe, out, 8, seed=1)
    limited = 0
    for index in range(8):
        audio, _ = sf.read(out / "audio" / f"sed_{index:06d}.flac")
        assert np.abs(audio).max() <= recipe.peak_limit + 1 / 32768
        meta = json.loads((out / "meta" / f"sed_{index:06d}.json").read_text())
        limited += meta["mix_gain"] < 1
    assert limited >= 6  # these sources would clip without the limiter


def test_same_seed_same_bytes_whatever_the_workers(clips, tmp_path):
    recipe = SedRecipe(sample_rate=16000)
    synthesize(clips, recipe, tmp_path / "one", 10, seed=4, workers=1)
    synthesize(clips, recipe, tmp_path / "two", 10, seed=4, workers=2)
    synthesize(clips, recipe, tmp_path / "other", 10, seed=5, workers=1)
    one, two = digest_tree(tmp_path / "one"), digest_tree(tmp_path / "two")
    assert len(one) == 10 + 10 + 4 and one == two
    other = digest_tree(tmp_path / "other")
    assert other["audio/sed_000000.flac"] != one["audio/sed_000000.flac"]


def test_resume_skips_finished_and_redoes_unfinished(clips, tmp_path):
    recipe = SedRecipe(sample_rate=16000, audio_format="wav")
    out = tmp_path / "out"
    synthesize(clips, recipe, out, 5, seed=1)
    before = digest_tree(out)
    stamp = (out / "audio" / "sed_000000.wav").stat().st_mtime_ns
    # A run killed between the audio and the metadata of mixture 3:
    (out / "meta" / "sed_000003.json").unlink()
    summary = synthesize(clips, recipe, out, 8, seed=1, workers=2)
    assert (summary.made, summary.skipped_existing) == (4, 4)
    assert (out / "audio" / "sed_000000.wav").stat().st_mtime_ns == stamp
    after = digest_tree(out)
    for name in before:
        if name.startswith(("audio/", "meta/")):
            assert after[name] == before[name]
    assert len((out / "durations.tsv").read_text().splitlines()) == 9
    # The same folder with another seed is refused, untouched.
    from flamcli.synth import SynthError

    with pytest.raises(SynthError, match="another recipe, seed or corpus"):
        synthesize(clips, recipe, out, 8, seed=2)
    assert digest_tree(out) == after
    # A folder written before the recipe had the background-augmentation fields still resumes
    # (their defaults change nothing); with augmentation switched on, it is another recipe.
    settings = json.loads((out / "synth.json").read_text())
    for name in ("background_layers", "layer_db", "background_speed",
                 "background_reverse_rate", "background_tilt_db"):
        del settings["recipe"][name]
    (out / "synth.json").write_text(json.dumps(settings))
    assert synthesize(clips, recipe, out, 9, seed=1).made == 1
    with pytest.raises(SynthError, match="another recipe"):
        synthesize(clips, SedRecipe(sample_rate=16000, audio_format="wav",
                                    background_tilt_db=2.0), out, 9, seed=1)


def test_metadata_rerenders_the_mixture(clips, tmp_path):
    recipe = GroundRecipe(sample_rate=16000, duration=(20.0, 25.0))
    bank = AudioBank.load(clips, recipe)[0]
    out = tmp_path / "g"
    synthesize(bank_clips := clips, recipe, out, 2, seed=8)
    del bank_clips
    for index in range(2):
        meta = json.loads((out / "meta" / f"ground_{index:06d}.json").read_text())
        again = rerender(meta, bank, recipe)
        written, _ = sf.read(out / "audio" / f"ground_{index:06d}.flac", dtype="float32")
        assert np.abs(again.audio - written).max() <= 1.01 / 32768
        assert again.labels == {k: [list(v) for v in vs] for k, vs in meta["labels"].items()}


def test_iterable_dataset_matches_files_for_any_worker_count(clips, tmp_path):
    import torch

    recipe = SedRecipe(sample_rate=16000)
    dataset = SynthDataset(clips, recipe, seed=6, count=6)
    serial = list(dataset)
    assert [item["id"] for item in serial] == [f"sed_{i:06d}" for i in range(6)]
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    parallel = sorted(loader, key=lambda item: item["id"])
    for a, b in zip(serial, parallel):
        assert torch.equal(a["audio"], b["audio"]) and a["labels"] == b["labels"]
    synthesize(clips, recipe, tmp_path / "files", 2, seed=6)
    written, _ = sf.read(tmp_path / "files" / "audio" / "sed_000001.flac", dtype="float32")
    assert np.abs(serial[1]["audio"].numpy() - written).max() <= 1.01 / 32768


def test_frame_targets():
    labels = {"dog": [[0.0, 0.3125], [1.0, 1.1]]}
    targets = frame_targets(labels, ["dog", "cat"], n_frames=32, duration=10.0)
    assert targets.shape == (32, 2)
    assert targets[0, 0] == pytest.approx(1.0)
    assert targets[3, 0] == pytest.approx((1.1 - 1.0) / 0.3125)
    assert targets[:, 1].sum() == 0 and targets[4:, 0].sum() == 0


# ---------------------------------------------------------------------------------------------
# Bad requests are refused before anything is written


def test_impossible_requests_are_refused(clips, tmp_path):
    events_only = [c for c in clips if c.kind == "event"]
    backgrounds_only = [c for c in clips if c.kind == "background"]
    cases = [
        (events_only, SedRecipe(sample_rate=16000), "no usable background"),
        (backgrounds_only, SedRecipe(sample_rate=16000), "no usable event"),
        (clips, SedRecipe(sample_rate=16000, duration=1.0), "every event is longer"),
        (clips, GroundRecipe(sample_rate=16000, max_density=0.02),
         "impossible: the shortest event"),
    ]
    for number, (subset, recipe, message) in enumerate(cases):
        out = tmp_path / f"out{number}"
        with pytest.raises((CorpusError, RecipeError), match=message):
            synthesize(subset, recipe, out, 3, seed=0)
        assert not out.exists()


def test_recipe_files_roundtrip_and_errors(tmp_path):
    recipe = GroundRecipe(duration=(40.0, 60.0), negatives=2)
    path = recipe.save(tmp_path / "r.json")
    assert GroundRecipe.load(path) == recipe
    with pytest.raises(RecipeError, match="a 'ground' recipe, not 'sed'"):
        SedRecipe.load(path)
    (tmp_path / "bad.json").write_text(json.dumps({"recipe": "sed", "colour": 1}))
    with pytest.raises(RecipeError, match="unknown field"):
        SedRecipe.load(tmp_path / "bad.json")
    (tmp_path / "bad2.json").write_text(json.dumps({"recipe": "sed", "events": [3, 1]}))
    with pytest.raises(RecipeError, match="events"):
        SedRecipe.load(tmp_path / "bad2.json")


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_index_sed_ground(corpus, tmp_path, cli):
    root, _ = corpus
    manifest = tmp_path / "corpus.csv"
    result = cli("synth", "index", str(root), "-o", str(manifest))
    assert result.exit_code == 0, result.output
    assert len(read_manifest(manifest)) == 6
    recipe_path = tmp_path / "recipe.json"
    assert cli("synth", "recipe", "sed", "-o", str(recipe_path)).exit_code == 0
    data = json.loads(recipe_path.read_text())
    data["duration"] = 4.0
    recipe_path.write_text(json.dumps(data))
    out = tmp_path / "sed"
    result = cli("synth", "sed", str(manifest), "-o", str(out), "-n", "3", "--seed", "1",
                 "--recipe", str(recipe_path), "--sample-rate", "16000",
                 "--audio-format", "wav")
    assert result.exit_code == 0, result.output
    assert sf.info(out / "audio" / "sed_000002.wav").frames == 64000
    result = cli("synth", "ground", str(manifest), "-o", str(tmp_path / "g"), "-n", "2",
                 "--sample-rate", "16000")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "g" / "grounding.json").read_text())
    assert sum(bool(r["annotations"]) for r in rows) == 2
    assert sum(not r["annotations"] for r in rows) == 2


def test_cli_bad_inputs(corpus, tmp_path, cli):
    root, manifest = corpus
    result = cli("synth", "sed", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "o"))
    assert result.exit_code == 2 and "no such manifest" in result.stderr
    result = cli("synth", "index", str(tmp_path / "empty"), "-o", str(tmp_path / "m.csv"))
    assert result.exit_code == 2 and "not a directory" in result.stderr
    (tmp_path / "emptydir").mkdir()
    result = cli("synth", "index", str(tmp_path / "emptydir"), "-o", str(tmp_path / "m.csv"))
    assert result.exit_code == 2 and "no audio files" in result.stderr
    # A manifest naming a clip that is now corrupt: skipped with one line, the rest is used.
    clips = read_manifest(manifest)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt junk")
    clips.append(type(clips[0])(path=str(broken), kind="event", captions=["broken thing"]))
    bad_manifest = write_manifest(clips, tmp_path / "with_broken.csv")
    result = cli("synth", "sed", str(bad_manifest), "-o", str(tmp_path / "o2"), "-n", "2",
                 "--sample-rate", "16000")
    assert result.exit_code == 3
    assert "broken.wav: skipped" in result.stderr and "Traceback" not in result.stderr
    assert len(list((tmp_path / "o2" / "audio").iterdir())) == 2
    result = cli("synth", "ground", str(manifest), "-o", str(tmp_path / "o3"),
                 "--recipe", str(manifest))
    assert result.exit_code == 2 and "not a recipe" in result.stderr


def test_decoded_clip_cache(clips, monkeypatch, tmp_path):
    monkeypatch.setenv("FLAM_CACHE", str(tmp_path / "cache"))
    recipe = SedRecipe(sample_rate=16000)
    fresh = AudioBank.load(clips, recipe, cache=False)[0]
    assert not (tmp_path / "cache").exists()
    AudioBank.load(clips, recipe)
    cached_files = sorted((tmp_path / "cache" / "synth").rglob("*.npy"))
    assert len(cached_files) == len(clips)
    cached_files[0].write_bytes(b"damaged")  # a damaged entry is decoded again
    again = AudioBank.load(clips, recipe)[0]
    for path, entry in fresh.by_path.items():
        assert np.array_equal(entry.audio, again.by_path[path].audio)
        assert entry.level_db == again.by_path[path].level_db
    assert np.load(cached_files[0]).dtype == np.float32


def test_split_by_source_clip_is_stable_and_covers_labels(tmp_path, cli):
    from flamcli.synth.corpus import Clip, split_clips

    def clip(label, n, kind="event"):
        return Clip(path=f"/x/{label}{n}.wav", kind=kind, captions=[label],
                    sha256=hashlib.sha256(f"{label}{n}".encode()).hexdigest())

    clips = ([clip("dog", i) for i in range(10)] + [clip("cat", i) for i in range(3)]
             + [clip("rare", i) for i in range(2)]
             + [clip("rain", i, "background") for i in range(6)])
    train, held = split_clips(clips, fraction=0.2, seed=1)
    assert sorted(c.path for c in train + held) == sorted(c.path for c in clips)
    assert not {c.path for c in train} & {c.path for c in held}
    held_labels = [c.label for c in held]
    assert "rare" not in held_labels  # too few clips: stays in training
    for label in ("dog", "cat", "rain"):
        assert 1 <= held_labels.count(label) < sum(c.label == label for c in clips)
    # Adding clips never moves the others.
    train2, held2 = split_clips(clips + [clip("dog", 99)], fraction=0.2, seed=1)
    assert {c.path for c in held} - {"/x/dog99.wav"} <= {c.path for c in held2}
    # Through the CLI, on a real manifest.
    manifest = write_manifest(clips, tmp_path / "m.csv")
    result = cli("synth", "split", str(manifest), "--train", str(tmp_path / "t.csv"),
                 "--validation", str(tmp_path / "v.csv"), "--fraction", "0.2", "--seed", "1")
    assert result.exit_code == 0
    assert [c.path for c in read_manifest(tmp_path / "v.csv")] == [c.path for c in held]


# ---------------------------------------------------------------------------------------------
# Background augmentation

AUG_RATE = 16000
AUG_TONES = {"low_ambience.wav": 1400.0, "high_ambience.wav": 4400.0}  # steady tones
RAMP_TONE = 6000.0  # ramp_ambience.wav: a tone that grows louder, to see which way it plays
QUIET_EVENTS = (-60.0, -60.0)  # events far below the background: only the background is measured


@pytest.fixture(scope="module")
def aug_bank(tmp_path_factory):
    root = tmp_path_factory.mktemp("aug")
    (root / "amb").mkdir()
    n = 20 * AUG_RATE
    t = np.arange(n) / AUG_RATE
    for name, freq in AUG_TONES.items():
        sf.write(root / "amb" / name, 0.2 * np.sin(2 * np.pi * freq * t), AUG_RATE)
    sf.write(root / "amb" / "ramp_ambience.wav",
             np.linspace(0.02, 0.4, n) * np.sin(2 * np.pi * RAMP_TONE * t), AUG_RATE)
    sf.write(root / "amb" / "noise_ambience.wav",
             0.1 * np.random.default_rng(3).standard_normal(15 * AUG_RATE), AUG_RATE)
    sf.write(root / "dog_bark.wav", tone_clip(500.0, 0.8, AUG_RATE), AUG_RATE)
    sf.write(root / "rain_hiss.wav",
             0.1 * np.random.default_rng(4).standard_normal(3 * AUG_RATE), AUG_RATE)
    clips, skipped = index_directory(root)
    assert not skipped
    return AudioBank.load(clips, SedRecipe(sample_rate=AUG_RATE))[0]


def tone_db(audio: np.ndarray, freq: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio)))) ** 2
    bins = np.fft.rfftfreq(len(audio), 1 / AUG_RATE)
    return 10 * np.log10(spectrum[np.abs(bins - freq) < 20].sum() + 1e-20)


def first_mixture_where(bank, recipe, wanted, pieces) -> "object":
    """The first mixture (by index) whose ``pieces(plan)`` file names are exactly ``wanted``."""
    for index in range(200):
        mixture = make_mixture(bank, recipe, 0, index)
        if {Path(p["path"]).name for p in pieces(mixture.plan)} == set(wanted):
            return mixture
    raise AssertionError(f"no mixture with {wanted}")


def first_mixture(bank, recipe, wanted) -> "object":
    """The first mixture whose background recordings are exactly ``wanted``."""
    return first_mixture_where(bank, recipe, wanted, lambda plan: plan["background"])


def assert_tilted(audio: np.ndarray, tilt: float) -> None:
    """The high/low band power ratio is the one a ``tilt`` dB/octave tilt gives (±1 dB)."""
    audio = audio.astype(np.float64)
    power = np.abs(np.fft.rfft(audio)) ** 2
    bins = np.fft.rfftfreq(len(audio), 1 / AUG_RATE)
    low, high = (bins > 200) & (bins < 350), (bins > 6500) & (bins < 7500)
    measured = 10 * np.log10(power[high].mean() / power[low].mean())
    gain = 10 ** (tilt * np.log2(np.maximum(bins, 20) / 1000) / 10)  # the tilt's power gain
    assert measured == pytest.approx(10 * np.log10(gain[high].mean() / gain[low].mean()), abs=1.0)


def test_default_recipes_leave_the_background_alone(bank16):
    plan = plan_sed(bank16, SedRecipe(sample_rate=16000), 0, 0)
    assert "background_layers" not in plan and "background_tilt_db" not in plan
    assert len({b["path"] for b in plan["background"]}) == 1


def test_layers_mix_different_recordings_at_the_drawn_levels(aug_bank):
    recipe = SedRecipe(sample_rate=AUG_RATE, background_layers=(2, 2), layer_db=(-6.0, -6.0),
                       event_db=QUIET_EVENTS)
    mixture = first_mixture(aug_bank, recipe, AUG_TONES)
    first = Path(next(b["path"] for b in mixture.plan["background"] if b["layer"] == 0)).name
    second = next(name for name in AUG_TONES if name != first)
    difference = tone_db(mixture.audio, AUG_TONES[first]) - tone_db(mixture.audio,
                                                                      AUG_TONES[second])
    assert difference == pytest.approx(6.0, abs=0.3)
    level = 20 * np.log10(np.sqrt(np.mean(mixture.audio.astype(np.float64) ** 2)))
    # Two layers: the drawn level plus the second layer's power (10·log10(1 + 10^-0.6)).
    assert level == pytest.approx(mixture.plan["background_dbfs"] + 0.97, abs=0.3)


def test_more_layers_than_backgrounds_is_said_once_and_still_mixes(clips, bank16, tmp_path, cli):
    backgrounds = len(bank16.backgrounds)
    wanted = SedRecipe(sample_rate=16000, background_layers=(1, backgrounds + 1))
    assert bank_notes(bank16, wanted) == [
        f"the recipe layers up to {backgrounds + 1} different background recordings, but the "
        f"corpus has {backgrounds}: mixtures use at most {backgrounds}"]
    assert bank_notes(bank16, SedRecipe(sample_rate=16000, background_layers=(1, backgrounds))) == []
    summary = synthesize(clips, wanted, tmp_path / "a", 2, seed=0)
    assert summary.made == 2 and summary.notes == bank_notes(bank16, wanted)
    recipe_file = tmp_path / "r.json"
    recipe_file.write_text(json.dumps(wanted.to_dict()))
    manifest = write_manifest(clips, tmp_path / "m.csv")
    result = cli("synth", "sed", manifest, "-o", tmp_path / "b", "-n", 2, "--recipe", recipe_file)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("different background recordings") == 1


def test_speed_shifts_pitch_and_reverse_plays_backwards(aug_bank):
    recipe = SedRecipe(sample_rate=AUG_RATE, background_speed=(1.25, 1.25),
                       background_reverse_rate=1.0, event_db=QUIET_EVENTS)
    steady = first_mixture(aug_bank, recipe, ["low_ambience.wav"]).audio
    assert tone_db(steady, 1400 * 1.25) - tone_db(steady, 1400) > 30
    ramp = first_mixture(aug_bank, recipe, ["ramp_ambience.wav"]).audio
    second = AUG_RATE
    start, end = tone_db(ramp[:second], RAMP_TONE * 1.25), tone_db(ramp[-second:],
                                                                   RAMP_TONE * 1.25)
    assert start - end > 3  # a tone that grows louder now fades: it plays backwards
    forwards = SedRecipe(sample_rate=AUG_RATE, background_speed=(1.25, 1.25),
                         event_db=QUIET_EVENTS)
    ramp = first_mixture(aug_bank, forwards, ["ramp_ambience.wav"]).audio
    assert tone_db(ramp[-second:], RAMP_TONE * 1.25) - tone_db(ramp[:second], RAMP_TONE * 1.25) > 3


def test_tilt_colours_the_noise_but_keeps_its_level(aug_bank, tmp_path):
    recipe = SedRecipe(sample_rate=AUG_RATE, background_tilt_db=6.0, event_db=QUIET_EVENTS)
    mixture = first_mixture(aug_bank, recipe, ["noise_ambience.wav"])
    tilt = mixture.plan["background_tilt_db"]
    assert 1.0 < abs(tilt) <= 6.0
    assert_tilted(mixture.audio, tilt)
    level = 20 * np.log10(np.sqrt(np.mean(mixture.audio.astype(np.float64) ** 2)))
    assert level == pytest.approx(mixture.plan["background_dbfs"], abs=0.3)
    # The plan in the metadata renders the same audio again.
    again = rerender(json.loads(json.dumps(mixture.metadata())), aug_bank, recipe)
    assert np.array_equal(again.audio, mixture.audio)


# Events far above a faint background, one whole event per mixture: the event is measured.
LOUD_EVENTS = dict(sample_rate=AUG_RATE, background_dbfs=(-70.0, -70.0), event_db=(40.0, 40.0),
                   events=(1, 1), split_rate=0.0, repeat_rate=0.0)


def first_event_mixture(bank, recipe, wanted: str):
    """The first mixture whose one event is the clip ``wanted``."""
    return first_mixture_where(bank, recipe, [wanted], lambda plan: plan["occurrences"])


def test_default_recipes_leave_events_alone(aug_bank):
    mixture = first_event_mixture(aug_bank, SedRecipe(**LOUD_EVENTS), "dog_bark.wav")
    assert not {"speed", "tilt_db"} & set(mixture.plan["occurrences"][0])
    (onset, offset), = next(iter(mixture.labels.values()))
    assert offset - onset == pytest.approx(0.8, abs=0.06)


def test_event_speed_shifts_pitch_and_length(aug_bank):
    recipe = SedRecipe(**LOUD_EVENTS, event_speed=(1.25, 1.25))
    mixture = first_event_mixture(aug_bank, recipe, "dog_bark.wav")
    assert mixture.plan["occurrences"][0]["speed"] == 1.25
    assert tone_db(mixture.audio, 625.0) - tone_db(mixture.audio, 500.0) > 30
    (onset, offset), = next(iter(mixture.labels.values()))
    assert offset - onset == pytest.approx(0.8 / 1.25, abs=0.06)  # labels follow the played event
    slower = first_event_mixture(aug_bank, SedRecipe(**LOUD_EVENTS, event_speed=(0.8, 0.8)),
                                 "dog_bark.wav")
    (onset, offset), = next(iter(slower.labels.values()))
    assert offset - onset == pytest.approx(0.8 / 0.8, abs=0.06)


def test_event_tilt_colours_the_event_and_rerenders(aug_bank):
    recipe = SedRecipe(**LOUD_EVENTS, event_tilt_db=6.0)
    mixture = first_event_mixture(aug_bank, recipe, "rain_hiss.wav")
    piece = mixture.plan["occurrences"][0]
    tilt = piece["tilt_db"]
    assert 1.0 < abs(tilt) <= 6.0
    assert_tilted(mixture.audio[piece["onset"]: piece["onset"] + piece["length"]], tilt)
    again = rerender(json.loads(json.dumps(mixture.metadata())), aug_bank, recipe)
    assert np.array_equal(again.audio, mixture.audio)


def test_event_reverb_adds_a_decaying_tail_at_the_same_level(aug_bank):
    from flamcli.synth.mixing import _reverberant

    click = np.zeros(AUG_RATE, dtype=np.float32)
    click[100] = 1.0
    wet = _reverberant(click, {"rt60": 0.5, "db": 0.0, "seed": 1}, AUG_RATE)
    energy = wet.astype(np.float64) ** 2
    assert energy[100] == pytest.approx(energy[101:].sum(), rel=0.1)  # 0 dB: as much tail as direct
    early, late = energy[1700:3300].sum(), energy[4900:6500].sum()
    assert 10 * np.log10(early / late) == pytest.approx(60 * 0.2 / 0.5, abs=2.0)  # −60 dB per rt60
    assert np.sqrt(np.mean(energy)) == pytest.approx(np.sqrt(np.mean(click**2.0)), rel=1e-4)
    # In a plan: drawn within the recipe's ranges, stored, rendered again identically.
    recipe = SedRecipe(**LOUD_EVENTS, event_reverb_rate=1.0, event_rt60=(0.3, 0.6),
                       event_reverb_db=(-6.0, -3.0))
    mixture = first_event_mixture(aug_bank, recipe, "dog_bark.wav")
    reverb = mixture.plan["occurrences"][0]["reverb"]
    assert 0.3 <= reverb["rt60"] <= 0.6 and -6.0 <= reverb["db"] <= -3.0
    again = rerender(json.loads(json.dumps(mixture.metadata())), aug_bank, recipe)
    assert np.array_equal(again.audio, mixture.audio)
    dry = first_event_mixture(aug_bank, SedRecipe(**LOUD_EVENTS, event_tilt_db=1.0),
                              "dog_bark.wav")
    assert "reverb" not in dry.plan["occurrences"][0]
    # at rate 0.5 about half the events get a room
    half = SedRecipe(sample_rate=AUG_RATE, event_reverb_rate=0.5)
    pieces = [o for i in range(100) for o in plan_sed(aug_bank, half, 0, i)["occurrences"]]
    assert sum("reverb" in o for o in pieces) / len(pieces) == pytest.approx(0.5, abs=0.1)


def test_event_balance_hears_rare_captions_more_often(tmp_path):
    # Six clips of one caption and one of another: FLAM's draw (balance 0) picks the rare
    # caption 1/7 of the time, balance 1 half the time, balance 0.5 1/(1 + 6/√6) of the time.
    for n in range(6):
        sf.write(tmp_path / f"dog_bark{n}.wav", tone_clip(500.0 + 50 * n, 0.5, AUG_RATE), AUG_RATE)
    sf.write(tmp_path / "bell_ring.wav", tone_clip(2000.0, 0.5, AUG_RATE), AUG_RATE)
    sf.write(tmp_path / "noise_ambience.wav",
             0.1 * np.random.default_rng(3).standard_normal(12 * AUG_RATE), AUG_RATE)
    clips, skipped = index_directory(tmp_path)
    assert not skipped
    bank = AudioBank.load(clips, SedRecipe(sample_rate=AUG_RATE))[0]
    for balance, expected in [(0.0, 1 / 7), (0.5, 1 / (1 + 6 ** 0.5)), (1.0, 0.5)]:
        recipe = SedRecipe(sample_rate=AUG_RATE, events=(1, 1), split_rate=0.0,
                           repeat_rate=0.0, event_balance=balance)
        labels = [plan_sed(bank, recipe, 0, i)["occurrences"][0]["label"] for i in range(600)]
        assert labels.count("bell ring") / len(labels) == pytest.approx(expected, abs=0.05)


def test_background_augmentation_fields_are_validated():
    for field, value in [("background_layers", (0, 1)), ("background_layers", (1, 5)),
                         ("layer_db", (-3.0, 2.0)), ("background_speed", (0.4, 1.0)),
                         ("background_reverse_rate", 1.5), ("background_tilt_db", 9.0),
                         ("event_speed", (0.9, 2.5)), ("event_tilt_db", -1.0),
                         ("event_balance", 1.5), ("event_reverb_rate", 2.0),
                         ("event_rt60", (0.5, 0.2)), ("event_reverb_db", (-40.0, 0.0))]:
        with pytest.raises(RecipeError, match=field):
            SedRecipe(**{field: value}).validate()


def test_speed_changes_at_44_1_khz_read_at_a_rate_sharing_a_large_factor():
    """At 44.1 kHz, speed·rate on the 1/40 grid is not a whole multiple of rate/40: reading at
    round(44100·1.025) = 45203 Hz shares only 1 with 44,100 and the resampler's kernel took
    24 GB. The read rate snaps to multiples of 1050 Hz there; 16 and 48 kHz are unchanged."""
    import math

    from flamcli.synth.mixing import _played_at, _played_length, _read_rate

    speeds = [m / 40 for m in range(30, 54)]
    for rate in (16_000, 48_000):
        assert [_read_rate(rate, s) for s in speeds] == [round(rate * s) for s in speeds]
    for speed in speeds:
        read = _read_rate(44_100, speed)
        assert read % 1050 == 0 and math.gcd(read, 44_100) >= 1050
        assert abs(read / 44_100 - speed) <= 1 / 84 + 1e-12
    audio = np.random.default_rng(0).standard_normal(44_100).astype(np.float32)
    played = _played_at(audio, 1.025, 44_100)
    assert len(played) == _played_length(44_100, 1.025, 44_100) < 44_100
