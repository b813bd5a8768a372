"""``flam models``: list the registry (names, sources, licences)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .app import app


@app.command("models")
def models_command(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable list on stdout.")] = False,
) -> None:
    """List the models --model accepts by name (directories and files work too)."""
    from ..models.config import FlamConfig
    from ..models.registry import (BUNDLED_MODEL, ModelLoadError, bundled_model_dir,
                                   list_models, read_model_config)

    entries = list_models()

    def threshold_of(e) -> float:
        """The threshold `flam detect` and `flam ground` use by default: the bundled model's
        card value, the calibrated boundary for the others."""
        folder = bundled_model_dir(e.name) if e.name == BUNDLED_MODEL else None
        if folder is not None:
            try:
                return read_model_config(folder).presence_threshold
            except ModelLoadError:  # unreadable: `flam detect` will say so
                pass
        return FlamConfig.presence_threshold

    def source_of(e) -> str:
        if e.repo_id:
            return f"hf://{e.repo_id}@{e.revision[:10]}"
        if e.name == BUNDLED_MODEL:
            return "bundled" if bundled_model_dir(e.name) else "bundled (not in this version)"
        return "built-in"

    if as_json:
        typer.echo(json.dumps([
            {"name": e.name, "description": e.description, "source": source_of(e),
             "repo_id": e.repo_id, "revision": e.revision, "licence": e.licence,
             "presence_threshold": threshold_of(e)}
            for e in entries
        ], indent=2))
        return
    for e in entries:
        source = source_of(e)
        licence = f"  [{e.licence}]" if e.licence else ""
        typer.echo(f"{e.name}\t{source}\t{e.description}{licence}  "
                   f"(threshold {threshold_of(e):g})")
