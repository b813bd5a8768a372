"""The training loop: one CPU or GPU, or many ranks under torchrun.

Per optimiser step, each rank takes ``batch_size`` examples per micro-batch
(``grad_accum`` micro-batches), scores them with the ring loss, and the ranks sum their
gradients (their losses are shares of one loss; see :mod:`flamcli.training.losses`). The
example indices depend only on the step, so the data position is the step.

Output folder::

    OUT/config.json, model.safetensors, tokenizer.json, README.md   a loadable flam model
    OUT/metrics.jsonl          one line per step: step, lr, loss and its parts, clips/s
    OUT/validation.jsonl       with --validation: SED metrics (PSDS1/2, AUROC, MPAUC, F1) by step
    OUT/loss.png               the loss curves
    OUT/checkpoints/step-NNNNNNNN/{model.safetensors,trainer.pt}   every --checkpoint-every
    OUT/checkpoints/latest     the name of the newest complete checkpoint
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..devices import DeviceError, resolve_device
from ..distributed import Dist, barrier
from ..distributed import setup_distributed as join_distributed
from ..files import write_text_atomic
from ..models.config import CONV_TOWERS
from .losses import FlamLoss, LossConfig, build_text_slots


class TrainingError(Exception):
    """Training stopped for a reason the user can act on (the message says which)."""


class TrainingUsageError(TrainingError):
    """A bad option or option file (--config, --resume, --output, --validation, …), found
    before any training: like every command's usage errors, nothing was run (exit 2)."""


