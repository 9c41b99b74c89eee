"""Query results, shaped like google-cloud-bigquery's (``to_dataframe``, ``result``, ``schema``)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DryRun", "QueryResult", "Row", "SchemaField", "bigquery_type", "sql_string"]

_BIGQUERY_TYPES = (
    (re.compile(r"^(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?|UHUGEINT)$"), "INTEGER"),
    (re.compile(r"^(DOUBLE|FLOAT|REAL)$"), "FLOAT"),
    (re.compile(r"^DECIMAL"), "NUMERIC"),
    (re.compile(r"^(VARCHAR|UUID|ENUM|BIT)"), "STRING"),
    (re.compile(r"^BLOB$"), "BYTES"),
    (re.compile(r"^BOOLEAN$"), "BOOLEAN"),
    (re.compile(r"^DATE$"), "DATE"),
    (re.compile(r"^TIMESTAMP WITH TIME ZONE$"), "TIMESTAMP"),
    (re.compile(r"^TIMESTAMP"), "DATETIME"),
    (re.compile(r"^TIME"), "TIME"),
    (re.compile(r"^INTERVAL$"), "INTERVAL"),
    (re.compile(r"^JSON$"), "JSON"),
    (re.compile(r"^(STRUCT|MAP|UNION)"), "RECORD"),
)


def sql_string(text: str) -> str:
    """`text` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def bigquery_type(warehouse_type: str) -> tuple[str, str]:
    """The BigQuery ``(type, mode)`` of a DuckDB type name: ``BIGINT`` -> ``(INTEGER, NULLABLE)``,
    ``VARCHAR[]`` -> ``(STRING, REPEATED)``; unknown types map to ``STRING``."""
    text = warehouse_type.strip().upper()
    mode = "NULLABLE"
    array = re.match(r"^(.*)\[\d*\]$", text)
    if array:
        text, mode = array.group(1), "REPEATED"
    for pattern, name in _BIGQUERY_TYPES:
        if pattern.match(text):
            return name, mode
    return "STRING", mode


@dataclasses.dataclass(frozen=True)
class SchemaField:
    """One result column: BigQuery's ``name``/``field_type``/``mode`` and the DuckDB type."""

    name: str
    field_type: str
    mode: str
    warehouse_type: str

    @classmethod
    def from_warehouse(cls, name: str, warehouse_type: str) -> SchemaField:
        field_type, mode = bigquery_type(warehouse_type)
        return cls(name=name, field_type=field_type, mode=mode, warehouse_type=warehouse_type)

    def to_api_repr(self) -> dict[str, str]:
        """``{"name", "type", "mode", "warehouseType"}``, as BigQuery's REST schema writes it."""
        return {
            "name": self.name,
            "type": self.field_type,
            "mode": self.mode,
            "warehouseType": self.warehouse_type,
        }


