"""Writing dict rows as shard files: Parquet, CSV, TFRecord (tf.train.Example) and JSON lines.

Every writer here works in two steps, as Beam's own file sinks do:

1. In parallel, each bundle's rows become Arrow tables and are written as temporary Parquet
   chunks (at most `CHUNK_ROWS` rows each, so memory stays bounded) under a temporary folder
   next to the output, ``<dir>/.temp-mlengine-<id>/``.
2. Once, after every chunk is written: the chunks' schemas are unified (a column that is all
   null in one chunk takes its type from the others), the rows are spread evenly over the
   shards ``<prefix>-00000-of-00003<suffix>``, every shard is written under the temporary
   folder, older shards of the same prefix are deleted, the new ones are renamed into place
   and the temporary folder is removed. The transform's output is the list of shard names.

Unlike ``beam.io.WriteToParquet`` no schema has to be given (it is inferred from all the rows,
not the first one), and every format gets the same columns in the same order. Files go
through Beam's FileSystems, so local paths and (with ``apache-beam[gcp]``) ``gs://`` work.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import io
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from mlengine.errors import InvalidArgument, invalid_field

__all__ = [
    "CHUNK_ROWS",
    "ChunkedWrite",
    "Committer",
    "WriteChunks",
    "WriteToCsvShards",
    "WriteToJsonlShards",
    "WriteToParquetShards",
    "WriteToTFRecordShards",
    "conform",
    "rows_to_table",
    "to_arrow_schema",
    "unified_schema",
]

CHUNK_ROWS = 50_000
_TEMP_PREFIX = ".temp-mlengine-"

# BigQuery's schema type names (as beam.io.WriteToBigQuery takes them) -> Arrow types.
_BIGQUERY_TYPES: dict[str, pa.DataType] = {
    "STRING": pa.string(),
    "BYTES": pa.binary(),
    "INTEGER": pa.int64(),
    "INT64": pa.int64(),
    "FLOAT": pa.float64(),
    "FLOAT64": pa.float64(),
    "NUMERIC": pa.decimal128(38, 9),
    "BIGNUMERIC": pa.decimal256(76, 38),
    "BOOLEAN": pa.bool_(),
    "BOOL": pa.bool_(),
    "DATE": pa.date32(),
    "DATETIME": pa.timestamp("us"),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "TIME": pa.time64("us"),
}


def to_arrow_schema(schema: pa.Schema | str | None, owner: str) -> pa.Schema | None:
    """An Arrow schema from an Arrow schema, a BigQuery-style ``"name:TYPE,name:TYPE"`` string
    (the form ``beam.io.WriteToBigQuery`` takes) or None (infer from the rows).

    Raises:
        InvalidArgument: a malformed string or an unknown type name.
    """
    if schema is None or isinstance(schema, pa.Schema):
        return schema
    if not isinstance(schema, str):
        raise invalid_field("schema", owner, "a pyarrow.Schema or 'name:TYPE,...'", schema)
    fields = []
    for part in schema.split(","):
        name, _, kind = part.strip().partition(":")
        arrow_type = _BIGQUERY_TYPES.get(kind.strip().upper() or "STRING")
        if not name.strip() or arrow_type is None:
            known = ", ".join(sorted(_BIGQUERY_TYPES))
            raise invalid_field(
                "schema", owner, f"'name:TYPE,...' with TYPE one of {known}", schema
            )
        fields.append(pa.field(name.strip(), arrow_type))
    return pa.schema(fields)


def _as_dict(row: Any) -> dict[str, Any]:
    if isinstance(row, dict):
        return row
    as_dict = getattr(row, "_asdict", None)  # beam.Row, NamedTuple
    if callable(as_dict):
        return dict(as_dict())
    raise TypeError(f"the writers take dict rows (or beam.Row); got {type(row).__name__}")


def rows_to_table(rows: Sequence[Any], schema: pa.Schema | None = None) -> pa.Table:
    """Dict rows as an Arrow table: with `schema`, its columns (missing keys are null, other
    keys dropped); without, the union of all the rows' keys with inferred types."""
    dicts = [_as_dict(row) for row in rows]
    if schema is not None:
        return pa.Table.from_pylist(dicts, schema=schema)
    if not dicts:
        return pa.table({})
    return pa.Table.from_struct_array(pa.array(dicts))


def unified_schema(schemas: Sequence[pa.Schema]) -> pa.Schema:
    """One schema for all chunks: types promoted (null -> anything, int -> float ...)."""
    if not schemas:
        return pa.schema([])
    return pa.unify_schemas(list(schemas), promote_options="permissive")


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly the columns of `schema`, in its order and types."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _write_parquet(table: pa.Table, path: str) -> None:
    with FileSystems.create(path) as handle:
        pq.write_table(table, handle)


