"""The data engine: the SQL warehouse (DuckDB, with BigQuery's functions) and its datasets.

``mlengine.sql(q).to_dataframe()`` reads like ``bigquery.Client().query(q).to_dataframe()``.
The warehouse is the DuckDB file ``$MLENGINE_HOME/warehouse.duckdb`` (setting
``warehouse_path``); ``dataset.table`` names are DuckDB schemas and tables. See docs/data.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlengine.data._dialect import translate_query
from mlengine.data._functions import (
    farm_fingerprint,
    farm_fingerprint_array,
    register_bigquery_functions,
)
from mlengine.data._result import DryRun, QueryResult, Row, SchemaField
from mlengine.data._warehouse import TableInfo, Warehouse, connect

__all__ = [
    "DryRun",
    "QueryResult",
    "Row",
    "SchemaField",
    "TableInfo",
    "Warehouse",
    "connect",
    "farm_fingerprint",
    "farm_fingerprint_array",
    "register_bigquery_functions",
    "sql",
    "translate_query",
]


def sql(
    query: str,
    *,
    params: Sequence[Any] | Mapping[str, Any] | None = None,
    max_rows: int | None = None,
    destination: str | None = None,
    replace: bool = False,
    path: str | Path | None = None,
) -> QueryResult:
    """Run SQL on the warehouse: ``mlengine.sql("SELECT ...").to_dataframe()``.

    BigQuery idioms work: ``FARM_FINGERPRINT``, ``APPROX_QUANTILES(x, n)[OFFSET(k)]``,
    ``RAND()``, ``publicdata.samples.natality`` (read as ``samples.natality``).

    Args:
        query: the SQL (one statement or a script; the last result is returned).
        params: values for ``?``, ``$1`` or ``$name`` placeholders.
        max_rows: keep only the first rows (`QueryResult.total_rows` still counts all).
        destination: ``dataset.table`` to store the result in, atomically.
        replace: replace `destination` if it exists (else AlreadyExists).
        path: the warehouse file; by default the ``warehouse_path`` setting.

    Raises:
        InvalidArgument: bad SQL (the message has the position), unknown column, bad value.
        NotFound: unknown table or function. AlreadyExists: `destination` exists.
        Unavailable: another process kept the warehouse locked.
    """
    return Warehouse(path).query(
        query, params=params, max_rows=max_rows, destination=destination, replace=replace
    )
