"""``mlengine sql`` (``bq query``) and ``mlengine datasets ...`` over the DuckDB warehouse."""

from __future__ import annotations

import base64
import datetime
import decimal
import enum
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import typer
import yaml
from rich.console import Console
from rich.table import Table

from mlengine.cli._common import OutputFormat, err, print_resource, print_table, settings_from
from mlengine.errors import InvalidArgument

if TYPE_CHECKING:
    from mlengine.data import QueryResult, TableInfo, Warehouse

__all__ = ["datasets_app", "sql"]

DEFAULT_TABLE_ROWS = 100

datasets_app = typer.Typer(
    help="Register files as warehouse tables (dataset.table), list, describe, delete them.",
    no_args_is_help=True,
)
_FORMAT = typer.Option(OutputFormat.table, "--format", help="Output format.")


class SqlFormat(enum.StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"
    csv = "csv"
    parquet = "parquet"


class PlotKind(enum.StrEnum):
    bar = "bar"
    line = "line"
    scatter = "scatter"


class FileFormat(enum.StrEnum):
    csv = "csv"
    parquet = "parquet"
    jsonl = "jsonl"


def _warehouse(ctx: typer.Context) -> Warehouse:
    from mlengine.data import Warehouse

    settings = settings_from(ctx)
    return Warehouse(settings.warehouse_path, project=settings.project)


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        if value.is_finite() and value == value.to_integral_value() and abs(value) < 2**63:
            return int(value)
        return float(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()  # as BigQuery's REST API writes BYTES
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return str(value)


def rows_json(result: QueryResult) -> bytes:
    """The rows as a JSON list of objects: dates ISO 8601, DECIMAL as numbers, NaN as null,
    BYTES base64."""
    return orjson.dumps(
        result.to_records(),
        default=_json_default,
        option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY,
    )


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _print_rows(result: QueryResult) -> None:
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for field in result.schema:
        table.add_column(field.name, justify="right" if field.field_type in _NUMERIC else "left")
    for row in result:
        table.add_row(*[_cell(value) for value in row])
    # piped or redirected: every value in full (a terminal's width would cut wide rows to "…")
    width = None if sys.stdout.isatty() else 1 << 16
    Console(highlight=False, soft_wrap=True, width=width).print(table)


_NUMERIC = {"INTEGER", "FLOAT", "NUMERIC"}


def _check_sql_options(
    output_format: SqlFormat,
    output: Path | None,
    destination: str | None,
    replace: bool,
    dry_run: bool,
    plot: PlotKind | None,
    x: str | None,
    y: list[str] | None,
    logy: bool,
) -> None:
    if plot is None and (x or y or logy):
        raise InvalidArgument("--x, --y and --logy go with --plot bar|line|scatter.")
    if plot is not None:
        if output is None or not x or not y:
            raise InvalidArgument("--plot needs --x COLUMN, --y COLUMN and -o CHART.png.")
        if output_format == SqlFormat.parquet:
            raise InvalidArgument("--plot writes the chart to -o; it cannot go with parquet.")
    elif output_format == SqlFormat.parquet and output is None:
        raise InvalidArgument("--format parquet needs -o FILE.parquet.")
    elif output_format == SqlFormat.table and output is not None:
        raise InvalidArgument("-o writes rows as csv, json, yaml or parquet; pass --format.")
    if replace and destination is None:
        raise InvalidArgument("--replace goes with --destination DATASET.TABLE.")
    if dry_run and (destination or plot or output_format in (SqlFormat.csv, SqlFormat.parquet)):
        raise InvalidArgument("--dry-run prints the schema only (--format table|json|yaml).")


def _write_text(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.tmp")
    temporary.write_text(text)
    temporary.replace(output)


def sql(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="The SQL; '-' reads it from stdin."),
    output_format: SqlFormat = typer.Option(
        SqlFormat.table, "--format", help="table, json (a list of row objects), yaml, csv, parquet."
    ),
    output: Path = typer.Option(
        None, "--output", "-o", help="File for the rows (csv/json/yaml/parquet), or the chart."
    ),
    destination: str = typer.Option(
        None, "--destination", help="Store the result as DATASET.TABLE (atomically)."
    ),
    replace: bool = typer.Option(False, "--replace", help="Replace an existing destination."),
    max_rows: int = typer.Option(
        None, "--max-rows", min=0, help=f"Rows to return (table format: {DEFAULT_TABLE_ROWS})."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the result schema and estimated rows; run nothing."
    ),
    plot: PlotKind = typer.Option(None, "--plot", help="Draw the rows: bar, line or scatter."),
    x: str = typer.Option(None, "--x", help="Column for the x axis (with --plot)."),
    y: list[str] = typer.Option(None, "--y", help="Column(s) for the y axis (with --plot)."),
    logy: bool = typer.Option(False, "--logy", help="Logarithmic y axis (with --plot)."),
) -> None:
    """Run SQL on the warehouse, like `bq query` (BigQuery functions and names accepted)."""
    _check_sql_options(output_format, output, destination, replace, dry_run, plot, x, y, logy)
    text = sys.stdin.read() if query == "-" else query
    warehouse = _warehouse(ctx)
    if dry_run:
        estimate = warehouse.dry_run(text)
        if output_format == SqlFormat.table:
            print_table(
                [field.to_api_repr() for field in estimate.schema],
                [("NAME", "name"), ("TYPE", "type"), ("MODE", "mode"), ("DUCKDB", "warehouseType")],
                OutputFormat.table,
            )
            rows = "unknown" if estimate.estimated_rows is None else estimate.estimated_rows
            sys.stdout.write(f"Estimated rows: {rows}\n")
        else:
            print_resource(estimate.to_api_repr(), OutputFormat(output_format.value))
        return
    limit = max_rows
    if limit is None and output_format == SqlFormat.table and plot is None:
        limit = DEFAULT_TABLE_ROWS
    result = warehouse.query(text, max_rows=limit, destination=destination, replace=replace)
    if result.destination:
        err.print(f"Created table {result.destination} ({result.total_rows} rows).")
    if plot is not None:
        assert output is not None and x is not None and y
        result.plot(output, kind=plot.value, x=x, y=y, logy=logy)
        err.print(f"Wrote the {plot.value} chart to {output}.")
    rows_out = None if plot is not None else output
    if output_format == SqlFormat.table:
        _print_rows(result)
        if len(result) < result.total_rows:
            err.print(f"Showing {len(result)} of {result.total_rows} rows (--max-rows to change).")
    elif output_format == SqlFormat.json:
        _write_text(rows_json(result).decode() + "\n", rows_out)
    elif output_format == SqlFormat.yaml:
        records = orjson.loads(rows_json(result))
        _write_text(yaml.safe_dump(records, sort_keys=False, allow_unicode=True), rows_out)
    elif output_format == SqlFormat.csv:
        if rows_out is None:
            sys.stdout.write(result.to_csv() or "")
        else:
            result.to_csv(rows_out)
    else:
        assert rows_out is not None
        result.to_parquet(rows_out)
    if rows_out is not None:
        err.print(f"Wrote {len(result)} rows to {rows_out}.")


def _info_table(info: TableInfo) -> None:
    lines = [f"name: {info.name}", f"kind: {info.kind}", f"rows: {_rows(info.rows)}"]
    if info.format:
        lines.append(f"format: {info.format}")
    lines.extend(f"source: {source}" for source in info.source)
    sys.stdout.write("\n".join(lines) + "\n")
    print_table(
        [field.to_api_repr() for field in info.schema],
        [("COLUMN", "name"), ("TYPE", "warehouseType"), ("BIGQUERY TYPE", "type")],
        OutputFormat.table,
    )


def _rows(rows: int | None) -> str:
    return "-" if rows is None else str(rows)


@datasets_app.command("create")
def create_dataset_table(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="DATASET.TABLE"),
    source: list[str] = typer.Option(
        ..., "--source", help="File, glob or fsspec URL (repeatable)."
    ),
    file_format: FileFormat = typer.Option(
        None, "--format", help="csv, parquet or jsonl (default: from the file extension)."
    ),
    replace: bool = typer.Option(False, "--replace", help="Replace an existing table."),
    copy: bool = typer.Option(
        False, "--copy", help="Load the rows into the warehouse (default: a view over the files)."
    ),
    output: OutputFormat = typer.Option(OutputFormat.table, "--output-format", help="Output."),
) -> None:
    """Register files as DATASET.TABLE: an external table over them, or a copy with --copy."""
    info = _warehouse(ctx).create_table(
        name, source, format=file_format.value if file_format else None, replace=replace, copy=copy
    )
    what = "table" if info.kind == "table" else "external table"
    err.print(f"Created {what} {info.name} ({_rows(info.rows)} rows).")
    if output != OutputFormat.table:
        print_resource(info.to_api_repr(), output)


@datasets_app.command("list")
def list_dataset_tables(
    ctx: typer.Context,
    dataset: str = typer.Option(None, "--dataset", help="Only this dataset."),
    output: OutputFormat = _FORMAT,
) -> None:
    """List the warehouse's tables: name, kind (table/external/view) and rows."""
    infos = _warehouse(ctx).tables(dataset)
    rows = [
        {
            "name": info.name,
            "kind": info.kind,
            "rows": _rows(info.rows),
            "source": ", ".join(info.source),
        }
        for info in infos
    ]
    print_table(
        rows,
        [("NAME", "name"), ("KIND", "kind"), ("ROWS", "rows"), ("SOURCE", "source")],
        output,
        [info.to_api_repr() for info in infos],
    )


@datasets_app.command("describe")
def describe_dataset_table(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="DATASET.TABLE"),
    output: OutputFormat = _FORMAT,
) -> None:
    """Show a table's columns, types, row count and source files."""
    info = _warehouse(ctx).describe(name)
    if output == OutputFormat.table:
        _info_table(info)
    else:
        print_resource(info.to_api_repr(), output)


@datasets_app.command("delete")
def delete_dataset_table(
    ctx: typer.Context, name: str = typer.Argument(..., help="DATASET.TABLE")
) -> None:
    """Delete a table (an external table's files are kept)."""
    _warehouse(ctx).delete(name)
    err.print(f"Deleted {name}.")


@datasets_app.command("load-sample")
def load_sample(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="iris, natality, blackfriday or census."),
    rows: int = typer.Option(None, "--rows", min=1, help="Rows to generate (default: full)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the generator."),
    output: OutputFormat = _FORMAT,
) -> None:
    """Create (or replace) samples.NAME, one of the tutorials' datasets."""
    info = _warehouse(ctx).load_sample(name, rows=rows, seed=seed)
    err.print(f"Loaded {info.name} ({_rows(info.rows)} rows).")
    if output != OutputFormat.table:
        print_resource(info.to_api_repr(), output)