def _read_parquet(path: str) -> pa.Table:
    with FileSystems.open(path) as handle:
        return pq.read_table(io.BytesIO(handle.read()))


def _read_schema(path: str) -> tuple[pa.Schema, int]:
    with FileSystems.open(path) as handle:
        metadata = pq.ParquetFile(io.BytesIO(handle.read())).metadata
    return metadata.schema.to_arrow_schema(), metadata.num_rows


def _delete_quietly(paths: Sequence[str]) -> None:
    with contextlib.suppress(Exception):
        FileSystems.delete(list(paths))


def _mkdirs(path: str) -> None:
    with contextlib.suppress(Exception):  # exists already (or another worker made it)
        FileSystems.mkdirs(path)


class WriteChunks(beam.DoFn):
    """Writes each bundle's rows as Parquet chunks (<= CHUNK_ROWS rows) under `temp_dir` and
    emits the chunks' paths."""

    def __init__(self, temp_dir: str, schema: pa.Schema | None) -> None:
        self._temp_dir = temp_dir
        self._schema = schema
        self._rows: list[Any] = []

    def start_bundle(self) -> None:
        self._rows = []

    def process(self, row: Any) -> Iterator[str]:
        self._rows.append(row)
        if len(self._rows) >= CHUNK_ROWS:
            yield self._flush()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self._rows:
            yield WindowedValue(self._flush(), MIN_TIMESTAMP, (GlobalWindow(),))

    def _flush(self) -> str:
        table = rows_to_table(self._rows, self._schema)
        self._rows = []
        _mkdirs(self._temp_dir)
        path = FileSystems.join(self._temp_dir, f"chunk-{uuid.uuid4().hex}.parquet")
        _write_parquet(table, path)
        return path


class Committer(abc.ABC):
    """The once-only step 2 of a chunked write (module docstring). Plain and picklable: it
    travels to the worker that runs it."""

    @abc.abstractmethod
    def commit(self, chunks: list[str], temp_dir: str) -> Iterable[Any]:
        """Turn the chunk files into the final output; yields the transform's output.

        Raises:
            MLEngineError: the output cannot be written (the pipeline then fails).
        """


class _Commit(beam.DoFn):
    """Runs the committer once over every chunk, then removes the temporary folder."""

    def __init__(self, committer: Committer, temp_dir: str) -> None:
        self._committer = committer
        self._temp_dir = temp_dir

    def process(self, chunks: list[str]) -> Iterator[Any]:
        try:
            yield from self._committer.commit(sorted(chunks), self._temp_dir)
        finally:
            _delete_quietly([self._temp_dir])


def _remove_at_exit(temp_dir: str) -> None:
    """If the pipeline fails before its commit step, the chunks go when this process exits."""
    if FileSystems.get_filesystem(temp_dir).scheme() == "file":
        atexit.register(_delete_quietly, [temp_dir])


class ChunkedWrite(beam.PTransform):
    """Rows -> Parquet chunks under a new temporary folder in `temp_root` -> `committer`."""

    def __init__(self, committer: Committer, schema: pa.Schema | None, temp_root: str) -> None:
        super().__init__()
        self._committer = committer
        self._arrow_schema = schema
        self._temp_root = temp_root

    def expand(self, pcoll: Any) -> Any:
        temp_dir = FileSystems.join(self._temp_root, f"{_TEMP_PREFIX}{uuid.uuid4().hex}")
        _remove_at_exit(temp_dir)
        return (
            pcoll
            | "WriteChunks" >> beam.ParDo(WriteChunks(temp_dir, self._arrow_schema))
            | "CollectChunks" >> beam.combiners.ToList()
            | "Commit" >> beam.ParDo(_Commit(self._committer, temp_dir))
        )


# -- file formats -------------------------------------------------------------------------------


class _Format(abc.ABC):
    """Writes Arrow tables into one open shard file."""

    suffix = ""

    def __init__(self, handle: IO[bytes], schema: pa.Schema) -> None:
        self.handle = handle
        self.schema = schema

    @abc.abstractmethod
    def write(self, table: pa.Table) -> None:
        """Append `table`'s rows to the file."""

    def close(self) -> None:  # a hook: most formats have nothing to finish
        """Finish the file (the caller closes the handle)."""
        return None


class _Parquet(_Format):
    suffix = ".parquet"

    def __init__(self, handle: IO[bytes], schema: pa.Schema) -> None:
        super().__init__(handle, schema)
        self._writer = pq.ParquetWriter(handle, schema)

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()