@dataclass
class TrainConfig:
    data: str
    output: str
    config: str = "debug"  # a config name (debug, openflam-v1-base) or a config.json file
    init: str | None = None  # start from this model (registry name, directory, weights)
    # Output frames per window for a cnn audio tower (None: the architecture's own). No weight
    # depends on it, so a model trained at one frame rate can be fine-tuned at a finer one.
    frames: int | None = None
    # SpecAugment frequency bands masked per training clip for a cnn tower (None: the config's).
    freq_masks: int | None = None
    max_steps: int = 1000
    batch_size: int = 8  # clips per rank per micro-batch
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int | None = None  # default min(3200, max_steps // 20)
    max_grad_norm: float = 1.0  # 0 = no clipping
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    global_loss: str = "sigmoid"
    global_weight: float = 1.0
    sed_weight: float = 200.0
    prior_weight: float = 1.0
    tag_rate: float = 0.5
    phrase_rate: float = 0.3  # else a caption becomes one of its other phrasings
    # "mask": a description that fits a clip without labelling it (a tag of one of its events)
    # is left out for that clip; "negative": the paper's rule, every unlabelled text is negative.
    tag_matches: str = "mask"
    downsample_rate: float = 0.3
    tags_manifest: str | None = None
    # A `flam synth` SED recipe file for on-the-fly mixtures (e.g. background augmentation);
    # its rate and duration follow the model. None: the recipe defaults.
    recipe: str | None = None
    freeze_audio: bool = False
    freeze_text: bool = False
    compile: bool = False
    device: str = "auto"
    resume: str | None = None  # "latest" or a checkpoint folder
    validation: str | None = None  # a `flam synth sed` folder scored every `eval_every` steps
    eval_every: int = 0  # 0: only at the end (when validation is given)
    command: str = ""  # recorded in the model card

    def loss_config(self) -> LossConfig:
        return LossConfig(global_loss=self.global_loss, global_weight=self.global_weight,
                          sed_weight=self.sed_weight, prior_weight=self.prior_weight)

    def warmup(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(3200, max(1, self.max_steps // 20))


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Cosine warm-up over ``warmup`` steps, then linear decay to 0 at ``total`` (§5)."""
    if warmup > 0 and step < warmup:
        return 0.5 * (1 - math.cos(math.pi * (step + 1) / warmup))
    return max(0.0, (total - step) / max(1, total - warmup))


# ---------------------------------------------------------------------------------------------
# Distributed set-up (torchrun's environment)


def setup_distributed(device: str) -> Dist:
    """This rank under torchrun (:mod:`flamcli.distributed`), on the device ``--device`` asks."""
    try:
        use_cuda = resolve_device(device).type == "cuda"
    except DeviceError as exc:
        raise TrainingUsageError(str(exc)) from None
    return join_distributed(use_cuda)



def _broadcast_object(value, d: Dist):
    if d.world == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ---------------------------------------------------------------------------------------------
# Model


def build_model(cfg: TrainConfig):
    from ..models.config import FlamConfig, debug_config, openflam_v1_base_config
    from ..models.flam import FlamModel, ModelInfo
    from ..models.registry import load_model
    from ..models.text import TextTokenizer, byte_tokenizer

    if cfg.init:
        model = load_model(cfg.init, device="cpu")
        set_frames(model.config, cfg.frames)
        set_freq_masks(model.config, cfg.freq_masks)
        return model
    named = {"debug": debug_config, "openflam-v1-base": openflam_v1_base_config}
    if cfg.config in named:
        config = named[cfg.config]()
    else:
        path = Path(cfg.config)
        if not path.is_file():
            raise TrainingUsageError(f"--config {cfg.config}: not a config name "
                                     f"({', '.join(named)}) nor a config.json file")
        try:
            config = FlamConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
            raise TrainingUsageError(f"--config {path}: {exc}") from None
        except RecursionError:
            raise TrainingUsageError(f"--config {path}: JSON nested too deeply") from None
    set_frames(config, cfg.frames)
    set_freq_masks(config, cfg.freq_masks)
    torch.manual_seed(cfg.seed)
    # From scratch the text tower gets the byte-level tokenizer (ids < 260 fit any vocab).
    model = FlamModel(config, TextTokenizer(byte_tokenizer(), config.text))
    model.info = ModelInfo(name=config.name, source="trained by flam train")
    return model


def set_frames(config, frames: int | None) -> None:
    """Change a conv tower's output frames per window in place (its module reads the config)."""
    if frames is not None and frames != config.frames_per_window:
        _set_cnn_field(config, "--frames", "frames", frames, kinds=CONV_TOWERS)


def set_freq_masks(config, bands: int | None) -> None:
    """Turn a cnn tower's training-time frequency masking on or off (its module reads the config)."""
    if bands is not None and bands != config.audio.freq_masks:
        _set_cnn_field(config, "--freq-masks", "freq_masks", bands)


def _set_cnn_field(config, option: str, name: str, value: int,
                   kinds: tuple[str, ...] = ("cnn",)) -> None:
    if config.audio.kind not in kinds:
        raise TrainingUsageError(f"{option} {value}: only a {' or '.join(kinds)} audio tower "
                                 f"has it ({config.name} has a {config.audio.kind} tower)")
    old = getattr(config.audio, name)
    setattr(config.audio, name, value)
    try:
        config.validate()
    except ValueError as exc:
        setattr(config.audio, name, old)
        raise TrainingUsageError(f"{option} {value}: {exc}") from None


class TextCache:
    """Pooled text features of a frozen text encoder, computed once per caption."""

    def __init__(self, model):
        self.model = model
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        from .batch import encode_pooled

        new = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if new:
            with torch.no_grad():
                for text, row in zip(new, encode_pooled(self.model, new)):
                    self.cache[text] = row.detach()
        return torch.stack([self.cache[t] for t in texts])


# ---------------------------------------------------------------------------------------------
# Checkpoints


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: Path, step: int, model, loss_fn, optimizer, scheduler, cfg: TrainConfig,
                    examples_seen: int, keep: int) -> Path:
    """Write ``checkpoints/step-N`` atomically (temp folder + rename), then ``latest``."""
    from safetensors.torch import save_file

    root = out / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".step-{step:08d}.part"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"))
    torch.save({"step": step, "examples_seen": examples_seen, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "loss": loss_fn.state_dict(),
                "rng": _rng_state(), "config": asdict(cfg)}, tmp / "trainer.pt")
    for f in tmp.iterdir():  # data on disk before the rename makes it visible
        with open(f, "rb") as handle:
            os.fsync(handle.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    write_text_atomic(root / "latest", final.name + "\n")
    done = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".step-*.part"):  # left by a run killed while writing one
        shutil.rmtree(stale, ignore_errors=True)
    return final


def find_checkpoint(out: Path, which: str) -> Path | None:
    if which != "latest":
        path = Path(which)
        if not (path / "trainer.pt").is_file():
            raise TrainingUsageError(f"--resume {which}: not a checkpoint folder "
                                     "(no trainer.pt in it)")
        return path
    root = out / "checkpoints"
    try:
        name = (root / "latest").read_text(encoding="utf-8").strip()
        if (root / name / "trainer.pt").is_file():
            return root / name
    except OSError:
        pass
    done = sorted(p for p in root.glob("step-*") if (p / "trainer.pt").is_file())
    return done[-1] if done else None


def load_checkpoint(path: Path, model, loss_fn, optimizer, scheduler) -> dict:
    from safetensors.torch import load_file

    try:
        model.load_state_dict(load_file(str(path / "model.safetensors")))
        # Our own file, written by save_checkpoint: optimizer and RNG state need pickled objects.
        state = torch.load(path / "trainer.pt", map_location="cpu", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        loss_fn.load_state_dict(state["loss"])
        _set_rng_state(state["rng"])
    except Exception as exc:  # noqa: BLE001 - damaged files or another architecture's weights
        detail = " ".join(str(exc).split())[:300]  # load_state_dict's message spans many lines
        raise TrainingUsageError(f"--resume: {path}: cannot be loaded into this model "
                                 f"({exc.__class__.__name__}: {detail})") from None
    return state


def check_output(out: Path, resume: str | None) -> None:
    """Refuse an --output folder that already holds something, unless resuming into it.

    A fresh run there would replace the old model, delete its metrics and leave its
    checkpoints beside the new run's, where ``--resume latest`` could later pick them up.
    """
    if out.exists() and not out.is_dir():
        raise TrainingUsageError(f"--output {out}: not a folder")
    if resume:
        return
    try:
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
    except FileNotFoundError:
        return
    except OSError as exc:
        raise TrainingUsageError(f"--output {out}: cannot be read ({exc.strerror})") from None
    if not entries:
        return
    run = sorted({"checkpoints/", "metrics.jsonl", "model.safetensors"} & set(entries))
    listed = run or entries
    shown = ", ".join(listed[:3]) + (", …" if len(listed) > 3 else "")
    if run:
        raise TrainingUsageError(f"--output {out}: holds another training run ({shown}); "
                                 "continue it with --resume latest, or choose another folder")
    raise TrainingUsageError(f"--output {out}: is not empty ({shown}); choose another (new or "
                             "empty) folder")


# ---------------------------------------------------------------------------------------------
# Outputs


def model_card(cfg: TrainConfig, model, data_description: str, step: int, last: dict) -> str:
    loss = f"{last.get('loss', float('nan')):.4f}" if last else "n/a"
    return (
        f"# {model.config.name} (trained with flam train)\n\n"
        f"A FLAM model (frame-wise language-audio model) trained by `flam train`; load it "
        f"with `flam detect AUDIO QUERY --model {cfg.output}`.\n\n"
        f"- command: `{cfg.command or 'flam train'}`\n"
        f"- data: {data_description}\n"
        f"- architecture: {cfg.init or cfg.config}; initialised from "
        f"{cfg.init or 'scratch (seed %d)' % cfg.seed}\n"
        f"- steps: {step}, batch {cfg.batch_size} × accumulation {cfg.grad_accum} per rank\n"
        f"- final loss: {loss}\n"
        f"- losses: global {cfg.global_loss} ×{cfg.global_weight}, SED ×{cfg.sed_weight}, "
        f"prior ×{cfg.prior_weight}\n\n"
        "Training settings:\n\n```json\n" + json.dumps(asdict(cfg), indent=2) + "\n```\n"
    )


def _truncate_metrics(path: Path, step: int) -> None:
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    write_text_atomic(path, "".join(line + "\n" for line in keep))


# ---------------------------------------------------------------------------------------------
# The loop


def _training_recipe(path: str | None, sample_rate: int, window: float):
    """The SED recipe file for on-the-fly mixtures, at the model's rate and window length."""
    if path is None:
        return None
    from ..synth import RecipeError, SedRecipe

    try:
        recipe = SedRecipe.load(path)
        recipe.sample_rate, recipe.duration = sample_rate, window
        recipe.validate()
    except RecipeError as exc:
        raise TrainingUsageError(f"--recipe {exc}") from None
    return recipe


def _on_main(d: Dist, check: Callable[[], object]):
    """``check()`` on rank 0 only, its result or its TrainingError on every rank.

    For checks of files only rank 0 uses (the output folder, checkpoints, validation): a
    refusal reaches every rank, so none is left waiting for rank 0 in a collective.
    """
    result = error = None
    if d.main:
        try:
            result = check()
        except TrainingError as exc:
            error = exc
    result, error = _broadcast_object((result, error), d)
    if error is not None:
        raise error
    return result


def _preflight(cfg: TrainConfig, out: Path) -> str | None:
    """Rank 0's option checks before anything is built or written → the checkpoint to resume."""
    from .data import DataError
    from .validation import load_validation

    check_output(out, cfg.resume)
    if cfg.validation:
        try:  # found at the end of a long run, it would cost the whole run
            load_validation(cfg.validation)
        except DataError as exc:
            raise TrainingUsageError(str(exc)) from None
    found = find_checkpoint(out, cfg.resume) if cfg.resume else None
    return str(found) if found else None


def _validate(model, cfg: TrainConfig, out: Path, step: int, log, warn) -> bool:
    """Score the validation folder into validation.jsonl → False (after a warning) on failure.

    A validation failure never stops training or the saving of the model: the run goes on
    and the command exits 3 at the end.
    """
    from .data import DataError
    from .validation import validate

    try:
        scores = validate(model, cfg.validation)
    except DataError as exc:
        warn(f"validation at step {step} failed: {exc}")
        return False
    with open(out / "validation.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"step": step, **scores}) + "\n")
    log(f"validation at step {step}: " + " ".join(
        f"{k} {v:.4f}" for k, v in scores.items() if v is not None))
    return True


def train(cfg: TrainConfig, log: Callable[[str], None] = print,
          warn: Callable[[str], None] | None = None,
          progress: Callable[[dict], None] | None = None) -> dict:
    """Train; returns a summary. Raises TrainingUsageError for a bad option before anything
    runs, TrainingError for data, NaN, out of memory.

    After every optimizer step the main process reports the step's row of ``metrics.jsonl``
    (``step``, ``loss`` and its parts, ``lr``, ``clips_per_s``, ``seconds``) to ``progress``;
    without a ``progress`` callback it goes to ``log`` as one line.

    Skipped corpus clips and failed validations are reported through ``warn`` (default
    ``log``) and counted in the summary's ``failed`` (the CLI then exits 3); the model is
    still trained and saved.
    """
    from .batch import loss_inputs
    from .data import Augment, DataError, DataUsageError, open_data
    from .ring import all_reduce_gradients, all_reduce_plain

    warn = warn or log
    if cfg.max_steps < 1 or cfg.batch_size < 1 or cfg.grad_accum < 1:
        raise TrainingUsageError("--max-steps, --batch-size and --grad-accum must be at least 1")
    if cfg.seed < 0:  # numpy's generators refuse negative seeds
        raise TrainingUsageError(f"--seed {cfg.seed}: must be 0 or more")
    d = setup_distributed(cfg.device)
    out = Path(cfg.output)
    found = _on_main(d, lambda: _preflight(cfg, out))
    # Every rank builds the model and opens the data itself, from the same files: a refusal
    # here is the same on every rank.
    model = build_model(cfg)
    window = model.config.frontend.window_seconds
    recipe = _training_recipe(cfg.recipe, model.sample_rate, window)
    try:
        data = open_data(cfg.data, model.sample_rate, window, seed=cfg.seed,
                         augment=Augment(tag_rate=cfg.tag_rate, downsample_rate=cfg.downsample_rate,
                                         phrase_rate=cfg.phrase_rate),
                         tags_manifest=cfg.tags_manifest, recipe=recipe)
    except DataUsageError as exc:
        raise TrainingUsageError(str(exc)) from None
    except DataError as exc:
        raise TrainingError(str(exc)) from None
    failed = sum(item.failed for item in data.skipped)
    if d.main:
        for item in data.skipped:  # as `flam synth sed` reports them
            warn(f"{item.path}: skipped: {item.reason}")
    if cfg.freeze_audio:
        for p in list(model.audio_branch.parameters()) + list(model.audio_projection.parameters()):
            p.requires_grad_(False)
    text_cache = None
    if cfg.freeze_text:
        for p in model.text_branch.parameters():
            p.requires_grad_(False)
        text_cache = TextCache(model)
    model.to(d.device).train()
    loss_fn = FlamLoss(cfg.loss_config()).to(d.device)
    params = [p for p in model.parameters() if p.requires_grad] + list(loss_fn.parameters())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]  # biases, norms, scales: no weight decay
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    warmup = cfg.warmup()
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup, cfg.max_steps))

    step = 0
    metrics = out / "metrics.jsonl"
    if cfg.resume:
        if found is None:
            if d.main:
                log(f"no checkpoint in {out / 'checkpoints'}: starting from step 0")
        else:
            state = load_checkpoint(Path(found), model, loss_fn, optimizer, scheduler)
            step = int(state["step"])
            if d.main:
                log(f"resumed from {found} (step {step})")
    if d.world > 1:  # every rank starts from rank 0's weights (DDP semantics)
        import torch.distributed as dist

        for tensor in list(model.state_dict().values()) + list(loss_fn.state_dict().values()):
            dist.broadcast(tensor.data, src=0)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        if recipe is not None:  # the mixtures this run saw, beside its weights
            recipe.save(out / "recipe.json")
        for log_file in (metrics, out / "validation.jsonl"):  # back to the resumed step
            if step == 0 and log_file.exists():
                log_file.unlink()
            _truncate_metrics(log_file, step)
    embed = torch.compile(model.embed_audio) if cfg.compile else None

    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if d.device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    per_step = cfg.batch_size * d.world * cfg.grad_accum
    # Test hook for the kill tests: a pause in the middle of every step (gradients computed,
    # random layers and augmentations drawn, weights not yet changed), where a SIGKILL hurts most.
    delay = float(os.environ.get("FLAM_TRAIN_STEP_DELAY", "0") or 0)
    last: dict = {}
    good = find_checkpoint(out, "latest") if d.main else None
    first_step = step
    while step < cfg.max_steps:
        started = time.perf_counter()
        sums: dict[str, float] = {}
        try:
            for micro in range(cfg.grad_accum):
                first = step * per_step + (micro * d.world + d.rank) * cfg.batch_size
                examples = data.batch(first, cfg.batch_size)
                waves = torch.from_numpy(np.stack([e.audio for e in examples]))
                slots = build_text_slots(
                    [e.labels for e in examples], [e.negatives for e in examples],
                    model.frames_per_window, window,
                    unlabelled=([e.unlabelled for e in examples]
                                if cfg.tag_matches == "mask" else None))
                with autocast:
                    inputs = loss_inputs(model, waves, slots, text_cache, embed=embed)
                result = loss_fn(inputs, model.logit_scale_a, None)  # fp32 loss maths
                (result.total / cfg.grad_accum).backward()
                for key, value in [("loss", result.total.detach()), *result.parts.items()]:
                    sums[key] = sums.get(key, 0.0) + float(value) / cfg.grad_accum
        except DataError as exc:
            raise TrainingError(str(exc)) from None
        except torch.OutOfMemoryError:
            raise TrainingError(
                f"out of memory at batch size {cfg.batch_size} per rank: use a smaller "
                "--batch-size and a larger --grad-accum (same effective batch)") from None
        if delay:
            time.sleep(delay)
        all_reduce_gradients(params)
        keys = sorted(sums)
        totals = all_reduce_plain(torch.tensor([sums[k] for k in keys], dtype=torch.float64))
        values = dict(zip(keys, totals.tolist()))
        if not all(math.isfinite(v) for v in values.values()):
            where = f"; the last good checkpoint is {good}" if good else ""
            raise TrainingError(f"non-finite loss at step {step + 1} ({values}): stopped "
                                f"without updating{where}. Try a lower --lr")
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        elapsed = time.perf_counter() - started
        last = {"step": step, "lr": lr, **values, "clips_per_s": per_step / elapsed,
                "seconds": elapsed}
        if d.main:
            with open(metrics, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(last) + "\n")
            if step % max(1, cfg.checkpoint_every) == 0 or step == cfg.max_steps:
                good = save_checkpoint(out, step, model, loss_fn, optimizer, scheduler, cfg,
                                       step * per_step, cfg.keep_checkpoints)
            if progress is not None:
                progress({**last, "max_steps": cfg.max_steps})
            else:
                parts = " ".join(f"{k} {values[k]:.4f}" for k in keys if k != "loss")
                log(f"step {step}/{cfg.max_steps} loss {values['loss']:.4f} ({parts}) "
                    f"lr {lr:.2e} {per_step / elapsed:.1f} clips/s")
            # The last step's validation comes after the model is saved (below).
            due = cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.max_steps
            if cfg.validation and due and not _validate(model, cfg, out, step, log, warn):
                failed += 1
        barrier(d)
    if d.main:
        from ..models.storage import save_model

        model.eval()
        save_model(model, out, card=model_card(cfg, model, data.describe(), step, last))
        from ..plots import plot_losses

        plot_losses(metrics, out / "loss.png")
        # Not again when a finished run is resumed: its final row is already there.
        if cfg.validation and step > first_step and not _validate(model, cfg, out, step, log,
                                                                  warn):
            failed += 1
    barrier(d)
    return {"steps": step, "last": last, "output": str(out), "rank": d.rank, "world": d.world,
            "failed": failed}

