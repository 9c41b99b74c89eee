"""ReadFromWarehouse / WriteToWarehouse on a real DuckDB warehouse file, and the offline
DirectRunner (no Prism download)."""

from __future__ import annotations

import datetime
import decimal
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from mlengine.beam import ReadFromWarehouse, WriteToWarehouse, hash_bucket
from mlengine.data import connect
from mlengine.errors import InvalidArgument, NotFound


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    path = tmp_path / "warehouse.duckdb"
    connection = connect(path)
    try:
        connection.execute("CREATE SCHEMA shop")
        connection.execute(
            "CREATE TABLE shop.sales AS SELECT * FROM (VALUES "
            "(1, 'a', 2.5, TRUE, DATE '2024-01-02', 1.25::DECIMAL(10, 2)), "
            "(1, 'b', 4.0, FALSE, NULL, NULL), "
            "(2, NULL, 0.5, NULL, DATE '2024-03-04', 7.00::DECIMAL(10, 2))"
            ") AS t(user_id, item, price, flag, day, amount)"
        )
        connection.execute("CREATE TABLE shop.existing AS SELECT 41 AS x UNION ALL SELECT 42")
    finally:
        connection.close()
    return path


def table_rows(path: Path, query: str) -> list[tuple[Any, ...]]:
    connection = connect(path, read_only=True)
    try:
        return connection.execute(query).fetchall()
    finally:
        connection.close()


def test_read_yields_dicts_with_python_types(warehouse: Path) -> None:
    expected = [
        {
            "user_id": 1,
            "item": "a",
            "price": 2.5,
            "flag": True,
            "day": datetime.date(2024, 1, 2),
            "amount": decimal.Decimal("1.25"),
        },
        {"user_id": 1, "item": "b", "price": 4.0, "flag": False, "day": None, "amount": None},
        {
            "user_id": 2,
            "item": None,
            "price": 0.5,
            "flag": None,
            "day": datetime.date(2024, 3, 4),
            "amount": decimal.Decimal("7.00"),
        },
    ]
    with beam.Pipeline() as pipeline:
        rows = pipeline | ReadFromWarehouse("shop.sales", warehouse=warehouse)
        assert_that(rows, equal_to(expected))


def test_read_runs_bigquery_sql_and_gives_sums_as_ints(warehouse: Path) -> None:
    query = (
        "SELECT user_id, SUM(user_id * 10) AS total, COUNT(*) AS n, "
        "ABS(MOD(FARM_FINGERPRINT(CAST(user_id AS STRING)), 10)) AS bucket "
        "FROM `shop.sales` GROUP BY user_id"
    )
    expected = [
        {"user_id": 1, "total": 20, "n": 2, "bucket": hash_bucket(1, 10)},
        {"user_id": 2, "total": 20, "n": 1, "bucket": hash_bucket(2, 10)},
    ]
    with beam.Pipeline() as pipeline:
        rows = pipeline | ReadFromWarehouse(query, warehouse=warehouse, batch_rows=1)
        types = rows | beam.Map(lambda row: type(row["total"]).__name__)
        assert_that(rows, equal_to(expected), label="Rows")
        assert_that(types, equal_to(["int", "int"]), label="Types")


def test_read_checks_the_query_when_the_pipeline_is_built(warehouse: Path) -> None:
    pipeline = beam.Pipeline()
    with pytest.raises(NotFound):
        _ = pipeline | "Missing" >> ReadFromWarehouse("shop.nope", warehouse=warehouse)
    with pytest.raises(InvalidArgument):
        _ = pipeline | "Bad" >> ReadFromWarehouse("SELEC 1", warehouse=warehouse)
    with pytest.raises(InvalidArgument, match="'batch_rows' field of ReadFromWarehouse"):
        _ = pipeline | "Batch" >> ReadFromWarehouse("shop.sales", warehouse, batch_rows=0)


def test_read_uses_the_configured_warehouse(home: Path, warehouse: Path) -> None:
    (home).mkdir(parents=True, exist_ok=True)
    warehouse.rename(home / "warehouse.duckdb")
    with beam.Pipeline() as pipeline:
        rows = pipeline | ReadFromWarehouse("SELECT x FROM shop.existing")
        assert_that(rows, equal_to([{"x": 41}, {"x": 42}]))


ROWS = [{"x": 1, "name": "one"}, {"x": 2, "name": None}, {"x": 3, "name": "three"}]


