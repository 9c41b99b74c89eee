"""The SQL warehouse: one DuckDB file, ``dataset.table`` names as DuckDB schemas.

DuckDB lets one process write a database file at a time (any number may read it when none
writes). So every operation opens its own connection and closes it when done, a connection
that finds the file locked retries for `lock_timeout` seconds and then raises `Unavailable`,
and operations that only read open the file read-only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob as globbing
import json
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from mlengine.data._dialect import translate_query
from mlengine.data._errors import is_lock_conflict, is_read_only_refusal, translate
from mlengine.data._functions import register_bigquery_functions
from mlengine.data._result import DryRun, QueryResult, SchemaField, sql_string
from mlengine.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    MissingDependency,
    NotFound,
    Unavailable,
    invalid_field,
)

__all__ = ["DEFAULT_LOCK_TIMEOUT", "TableInfo", "Warehouse", "connect"]

DEFAULT_LOCK_TIMEOUT = 5.0
MEMORY = ":memory:"
_BATCH_ROWS = 65_536
_PART = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
_RESERVED_DATASETS = {"information_schema", "pg_catalog", "temp", "system"}
_READING_STATEMENTS = {"select", "with", "from", "values", "explain", "describe", "show", "table"}
_FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_COMPRESSIONS = {".gz", ".zst", ".gzip"}
_READERS = {
    "csv": "read_csv({files})",
    "parquet": "read_parquet({files})",
    "jsonl": "read_json({files}, format = 'newline_delimited')",
}
_LOCAL_PROTOCOLS = {"file", "local"}


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _settings_value(name: str) -> Any:
    from mlengine.config import Settings

    return getattr(Settings.load(), name)


def _resolve_path(path: str | Path | None) -> str | Path:
    if path is None:
        path = _settings_value("warehouse_path")
    if str(path) == MEMORY:
        return MEMORY
    return Path(path).expanduser()


def _protocol(url: str) -> str:
    from fsspec.utils import get_protocol

    return str(get_protocol(url))


def _register_filesystems(
    connection: duckdb.DuckDBPyConnection, urls: Sequence[str], *, strict: bool = True
) -> None:
    """Let DuckDB read non-local fsspec URLs (``memory://``, ``gs://`` with gcsfs installed).

    Not `strict`: a protocol whose backend is missing is skipped (only the tables over it fail,
    when they are read), instead of raising MissingDependency.
    """
    protocols = {_protocol(url) for url in urls} - _LOCAL_PROTOCOLS
    if not protocols:
        return
    import fsspec

    registered = set(connection.list_filesystems())
    for protocol in sorted(protocols - registered):
        try:
            filesystem = fsspec.filesystem(protocol)
        except (ImportError, ValueError) as error:
            if not strict:
                continue
            raise MissingDependency(
                f"Reading {protocol}:// files needs its fsspec backend: {error}"
            ) from error
        connection.register_filesystem(filesystem)


def _external_sources(connection: duckdb.DuckDBPyConnection) -> list[str]:
    rows = connection.sql(
        "SELECT comment FROM duckdb_views() "
        "WHERE NOT internal AND NOT temporary AND comment LIKE '{\"mlengine\"%'"
    ).fetchall()
    sources: list[str] = []
    for (comment,) in rows:
        sources.extend(_provenance(comment).get("source", []))
    return sources


def _provenance(comment: str | None) -> dict[str, Any]:
    """What mlengine wrote in a table's comment: ``{"kind", "format", "source"}``, or {}."""
    if not comment:
        return {}
    try:
        value = json.loads(comment).get("mlengine", {})
    except (ValueError, AttributeError):
        return {}
    return value if isinstance(value, dict) else {}


def _open(path: str | Path, read_only: bool, lock_timeout: float) -> duckdb.DuckDBPyConnection:
    """A raw DuckDB connection, retrying while another process holds the file's lock."""
    if path == MEMORY:
        return duckdb.connect(MEMORY)
    if not read_only:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + lock_timeout
    delay = 0.02
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as error:
            if not is_lock_conflict(error):
                if "does not exist" in str(error):
                    raise NotFound(f"The warehouse {path} does not exist yet.") from error
                raise InvalidArgument(f"Cannot open the warehouse {path}: {error}") from error
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                holder = re.search(r"\(PID (\d+)\)", str(error))
                by = f" (PID {holder.group(1)})" if holder else ""
                raise Unavailable(
                    f"The warehouse {path} is locked by another process{by}: DuckDB allows one "
                    f"writer at a time. Waited {lock_timeout:g} s; try again when it is done."
                ) from error
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.25)
        except duckdb.ConnectionException as error:
            # This process has the file open already in the other mode; a read-write
            # connection shares that database, a read-only one cannot.
            if read_only and "different configuration" in str(error):
                read_only = False
                continue
            raise FailedPrecondition(
                f"The warehouse {path} is open read-only elsewhere in this process; close that "
                "connection before writing."
            ) from error


