"""BERT/RoBERTa-style text encoder with Hugging Face parameter names, and its tokenizer.

Names match ``transformers`` ``RobertaModel``/``BertModel`` state dicts (``embeddings``,
``encoder.layer.i.attention.self.query`` …, ``pooler.dense``) so published text towers load
strictly, without depending on transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import TextEncoderConfig
from .linear import Linear


def embedding(count: int, dim: int, padding_idx: int | None = None) -> nn.Embedding:
    """``nn.Embedding``, randomly initialised unless built on the meta device.

    The loader builds the model on the meta device and then assigns the weights; there
    nn.Embedding's own init would call ``normal_`` on a meta tensor, whose first call imports
    torch._dynamo (about 2.5 s, most of a model load).
    """
    weight = torch.empty(count, dim)  # on the meta device inside ``with torch.device("meta")``
    layer = nn.Embedding(count, dim, padding_idx=padding_idx, _weight=weight)
    if not weight.is_meta:
        layer.reset_parameters()
    return layer


class Embeddings(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.kind, self.pad_token_id = config.kind, config.pad_token_id
        self.word_embeddings = embedding(config.vocab_size, config.hidden_size,
                                         padding_idx=config.pad_token_id)
        self.position_embeddings = embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.kind == "roberta":
            # RoBERTa numbers real tokens from padding_idx + 1 and gives pads padding_idx.
            mask = attention_mask.long()
            positions = torch.cumsum(mask, dim=1) * mask + self.pad_token_id
        else:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        x = x + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.heads = config.num_heads
        self.query = Linear(config.hidden_size, config.hidden_size)
        self.key = Linear(config.hidden_size, config.hidden_size)
        self.value = Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape

        def split(t):
            return t.view(b, n, self.heads, c // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(self.query(x)), split(self.key(x)), split(self.value(x)), attn_mask=key_bias
        )
        return out.transpose(1, 2).reshape(b, n, c)


class DenseNorm(nn.Module):
    """Linear, residual add, LayerNorm (HF's ``*Output`` blocks)."""

    def __init__(self, inp: int, out: int, eps: float):
        super().__init__()
        self.dense = Linear(inp, out)
        self.LayerNorm = nn.LayerNorm(out, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x, residual=residual))


class Attention(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.self = SelfAttention(config)
        self.output = DenseNorm(config.hidden_size, config.hidden_size, config.layer_norm_eps)

    def forward(self, x, key_bias):
        return self.output(self.self(x, key_bias), x)


class Intermediate(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x):
        return self.dense(x, activation="gelu")


class Layer(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = DenseNorm(config.intermediate_size, config.hidden_size, config.layer_norm_eps)

    def forward(self, x, key_bias):
        x = self.attention(x, key_bias)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_layers))

    def forward(self, x, key_bias):
        for layer in self.layer:
            x = layer(x, key_bias)
        return x


class Pooler(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden):
        return torch.tanh(self.dense(hidden[:, 0]))


class TextEncoder(nn.Module):
    """Token ids + attention mask → one pooled vector per text, [B, hidden_size]."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.pooler = Pooler(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids, attention_mask)
        key_bias = torch.zeros(attention_mask.shape, dtype=x.dtype, device=x.device)
        key_bias = key_bias.masked_fill(attention_mask == 0, torch.finfo(x.dtype).min)
        hidden = self.encoder(x, key_bias[:, None, None, :])
        if self.config.pooling == "mean":
            weights = attention_mask.to(hidden.dtype)[..., None]
            return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.pooler(hidden)


# ---------------------------------------------------------------------------------------------
# Tokenizer


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` plus the padding/truncation policy of one text tower."""

    FILE = "tokenizer.json"

    def __init__(self, tokenizer, config: TextEncoderConfig):
        self.tokenizer = tokenizer
        self.config = config
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=config.max_length)

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts → (input_ids, attention_mask), padded to the longest text in the batch.

        Padding to the longest text instead of a fixed 77 gives identical outputs (pads are
        masked) at a fraction of the cost.
        """
        if self.config.lowercase:
            texts = [t.lower() for t in texts]
        encodings = self.tokenizer.encode_batch(texts)
        length = max(len(e.ids) for e in encodings)
        ids = torch.full((len(texts), length), self.config.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(texts), length), dtype=torch.long)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = torch.tensor(encoding.ids, dtype=torch.long)
            mask[row, : len(encoding.ids)] = 1
        return ids, mask

    def save(self, directory: Path) -> None:
        self.tokenizer.save(str(Path(directory) / self.FILE))

    @classmethod
    def from_directory(cls, directory: Path, config: TextEncoderConfig) -> "TextTokenizer":
        from tokenizers import Tokenizer

        directory = Path(directory)
        if (directory / cls.FILE).is_file():
            return cls(Tokenizer.from_file(str(directory / cls.FILE)), config)
        if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
            return cls(roberta_tokenizer(directory / "vocab.json", directory / "merges.txt"), config)
        if (directory / "vocab.txt").is_file():
            return cls(wordpiece_tokenizer(directory / "vocab.txt", config.lowercase), config)
        raise FileNotFoundError(
            f"no tokenizer in {directory} (expected tokenizer.json, vocab.json + merges.txt, "
            "or vocab.txt)"
        )


def _byte_level_bpe(vocab: dict[str, int], merges: list[tuple[str, str]]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", vocab["</s>"]), ("<s>", vocab["<s>"]), add_prefix_space=False
    )
    return tokenizer


def roberta_tokenizer(vocab_path: Path, merges_path: Path):
    """RoBERTa's byte-level BPE from ``vocab.json`` + ``merges.txt`` (GPT-2 merges)."""
    vocab = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
    merges = []
    for line in Path(merges_path).read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#version"):
            left, right = line.split(" ")
            merges.append((left, right))
    return _byte_level_bpe(vocab, merges)


def wordpiece_tokenizer(vocab_path: Path, lowercase: bool):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {}
    for index, token in enumerate(Path(vocab_path).read_text(encoding="utf-8").splitlines()):
        vocab[token] = index
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.BertProcessing(
        ("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"])
    )
    return tokenizer


def byte_tokenizer():
    """A complete byte-level tokenizer with no merges: 4 specials + 256 bytes = 260 ids.

    Used by the in-code ``debug`` model so that tokenisation is real but needs no files.
    """
    from tokenizers import pre_tokenizers

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    return _byte_level_bpe(vocab, [])
