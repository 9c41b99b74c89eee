"""``mlengine config list|set|unset``."""

from __future__ import annotations

import typer

from mlengine.cli._common import OutputFormat, print_table, settings_from
from mlengine.config import write_config_value

app = typer.Typer(
    help="Show and change settings (flag > MLENGINE_* env > config file > default).",
    no_args_is_help=True,
)


@app.command("list")
def list_settings(
    ctx: typer.Context,
    output: OutputFormat = typer.Option(OutputFormat.table, "--format", help="Output format."),
) -> None:
    """Show every setting, its value and where the value came from."""
    settings = settings_from(ctx)
    rows = settings.rows()
    print_table(
        rows, [("NAME", "name"), ("VALUE", "value"), ("SOURCE", "source"), ("ENV", "env")], output
    )


@app.command("set")
def set_setting(ctx: typer.Context, name: str, value: str) -> None:
    """Write NAME=VALUE into the config file."""
    settings = settings_from(ctx)
    write_config_value(settings, name, value)
    typer.echo(f"Updated {name} in {settings.config_file}.", err=True)


@app.command("unset")
def unset_setting(ctx: typer.Context, name: str) -> None:
    """Remove NAME from the config file."""
    settings = settings_from(ctx)
    write_config_value(settings, name, None)
    typer.echo(f"Removed {name} from {settings.config_file}.", err=True)
