"""bench/presence_separation.py's ensemble, test-time tilt and open-set statistics (the
measurements behind the "no gain" results in docs/benchmarks.md): a model averaged with itself
is the model, a tilt moves each mel bin by the asked dB per octave, and the open-set
statistics match values worked out by hand."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "presence_separation.py"


def slaney_centres(f_min: float, f_max: float, n_mels: int) -> list[float]:
    """Centre frequencies of a Slaney mel filterbank: linear (200/3 Hz per mel) below 1 kHz,
    logarithmic (27 mels per factor 6.4) above."""
    step, knee = 200 / 3, 1000.0
    log_step = math.log(6.4) / 27

    def mel(f):
        return f / step if f < knee else knee / step + math.log(f / knee) / log_step

    def hz(m):
        return m * step if m < knee / step else knee * math.exp((m - knee / step) * log_step)

    low, high = mel(f_min), mel(f_max)
    return [hz(low + (high - low) * (i + 1) / (n_mels + 1)) for i in range(n_mels)]


@pytest.fixture(scope="module")
def presence():
    spec = importlib.util.spec_from_file_location("presence_separation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    sys.path.insert(0, str(SCRIPT.parent))  # as when run as a script: its helpers sit beside it
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return module


def test_no_tilt_is_the_model_itself(presence, debug_model):
    assert presence.tilted(debug_model, 0.0) is debug_model


def test_a_tilt_raises_each_octave_by_its_db(presence, debug_model):
    model = debug_model.eval()
    waveform = torch.randn(1, model.window_samples, generator=torch.Generator().manual_seed(0))
    tilted = presence.tilted(model, 3.0)
    with torch.no_grad():
        plain = model.audio_branch.logmel(waveform)
        moved = tilted.audio_branch.logmel(waveform)
    offset = (moved - plain)[0, 0, 0]  # [mels], the same in every frame
    assert torch.allclose(moved - plain, offset.expand_as(plain), atol=1e-4)
    assert bool((offset[1:] >= offset[:-1] - 1e-5).all())  # brighter towards the top
    # 3 dB per octave around 1 kHz: the outer mel bins' centres (Slaney's scale, worked out
    # here independently) are log2(last / first) octaves apart; FFT bins round them a little
    config = model.config.frontend
    centres = slaney_centres(config.f_min, config.f_max, config.n_mels)
    expected = 3 * math.log2(centres[-1] / centres[0])
    assert float(offset[-1] - offset[0]) == pytest.approx(expected, abs=0.6)
    assert float(offset[0]) < 0 < float(offset[-1])
    # twice the tilt, twice the offset; the opposite tilt, the opposite offset
    with torch.no_grad():
        steeper = presence.tilted(model, 6.0).audio_branch.logmel(waveform) - plain
        opposite = presence.tilted(model, -3.0).audio_branch.logmel(waveform) - plain
    assert torch.allclose(steeper, 2 * (moved - plain), atol=1e-3)
    assert torch.allclose(opposite, -(moved - plain), atol=1e-3)
    # the original model is left as it was
    with torch.no_grad():
        assert torch.equal(model.audio_branch.logmel(waveform), plain)


def test_a_model_averaged_with_itself_scores_as_itself(presence, debug_model):
    model = debug_model.eval()
    windows = torch.randn(2, model.window_samples, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        text = model.encode_text(["a dog barks", "rain falling"])
        alone = presence.probabilities([model], windows, [text])
        twice = presence.probabilities([model, model], windows, [text, text])
        tilted = presence.probabilities([model, presence.tilted(model, 6.0)], windows,
                                        [text, text])
    assert alone.shape[0] == 2 and torch.allclose(alone, twice)
    assert not torch.allclose(alone, tilted)


def test_open_set_statistics_against_worked_values(presence):
    def p(log_odds):  # probabilities with these log-odds
        return torch.sigmoid(torch.tensor(log_odds))

    query = p([0.0, 2.0, -1.0])
    rivals = p([[1.0, 1.0, 1.0], [-3.0, 1.0, -3.0]])
    out = presence.open_set_statistics(query, rivals)
    # best rival 1 in every frame: leads −1, 1, −2; the query wins only frame 1
    assert out["vocabulary_margin"] == pytest.approx(1.0, abs=1e-4)
    assert out["vocabulary_win"] == pytest.approx(float(query[1]), abs=1e-6)
    # rivals' mean log-odds −1, 1, −1: 0 + 0.25, 2 − 0.25, −1 + 0.25 → 1.75
    assert out["cohort_mean_lead"] == pytest.approx(2.0 - presence.COHORT_WEIGHT, abs=1e-4)
    # frame 1: share e^2 / (e^2 + e + e) of the query's log-odds 2
    share = math.exp(2) / (math.exp(2) + 2 * math.e)
    assert out["cohort_share"] == pytest.approx(2.0 + math.log(share), abs=1e-4)
    # a query all rivals beat everywhere never wins
    assert presence.open_set_statistics(p([-5.0, -5.0]), p([[0.0, 0.0]]))["vocabulary_win"] == 0


def _frame_auroc():
    path = Path(__file__).resolve().parents[1] / "bench" / "frame_auroc.py"
    spec = importlib.util.spec_from_file_location("frame_auroc", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_frame_auroc_counts_pairs_and_ties_by_hand():
    import numpy as np

    module = _frame_auroc()
    labels = np.array([1, 0, 1, 0, 0])
    assert module.roc_area(labels, np.array([0.9, 0.1, 0.8, 0.2, 0.3])) == 1.0
    assert module.roc_area(labels, np.array([0.1, 0.9, 0.2, 0.8, 0.7])) == 0.0
    # positives 0.5 and 0.2 against negatives 0.4, 0.1, 0.6: wins 2 + 1 of 6 pairs
    assert module.roc_area(labels, np.array([0.5, 0.4, 0.2, 0.1, 0.6])) == pytest.approx(3 / 6)
    assert module.roc_area(labels, np.array([0.5, 0.5, 0.5, 0.5, 0.5])) == 0.5  # all tied
    # frames of 0.2 s: an event 0.3–0.7 s covers frames 1, 2 and 3
    target = module.frame_targets([{"a": [[0.3, 0.7]]}], ["a", "b"], 5, 1.0)
    assert target[0, 0].tolist() == [False, True, True, True, False]
    assert not target[0, 1].any()
