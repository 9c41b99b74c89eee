"""Beam transforms that read from and write to the mlengine warehouse (DuckDB).

They play the parts of ``beam.io.ReadFromBigQuery`` and ``beam.io.WriteToBigQuery``:

* `ReadFromWarehouse` runs one query (BigQuery idioms allowed, as in ``mlengine sql``) once,
  on a read-only connection, into a temporary Parquet file (as ReadFromBigQuery exports to
  files first), then spreads the file's row groups over the workers, which yield each row as
  a dict, one Arrow batch at a time: memory stays bounded whatever the result size, and with
  several workers the per-row Python work (the expensive part) runs on all of them. The query
  is checked when the pipeline is built, so a typo fails before anything runs. The temporary
  file goes when every row group is read (or when the process exits, if the pipeline fails).
* `WriteToWarehouse` writes the rows as Parquet chunks (in parallel) and then loads them all
  into ``dataset.table`` in one transaction: readers see the old table until the new one is
  complete, and a pipeline that fails leaves the table as it was.

The warehouse path is resolved when the pipeline is built (``warehouse=None`` means the
``warehouse_path`` setting, ``$MLENGINE_HOME/warehouse.duckdb``) and travels with the
transforms, so workers in other processes use the same file.
"""

from __future__ import annotations

import atexit
import contextlib
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from mlengine.beam._shards import ChunkedWrite, Committer, to_arrow_schema, unified_schema
from mlengine.errors import AlreadyExists, FailedPrecondition, invalid_field

__all__ = ["WRITE_DISPOSITIONS", "ReadFromWarehouse", "WriteToWarehouse"]

WRITE_DISPOSITIONS = ("WRITE_TRUNCATE", "WRITE_APPEND", "WRITE_EMPTY")
_BATCH_ROWS = 8_192
_ARROW_BATCH_ROWS = 65_536
_ROW_GROUP_ROWS = 65_536  # the unit of work spread over the workers
_TABLE_NAME = re.compile(r"^\s*`?[A-Za-z0-9_]+(\.[A-Za-z0-9_-]+){1,2}`?\s*$")


def _warehouse(path: str | Path | None) -> Any:
    from mlengine.data import Warehouse

    return Warehouse(path)


def _connect(path: str, *, read_only: bool) -> Any:
    from mlengine.data import connect

    return connect(path, read_only=read_only)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _narrow_hugeints(batch: pa.RecordBatch, hugeints: set[str]) -> pa.RecordBatch:
    """HUGEINT columns (DuckDB's SUM of integers) as int64 where every value fits, as BigQuery's
    INT64 SUM gives ints; Arrow would carry them as decimal128(38, 0), i.e. Decimal objects."""
    if not hugeints:
        return batch
    columns = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if name in hugeints and pa.types.is_decimal(column.type):
            with contextlib.suppress(pa.ArrowInvalid):  # beyond int64: keep the Decimal
                column = pc.cast(column, pa.int64())
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _decimal_hugeints(connection: Any, query: str) -> tuple[str, set[str]]:
    """`query` with HUGEINT columns cast to DECIMAL(38, 0) (Parquet would make them DOUBLE),
    and the names of those columns."""
    relation = connection.sql(query)
    hugeints = {
        name
        for name, kind in zip(relation.columns, relation.types, strict=True)
        if str(kind).upper() in ("HUGEINT", "UHUGEINT")
    }
    if not hugeints:
        return query, hugeints
    casts = ", ".join(
        f"CAST({_quote(name)} AS DECIMAL(38, 0)) AS {_quote(name)}" for name in hugeints
    )
    return f"SELECT * REPLACE ({casts}) FROM ({query}\n)", hugeints


