"""Shared fixtures: the in-code debug model, synthetic audio files, a CLI runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    # Tests never see a user's model choice or cache, and never show progress bars.
    monkeypatch.delenv("FLAM_MODEL", raising=False)
    monkeypatch.setenv("FLAM_CACHE", str(tmp_path_factory.mktemp("flam-cache")))
    monkeypatch.setenv("FLAM_NO_PROGRESS", "1")
    # The CLI routes library log records to its own stderr lines; between tests the library
    # logger goes back to plain propagation so that caplog sees it.
    import logging

    logger = logging.getLogger("flamcli")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)


@pytest.fixture(scope="session")
def debug_model():
    from flamcli.models.registry import build_debug_model

    return build_debug_model()


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1, seed: int = 0,
         noise: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal(len(t))
    x = x.astype(np.float32)
    if channels > 1:
        x = np.stack([x * (1 - 0.1 * c) for c in range(channels)], axis=1)
    return x


@pytest.fixture
def make_audio(tmp_path):
    """make_audio(name, seconds, rate, channels=1, subtype=None, data=None) → path."""

    def make(name: str, seconds: float = 3.0, rate: int = 16_000, channels: int = 1,
             subtype: str | None = None, data: np.ndarray | None = None, **kw) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        samples = data if data is not None else tone(seconds, rate, channels=channels, **kw)
        sf.write(str(path), samples, rate, subtype=subtype)
        return path

    return make


@pytest.fixture
def cli():
    """Run the real Typer app in-process; stdout and stderr are kept apart."""
    from typer.testing import CliRunner

    from flamcli.cli.app import app

    runner = CliRunner()

    def run(*args, input: str | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)

    return run


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    """A tiny corpus (tones + noise), its manifest and 8 rendered 16 kHz mixtures: what the
    training tests train on."""
    from test_synth import build_corpus

    from flamcli.synth import SedRecipe, index_directory, read_manifest, synthesize, write_manifest

    root = tmp_path_factory.mktemp("train")
    corpus = build_corpus(root / "corpus")
    clips, _ = index_directory(corpus)
    manifest = write_manifest(clips, corpus / "corpus.csv")
    synthesize(read_manifest(manifest), SedRecipe(sample_rate=16000), root / "mix", 8, seed=0)
    return root / "mix", manifest


@pytest.fixture(scope="session")
def build_corpus():
    """examples/corpus/build_corpus.py as a module (it is a script, not part of flamcli)."""
    import importlib.util
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "corpus" / "build_corpus.py"
    spec = importlib.util.spec_from_file_location("build_corpus", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def assert_same_weights(model_a, model_b) -> None:
    """Every tensor equal, and the same names on both sides (zip would stop at the shorter)."""
    import torch

    a, b = model_a.state_dict(), model_b.state_dict()
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))[:10]
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture
def flam(monkeypatch, capsys):
    """Run the real entry point (`flam …` as a user types it) in-process: exit code, stdout
    and stderr, with the one-line usage errors of main() that CliRunner's app call skips."""
    import sys

    from flamcli.cli.app import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["flam", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
