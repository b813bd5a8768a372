"""Legacy checkpoints → flam model directories (safetensors + config + tokenizer + card).

The published OpenFLAM checkpoint is a torch pickle of a flat state dict whose key names
flamcli's model shares. It is read once with ``torch.load(weights_only=True)`` and written as
safetensors, so later loads are fast and never unpickle anything.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..files import atomic_path
from .config import FlamConfig, openflam_v1_base_config
from .text import roberta_tokenizer

OPENFLAM_CHECKPOINT = "open_flam_oct17.pth"
OPENFLAM_LICENCE = "Adobe Research License (non-commercial research and teaching only)"
OPENFLAM_NOTICE = (
    "OpenFLAM v1-base weights (c) 2025 Adobe, under the Adobe Research License: "
    "non-commercial research and teaching only; derivatives (including this local conversion) "
    "keep these terms. flam itself is Apache-2.0 and does not redistribute these weights."
)


def looks_like_openflam(state_keys) -> bool:
    keys = set(state_keys)
    return "audio_branch.logmel_extractor.melW" in keys and "text_branch.pooler.dense.weight" in keys


def convert_openflam(checkpoint: Path, vocab: Path, merges: Path, target: Path,
                     config: FlamConfig | None = None, provenance: dict | None = None) -> Path:
    """Write ``target/`` as a flam model directory from an OpenFLAM-format checkpoint."""
    from safetensors.torch import save_file

    from .registry import build_from_state_dict, read_state_dict
    from .flam import ModelInfo
    from .text import TextTokenizer

    config = config or openflam_v1_base_config()
    state = read_state_dict(Path(checkpoint))
    tokenizer = TextTokenizer(roberta_tokenizer(vocab, merges), config.text)
    # Building the model checks the key set strictly before anything is written.
    build_from_state_dict(config, tokenizer, state, ModelInfo(name=config.name, source=str(checkpoint)))
    target.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in state.items()}
    with atomic_path(target / "tokenizer.json") as tmp:
        tokenizer.tokenizer.save(str(tmp))
    with atomic_path(target / "config.json") as tmp:
        tmp.write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    card = [f"# {config.name} (converted)", "", OPENFLAM_NOTICE, "",
            f"Converted by flam from `{Path(checkpoint).name}`.", ""]
    for key, value in (provenance or {}).items():
        card.append(f"- {key}: {value}")
    with atomic_path(target / "README.md") as tmp:
        tmp.write_text("\n".join(card) + "\n", encoding="utf-8")
    # The weights go last: their presence marks a complete conversion.
    with atomic_path(target / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "flam_config": config.name})
    return target