class _Csv(_Format):
    suffix = ".csv"

    def __init__(self, handle: IO[bytes], schema: pa.Schema) -> None:
        import pyarrow.csv

        super().__init__(handle, schema)
        for field in schema:
            if pa.types.is_nested(field.type):
                raise InvalidArgument(
                    f"CSV cannot hold the column {field.name!r} of type {field.type}; write "
                    "Parquet, JSON lines or TFRecord instead."
                )
        if schema.names:
            header = ",".join(_csv_quote(name) for name in schema.names) + "\n"
            handle.write(header.encode())
        self._options = pyarrow.csv.WriteOptions(include_header=False, quoting_style="needed")
        self._write_csv = pyarrow.csv.write_csv

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            sink = io.BytesIO()
            self._write_csv(table, sink, write_options=self._options)
            self.handle.write(sink.getvalue())


def _csv_quote(name: str) -> str:
    if any(character in name for character in ',"\n\r'):
        return '"' + name.replace('"', '""') + '"'
    return name


def _json_default(value: Any) -> Any:
    import base64
    import datetime
    import decimal

    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()  # as BigQuery's JSON exports write BYTES
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


class _Jsonl(_Format):
    suffix = ".jsonl"

    def write(self, table: pa.Table) -> None:
        import orjson

        for batch in table.to_batches():
            self.handle.write(
                b"".join(
                    orjson.dumps(row, default=_json_default) + b"\n" for row in batch.to_pylist()
                )
            )


class _TFRecord(_Format):
    suffix = ".tfrecord"

    def __init__(self, handle: IO[bytes], schema: pa.Schema) -> None:
        from apache_beam.io.tfrecordio import _TFRecordUtil

        from mlengine.beam._example import encode_example

        super().__init__(handle, schema)
        self._write_record = _TFRecordUtil.write_record
        self._encode = encode_example

    def write(self, table: pa.Table) -> None:
        for batch in table.to_batches():
            for row in batch.to_pylist():
                self._write_record(self.handle, self._encode(row))


_FORMATS: dict[str, type[_Format]] = {
    "parquet": _Parquet,
    "csv": _Csv,
    "jsonl": _Jsonl,
    "tfrecord": _TFRecord,
}