class _ExportQuery(beam.DoFn):
    """Runs the query once, into a Parquet file (DuckDB writes it with all cores), and emits
    one (file, row group, HUGEINT columns) element per row group."""

    def __init__(self, warehouse_path: str, folder: str, row_group_rows: int) -> None:
        self._warehouse_path = warehouse_path
        self._folder = folder
        self._row_group_rows = row_group_rows

    def process(self, query: str) -> Iterator[tuple[str, int, list[str]]]:
        import pyarrow.parquet as pq

        Path(self._folder).mkdir(parents=True, exist_ok=True)
        path = str(Path(self._folder) / "result.parquet")
        connection = _connect(self._warehouse_path, read_only=True)
        try:
            exported, hugeints = _decimal_hugeints(connection, query)
            connection.execute(
                f"COPY ({exported}\n) TO {_sql_string(path)} "
                f"(FORMAT parquet, ROW_GROUP_SIZE {self._row_group_rows})"
            )
        finally:
            connection.close()
        for index in range(pq.ParquetFile(path).num_row_groups):
            yield path, index, sorted(hugeints)


class _RowGroupRows(beam.DoFn):
    """Yields the rows of one row group as dicts; then tags the row group as read."""

    DONE = "done"

    def __init__(self, batch_rows: int) -> None:
        self._batch_rows = batch_rows

    def process(self, part: tuple[str, int, list[str]]) -> Iterator[Any]:
        import pyarrow.parquet as pq

        path, index, hugeints = part
        table = pq.ParquetFile(path).read_row_group(index)
        for batch in table.to_batches(self._batch_rows):
            yield from _narrow_hugeints(batch, set(hugeints)).to_pylist()
        yield beam.pvalue.TaggedOutput(self.DONE, path)


class _QueryBatches(beam.DoFn):
    """Runs the query and yields its result as Arrow record batches, streamed from DuckDB."""

    def __init__(self, warehouse_path: str, batch_rows: int) -> None:
        self._warehouse_path = warehouse_path
        self._batch_rows = batch_rows

    def process(self, query: str) -> Iterator[pa.RecordBatch]:
        connection = _connect(self._warehouse_path, read_only=True)
        try:
            exported, hugeints = _decimal_hugeints(connection, query)
            reader = connection.sql(exported).to_arrow_reader(self._batch_rows)
            for batch in reader:
                yield _narrow_hugeints(batch, hugeints)
        finally:
            connection.close()


def _remove_folder(paths: list[str], folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)


