"""AggregatePerKey gives what SQL's GROUP BY gives (COUNT(*), SUM, MIN, MAX; NULLs ignored),
from record batches read out of a real warehouse, and merges partial results exactly."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import apache_beam as beam
import duckdb
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from mlengine.beam import AggregatePerKey, ReadFromWarehouse
from mlengine.beam._aggregate import _group, _merge
from mlengine.data import connect
from mlengine.errors import InvalidArgument

AGGREGATIONS: dict[str, tuple[str | None, str]] = {
    "n": (None, "count"),
    "total": ("amount", "sum"),
    "first_item": ("item", "min"),
    "last_item": ("item", "max"),
    "cheapest": ("price", "min"),
}
SQL = (
    "SELECT user_id, COUNT(*) AS n, SUM(amount) AS total, MIN(item) AS first_item, "
    "MAX(item) AS last_item, MIN(price) AS cheapest FROM t GROUP BY user_id"
)


def purchases(seed: int, rows: int) -> pa.Table:
    rng = random.Random(seed)
    return pa.table(
        {
            "user_id": [rng.choice([*range(40), None]) for _ in range(rows)],
            "amount": [rng.choice([rng.randint(-50, 500), None]) for _ in range(rows)],
            "item": [rng.choice(["apple", "pear", "Zucchini", "é", None]) for _ in range(rows)],
            "price": [rng.choice([rng.random() * 10, None]) for _ in range(rows)],
        }
    )


def by_sql(table: pa.Table) -> list[dict[str, Any]]:
    connection = duckdb.connect()
    try:
        connection.register("t", table)
        result = connection.sql(SQL).to_arrow_table()
    finally:
        connection.close()
    return [{**row, "total": None if row["total"] is None else int(row["total"])}
            for row in result.to_pylist()]  # fmt: skip


def warehouse_with(table: pa.Table, path: Path) -> Path:
    """A warehouse file holding `table` as ``shop.t``."""
    connection = connect(path)
    try:
        connection.register("source", table)
        connection.execute("CREATE SCHEMA shop")
        connection.execute("CREATE TABLE shop.t AS SELECT * FROM source")
    finally:
        connection.close()
    return path


def key(row: dict[str, Any]) -> tuple[bool, int]:
    return (row["user_id"] is None, row["user_id"] or 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_partial_results_merge_to_the_sql_answer(seed: int) -> None:
    table = purchases(seed, 3_000)
    outputs = {name: function for name, (_, function) in AGGREGATIONS.items()}
    parts = [_group(table.slice(start, 250), "user_id", AGGREGATIONS)
             for start in range(0, table.num_rows, 250)]  # fmt: skip
    merged = _merge(parts, "user_id", outputs).to_pylist()
    assert sorted(merged, key=key) == sorted(by_sql(table), key=key)
    assert list(merged[0]) == ["user_id", *AGGREGATIONS]


def test_pipeline_over_warehouse_batches_equals_group_by(tmp_path: Path) -> None:
    table = purchases(7, 5_000)
    path = warehouse_with(table, tmp_path / "warehouse.duckdb")
    with beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions([])) as pipeline:
        rows = (
            pipeline
            | ReadFromWarehouse("shop.t", warehouse=path, batch_rows=300, output="arrow")
            | AggregatePerKey("user_id", AGGREGATIONS)
        )
        assert_that(rows, equal_to(by_sql(table)))


def test_an_empty_input_gives_no_rows() -> None:
    empty = pa.RecordBatch.from_pydict({"user_id": pa.array([], pa.int64())})
    with beam.Pipeline() as pipeline:
        rows = pipeline | beam.Create([empty]) | AggregatePerKey("user_id", {"n": (None, "count")})
        assert_that(rows, equal_to([]))


def test_elements_that_are_not_batches_fail_with_a_clear_message() -> None:
    with pytest.raises(Exception, match="takes pyarrow record batches"), beam.Pipeline() as p:
        _ = p | beam.Create([{"user_id": 1}]) | AggregatePerKey("user_id", {"n": (None, "count")})


@pytest.mark.parametrize(
    ("key_column", "aggregations", "field"),
    [
        ("", {"n": (None, "count")}, "key"),
        ("k", {}, "aggregations"),
        ("k", {"x": ("a", "median")}, "aggregations['x']"),
        ("k", {"x": (None, "sum")}, "aggregations['x']"),
        ("k", {"k": ("a", "min")}, "aggregations['k']"),
    ],
)
def test_bad_arguments_name_the_field(
    key_column: str, aggregations: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(f"The '{field}' field")):
        AggregatePerKey(key_column, aggregations)


def test_read_refuses_an_unknown_output(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="'output' field"), beam.Pipeline() as pipeline:
        _ = pipeline | ReadFromWarehouse("SELECT 1 AS a", warehouse=":memory:", output="pandas")


def test_arrow_output_streams_the_same_rows_as_dicts(tmp_path: Path) -> None:
    table = purchases(11, 2_000)
    path = warehouse_with(table, tmp_path / "warehouse.duckdb")
    query = "SELECT user_id, SUM(amount) AS total FROM shop.t GROUP BY user_id"  # HUGEINT sum
    with beam.Pipeline() as pipeline:
        batches = pipeline | "Arrow" >> ReadFromWarehouse(
            query, warehouse=path, batch_rows=7, output="arrow"
        )
        shapes = batches | beam.Map(
            lambda batch: (
                type(batch).__name__,
                batch.num_rows <= 7,
                str(batch.schema.field("total").type),  # DuckDB's HUGEINT SUM narrowed
            )
        )
        assert_that(
            shapes | beam.Distinct(), equal_to([("RecordBatch", True, "int64")]), label="Batches"
        )
        from_batches = batches | beam.FlatMap(lambda batch: batch.to_pylist())
        dicts = pipeline | "Dicts" >> ReadFromWarehouse(query, warehouse=path)
        expected = [{**row, "total": None if row["total"] is None else int(row["total"])}
                    for row in by_sql(table)]  # fmt: skip
        expected = [{"user_id": row["user_id"], "total": row["total"]} for row in expected]
        assert_that(from_batches, equal_to(expected), label="ArrowRows")
        assert_that(dicts, equal_to(expected), label="DictRows")
