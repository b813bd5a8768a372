"""How well does each per-query statistic separate present from absent queries?

    python bench/presence_separation.py --model models/flam-tiny \
        --folder /work/corpus-data/val-ground-400 --out bench/results/presence-separation.json

For every (file, caption) of a `flam synth ground` set: the peak unbiased frame probability
(what `flam ground` thresholds), its 2- and 3-frame moving averages and 3-frame median, the
peak over the file's level (peak log-odds minus a quarter of their 90th percentile: does a
query that is high all through the recording, i.e. like its background, stand out less?), the
peak cosine, and the best clip-level (global head) cosine over 10 s windows with 5 s hops.
Reports each statistic's ROC area (present vs absent) and the share of absent queries it
refuses at the threshold that finds 85% of the present ones. A decision rule can only beat
the peak if some statistic separates better. Per background recording, the peak's ROC area
and refusal at that one overall threshold show where absent queries are hard to refuse.

With ``--vocabulary MANIFEST`` (e.g. the training split) two open-set statistics are added:
each query competes with the manifest's captions that are not paraphrases of it (model text
embeddings' cosine < 0.7). ``vocabulary_margin`` is the largest log-odds lead of the query
over its best competitor in any frame; ``vocabulary_win`` is the query's peak probability
over the frames where no competitor beats it. If another caption explains the sound better,
the query would be refused. Two cohort normalisations (as in speaker verification's score
normalisation) soften that competition: ``cohort_mean_lead`` is the peak of the query's
log-odds minus a quarter of the competitors' mean log-odds in the same frame (a recording in
which every caption fires counts less), and ``cohort_share`` the peak of the query's log-odds
plus the log of its softmax share among itself and the competitors in that frame.
"""

from __future__ import annotations

import argparse
import copy as copy_module
import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from benchlib import background_names, mixture_plan, write_result
from flamcli.audio import resample
from flamcli.models import load_model
from flamcli.models.flam import calibrated_probability
from flamcli.models.frontend import slaney_mel_matrix

HERE = Path(__file__).resolve().parent


STATISTICS = ("peak", "mean2", "mean3", "median3", "peak_over_level", "peak_cosine",
              "global_cosine")
LEVEL_WEIGHT = 0.25  # the best of 0.25–1 on run 7's tuning set; larger weights separate worse
VOCABULARY_STATISTICS = ("vocabulary_margin", "vocabulary_win", "cohort_mean_lead", "cohort_share")
COHORT_WEIGHT = 0.25  # of 0.1–1 on run 7's tuning set, 0.1–0.25 tie with the peak; more separates worse
PARAPHRASE_COSINE = 0.7  # captions at least this close to the query do not compete with it