class Row:
    """One result row: ``row[0]``, ``row["name"]``, ``row.name``, ``keys()``, ``items()``,
    as BigQuery's ``Row``."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = tuple(values)
        self._index = index

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            try:
                return self._values[self._index[key]]
            except KeyError:
                raise KeyError(f"no column named {key!r}") from None
        return self._values[key]

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[self._index[name]]
        except KeyError:
            raise AttributeError(name) from None

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Row):
            return self._values == other._values and self._index == other._index
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values)

    def __repr__(self) -> str:
        return f"Row({self._values!r}, {self._index!r})"

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self._index else default

    def keys(self) -> list[str]:
        return list(self._index)

    def values(self) -> tuple[Any, ...]:
        return self._values

    def items(self) -> list[tuple[str, Any]]:
        return list(zip(self._index, self._values, strict=True))


@dataclasses.dataclass(frozen=True)
class DryRun:
    """What a dry run learns without reading data: the result schema and the planner's estimate
    of its row count (None when the plan does not say)."""

    query: str
    schema: tuple[SchemaField, ...]
    estimated_rows: int | None

    def to_api_repr(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "schema": [field.to_api_repr() for field in self.schema],
            "estimatedRows": self.estimated_rows,
        }


class QueryResult:
    """The rows of one query, held in memory as an Arrow table.

    ``mlengine.sql(q)`` returns it, and it reads like ``bigquery.Client().query(q)``:
    ``to_dataframe()``, ``to_arrow()``, ``result()`` (iterate `Row` objects), ``schema`` and
    ``total_rows``. With ``max_rows`` the table holds the first rows only while ``total_rows``
    still counts them all.
    """

    def __init__(
        self,
        table: pa.Table,
        schema: Sequence[SchemaField],
        *,
        total_rows: int,
        query: str,
        destination: str | None = None,
    ) -> None:
        self._table = table
        self.schema = tuple(schema)
        self.total_rows = total_rows
        self.query = query
        self.destination = destination

    def __repr__(self) -> str:
        columns = ", ".join(field.name for field in self.schema)
        return f"<QueryResult {self.total_rows} rows: {columns}>"

    def __len__(self) -> int:
        return self._table.num_rows

    def __iter__(self) -> Iterator[Row]:
        index = {name: position for position, name in enumerate(self._table.column_names)}
        for batch in self._table.to_batches():
            columns = [column.to_pylist() for column in batch.columns]
            for values in zip(*columns, strict=True):
                yield Row(values, index)

    @property
    def column_names(self) -> list[str]:
        return list(self._table.column_names)

    def result(self) -> QueryResult:
        """The rows (the query has already run): iterate it for `Row` objects."""
        return self

    def to_arrow(self) -> pa.Table:
        """The rows as a ``pyarrow.Table``."""
        return self._table

    def to_dataframe(self) -> pd.DataFrame:
        """The rows as a pandas DataFrame."""
        return self._table.to_pandas()

    def to_records(self) -> list[dict[str, Any]]:
        """The rows as a list of dicts of Python values (dates, Decimals, bytes as they are)."""
        return self._table.to_pylist()

    def to_parquet(self, path: str | Path) -> Path:
        """Write the rows to a Parquet file, atomically (a temporary name, then a rename)."""
        import pyarrow.parquet as pq

        target = Path(path)
        with _atomic_path(target) as temporary:
            pq.write_table(self._table, temporary)
        return target

    def to_csv(self, path: str | Path | None = None) -> str | None:
        """The rows as CSV with a header, in DuckDB's text form of each value.

        Args:
            path: write there (atomically) and return None; without it, return the text.
        """
        if path is not None:
            with _atomic_path(Path(path)) as temporary:
                self._copy_csv(temporary)
            return None
        with tempfile.TemporaryDirectory() as directory:
            scratch = Path(directory) / "result.csv"
            self._copy_csv(scratch)
            return scratch.read_text()

    def _copy_csv(self, target: Path) -> None:
        import duckdb

        connection = duckdb.connect()
        try:
            connection.register("query_result", self._table)
            connection.execute(
                "COPY (SELECT * FROM query_result) TO "
                f"{sql_string(str(target))} (FORMAT csv, HEADER true)"
            )
        finally:
            connection.close()

    def plot(
        self,
        path: str | Path,
        *,
        kind: str = "bar",
        x: str,
        y: str | Sequence[str],
        logy: bool = False,
        title: str | None = None,
    ) -> Path:
        """Draw the rows as a PNG chart, as ``df.plot(x=..., y=..., kind=...)`` would.

        Raises:
            InvalidArgument: unknown kind, a column not in the result, or nothing to plot.
        """
        from mlengine.data._plot import plot_table

        return plot_table(self._table, path, kind=kind, x=x, y=y, logy=logy, title=title)


@contextlib.contextmanager
def _atomic_path(target: Path) -> Iterator[Path]:
    """A temporary sibling of `target`, renamed onto it when the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