def test_write_truncate_replaces_the_table(warehouse: Path) -> None:
    with beam.Pipeline() as pipeline:
        written = pipeline | beam.Create(ROWS) | WriteToWarehouse("shop.existing", warehouse)
        assert_that(written, equal_to(["shop.existing"]))
    rows = table_rows(warehouse, "SELECT x, name FROM shop.existing ORDER BY x")
    assert rows == [(1, "one"), (2, None), (3, "three")]


def test_write_append_adds_rows_by_name(warehouse: Path) -> None:
    with beam.Pipeline() as pipeline:
        _ = (
            pipeline
            | beam.Create([{"x": 43}, {"x": 44}])
            | WriteToWarehouse("shop.existing", warehouse, write_disposition="WRITE_APPEND")
        )
    assert table_rows(warehouse, "SELECT x FROM shop.existing ORDER BY x") == [
        (41,),
        (42,),
        (43,),
        (44,),
    ]


def test_write_creates_the_dataset_and_takes_a_schema(warehouse: Path) -> None:
    schema = "x:INT64,name:STRING,score:FLOAT64"
    with beam.Pipeline() as pipeline:
        _ = pipeline | beam.Create(ROWS) | WriteToWarehouse("new_ds.t", warehouse, schema=schema)
        _ = (
            pipeline
            | "None" >> beam.Create([])
            | "Empty"
            >> WriteToWarehouse("new_ds.empty", warehouse, schema=pa.schema([("a", pa.int32())]))
        )
    assert table_rows(warehouse, "SELECT * FROM new_ds.t ORDER BY x") == [
        (1, "one", None),
        (2, None, None),
        (3, "three", None),
    ]
    assert table_rows(
        warehouse,
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'new_ds' ORDER BY table_name, ordinal_position",
    ) == [("a", "INTEGER"), ("x", "BIGINT"), ("name", "VARCHAR"), ("score", "DOUBLE")]
    assert table_rows(warehouse, "SELECT count(*) FROM new_ds.empty") == [(0,)]


def test_write_empty_refuses_a_table_with_rows(warehouse: Path) -> None:
    with pytest.raises(Exception, match="not empty"), beam.Pipeline() as pipeline:
        _ = (
            pipeline
            | beam.Create(ROWS)
            | WriteToWarehouse("shop.existing", warehouse, write_disposition="WRITE_EMPTY")
        )
    assert table_rows(warehouse, "SELECT x FROM shop.existing ORDER BY x") == [(41,), (42,)]


def fail_on_three(row: dict[str, Any]) -> dict[str, Any]:
    if row["x"] == 3:
        raise ValueError("row 3 is bad")
    return row


def test_a_failing_pipeline_leaves_the_table_unchanged(warehouse: Path) -> None:
    with pytest.raises(ValueError, match="row 3 is bad"), beam.Pipeline() as pipeline:
        _ = (
            pipeline
            | beam.Create(ROWS)
            | beam.Map(fail_on_three)
            | WriteToWarehouse("shop.existing", warehouse)
        )
    assert table_rows(warehouse, "SELECT x FROM shop.existing ORDER BY x") == [(41,), (42,)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"table": "no_dataset"}, "'table' field of a warehouse table"),
        ({"table": "a.b", "write_disposition": "WRITE_SOMETIMES"}, "'write_disposition'"),
        ({"table": "a.b", "schema": "x:WHATEVER"}, "'schema' field of WriteToWarehouse"),
    ],
)
def test_write_rejects_bad_arguments(warehouse: Path, kwargs: dict[str, Any], message: str) -> None:
    pipeline = beam.Pipeline()
    with pytest.raises(InvalidArgument, match=message):
        _ = pipeline | beam.Create(ROWS) | WriteToWarehouse(warehouse=warehouse, **kwargs)


def test_the_direct_runner_never_tries_prism(monkeypatch: pytest.MonkeyPatch) -> None:
    from apache_beam.runners.portability import prism_runner

    def no_download(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the DirectRunner tried to download Prism")

    monkeypatch.setattr(prism_runner, "urlopen", no_download)
    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", no_download)
    for options in ([], ["--runner=DirectRunner"]):
        with beam.Pipeline(argv=options) as pipeline:
            counted = pipeline | beam.Create([1, 2, 3]) | beam.combiners.Count.Globally()
            assert_that(counted, equal_to([3]))
