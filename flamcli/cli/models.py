"""``flam models``: list the registry (names, sources, thresholds, licences)."""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Annotated, Optional

import typer



class ModelsFormat(str, Enum):
    table = "table"
    tsv = "tsv"
    json = "json"


TSV_COLUMNS = ("name", "source", "presence_threshold", "licence", "description")


def models_command(
    fmt: Annotated[Optional[ModelsFormat], typer.Option(
        "-f", "--format", help="table (the default on a terminal), tsv (the default when "
                               "piped: a header line, then one model per line) or json.",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
) -> None:
    """List the models --model accepts by name (directories and files work too), with the
    threshold detection uses for each by default.

    [bold]Examples[/bold]

      flam models

      flam models -f tsv | cut -f1
    """
    from ..models.registry import describe_models

    rows = describe_models()
    if as_json:
        fmt = ModelsFormat.json
    if fmt is None:
        fmt = ModelsFormat.table if sys.stdout.isatty() else ModelsFormat.tsv
    if fmt is ModelsFormat.json:
        typer.echo(json.dumps(rows, indent=2))
    elif fmt is ModelsFormat.tsv:
        typer.echo("\t".join(TSV_COLUMNS))
        for row in rows:
            typer.echo("\t".join("" if row[c] is None else f"{row[c]:g}" if isinstance(row[c], float)
                                 else " ".join(str(row[c]).split()) for c in TSV_COLUMNS))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(show_header=True, header_style="bold", show_lines=False)
        for column, justify in (("name", "left"), ("source", "left"), ("threshold", "right"),
                                ("licence", "left"), ("description", "left")):
            table.add_column(column, justify=justify, overflow="fold")
        for row in rows:
            table.add_row(row["name"], row["source"], f"{row['presence_threshold']:g}",
                          row["licence"] or "", row["description"])
        Console(soft_wrap=False).print(table)