def connect(
    path: str | Path | None = None,
    *,
    read_only: bool = False,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection to the warehouse with the BigQuery functions registered.

    The caller closes it (it is a context manager). Hold it briefly: while it is open for
    writing, no other process can open the file.

    Args:
        path: the DuckDB file, ``":memory:"``, or None for the ``warehouse_path`` setting
            (``$MLENGINE_HOME/warehouse.duckdb``).
        read_only: open the file read-only (it must exist); other readers may share it.
        lock_timeout: seconds to keep retrying while another process holds the file.

    Raises:
        Unavailable: the file stayed locked by another process.
        NotFound: `read_only` and the file does not exist.
        InvalidArgument: the file is not a DuckDB database.
    """
    resolved = _resolve_path(path)
    connection = _open(resolved, read_only, lock_timeout)
    try:
        register_bigquery_functions(connection)
        _register_filesystems(connection, _external_sources(connection), strict=False)
    except BaseException:
        connection.close()
        raise
    return connection


@dataclasses.dataclass(frozen=True)
class TableInfo:
    """A warehouse table as ``datasets list`` / ``describe`` show it.

    `kind` is ``table`` (data stored in the warehouse), ``external`` (a view over files, which
    stay the source of truth) or ``view`` (a SQL view). `rows` is None for SQL views, which
    are not counted, and when the files of an external table cannot be read.
    """

    name: str
    kind: str
    rows: int | None
    schema: tuple[SchemaField, ...] = ()
    source: tuple[str, ...] = ()
    format: str | None = None

    def to_api_repr(self) -> dict[str, Any]:
        resource: dict[str, Any] = {"name": self.name, "kind": self.kind, "rows": self.rows}
        if self.format:
            resource["format"] = self.format
        if self.source:
            resource["source"] = list(self.source)
        if self.schema:
            resource["schema"] = [field.to_api_repr() for field in self.schema]
        return resource


def _first_word(query: str) -> str:
    stripped = re.sub(r"^(\s+|--[^\n]*\n?|/\*.*?\*/)+", "", query, flags=re.DOTALL)
    match = re.match(r"[A-Za-z_]+", stripped)
    return match.group(0).lower() if match else ""


class Warehouse:
    """The SQL warehouse: queries, dataset tables registered from files, and samples.

    Every method opens its own connection and closes it before returning, so several
    processes can take turns on one file. Methods raise mlengine errors only: InvalidArgument
    (bad SQL, bad names, unreadable files), NotFound (unknown tables, missing files),
    AlreadyExists (a destination that exists without `replace`), Unavailable (the file stayed
    locked by another process).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        project: str | None = None,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        self._path = path
        self._project = project
        self.lock_timeout = lock_timeout

    @property
    def path(self) -> str | Path:
        """The DuckDB file (or ``":memory:"``)."""
        return _resolve_path(self._path)

    @property
    def project(self) -> str:
        """The configured project: ``project.dataset.table`` names with it resolve here."""
        if self._project is None:
            self._project = str(_settings_value("project"))
        return self._project

    def connect(self, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """A connection with the BigQuery functions registered; see `connect`."""
        return connect(self.path, read_only=read_only, lock_timeout=self.lock_timeout)

    @contextlib.contextmanager
    def _session(self, *, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        path = self.path
        if read_only and path != MEMORY and not Path(path).exists():
            path = MEMORY  # reading an empty warehouse: do not create the file to do it
        connection = connect(path, read_only=read_only, lock_timeout=self.lock_timeout)
        try:
            yield connection
        finally:
            connection.close()

    def translate(self, query: str) -> str:
        """`query` with its BigQuery idioms rewritten for DuckDB (``[OFFSET(k)]``,
        ``publicdata.samples.natality``, backquoted names, SAFE_CAST)."""
        return translate_query(query, [self.project])

    # -- queries -----------------------------------------------------------------------------

    def query(
        self,
        query: str,
        *,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        max_rows: int | None = None,
        destination: str | None = None,
        replace: bool = False,
    ) -> QueryResult:
        """Run SQL (one statement or a script) and return the rows of its last result.

        Args:
            query: DuckDB SQL; BigQuery idioms are translated first (see `translate`).
            params: values for ``?`` / ``$1`` / ``$name`` placeholders.
            max_rows: keep only the first rows in the result (`total_rows` counts all).
            destination: ``dataset.table`` to store the result in (one SELECT statement).
            replace: replace `destination` when it exists.

        Raises:
            InvalidArgument, NotFound, AlreadyExists, Unavailable: see the class docstring.
        """
        if max_rows is not None and max_rows < 0:
            raise invalid_field("max_rows", "query", "an integer >= 0", max_rows)
        translated = self.translate(query)
        if destination is not None:
            return self._query_into(translated, destination, params, max_rows, replace)
        read_only = _first_word(translated) in _READING_STATEMENTS
        while True:
            with self._session(read_only=read_only) as connection:
                try:
                    return _run(connection, translated, params, max_rows)
                except duckdb.Error as error:
                    if read_only and is_read_only_refusal(error):
                        read_only = False  # e.g. nextval() in a SELECT: run it again as writer
                        continue
                    raise translate(error, translated) from error

    def _query_into(
        self,
        translated: str,
        destination: str,
        params: Sequence[Any] | Mapping[str, Any] | None,
        max_rows: int | None,
        replace: bool,
    ) -> QueryResult:
        dataset, table = self.parse_name(destination, field="destination")
        with self._session(read_only=False) as connection:
            body = _single_select(connection, translated, "destination").rstrip().rstrip(";")
            target = f"{_quote(dataset)}.{_quote(table)}"
            with _transaction(connection, translated):
                self._prepare_target(connection, dataset, table, replace)
                connection.execute(f"CREATE TABLE {target} AS {body}\n", params)
            try:
                result = _run(connection, f"SELECT * FROM {target}", None, max_rows)
            except duckdb.Error as error:
                raise translate(error) from error
        return QueryResult(
            result.to_arrow(),
            result.schema,
            total_rows=result.total_rows,
            query=translated,
            destination=f"{dataset}.{table}",
        )

    def dry_run(
        self, query: str, *, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> DryRun:
        """The schema and estimated row count of one SELECT statement, without running it.

        Raises:
            InvalidArgument, NotFound: as `query` would.
        """
        translated = self.translate(query)
        with self._session(read_only=True) as connection:
            try:
                body = _single_select(connection, translated, "dry_run")
                relation = connection.sql(body, params=params)
                schema = tuple(
                    SchemaField.from_warehouse(name, str(kind))
                    for name, kind in zip(relation.columns, relation.types, strict=True)
                )
                plan = connection.sql(f"EXPLAIN (FORMAT JSON) {body}\n", params=params)
                rows = plan.fetchall()
            except duckdb.Error as error:
                raise translate(error, translated) from error
        estimate = _estimated_rows(json.loads(rows[0][1])) if rows else None
        return DryRun(query=translated, schema=schema, estimated_rows=estimate)

    # -- dataset tables ----------------------------------------------------------------------

    def parse_name(self, name: str, *, field: str = "name") -> tuple[str, str]:
        """``dataset.table`` (or ``project.dataset.table`` with a known project) -> the parts.

        Raises:
            InvalidArgument: not of that shape.
        """
        parts = name.strip().strip("`").split(".")
        if len(parts) == 3 and parts[0].lower() in {"publicdata", self.project.lower()}:
            parts = parts[1:]
        if (
            len(parts) != 2
            or not all(_PART.match(part) for part in parts)
            or parts[0].lower() in _RESERVED_DATASETS
        ):
            raise invalid_field(
                field, "a warehouse table", "DATASET.TABLE (letters, digits, underscores)", name
            )
        return parts[0], parts[1]

    def create_table(
        self,
        name: str,
        source: str | Sequence[str],
        *,
        format: str | None = None,
        replace: bool = False,
        copy: bool = False,
    ) -> TableInfo:
        """Register CSV, Parquet or JSON-lines files as the table `name`.

        By default the table is *external*: a view over the files, which stay the source of
        truth (a query reads them as they are then). With `copy` the rows are loaded into the
        warehouse once. Either way it happens in one transaction: on any error the warehouse
        is as it was.

        Args:
            name: ``dataset.table``.
            source: paths, globs or fsspec URLs (``memory://``, ``gs://`` with gcsfs ...).
            format: ``csv``, ``parquet`` or ``jsonl``; by default from the file extension.
            replace: replace an existing table of that name.
            copy: load the rows into the warehouse instead of reading the files each time.

        Raises:
            NotFound: no file matches a source.
            InvalidArgument: bad name or format, or files DuckDB cannot read.
            AlreadyExists: `name` exists and not `replace`.
        """
        dataset, table = self.parse_name(name)
        sources = [source] if isinstance(source, str) else list(source)
        if not sources:
            raise invalid_field("source", "a dataset table", "at least one path or glob", source)
        files = [_resolve_source(item) for item in sources]
        kind = format or _format_of(sources[0])
        if kind not in _READERS:
            raise invalid_field("format", "a dataset table", "one of csv, parquet, jsonl", kind)
        reader = _READERS[kind].format(files="[" + ", ".join(map(sql_string, files)) + "]")
        target = f"{_quote(dataset)}.{_quote(table)}"
        comment = json.dumps(
            {"mlengine": {"kind": "table" if copy else "external", "format": kind, "source": files}}
        )
        with self._session(read_only=False) as connection:
            _register_filesystems(connection, files)
            with _transaction(connection, reader):
                self._prepare_target(connection, dataset, table, replace)
                if copy:
                    connection.execute(f"CREATE TABLE {target} AS SELECT * FROM {reader}")
                    connection.execute(f"COMMENT ON TABLE {target} IS {sql_string(comment)}")
                else:
                    connection.execute(f"CREATE VIEW {target} AS SELECT * FROM {reader}")
                    connection.execute(f"COMMENT ON VIEW {target} IS {sql_string(comment)}")
                connection.sql(f"SELECT count(*) FROM {target}").fetchall()  # reads every file
            return _describe(connection, dataset, table)

    def _prepare_target(
        self, connection: duckdb.DuckDBPyConnection, dataset: str, table: str, replace: bool
    ) -> None:
        existing = _kind(connection, dataset, table)
        if existing is not None and not replace:
            raise AlreadyExists(
                f"The table {dataset}.{table} already exists; pass --replace (replace=True) "
                "to replace it."
            )
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(dataset)}")
        if existing is not None:
            what = "VIEW" if existing == "view" else "TABLE"
            connection.execute(f"DROP {what} {_quote(dataset)}.{_quote(table)}")

    def tables(self, dataset: str | None = None) -> list[TableInfo]:
        """Every table and view of the warehouse (or of one dataset), with row counts."""
        with self._session(read_only=True) as connection:
            try:
                found = _objects(connection)
            except duckdb.Error as error:
                raise translate(error) from error
            infos = []
            for schema, name, kind, comment in found:
                if dataset is not None and schema.lower() != dataset.lower():
                    continue
                provenance = _provenance(comment)
                shown = provenance.get("kind", kind) if kind == "view" else "table"
                rows = None if shown == "view" else _count(connection, schema, name)
                infos.append(
                    TableInfo(
                        name=f"{schema}.{name}",
                        kind=shown,
                        rows=rows,
                        source=tuple(provenance.get("source", ())),
                        format=provenance.get("format"),
                    )
                )
        return infos

    def describe(self, name: str) -> TableInfo:
        """Columns, types, row count and source of one table.

        Raises:
            NotFound: no such table.
        """
        dataset, table = self.parse_name(name)
        with self._session(read_only=True) as connection:
            return _describe(connection, dataset, table)

    def delete(self, name: str) -> None:
        """Drop a table or view (an external table's files are left alone).

        Raises:
            NotFound: no such table.
        """
        dataset, table = self.parse_name(name)
        with self._session(read_only=False) as connection:
            existing = _kind(connection, dataset, table)
            if existing is None:
                raise NotFound(f"The table {dataset}.{table} does not exist.")
            what = "VIEW" if existing == "view" else "TABLE"
            try:
                connection.execute(f"DROP {what} {_quote(dataset)}.{_quote(table)}")
            except duckdb.Error as error:
                raise translate(error) from error

    def load_sample(self, name: str, *, rows: int | None = None, seed: int = 0) -> TableInfo:
        """Create (or replace) ``samples.NAME`` from the sample generators.

        Raises:
            NotFound: unknown sample. InvalidArgument: bad row count or seed.
        """
        from mlengine.data.samples import load_sample

        with self._session(read_only=False) as connection:
            try:
                load_sample(connection, name, rows=rows, seed=seed)
                return _describe(connection, "samples", name)
            except duckdb.Error as error:
                raise translate(error) from error


# -- helpers on an open connection ------------------------------------------------------------


@contextlib.contextmanager
def _transaction(connection: duckdb.DuckDBPyConnection, query: str | None) -> Iterator[None]:
    """One transaction; on any error it is rolled back and DuckDB's error translated."""
    connection.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException as error:
        with contextlib.suppress(duckdb.Error):
            connection.execute("ROLLBACK")
        if isinstance(error, duckdb.Error):
            raise translate(error, query) from error
        raise
    else:
        try:
            connection.execute("COMMIT")
        except duckdb.Error as error:
            raise translate(error, query) from error


def _run(
    connection: duckdb.DuckDBPyConnection,
    query: str,
    params: Sequence[Any] | Mapping[str, Any] | None,
    max_rows: int | None,
) -> QueryResult:
    relation = connection.sql(query, params=params)
    if relation is None:
        return QueryResult(pa.table({}), (), total_rows=0, query=query)
    schema = [
        SchemaField.from_warehouse(name, str(kind))
        for name, kind in zip(relation.columns, relation.types, strict=True)
    ]
    reader = relation.to_arrow_reader(_BATCH_ROWS)
    kept: list[pa.RecordBatch] = []
    total = kept_rows = 0
    try:
        for batch in reader:
            total += batch.num_rows
            if max_rows is None:
                kept.append(batch)
            elif kept_rows < max_rows:
                part = batch.slice(0, max_rows - kept_rows)
                kept.append(part)
                kept_rows += part.num_rows
    finally:
        reader.close()
    table = _narrow_hugeints(pa.Table.from_batches(kept, schema=reader.schema), schema)
    return QueryResult(table, schema, total_rows=total, query=query)


def _narrow_hugeints(table: pa.Table, schema: Sequence[SchemaField]) -> pa.Table:
    """HUGEINT columns (DuckDB's SUM of integers) as int64 when every value fits, as BigQuery's
    INT64 SUM is; Arrow would otherwise carry them as decimal128(38, 0)."""
    import pyarrow.compute as pc

    for position, field in enumerate(schema):
        column = table.column(position)
        if field.warehouse_type in ("HUGEINT", "UHUGEINT") and pa.types.is_decimal(column.type):
            try:
                narrowed = pc.cast(column, pa.int64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue  # a value beyond int64: keep the exact decimal
            table = table.set_column(
                position, table.field(position).with_type(pa.int64()), narrowed
            )
    return table


def _single_select(connection: duckdb.DuckDBPyConnection, query: str, field: str) -> str:
    try:
        statements = connection.extract_statements(query)
    except duckdb.Error as error:
        raise translate(error, query) from error
    if len(statements) != 1 or statements[0].type.name != "SELECT":
        raise invalid_field("query", field, "one SELECT statement", query)
    return str(statements[0].query)


def _estimated_rows(plan: Any) -> int | None:
    nodes = list(plan) if isinstance(plan, list) else [plan]
    while nodes:
        node = nodes.pop(0)
        if not isinstance(node, dict):
            continue
        estimate = (node.get("extra_info") or {}).get("Estimated Cardinality")
        if estimate is not None:
            digits = re.sub(r"\D", "", str(estimate))
            if digits:
                return int(digits)
        nodes = list(node.get("children") or []) + nodes
    return None


def _objects(connection: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str, str | None]]:
    rows = connection.sql(
        "SELECT schema_name, table_name, 'table', comment FROM duckdb_tables() "
        "WHERE database_name = current_database() AND NOT temporary "
        "UNION ALL "
        "SELECT schema_name, view_name, 'view', comment FROM duckdb_views() "
        "WHERE database_name = current_database() AND NOT temporary AND NOT internal "
        "ORDER BY 1, 2"
    ).fetchall()
    return [(str(a), str(b), str(c), d) for a, b, c, d in rows]


def _kind(connection: duckdb.DuckDBPyConnection, dataset: str, table: str) -> str | None:
    for schema, name, kind, _ in _objects(connection):
        if schema.lower() == dataset.lower() and name.lower() == table.lower():
            return kind
    return None


def _count(connection: duckdb.DuckDBPyConnection, dataset: str, table: str) -> int | None:
    try:
        rows = connection.sql(f"SELECT count(*) FROM {_quote(dataset)}.{_quote(table)}").fetchall()
    except duckdb.Error:
        return None  # an external table whose files are gone or unreadable
    return int(rows[0][0])


def _describe(connection: duckdb.DuckDBPyConnection, dataset: str, table: str) -> TableInfo:
    found = None
    for schema, name, kind, comment in _objects(connection):
        if schema.lower() == dataset.lower() and name.lower() == table.lower():
            found = (schema, name, kind, comment)
    if found is None:
        raise NotFound(f"The table {dataset}.{table} does not exist.")
    schema, name, kind, comment = found
    target = f"{_quote(schema)}.{_quote(name)}"
    try:
        columns = connection.sql(f"DESCRIBE {target}").fetchall()
    except duckdb.Error as error:
        raise translate(error) from error
    provenance = _provenance(comment)
    shown = provenance.get("kind", kind) if kind == "view" else "table"
    return TableInfo(
        name=f"{schema}.{name}",
        kind=shown,
        rows=None if shown == "view" else _count(connection, schema, name),
        schema=tuple(SchemaField.from_warehouse(str(c[0]), str(c[1])) for c in columns),
        source=tuple(provenance.get("source", ())),
        format=provenance.get("format"),
    )


def _format_of(source: str) -> str:
    suffixes = [suffix.lower() for suffix in Path(source.split("?")[0]).suffixes]
    while suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes.pop()
    if suffixes and suffixes[-1] in _FORMATS:
        return _FORMATS[suffixes[-1]]
    raise InvalidArgument(
        f"Cannot tell the format of {source!r} from its name; pass --format csv|parquet|jsonl."
    )


def _has_glob(text: str) -> bool:
    return any(character in text for character in "*?[")


def _resolve_source(source: str) -> str:
    """An absolute path or the URL itself, once at least one file matches.

    Raises:
        NotFound: nothing matches. InvalidArgument: a directory, or a file that cannot be read.
    """
    protocol = _protocol(source)
    if protocol in _LOCAL_PROTOCOLS:
        local = source.removeprefix("file://")
        path = Path(local).expanduser().absolute()
        if _has_glob(local):
            if not globbing.glob(str(path), recursive=True):
                raise NotFound(f"No files match {source}.")
        elif not path.exists():
            raise NotFound(f"The file {source} does not exist.")
        elif path.is_dir():
            raise InvalidArgument(
                f"{source} is a directory; name its files with a glob such as {path}/*.csv."
            )
        elif not os.access(path, os.R_OK):
            raise InvalidArgument(f"The file {source} cannot be read (permission denied).")
        return str(path)
    import fsspec

    try:
        filesystem = fsspec.filesystem(protocol)
    except (ImportError, ValueError) as error:
        raise MissingDependency(
            f"Reading {protocol}:// files needs its fsspec backend: {error}"
        ) from error
    matches = filesystem.glob(source) if _has_glob(source) else filesystem.exists(source)
    if not matches:
        raise NotFound(f"No files match {source}.")
    return source
