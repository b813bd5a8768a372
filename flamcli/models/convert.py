"""Legacy checkpoints → flam model directories (safetensors + config + tokenizer + card).

The published OpenFLAM checkpoint is a torch pickle of a flat state dict whose key names
flamcli's model shares. It is read once with ``torch.load(weights_only=True)`` and written as
safetensors, so later loads are fast and never unpickle anything.
"""

from __future__ import annotations

from pathlib import Path

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
    from .flam import ModelInfo
    from .storage import (WEIGHTS_FILE, build_from_state_dict, read_state_dict,
                          write_model_directory)
    from .text import TextTokenizer

    config = config or openflam_v1_base_config()
    state = read_state_dict(Path(checkpoint))
    tokenizer = TextTokenizer(roberta_tokenizer(vocab, merges), config.text)
    # Building the model checks the key set strictly before anything is written.
    build_from_state_dict(config, tokenizer, state, ModelInfo(name=config.name, source=str(checkpoint)))
    card = [f"# {config.name} (converted)", "", OPENFLAM_NOTICE, "",
            f"Converted by flam from `{Path(checkpoint).name}`.", ""]
    for key, value in (provenance or {}).items():
        card.append(f"- {key}: {value}")
    return write_model_directory(target, config, tokenizer, {WEIGHTS_FILE: state},
                                 "\n".join(card) + "\n")


def load_openflam_directory(directory: Path, checkpoint: Path):
    """The published layout: ``open_flam_oct17.pth`` with ``vocab.json`` + ``merges.txt``."""
    from .flam import ModelInfo
    from .storage import ModelLoadError, _first_line, build_from_state_dict, read_state_dict
    from .text import TextTokenizer, roberta_tokenizer

    config = openflam_v1_base_config()
    missing = [n for n in ("vocab.json", "merges.txt") if not (directory / n).is_file()]
    if missing:
        raise ModelLoadError(
            f"{directory}: an OpenFLAM checkpoint needs the RoBERTa tokenizer files "
            f"{' and '.join(missing)} beside it (from the Hub repo FacebookAI/roberta-base)"
        )
    try:
        tokenizer = TextTokenizer(roberta_tokenizer(directory / "vocab.json",
                                                    directory / "merges.txt"), config.text)
    except Exception as exc:  # noqa: BLE001 - `tokenizers` raises a bare Exception for a damaged file
        raise ModelLoadError(f"{directory}: unreadable vocab.json or merges.txt "
                             f"({_first_line(exc)})") from None
    state = read_state_dict(checkpoint)
    if not looks_like_openflam(state):
        raise ModelLoadError(f"{checkpoint} is not an OpenFLAM checkpoint")
    info = ModelInfo(name=config.name, source=str(checkpoint), licence=OPENFLAM_LICENCE)
    return build_from_state_dict(config, tokenizer, state, info)