def log_odds(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return torch.log(p) - torch.log1p(-p)


def half_overlapping_windows(model, path: Path) -> torch.Tensor:
    """[windows, samples]: the file, mono at the model's rate, in model windows half a window
    apart (the last one zero-padded)."""
    window, hop = model.window_samples, model.window_samples // 2
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = resample(audio.mean(axis=1), rate, model.sample_rate)
    starts = range(0, max(1, len(audio) - window + hop), hop)
    pieces = [audio[s:s + window] for s in starts]
    return torch.from_numpy(np.stack([np.pad(piece, (0, window - len(piece)))
                                      for piece in pieces]))


def tilted(model, tilt_db: float):
    """``model`` whose log-mel is tilted by ``tilt_db`` dB per octave around 1 kHz (a
    test-time variation like the training recipe's spectral tilt); 0 gives ``model`` itself."""
    if tilt_db == 0:
        return model
    config = model.config.frontend
    centre = (slaney_mel_matrix(config).argmax(0).float().clamp(min=1)
              * config.sample_rate / config.n_fft)
    offset = tilt_db * torch.log2(centre / 1000.0)  # dB per mel bin
    copy = copy_module.deepcopy(model)
    plain = copy.audio_branch.logmel
    copy.audio_branch.logmel = lambda waveform: plain(waveform) + offset
    return copy


def probabilities(models, windows: torch.Tensor, text) -> torch.Tensor:
    """[queries, frames] calibrated probabilities, averaged over ``models`` (an ensemble of
    models or test-time variations; each scores with its own text embeddings)."""
    total = None
    for model, model_text in zip(models, text):
        frames, _ = model.embed_audio(windows)
        cosine = torch.einsum("btd,kd->kbt", frames, model_text.embeddings)
        p = calibrated_probability(cosine.reshape(len(model_text.scale), -1),
                                   model_text.scale, model_text.bias)
        total = p if total is None else total + p
    return total / len(models)


def peak_row(folder: Path, row: dict, p: torch.Tensor) -> dict:
    """A query's answer, background and the statistics every variant reports, from its
    probabilities ``p`` over the file's frames."""
    plan = mixture_plan(folder, row["audio_path"])
    return {"present": bool(row["annotations"]),
            "background": ",".join(background_names(plan)) if plan else "-",
            "peak": float(p.max()),
            "peak_over_level": float(log_odds(p).max() - LEVEL_WEIGHT * log_odds(p).quantile(0.9))}


def ensemble_statistics(models, folder: Path, truth: list[dict]) -> list[dict]:
    """The peak statistics of the ensemble's averaged probabilities."""
    captions = sorted({row["caption"] for row in truth})
    with torch.no_grad():
        text = [model.encode_text(captions) for model in models]
    by_file = {}
    for name in sorted({row["audio_path"] for row in truth}):
        with torch.no_grad():
            by_file[name] = probabilities(models, half_overlapping_windows(models[0], folder / name),
                                          text)
    return [peak_row(folder, row, by_file[row["audio_path"]][captions.index(row["caption"])])
            for row in truth]


def statistics(model, folder: Path, truth: list[dict], vocabulary: list[str] = ()) -> list[dict]:
    captions = sorted({row["caption"] for row in truth})
    with torch.no_grad():
        text = model.encode_text(captions)
        reference = model.encode_text(list(vocabulary)) if vocabulary else None
    embedded, vocabulary_p = {}, {}
    for name in sorted({row["audio_path"] for row in truth}):
        with torch.no_grad():
            embedded[name] = model.embed_audio(half_overlapping_windows(model, folder / name))
            if reference is not None:  # every reference caption's probabilities, once per file
                ref_cosine = torch.einsum("btd,kd->kbt", embedded[name][0], reference.embeddings)
                vocabulary_p[name] = calibrated_probability(
                    ref_cosine.reshape(len(vocabulary), -1), reference.scale, reference.bias)
    rows = []
    for row in truth:
        frames, clips = embedded[row["audio_path"]]
        k = captions.index(row["caption"])
        cosine = torch.einsum("btd,d->bt", frames, text.embeddings[k]).reshape(1, -1)
        p = calibrated_probability(cosine, text.scale[k:k + 1], text.bias[k:k + 1])[0]
        rows.append({**peak_row(folder, row, p),
                     "mean2": float(F.avg_pool1d(p[None, None], 2, 1).max()),
                     "mean3": float(F.avg_pool1d(p[None, None], 3, 1).max()),
                     "median3": float(p.unfold(0, 3, 1).median(-1).values.max()),
                     "peak_cosine": float(cosine.max()),
                     "global_cosine": float((clips @ text.embeddings[k]).max())})
        if reference is not None:
            rival = (reference.embeddings @ text.embeddings[k]) < PARAPHRASE_COSINE
            rows[-1].update(open_set_statistics(p, vocabulary_p[row["audio_path"]][rival]))
    return rows


def open_set_statistics(p: torch.Tensor, rivals: torch.Tensor) -> dict:
    """The query's probabilities ``p`` [frames] against its competitors' ``rivals``
    [competitors, frames]: the ``VOCABULARY_STATISTICS``."""
    query, others = log_odds(p), log_odds(rivals)
    best_rival = rivals.max(0).values
    log_share = query - torch.logsumexp(torch.cat([query[None], others]), 0)
    return {"vocabulary_margin": float((query - log_odds(best_rival)).max()),
            "vocabulary_win": float((p * (p >= best_rival)).max()),
            "cohort_mean_lead": float((query - COHORT_WEIGHT * others.mean(0)).max()),
            "cohort_share": float((query + log_share).max())}


def manifest_captions(path: Path) -> list[str]:
    """Each event clip's first caption in a corpus manifest (``flam synth index``)."""
    import pandas as pd

    table = pd.read_csv(path)
    return sorted({str(c).split("|")[0] for c, kind in zip(table["captions"], table["kind"])
                   if kind == "event"})


def separation(rows: list[dict], key: str, recall: float = 0.85) -> dict:
    present = np.array([r[key] for r in rows if r["present"]])
    absent = np.array([r[key] for r in rows if not r["present"]])
    auroc = (present[:, None] > absent[None]).mean() + 0.5 * (present[:, None] == absent[None]).mean()
    threshold = np.quantile(present, 1 - recall)
    return {"auroc": round(float(auroc), 4), f"refusal_at_recall_{recall:g}":
            round(float((absent < threshold).mean()), 4)}


def by_background(rows: list[dict], key: str = "peak", recall: float = 0.85) -> dict:
    """Per background recording: the statistic's ROC area there, and the share of absent
    queries refused at the one threshold that finds ``recall`` of all present queries."""
    threshold = np.quantile(np.array([r[key] for r in rows if r["present"]]), 1 - recall)
    out = {}
    for name in sorted({r["background"] for r in rows}):
        here = [r for r in rows if r["background"] == name]
        absent = [r[key] for r in here if not r["present"]]
        entry = {"queries": len(here)}
        if absent and len(absent) < len(here):
            entry.update(separation(here, key, recall))
            entry[f"refusal_at_overall_recall_{recall:g}"] = round(
                float((np.array(absent) < threshold).mean()), 4)
        out[name] = entry
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--folder", type=Path, required=True, help="a `flam synth ground` folder")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "presence-separation.json")
    ap.add_argument("--vocabulary", type=Path,
                    help="corpus manifest whose event captions compete with each query")
    ap.add_argument("--ensemble", action="append", default=[], metavar="MODEL",
                    help="average the probabilities of --model and this model (repeatable)")
    ap.add_argument("--tilt-db", type=float, default=0.0,
                    help="also average each model over log-mels tilted by ± this many dB "
                         "per octave (test-time augmentation)")
    args = ap.parse_args(argv)
    model = load_model(args.model, device="cpu").eval()
    truth = json.loads((args.folder / "grounding.json").read_text())
    if args.ensemble or args.tilt_db:
        members = [model] + [load_model(m, device="cpu").eval() for m in args.ensemble]
        tilts = (0.0, -args.tilt_db, args.tilt_db) if args.tilt_db else (0.0,)
        variants = [tilted(m, t) for m in members for t in tilts]
        rows = ensemble_statistics(variants, args.folder, truth)
        out = {"model": model.info.as_dict(), "ensemble": args.ensemble,
               "tilt_db": args.tilt_db, "folder": str(args.folder), "queries": len(rows),
               "statistics": {key: separation(rows, key) for key in ("peak", "peak_over_level")},
               "peak_by_background": by_background(rows)}
        write_result(args.out, out)
        return 0
    vocabulary = manifest_captions(args.vocabulary) if args.vocabulary else []
    rows = statistics(model, args.folder, truth, vocabulary)
    keys = STATISTICS + (VOCABULARY_STATISTICS if vocabulary else ())
    out = {"model": model.info.as_dict(), "folder": str(args.folder), "queries": len(rows),
           "statistics": {key: separation(rows, key) for key in keys},
           "peak_by_background": by_background(rows)}
    if vocabulary:
        out["vocabulary"] = {"manifest": str(args.vocabulary), "captions": len(vocabulary),
                             "paraphrase_cosine": PARAPHRASE_COSINE}
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
