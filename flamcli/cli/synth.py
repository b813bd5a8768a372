"""``flam synth``: index a corpus, then render training mixtures or grounding benchmarks."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import ExitCode, Log, QuietOption, progress_bar

synth_app = typer.Typer(
    name="synth",
    help="Make frame-labelled mixtures from a corpus of real clips.\n\n"
         "1. `flam synth index DIR -o corpus.csv` lists the clips (captions from names or "
         "sidecars).\n\n"
         "2. `flam synth sed corpus.csv -o OUT -n 1000 --seed 0` renders FLAM training mixtures;"
         " `flam synth ground …` renders SpotSound-style long clips with hidden events and "
         "absent-event queries.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


class RecipeName(str, Enum):
    sed = "sed"
    ground = "ground"


class AudioFormat(str, Enum):
    flac = "flac"
    wav = "wav"


@synth_app.command("index", no_args_is_help=True)
def index_command(
    directory: Annotated[Path, typer.Argument(help="Folder tree of audio clips.")],
    output: Annotated[Path, typer.Option(
        "-o", "--output", help="Manifest to write: .csv or .jsonl.")],
    background_word: Annotated[Optional[list[str]], typer.Option(
        "--background-word",
        help="A word marking a background clip (repeatable; default: ambience, ambiance, "
             "ambient, atmosphere, atmos, roomtone).")] = None,
    quiet: QuietOption = False,
) -> None:
    """List the usable clips under DIRECTORY in a manifest (CSV or JSONL).

    Captions come from file names (animals/dog_bark2.wav → "dog bark"), tags from folder names.

    A sidecar NAME.txt (one caption per line) or NAME.json (captions, tags, kind, source, licence) overrides them.

    Clips named with an ambience word are backgrounds; other clips under 10 s are events.

    Duplicates (same bytes), silent and unreadable files are skipped and listed; exit 3 if any file could not be read (the manifest is still written).

    Example: flam synth index sounds/ -o corpus.csv
    """
    from ..synth import CorpusError, index_directory, write_manifest
    from ..synth.corpus import BACKGROUND_WORDS

    log = Log(quiet)
    if output.suffix.lower() not in (".csv", ".jsonl", ".json"):
        log.error(f"--output {output}: the manifest must end in .csv or .jsonl")
        raise typer.Exit(ExitCode.USAGE)
    bar = progress_bar(quiet)
    task = bar.add_task("indexing", total=None, detail="") if bar else None

    def on_file(number: int, total: int, name: str) -> None:
        if bar:
            bar.update(task, total=total, completed=number, detail=name[-40:])

    try:
        if bar:
            bar.start()
        clips, skipped = index_directory(directory, background_word or BACKGROUND_WORDS,
                                         on_file=on_file)
    except CorpusError as exc:
        log.error(str(exc))
        raise typer.Exit(ExitCode.USAGE)
    finally:
        if bar:
            bar.stop()
    for item in skipped:
        log.warning(f"{directory / item.path}: skipped: {item.reason}")
    write_manifest(clips, output)
    events = sum(c.kind == "event" for c in clips)
    log.info(f"{output}: {len(clips)} clips ({events} events, {len(clips) - events} "
             f"backgrounds, {len({c.label for c in clips})} captions); {len(skipped)} skipped")
    if any(item.failed for item in skipped):
        raise typer.Exit(ExitCode.INPUT_FAILED)


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same path, or links to one existing file."""
    try:
        if a.exists() and b.exists():
            return a.samefile(b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


@synth_app.command("split", no_args_is_help=True)
def split_command(
    manifest: Annotated[Path, typer.Argument(help="Corpus manifest (.csv or .jsonl).")],
    train: Annotated[Path, typer.Option("--train", help="Manifest of the training clips.")],
    validation: Annotated[Path, typer.Option("--validation", help="Manifest of the held-out clips.")],
    fraction: Annotated[float, typer.Option("--fraction", min=0.01, max=0.99,
                                            help="Share of each label's clips held out.")] = 0.15,
    seed: Annotated[int, typer.Option("--seed", help="Another seed, another split.")] = 0,
    quiet: QuietOption = False,
) -> None:
    """Hold out clips for validation, by source clip and background recording (never by mixture).

    Labels with fewer than 3 clips stay in training; every other label and the backgrounds get at least one held-out clip. A clip's side depends only on its content hash and the seed.

    --train, --validation and MANIFEST must be three different files (exit 2 otherwise).

    Example: flam synth split corpus.csv --train train.csv --validation val.csv
    """
    from ..synth import CorpusError, read_manifest, write_manifest
    from ..synth.corpus import split_clips

    log = Log(quiet)
    # Writing one list over the other (or over the input) would lose clips without a word.
    clash = None
    if _same_file(train, validation):
        clash = f"--train and --validation are the same file ({train})"
    else:
        for option, path in (("--train", train), ("--validation", validation)):
            if _same_file(path, manifest):
                clash = f"{option} {path} is the input manifest"
                break
    if clash:
        log.error(f"{clash}: give --train and --validation two other paths")
        raise typer.Exit(ExitCode.USAGE)
    try:
        train_clips, held_out = split_clips(read_manifest(manifest), fraction, seed)
    except CorpusError as exc:
        log.error(str(exc))
        raise typer.Exit(ExitCode.USAGE)
    write_manifest(train_clips, train)
    write_manifest(held_out, validation)
    log.info(f"{train}: {len(train_clips)} clips; {validation}: {len(held_out)} clips "
             f"({sum(c.kind == 'background' for c in held_out)} backgrounds, "
             f"{len({c.label for c in held_out if c.kind == 'event'})} event labels)")


@synth_app.command("recipe")
def recipe_command(
    name: Annotated[RecipeName, typer.Argument(help="sed or ground.")],
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output", help="Write here instead of stdout.")] = None,
) -> None:
    """Print a recipe's defaults as JSON: edit it and pass it back with --recipe."""
    from ..synth import RECIPES

    recipe = RECIPES[name.value]()
    if output:
        recipe.save(output)
    else:
        sys.stdout.write(json.dumps(recipe.to_dict(), indent=2) + "\n")


ManifestArgument = Annotated[Path, typer.Argument(help="Corpus manifest (.csv or .jsonl).")]
OutOption = Annotated[Path, typer.Option("-o", "--output", help="Output folder.")]
CountOption = Annotated[int, typer.Option("-n", "--count", min=1, max=10**9, help="Mixtures to make.")]
# Mixture generators take non-negative seeds only: typer refuses -1 before anything runs.
SeedOption = Annotated[int, typer.Option("--seed", min=0, max=2**63 - 1, help="Same seed, same bytes.")]
WorkersOption = Annotated[int, typer.Option(
    "--workers", min=1, max=1024, help="Processes; the output does not depend on it.")]
RecipeOption = Annotated[Optional[Path], typer.Option(
    "--recipe", help="Recipe JSON (see `flam synth recipe`); options below override it.")]
RateOption = Annotated[Optional[int], typer.Option(
    "--sample-rate", help="Output rate in Hz (recipe default: 48000).")]
FormatOption = Annotated[Optional[AudioFormat], typer.Option(
    "--audio-format", help="flac or wav, 16-bit (recipe default: flac).")]


def _run(recipe_name: str, manifest: Path, output: Path, count: int, seed: int, workers: int,
         recipe_file: Path | None, sample_rate: int | None, audio_format: AudioFormat | None,
         quiet: bool) -> None:
    from ..synth import RECIPES, CorpusError, RecipeError, SynthError, read_manifest, synthesize

    log = Log(quiet)
    try:
        recipe_class = RECIPES[recipe_name]
        recipe = recipe_class.load(recipe_file) if recipe_file else recipe_class()
        if sample_rate is not None:
            recipe.sample_rate = sample_rate
        if audio_format is not None:
            recipe.audio_format = audio_format.value
        recipe.validate()
        clips = read_manifest(manifest)
    except (RecipeError, CorpusError) as exc:
        log.error(str(exc))
        raise typer.Exit(ExitCode.USAGE)
    bar = progress_bar(quiet)
    tasks: dict[str, int] = {}

    def on_clip(number: int, total: int, name: str) -> None:
        if bar:
            task = tasks.setdefault("load", bar.add_task("decoding corpus", total=total, detail=""))
            bar.update(task, completed=number, detail=Path(name).name[-30:])

    def on_progress(done: int, total: int) -> None:
        if bar:
            task = tasks.setdefault("mix", bar.add_task("mixing", total=total, detail=""))
            bar.update(task, completed=done, detail=f"{done}/{total}")

    try:
        if bar:
            bar.start()
        summary = synthesize(clips, recipe, output, count, seed=seed, workers=workers,
                             on_progress=on_progress, on_clip=on_clip)
    except (RecipeError, CorpusError, SynthError) as exc:
        if bar:
            bar.stop()
        log.error(str(exc))
        raise typer.Exit(ExitCode.USAGE)
    finally:
        if bar:
            bar.stop()
    for item in summary.skipped_clips:
        log.warning(f"{item.path}: skipped: {item.reason}")
    for note in summary.notes:
        log.warning(note)
    log.info(f"{output}: {summary.made} mixtures made, {summary.skipped_existing} already there "
             f"({summary.events} events, {summary.backgrounds} backgrounds used)")
    if any(item.failed for item in summary.skipped_clips):
        raise typer.Exit(ExitCode.INPUT_FAILED)


@synth_app.command("sed", no_args_is_help=True)
def sed_command(
    manifest: ManifestArgument, output: OutOption, count: CountOption = 100,
    seed: SeedOption = 0, workers: WorkersOption = 1, recipe: RecipeOption = None,
    sample_rate: RateOption = None, audio_format: FormatOption = None, quiet: QuietOption = False,
) -> None:
    """FLAM training mixtures: 10 s, one background, events with A-weighted frame labels.

    Writes OUT/audio/, OUT/meta/ (one re-renderable JSON per mixture), OUT/ground_truth.tsv, OUT/durations.tsv and OUT/grounding.json (present captions and absent negatives).

    Rerunning skips finished mixtures; exit 3 if some clips could not be used (the rest were).

    Example: flam synth sed corpus.csv -o mixtures/ -n 1000 --seed 0 --workers 2
    """
    _run("sed", manifest, output, count, seed, workers, recipe, sample_rate, audio_format, quiet)


@synth_app.command("ground", no_args_is_help=True)
def ground_command(
    manifest: ManifestArgument, output: OutOption, count: CountOption = 100,
    seed: SeedOption = 0, workers: WorkersOption = 1, recipe: RecipeOption = None,
    sample_rate: RateOption = None, audio_format: FormatOption = None, quiet: QuietOption = False,
) -> None:
    """SpotSound-style grounding clips: ~53 s, targets under 10% of the clip, plus negatives.

    OUT/grounding.json lists each target caption with all its intervals, and absent-event captions with empty annotations. Same files and resuming as flam synth sed.

    Example: flam synth ground corpus.csv -o bench/ -n 400 --seed 0
    """
    _run("ground", manifest, output, count, seed, workers, recipe, sample_rate, audio_format,
         quiet)
