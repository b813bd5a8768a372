"""``flam train``: train or fine-tune a FLAM model on `flam synth` data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import (ExitCode, Log, QuietOption, ThreadsOption, check_device, configure_torch,
                     progress_bar)


def _command(ctx: typer.Context) -> str:
    """This command line as typed options (for the model card), defaults left out."""
    import shlex

    words = ["flam", "train"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value is None or value == param.default or param.name in ("quiet",):
            continue
        flag = max(param.opts, key=len)
        if isinstance(value, bool):
            words.append(flag if value else (param.secondary_opts or [flag])[0])
        else:
            words += [flag, shlex.quote(str(value))]
    return " ".join(words)


def train_command(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option(
        "--data", help="A `flam synth sed` output folder, or a corpus manifest (.csv/.jsonl) "
                       "for mixtures made on the fly.")],
    output: Annotated[Path, typer.Option(
        "-o", "--output", help="Output folder, new or empty unless --resume continues the run "
                               "in it: a loadable model, metrics.jsonl, loss.png, checkpoints/.")],
    config: Annotated[str, typer.Option(
        "--config", help="Architecture: debug, openflam-v1-base, or a config.json file.")] = "debug",
    init: Annotated[Optional[str], typer.Option(
        "--init", help="Start from this model (registry name, directory or weights file) "
                       "instead of random weights; its architecture wins over --config.")] = None,
    frames: Annotated[Optional[int], typer.Option(
        "--frames", min=1, max=10_000, help="Output frames per window for a cnn audio tower (default: the "
                                "architecture's). No weight depends on it: --init a model and "
                                "fine-tune it at a finer time grid.")] = None,
    freq_masks: Annotated[Optional[int], typer.Option(
        "--freq-masks", min=0, max=64, help="cnn audio tower: blank this many random bands of up to 8 "
                                    "mel bins in each training clip (SpecAugment; 0 = off; "
                                    "default: the model's config). Inference is unchanged.")] = None,
    max_steps: Annotated[int, typer.Option("--max-steps", min=1, max=10**9, help="Optimiser steps.")] = 1000,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=1, max=65_536, help="Clips per process per micro-batch (5 text slots each).")] = 8,
    grad_accum: Annotated[int, typer.Option(
        "--grad-accum", min=1, max=65_536, help="Micro-batches per optimiser step.")] = 1,
    lr: Annotated[float, typer.Option("--lr", min=0.0, max=10.0, help="Peak learning rate (AdamW).")] = 1e-4,
    weight_decay: Annotated[float, typer.Option(
        "--weight-decay", min=0.0, max=10.0, help="AdamW weight decay.")] = 0.01,
    warmup_steps: Annotated[Optional[int], typer.Option(
        "--warmup-steps", min=0, max=10**9,
        help="Cosine warm-up steps, then linear decay (default min(3200, steps/20)).")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**63 - 1, help="Same seed, same run.")] = 0,
    checkpoint_every: Annotated[int, typer.Option(
        "--checkpoint-every", min=1, max=10**9, help="Write a checkpoint every N steps.")] = 500,
    keep_checkpoints: Annotated[int, typer.Option(
        "--keep-checkpoints", min=1, max=10_000, help="Checkpoints kept on disk.")] = 2,
    validation: Annotated[Optional[Path], typer.Option(
        "--validation", file_okay=False,
        help="A `flam synth sed` folder of held-out mixtures: PSDS1/2, AUROC, MPAUC and F1 "
             "go to OUT/validation.jsonl.")] = None,
    eval_every: Annotated[int, typer.Option(
        "--eval-every", min=0, max=10**9, help="Validate every N steps (0: only at the end).")] = 0,
    resume: Annotated[Optional[str], typer.Option(
        "--resume", help="`latest` (newest checkpoint in OUTPUT, if any) or a checkpoint "
                         "folder.")] = None,
    global_loss: Annotated[str, typer.Option(
        "--global-loss", help="sigmoid (SigLIP, ring), infonce or none.")] = "sigmoid",
    sed_weight: Annotated[float, typer.Option("--sed-weight", min=0.0, max=1e6, help="λ_SED.")] = 200.0,
    prior_weight: Annotated[float, typer.Option("--prior-weight", min=0.0, max=1e6, help="λ_prior.")] = 1.0,
    global_weight: Annotated[float, typer.Option(
        "--global-weight", min=0.0, max=1e6,
        help="Weight of the global (clip-level) contrastive loss.")] = 1.0,
    tag_rate: Annotated[float, typer.Option(
        "--tag-rate", min=0.0, max=1.0,
        help="Probability of replacing a caption by one of its clip's tags.")] = 0.5,
    phrase_rate: Annotated[float, typer.Option(
        "--phrase-rate", min=0.0, max=1.0,
        help="Else, probability of replacing a caption by one of its other phrasings (the "
             "manifest's later captions).")] = 0.3,
    tag_matches: Annotated[str, typer.Option(
        "--tag-matches", help="mask: a tag or caption that fits a clip without labelling it "
                              "is not a negative for that clip; negative: the paper's rule "
                              "(every unlabelled description is negative).")] = "mask",
    recipe: Annotated[Optional[Path], typer.Option(
        "--recipe", dir_okay=False,
        help="SED recipe JSON for mixtures made on the fly from a manifest --data (see `flam "
             "synth recipe sed`), e.g. background and event augmentation or caption "
             "balance; its rate and duration follow the model. Saved as OUTPUT/recipe.json.")] = None,
    tags: Annotated[Optional[Path], typer.Option(
        "--tags", help="Manifest giving each caption's tags (automatic for a manifest --data).")
    ] = None,
    downsample_rate: Annotated[float, typer.Option(
        "--downsample-rate", min=0.0, max=1.0,
        help="Probability of the down-and-up resampling augmentation.")] = 0.3,
    freeze_audio: Annotated[bool, typer.Option("--freeze-audio", help="Freeze the audio tower.")] = False,
    freeze_text: Annotated[bool, typer.Option(
        "--freeze-text", help="Freeze the text encoder (caption features are cached).")] = False,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the audio tower.")] = False,
    device: Annotated[str, typer.Option("--device", callback=check_device,
                                        help="auto, cpu or cuda.")] = "auto",
    threads: ThreadsOption = None,
    quiet: QuietOption = False,
) -> None:
    """Train FLAM (global + frame-wise SED + prior losses) on synthetic mixtures.

    Example: flam train --data mixtures/ --output my-model --config debug --max-steps 100

    Many processes: torchrun --nproc-per-node 4 -m flamcli train --data … (gloo on CPU, NCCL on
    CUDA); a killed run continues with --resume latest.

    OUTPUT must be new or empty unless --resume continues the run in it. Exit 2 for a bad option or option file (nothing is run); 3 when the data fails (a NaN loss, a malformed mixture) or, with the model still saved, when corpus clips were skipped or a validation failed; 4 when the --init model cannot be loaded.
    """
    from ..models.registry import ModelLoadError
    from ..training.trainer import TrainConfig, TrainingError, TrainingUsageError, train

    log = Log(quiet)
    log.attach()
    configure_torch(threads)
    cfg = TrainConfig(
        data=str(data), output=str(output), config=config, init=init, frames=frames,
        freq_masks=freq_masks, max_steps=max_steps,
        batch_size=batch_size, grad_accum=grad_accum, lr=lr, weight_decay=weight_decay,
        warmup_steps=warmup_steps, seed=seed, checkpoint_every=checkpoint_every,
        keep_checkpoints=keep_checkpoints, resume=resume, global_loss=global_loss,
        sed_weight=sed_weight, prior_weight=prior_weight, global_weight=global_weight,
        tag_rate=tag_rate, phrase_rate=phrase_rate, tag_matches=tag_matches, tags_manifest=str(tags) if tags else None,
        recipe=str(recipe) if recipe else None,
        downsample_rate=downsample_rate, freeze_audio=freeze_audio, freeze_text=freeze_text,
        compile=compile_, device=device, command=_command(ctx),
        validation=str(validation) if validation else None, eval_every=eval_every)
    if tag_matches not in ("mask", "negative"):
        log.error("--tag-matches must be mask or negative")
        raise typer.Exit(ExitCode.USAGE)
    if global_loss not in ("sigmoid", "infonce", "none"):
        log.error("--global-loss must be sigmoid, infonce or none")
        raise typer.Exit(ExitCode.USAGE)
    # On a terminal a progress bar (step, loss, clips/s) replaces the line per step; the
    # lines stay where stderr is a file, and metrics.jsonl has every step either way.
    bar = progress_bar(quiet)
    task = None

    def on_step(row: dict) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task("training", total=row["max_steps"], detail="")
        bar.update(task, completed=row["step"],
                   detail=f"step {row['step']}/{row['max_steps']} loss {row['loss']:.4f} "
                          f"{row['clips_per_s']:.1f} clips/s")

    try:
        summary = train(cfg, log=log.info, warn=log.warning,
                        progress=on_step if bar is not None else None)
    except ModelLoadError as exc:
        log.error(str(exc))
        raise typer.Exit(ExitCode.MODEL)
    except TrainingUsageError as exc:
        log.error(str(exc))
        raise typer.Exit(ExitCode.USAGE)
    except TrainingError as exc:
        log.error(str(exc))
        raise typer.Exit(ExitCode.INPUT_FAILED)
    finally:
        if bar is not None:
            bar.stop()
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if summary["rank"] == 0:
        log.info(f"{output}: model after {summary['steps']} steps (metrics.jsonl, loss.png, "
                 "checkpoints/)")
    if summary["failed"]:  # skipped clips or failed validations, each already on stderr
        raise typer.Exit(ExitCode.INPUT_FAILED)