class ReadFromWarehouse(beam.PTransform):
    """Read the rows of a warehouse query (or a whole ``dataset.table``) as dicts.

    The counterpart of ``beam.io.ReadFromBigQuery(query=..., use_standard_sql=True)``: BigQuery
    idioms such as ``FARM_FINGERPRINT`` and ``publicdata.samples.natality`` work, INT64 values
    come as ``int``, FLOAT64 as ``float``, NUMERIC as ``Decimal``, DATE/TIMESTAMP as
    ``datetime`` objects, NULL as None.

    Example::

        rows = pipeline | ReadFromWarehouse("SELECT User_ID, Purchase FROM samples.blackfriday")

    With ``output="arrow"`` the elements are ``pyarrow.RecordBatch`` objects of up to
    `batch_rows` rows instead, streamed straight from the query (no export: one worker reads,
    the vectorised steps after it do the work): the batched form for steps such as
    `AggregatePerKey`, which spare the per-row Python work that dominates a pure-Python runner.

    Args:
        query: one SELECT statement, or a table name ``dataset.table``.
        warehouse: the DuckDB file; None for the ``warehouse_path`` setting.
        batch_rows: rows turned into dicts at a time (memory stays around one row group of
            65,536 rows, the unit spread over the workers), or rows per record batch with
            ``output="arrow"``; None: 8,192 rows, or 65,536 per record batch.
        output: ``"rows"`` (dicts, the default) or ``"arrow"`` (record batches).

    Raises:
        InvalidArgument: bad SQL or arguments; NotFound: an unknown table (when the transform
            is applied).
    """

    def __init__(
        self,
        query: str,
        warehouse: str | Path | None = None,
        batch_rows: int | None = None,
        output: str = "rows",
    ) -> None:
        super().__init__()
        self.query = query
        self.warehouse = warehouse
        self.batch_rows = batch_rows
        self.output = output

    def expand(self, pbegin: Any) -> Any:
        if not isinstance(self.query, str) or not self.query.strip():
            raise invalid_field("query", "ReadFromWarehouse", "a SELECT statement", self.query)
        batch_rows = self.batch_rows
        if batch_rows is None:
            batch_rows = _ARROW_BATCH_ROWS if self.output == "arrow" else _BATCH_ROWS
        if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
            raise invalid_field("batch_rows", "ReadFromWarehouse", "an integer >= 1", batch_rows)
        if self.output not in ("rows", "arrow"):
            raise invalid_field("output", "ReadFromWarehouse", "'rows' or 'arrow'", self.output)
        warehouse = _warehouse(self.warehouse)
        query = self.query
        if _TABLE_NAME.match(query):
            query = f"SELECT * FROM {query.strip()}"
        checked = warehouse.dry_run(query)  # fails now, with mlengine's message, on bad SQL
        if self.output == "arrow":
            return (
                pbegin
                | "Query" >> beam.Create([checked.query])
                | "Batches" >> beam.ParDo(_QueryBatches(str(warehouse.path), batch_rows))
            )
        folder = str(Path(tempfile.gettempdir()) / f".temp-mlengine-read-{uuid.uuid4().hex}")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)  # if the pipeline fails
        parts = (
            pbegin
            | "Query" >> beam.Create([checked.query])
            | "Export" >> beam.ParDo(_ExportQuery(str(warehouse.path), folder, _ROW_GROUP_ROWS))
            | "Spread" >> beam.Reshuffle()
        )
        reader = _RowGroupRows(batch_rows)
        rows = parts | "Rows" >> beam.ParDo(reader).with_outputs(_RowGroupRows.DONE, main="rows")
        _ = (
            rows[_RowGroupRows.DONE]
            | "AllRead" >> beam.combiners.ToList()
            | "RemoveExport" >> beam.Map(_remove_folder, folder)
        )
        return rows["rows"]


class _LoadIntoTable(Committer):
    def __init__(
        self,
        warehouse_path: str,
        dataset: str,
        table: str,
        disposition: str,
        schema: pa.Schema | None,
    ) -> None:
        self.warehouse_path = warehouse_path
        self.dataset = dataset
        self.table = table
        self.disposition = disposition
        self.schema = schema

    def _columns_sql(self, chunks: list[str]) -> str:
        """A SELECT over the chunks with one unified schema, as DuckDB SQL."""
        import pyarrow.parquet as pq

        schema = unified_schema(
            [self.schema] if self.schema is not None else [pq.read_schema(c) for c in chunks]
        )
        files = "[" + ", ".join(_sql_string(chunk) for chunk in chunks) + "]"
        if not len(schema):
            return f"SELECT * FROM read_parquet({files}, union_by_name = true)"
        names = ", ".join(_quote(name) for name in schema.names)
        return f"SELECT {names} FROM read_parquet({files}, union_by_name = true)"

    def _empty_chunk(self, temp_dir: str) -> list[str]:
        """With no rows but a schema, one empty chunk so that the table gets its columns."""
        import pyarrow.parquet as pq

        if self.schema is None:
            return []
        path = str(Path(temp_dir) / "empty.parquet")
        Path(temp_dir).mkdir(parents=True, exist_ok=True)
        pq.write_table(self.schema.empty_table(), path)
        return [path]

    def commit(self, chunks: list[str], temp_dir: str) -> Iterable[str]:
        chunks = chunks or self._empty_chunk(temp_dir)
        target = f"{_quote(self.dataset)}.{_quote(self.table)}"
        name = f"{self.dataset}.{self.table}"
        connection = _connect(self.warehouse_path, read_only=False)
        try:
            connection.execute("BEGIN TRANSACTION")
            try:
                kind = _kind(connection, self.dataset, self.table)
                if kind == "view" and self.disposition != "WRITE_TRUNCATE":
                    raise FailedPrecondition(
                        f"The table {name} is external (a view over files); only WRITE_TRUNCATE "
                        "can replace it."
                    )
                if self.disposition == "WRITE_EMPTY" and kind == "table":
                    (count,) = connection.execute(f"SELECT count(*) FROM {target}").fetchone()
                    if count:
                        raise AlreadyExists(
                            f"The table {name} is not empty ({count} rows) and the write "
                            "disposition is WRITE_EMPTY."
                        )
                connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(self.dataset)}")
                if self.disposition == "WRITE_TRUNCATE" and kind is not None:
                    if not chunks:  # no rows and no schema: keep the columns, drop the rows
                        connection.execute(f"DELETE FROM {target}")
                    else:
                        connection.execute(f"DROP {'VIEW' if kind == 'view' else 'TABLE'} {target}")
                        kind = None
                if chunks:
                    select = self._columns_sql(chunks)
                    if kind is None:
                        connection.execute(f"CREATE TABLE {target} AS {select}")
                    else:
                        connection.execute(f"INSERT INTO {target} BY NAME {select}")
                connection.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    connection.execute("ROLLBACK")
                raise
        finally:
            connection.close()
        yield name


