"""Loading a sample dataset into the warehouse's ``samples`` schema."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from mlengine.data.samples import _blackfriday, _census, _iris, _natality
from mlengine.data.samples._base import SampleDataset
from mlengine.errors import NotFound, OperationFailed

if TYPE_CHECKING:
    import duckdb

SCHEMA_NAME = "samples"

SAMPLES: Mapping[str, SampleDataset] = MappingProxyType(
    {
        dataset.name: dataset
        for dataset in (_iris.DATASET, _natality.DATASET, _blackfriday.DATASET, _census.DATASET)
    }
)


def load_sample(
    connection: duckdb.DuckDBPyConnection, name: str, rows: int | None = None, seed: int = 0
) -> int:
    """Create or replace ``samples.<name>`` with a freshly generated sample dataset.

    The rows stream from the generator into a new table inside one transaction, which then drops
    the old table and renames the new one into place: readers see the old table or the new one,
    never a partial load, and a failure at any point leaves the old table as it was.

    Args:
        connection: An open DuckDB connection (the warehouse) not inside a transaction.
        name: A key of :data:`SAMPLES`.
        rows: How many rows (``None``: the dataset's default).
        seed: A non-negative integer; the same seed and rows give the same table.

    Returns:
        The number of rows in the new table.

    Raises:
        NotFound: ``name`` is not a sample dataset.
        InvalidArgument: ``rows`` or ``seed`` is out of range.
        OperationFailed: DuckDB failed while loading (the old table is kept).
    """
    dataset = SAMPLES.get(name)
    if dataset is None:
        known = ", ".join(sorted(SAMPLES))
        raise NotFound(f"Sample dataset '{name}' not found. Known sample datasets: {known}.")
    reader = dataset.batches(rows, seed)  # validates rows and seed before touching the warehouse

    import duckdb

    view = f"__mlengine_sample_{uuid.uuid4().hex}"
    loading = f'{SCHEMA_NAME}."__loading_{name}"'
    # A cursor of its own: the caller's pending results and transaction are left alone.
    cursor = connection.cursor()
    try:
        cursor.register(view, reader)
        cursor.execute("BEGIN TRANSACTION")
        try:
            cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA_NAME}")
            cursor.execute(f"DROP TABLE IF EXISTS {loading}")
            cursor.execute(f'CREATE TABLE {loading} AS SELECT * FROM "{view}"')
            cursor.execute(f"DROP TABLE IF EXISTS {SCHEMA_NAME}.{name}")
            cursor.execute(f"ALTER TABLE {loading} RENAME TO {name}")
            cursor.execute("COMMIT")
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        count = cursor.execute(f"SELECT count(*) FROM {SCHEMA_NAME}.{name}").fetchall()
    except duckdb.Error as error:
        raise OperationFailed(f"Loading sample dataset '{name}' failed: {error}") from error
    finally:
        cursor.close()
    return int(count[0][0])
