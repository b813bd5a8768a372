"""Evaluation: SED (PSDS, AUROC, MPAUC, event/segment F1), grounding (set-IoU, R1, presence,
joint F1, Lighthouse R1/mAP), retrieval (R@k) and zero-shot classification (top-k).

The SED metrics are native re-implementations of sed_scores_eval 0.0.4 (``sed_metrics``),
tested for equality against goldens it produced. No UI here: ``flam eval`` is a thin layer.
"""

from .inputs import EvalInputError
from .sed import SedEvaluation, evaluate_sed
from .grounding import evaluate_grounding, evaluate_lighthouse, set_iou

__all__ = ["EvalInputError", "SedEvaluation", "evaluate_sed", "evaluate_grounding",
           "evaluate_lighthouse", "set_iou"]