def _shard_bounds(total: int, shards: int) -> list[int]:
    """Row offsets where each shard starts, plus `total`: as even as integers allow."""
    return [total * index // shards for index in range(shards + 1)]


class _ShardCommitter(Committer):
    def __init__(
        self,
        kind: str,
        path_prefix: str,
        schema: pa.Schema | None,
        num_shards: int,
        suffix: str,
    ) -> None:
        self.kind = kind
        self.path_prefix = path_prefix
        self.schema = schema
        self.num_shards = num_shards
        self.suffix = suffix

    def _final_name(self, index: int, count: int) -> str:
        return f"{self.path_prefix}-{index:05d}-of-{count:05d}{self.suffix}"

    def commit(self, chunks: list[str], temp_dir: str) -> Iterable[str]:
        described = [_read_schema(chunk) for chunk in chunks]
        schema = unified_schema(
            [self.schema] if self.schema is not None else [found for found, _ in described]
        )
        total = sum(rows for _, rows in described)
        count = self.num_shards or max(1, len(chunks))
        bounds = _shard_bounds(total, count)
        written = [
            FileSystems.join(temp_dir, f"shard-{index:05d}{self.suffix}") for index in range(count)
        ]
        tables = (conform(_read_parquet(chunk), schema) for chunk in chunks)
        self._write_all(tables, schema, bounds, written)
        final = [self._final_name(index, count) for index in range(count)]
        self._delete_old_shards(final)
        FileSystems.rename(written, final)
        return final

    def _open(self, path: str, schema: pa.Schema) -> tuple[IO[bytes], _Format]:
        handle = FileSystems.create(path)
        try:
            return handle, _FORMATS[self.kind](handle, schema)
        except BaseException:
            handle.close()
            raise

    def _write_all(
        self, tables: Iterator[pa.Table], schema: pa.Schema, bounds: list[int], paths: list[str]
    ) -> None:
        """Stream the rows in order into the shards; one shard file is open at a time."""
        shard = 0
        done = 0  # rows written so far, in all shards
        handle, writer = self._open(paths[0], schema)
        try:
            for table in tables:
                start = 0
                while start < table.num_rows:
                    while done >= bounds[shard + 1]:
                        writer.close()
                        handle.close()
                        shard += 1
                        handle, writer = self._open(paths[shard], schema)
                    take = min(table.num_rows - start, bounds[shard + 1] - done)
                    writer.write(table.slice(start, take))
                    start += take
                    done += take
        except BaseException:
            with contextlib.suppress(Exception):
                writer.close()
            handle.close()
            raise
        writer.close()
        handle.close()
        for later in paths[shard + 1 :]:  # fewer rows than shards: the rest are empty files
            handle, writer = self._open(later, schema)
            writer.close()
            handle.close()

    def _delete_old_shards(self, final: list[str]) -> None:
        pattern = f"{self.path_prefix}-?????-of-?????{self.suffix}"
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except Exception:  # nothing there yet
            return
        old = [item.path for item in matched if item.path not in final]
        if old:
            FileSystems.delete(old)


class _WriteShards(beam.PTransform):
    kind = ""

    def __init__(
        self,
        path_prefix: str,
        schema: pa.Schema | str | None = None,
        num_shards: int = 0,
        file_name_suffix: str | None = None,
    ) -> None:
        super().__init__()
        self.path_prefix = path_prefix
        self.schema = schema
        self.num_shards = num_shards
        self.file_name_suffix = file_name_suffix

    def expand(self, pcoll: Any) -> Any:
        owner = type(self).__name__
        if not isinstance(self.path_prefix, str) or not self.path_prefix.strip():
            raise invalid_field("path_prefix", owner, "a path or URL prefix", self.path_prefix)
        num_shards = self.num_shards
        if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 0:
            raise invalid_field("num_shards", owner, "an integer >= 0", num_shards)
        suffix = self.file_name_suffix
        if suffix is None:
            suffix = _FORMATS[self.kind].suffix
        schema = to_arrow_schema(self.schema, owner)
        committer = _ShardCommitter(self.kind, self.path_prefix, schema, num_shards, suffix)
        directory = FileSystems.split(self.path_prefix)[0] or "."
        return pcoll | ChunkedWrite(committer, schema, directory)


class WriteToParquetShards(_WriteShards):
    """Write dict rows as Parquet shards; the output is the list of shard names.

    Args:
        path_prefix: where the shards go: ``<path_prefix>-00000-of-00002<suffix>`` ...
        schema: a pyarrow.Schema, a BigQuery-style ``"name:TYPE,..."`` string, or None to
            infer the columns and types from all the rows.
        num_shards: the number of files; 0 gives one per chunk of up to 50,000 rows.
        file_name_suffix: the file name's end (default ``.parquet``).

    Raises:
        InvalidArgument: a bad argument (when the transform is applied).
    """

    kind = "parquet"


class WriteToCsvShards(_WriteShards):
    """Write dict rows as CSV shards, each with a header line; the output is the list of shard
    names. Values are written as Arrow writes them (``true``/``false``, ISO 8601 dates, an
    empty field for null) and quoted only where needed. A suffix ending ``.gz`` compresses.

    Args:
        path_prefix: where the shards go: ``<path_prefix>-00000-of-00002<suffix>`` ...
        schema: a pyarrow.Schema, a BigQuery-style ``"name:TYPE,..."`` string, or None to
            infer the columns and types from all the rows.
        num_shards: the number of files; 0 gives one per chunk of up to 50,000 rows.
        file_name_suffix: the file name's end (default ``.csv``).

    Raises:
        InvalidArgument: a bad argument (when the transform is applied), or a nested column
            (when the shards are written).
    """

    kind = "csv"


class WriteToJsonlShards(_WriteShards):
    """Write dict rows as JSON-lines shards (one object per line; dates in ISO 8601, BYTES in
    base64, as BigQuery exports them); the output is the list of shard names.

    Args:
        path_prefix: where the shards go: ``<path_prefix>-00000-of-00002<suffix>`` ...
        schema: a pyarrow.Schema, a BigQuery-style ``"name:TYPE,..."`` string, or None to
            infer the columns and types from all the rows.
        num_shards: the number of files; 0 gives one per chunk of up to 50,000 rows.
        file_name_suffix: the file name's end (default ``.jsonl``).

    Raises:
        InvalidArgument: a bad argument (when the transform is applied).
    """

    kind = "jsonl"


class WriteToTFRecordShards(_WriteShards):
    """Write dict rows as TFRecord shards of ``tf.train.Example`` records, one per row; the
    output is the list of shard names. TensorFlow is not needed (``_example.py`` encodes the
    records and says how values map to features; null values are left out).

    Args:
        path_prefix: where the shards go: ``<path_prefix>-00000-of-00002<suffix>`` ...
        schema: a pyarrow.Schema, a BigQuery-style ``"name:TYPE,..."`` string, or None to
            infer the columns and types from all the rows.
        num_shards: the number of files; 0 gives one per chunk of up to 50,000 rows.
        file_name_suffix: the file name's end (default ``.tfrecord``).

    Raises:
        InvalidArgument: a bad argument (when the transform is applied).
    """

    kind = "tfrecord"
