"""The wheel holds every subpackage and the bundled model folders."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "flamcli").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject.toml packages: {sorted(found - listed)}"


def test_wheel_ships_the_model_folders(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    [wheel] = tmp_path.glob("flam-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in (ROOT / "models").iterdir():
        for path in folder.glob("*.*") if folder.is_dir() else ():
            # Every model folder's card, config and weights: flam-tiny runs from these alone.
            assert f"flamcli/_bundled/{folder.name}/{path.name}" in names
    assert "flamcli/_bundled/flam-tiny/config.json" in names
    assert "flamcli/_bundled/debug/README.md" in names
    assert "flamcli/cli/app.py" in names and "flamcli/training/ring.py" in names
