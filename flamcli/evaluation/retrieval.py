"""``flam eval retrieval`` and ``flam eval classify``: global-embedding metrics.

Audio embedding of a file: the model's global embedding of every 10 s window (the same
deterministic windows as ``flam detect``, zero-padded, never cropped at random), averaged with
weights = real samples per window, then L2-normalised. Text embedding: the model's text
embedding of the caption or prompt. Similarity: cosine.

* Retrieval (captions CSV ``file,caption``, one row per caption, or Clotho's wide
  ``file_name,caption_1…caption_5``): text→audio R@k = share of captions whose file is among
  the k most similar files; audio→text R@k = share of files with one of their captions among
  the k most similar captions. k = 1, 5, 10.
* Zero-shot classification (CSV ``file,label``): the prompt for a label is ``--prompt`` with
  ``{}`` replaced by the label (underscores as spaces); top-1 / top-5 accuracy.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .inputs import EvalInputError, clean_label, open_text

RECALL_AT = (1, 5, 10)
FILE_COLUMNS = ("file", "file_name", "filename", "audio", "audio_path", "path")


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    path = Path(path)
    text = open_text(path)  # one line, not a traceback, for a binary or unreadable file
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
        rows = [(number, {k.strip(): (v or "") for k, v in row.items() if k})
                for number, row in enumerate(reader, start=2)]
    except csv.Error as exc:
        raise EvalInputError(f"{path}:{reader.line_num}: {exc}") from None
    return header, rows


def _file_column(path, header) -> str:
    for name in FILE_COLUMNS:
        if name in header:
            return name
    raise EvalInputError(f"{path}:1: no file column (one of {', '.join(FILE_COLUMNS)}) in {header}")


def read_captions(path: Path) -> list[tuple[str, str]]:
    """(file, caption) pairs, long or wide (caption_1 …) layout."""
    header, rows = _read_csv(path)
    file_column = _file_column(path, header)
    caption_columns = [h for h in header if h.startswith("caption")]
    if not caption_columns:
        raise EvalInputError(f"{path}:1: no caption column in {header}")
    pairs = []
    for number, row in rows:
        name = row.get(file_column, "").strip()
        if not name:
            raise EvalInputError(f"{path}:{number}: empty {file_column}")
        for column in caption_columns:
            caption = clean_label(row.get(column, ""))
            if caption:
                pairs.append((name, caption))
    if not pairs:
        raise EvalInputError(f"{path}: no captions")
    return pairs


def read_labels(path: Path) -> list[tuple[str, str]]:
    header, rows = _read_csv(path)
    file_column = _file_column(path, header)
    label_column = next((h for h in ("label", "category", "class", "event_label") if h in header), None)
    if label_column is None:
        raise EvalInputError(f"{path}:1: no label column (label, category or class) in {header}")
    pairs = []
    for number, row in rows:
        name, label = row.get(file_column, "").strip(), clean_label(row.get(label_column, ""))
        if not name or not label:
            raise EvalInputError(f"{path}:{number}: empty {file_column if not name else label_column}")
        pairs.append((name, label))
    if not pairs:
        raise EvalInputError(f"{path}: no rows")
    return pairs


def resolve_audio(audio_dir: Path, names: Sequence[str], source: str) -> dict[str, Path]:
    """File names as listed → existing paths (relative to ``audio_dir`` unless absolute)."""
    out, missing = {}, []
    for name in dict.fromkeys(names):
        path = Path(name) if Path(name).is_absolute() else Path(audio_dir) / name
        if not path.is_file():
            missing.append(name)
        out[name] = path
    if missing:
        raise EvalInputError(f"{source}: audio file {missing[0]!r} not found under {audio_dir}"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return out


def embed_audio_files(model, paths: Sequence[Path], batch_size: int = 8,
                      on_file: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Global embeddings [N, D] (see module docstring)."""
    import torch

    from ..audio import AudioError, WindowStream
    from ..inference import inference_context

    out = []
    for number, path in enumerate(paths, start=1):
        try:
            stream = WindowStream(Path(path), model.sample_rate, model.window_samples,
                                  model.window_samples)
            windows = [(w.samples, w.valid) for w in stream]
        except AudioError as exc:
            raise EvalInputError(f"{path}: {exc}") from None
        if not windows or stream.total_samples == 0:
            raise EvalInputError(f"{path}: contains no audio samples")
        vectors, weights = [], []
        for start in range(0, len(windows), batch_size):
            chunk = windows[start:start + batch_size]
            batch = torch.from_numpy(np.stack([s for s, _ in chunk])).to(model.device)
            with torch.inference_mode(), inference_context(model.device):
                _, global_ = model.embed_audio(batch)
            vectors.append(global_.float().cpu().numpy())
            weights += [v for _, v in chunk]
        vectors = np.concatenate(vectors)
        mean = (vectors * np.asarray(weights, dtype=np.float64)[:, None]).sum(0)
        out.append(mean / max(np.linalg.norm(mean), 1e-12))
        if on_file:
            on_file(number, len(paths))
    return np.stack(out).astype(np.float32)


