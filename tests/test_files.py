"""Atomic writes: an interrupted run never leaves a half-written file."""

from __future__ import annotations

import pytest

from flamcli.files import atomic_path, write_text_atomic


def test_interrupted_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = write_text_atomic(tmp_path / "events.tsv", "old complete content\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise KeyboardInterrupt
    assert target.read_text() == "old complete content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["events.tsv"]


def test_ctrl_c_during_outputs_exits_130_with_only_complete_files(cli, make_audio, tmp_path,
                                                                    monkeypatch):
    import flamcli.plots

    for i in range(2):
        make_audio(f"d/c{i}.wav", seconds=1.0)
    calls = []

    def interrupt_on_second_plot(result, path, dpi=100):
        calls.append(result.file)
        if len(calls) == 2:
            path.write_bytes(b"partial")
            raise KeyboardInterrupt
        path.write_bytes(b"\x89PNG fake but complete")

    monkeypatch.setattr(flamcli.plots, "plot_result", interrupt_on_second_plot)
    out = tmp_path / "out"
    result = cli("detect", tmp_path / "d", "dog", "-m", "debug", "-o", out)
    assert result.exit_code == 130
    assert "interrupted" in result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert "c0.png" in names and "c1.png" not in names
    assert not [n for n in names if n.endswith(".part")]


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import os
    import stat

    from flamcli.files import write_text_atomic

    old = os.umask(0o027)
    try:
        path = write_text_atomic(tmp_path / "out.tsv", "x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0666 minus the umask, not 0600