def _kind(connection: Any, dataset: str, table: str) -> str | None:
    found = connection.execute(
        "SELECT 'table' FROM duckdb_tables() WHERE schema_name = ? AND table_name = ? "
        "UNION ALL SELECT 'view' FROM duckdb_views() WHERE schema_name = ? AND view_name = ? "
        "AND NOT internal",
        [dataset, table, dataset, table],
    ).fetchone()
    return None if found is None else str(found[0])


class WriteToWarehouse(beam.PTransform):
    """Write dict rows into the warehouse table ``dataset.table``, atomically.

    The counterpart of ``beam.io.WriteToBigQuery`` with file loads: the rows are staged as
    Parquet files, then loaded in one transaction when every row is written. The output is a
    PCollection with the table's name once the load is committed.

    Example::

        users | WriteToWarehouse("features.vip_users")

    Args:
        table: ``dataset.table`` (the dataset is created when missing).
        warehouse: the DuckDB file; None for the ``warehouse_path`` setting.
        write_disposition: BigQuery's: ``WRITE_TRUNCATE`` (replace the table, the default),
            ``WRITE_APPEND`` (add rows; columns are matched by name) or ``WRITE_EMPTY`` (fail
            unless the table is missing or empty).
        schema: a pyarrow.Schema or a BigQuery-style ``"name:TYPE,..."`` string; by default
            the columns and types are inferred from all the rows.

    Raises:
        InvalidArgument: a bad argument (when the transform is applied). When the pipeline
            runs: AlreadyExists (``WRITE_EMPTY`` on a non-empty table), FailedPrecondition
            (appending to an external table), Unavailable (the warehouse stayed locked).
    """

    def __init__(
        self,
        table: str,
        warehouse: str | Path | None = None,
        write_disposition: str = "WRITE_TRUNCATE",
        schema: pa.Schema | str | None = None,
    ) -> None:
        super().__init__()
        self.table = table
        self.warehouse = warehouse
        self.write_disposition = write_disposition
        self.schema = schema

    def expand(self, pcoll: Any) -> Any:
        disposition = str(self.write_disposition).upper()
        if disposition not in WRITE_DISPOSITIONS:
            raise invalid_field(
                "write_disposition",
                "WriteToWarehouse",
                "one of " + ", ".join(WRITE_DISPOSITIONS),
                self.write_disposition,
            )
        if not isinstance(self.table, str):
            raise invalid_field("table", "WriteToWarehouse", "'dataset.table'", self.table)
        warehouse = _warehouse(self.warehouse)
        dataset, table = warehouse.parse_name(self.table, field="table")
        schema = to_arrow_schema(self.schema, "WriteToWarehouse")
        committer = _LoadIntoTable(str(warehouse.path), dataset, table, disposition, schema)
        return pcoll | ChunkedWrite(committer, schema, tempfile.gettempdir())