def embed_texts(model, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    import torch

    out = []
    for start in range(0, len(texts), batch_size):
        with torch.inference_mode():
            out.append(model.encode_text(list(texts[start:start + batch_size])).embeddings
                       .float().cpu().numpy())
    return np.concatenate(out)


def recall_at_k(similarity: np.ndarray, relevant: list[set[int]], ks=RECALL_AT) -> dict[int, float]:
    """similarity [queries, items]; relevant[i] = indices of the right items for query i.
    Ties rank the right item after the wrong ones (no optimistic ties)."""
    hits = {k: 0 for k in ks}
    for i, row in enumerate(similarity):
        right = np.zeros(len(row), dtype=bool)
        right[list(relevant[i])] = True
        best = row[right].max()
        rank = int(np.sum(row > best) + np.sum((row == best) & ~right))
        for k in ks:
            hits[k] += rank < k
    return {k: hits[k] / len(similarity) for k in ks}


def retrieval_metrics(audio: np.ndarray, text: np.ndarray, caption_file: Sequence[int]) -> dict:
    """audio [F, D], text [C, D] normalised; caption_file[c] = index of caption c's file."""
    similarity = text @ audio.T  # [C, F]
    t2a = recall_at_k(similarity, [{f} for f in caption_file])
    captions_of = [set() for _ in range(len(audio))]
    for c, f in enumerate(caption_file):
        captions_of[f].add(c)
    a2t = recall_at_k(similarity.T, captions_of)
    report = {"task": "retrieval", "files": len(audio), "captions": len(text)}
    for k in RECALL_AT:
        report[f"t2a_r@{k}"] = t2a[k]
    for k in RECALL_AT:
        report[f"a2t_r@{k}"] = a2t[k]
    return report


def classification_metrics(audio: np.ndarray, prompts: np.ndarray, truth: Sequence[int],
                           labels: Sequence[str]) -> dict:
    similarity = audio @ prompts.T  # [N, L]
    right = similarity[np.arange(len(truth)), truth]
    others = np.ones_like(similarity, dtype=bool)
    others[np.arange(len(truth)), truth] = False
    rank = ((similarity > right[:, None]) | ((similarity == right[:, None]) & others)).sum(1)
    per_label = {}
    for index, label in enumerate(labels):
        mask = np.asarray(truth) == index
        if mask.any():
            per_label[label] = float((rank[mask] < 1).mean())
    return {"task": "classify", "files": len(truth), "labels": len(labels),
            "top1_accuracy": float((rank < 1).mean()), "top5_accuracy": float((rank < 5).mean()),
            "per_label_top1": per_label}


def prompt_for(label: str, template: str = "{}") -> str:
    return template.replace("{}", label.replace("_", " "))
