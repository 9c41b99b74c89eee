"""Shared CLI plumbing: settings from flags, output formats, one-line errors."""

from __future__ import annotations

import enum
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import typer
import yaml
from rich.console import Console
from rich.table import Table

from mlengine.config import Settings

__all__ = ["REGION", "OutputFormat", "err", "print_resource", "print_table", "settings_from"]

err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

REGION = typer.Option(
    None,
    "--region",
    help="Accepted as gcloud takes it, and ignored: mlengine serves every region at one endpoint.",
)
"""``--region`` of the model, version, operation and predict commands: gcloud picks a regional
endpoint with it, and a user's command lines keep it."""


class OutputFormat(enum.StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


def settings_from(ctx: typer.Context, **flags: Any) -> Settings:
    """Settings with the root options (``--home``, ``--api-url``) and command flags applied."""
    root: dict[str, Any] = dict(ctx.find_root().obj or {})
    root.update({k: v for k, v in flags.items() if v is not None})
    return Settings.load(root)


def _dump(value: Any, output: OutputFormat) -> str:
    if output == OutputFormat.json:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False).rstrip()


def print_resource(resource: Mapping[str, Any], output: OutputFormat) -> None:
    """A single resource: YAML for ``table`` (as gcloud describe), else the format asked."""
    fmt = OutputFormat.yaml if output == OutputFormat.table else output
    sys.stdout.write(_dump(dict(resource), fmt) + "\n")


def _cell(value: Any) -> str:
    """A table cell: empty for a missing value only (0, False and 0.0 are values to show)."""
    return "" if value is None else str(value)


def print_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[tuple[str, str]],
    output: OutputFormat,
    resources: Sequence[Mapping[str, Any]] | None = None,
) -> None:
    """A list: a table of `columns` (header, key), or the raw `resources` as JSON/YAML."""
    if output != OutputFormat.table:
        sys.stdout.write(_dump([dict(r) for r in (resources or rows)], output) + "\n")
        return
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for header, _ in columns:
        table.add_column(header)
    for row in rows:
        table.add_row(*[_cell(row.get(key)) for _, key in columns])
    Console(highlight=False, soft_wrap=True).print(table)
