"""Hash splits and percentiles: Beam and SQL agree exactly, value for value."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import duckdb
import pytest
from apache_beam.testing.util import assert_that, equal_to

from mlengine.beam import HashSplit, PercentileCont, hash_bucket, percentile_cont
from mlengine.data import connect
from mlengine.errors import InvalidArgument

INT64_MIN = -(1 << 63)
KEYS: list[Any] = [
    0,
    1,
    -1,
    7,
    1_000_001,
    -123_456_789,
    (1 << 63) - 1,
    INT64_MIN,
    "",
    "alphabet",
    "P00069042",
    "héllo wörld ✓",
    True,
    False,
]


@pytest.fixture(scope="module")
def sql() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = connect(":memory:")
    yield connection
    connection.close()


def sql_bucket(connection: duckdb.DuckDBPyConnection, value: Any, buckets: int) -> int:
    """The SQL idiom, on the warehouse's FARM_FINGERPRINT."""
    if isinstance(value, bool):
        literal = "TRUE" if value else "FALSE"
    elif isinstance(value, int):
        literal = f"CAST({value} AS BIGINT)" if value != INT64_MIN else "(-9223372036854775807 - 1)"
    else:
        literal = "'" + value.replace("'", "''") + "'"
    row = connection.execute(
        f"SELECT ABS(MOD(FARM_FINGERPRINT(CAST({literal} AS STRING)), {buckets}))"
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("buckets", [1, 2, 10, 7, 100])
def test_hash_bucket_is_the_sql_idiom(sql: duckdb.DuckDBPyConnection, buckets: int) -> None:
    for key in KEYS:
        assert hash_bucket(key, buckets) == sql_bucket(sql, key, buckets), key


def test_hash_bucket_reference_values() -> None:
    # FARM_FINGERPRINT('alphabet') = -2427165924636348523 on BigQuery (DESIGN §7).
    assert hash_bucket("alphabet", 10) == 2427165924636348523 % 10
    assert hash_bucket("", 100) == 7286425919675154353 % 100
    # BigQuery writes TRUE as 'true': hash_bucket(True) is not hash_bucket('True').
    assert hash_bucket(True, 1000) == hash_bucket("true", 1000)
    assert hash_bucket(1_000_001, 10) == hash_bucket("1000001", 10)
    assert hash_bucket(None, 10) is None


def test_hash_bucket_rejects_bad_buckets() -> None:
    for buckets in (0, -3, 2.5, True):
        with pytest.raises(InvalidArgument, match="'buckets' field of hash_bucket"):
            hash_bucket("x", buckets)  # type: ignore[arg-type]


def test_hash_split_has_the_sql_membership(sql: duckdb.DuckDBPyConnection) -> None:
    rows: list[dict[str, Any]] = [
        {"id": user, "n": user % 5} for user in range(1_000_001, 1_000_301)
    ]
    rows.append({"id": None, "n": -1})  # a NULL key: in neither split, as in SQL
    buckets = {r["id"]: sql_bucket(sql, r["id"], 10) for r in rows if r["id"] is not None}
    train = [r for r in rows if r["id"] is not None and buckets[r["id"]] < 8]
    evaluation = [r for r in rows if r["id"] is not None and buckets[r["id"]] >= 8]
    assert 0 < len(evaluation) < len(train)
    with beam.Pipeline() as pipeline:
        splits = pipeline | beam.Create(rows) | HashSplit("id")
        assert_that(splits.train, equal_to(train), label="Train")
        assert_that(splits.eval, equal_to(evaluation), label="Eval")


def test_hash_split_takes_a_key_function_and_unpacks() -> None:
    names = [f"user-{index}" for index in range(200)]
    buckets = {name: hash_bucket(name, 4) or 0 for name in names}
    train = [name for name in names if buckets[name] < 3]
    evaluation = [name for name in names if buckets[name] >= 3]
    with beam.Pipeline() as pipeline:
        first, second = pipeline | beam.Create(names) | HashSplit(lambda name: name, 3, 4)
        assert_that(first, equal_to(train), label="Train")
        assert_that(second, equal_to(evaluation), label="Eval")


@pytest.mark.parametrize(
    ("train_buckets", "buckets", "field"),
    [(11, 10, "train_buckets"), (-1, 10, "train_buckets"), (1, 0, "buckets")],
)
def test_hash_split_rejects_bad_buckets(train_buckets: int, buckets: int, field: str) -> None:
    pipeline = beam.Pipeline()
    with pytest.raises(InvalidArgument, match=f"'{field}' field of HashSplit"):
        _ = pipeline | beam.Create([1]) | HashSplit("id", train_buckets, buckets)


def test_percentile_cont_is_duckdbs_quantile_cont(sql: duckdb.DuckDBPyConnection) -> None:
    generator = random.Random(7)
    for _ in range(300):
        values = [
            generator.randint(0, generator.choice([10, 10_000, 10**12]))
            for _ in range(generator.randint(1, 200))
        ]
        fraction = generator.choice([0.9, 0.5, 0.33, 0.99, 0.1, generator.random()])
        expected = sql.execute(
            "SELECT quantile_cont(x, ?) FROM (SELECT unnest(?::BIGINT[]) AS x)",
            [fraction, values],
        ).fetchone()
        assert expected is not None
        assert percentile_cont(values, fraction) == expected[0], (values, fraction)


def test_percentile_cont_edges() -> None:
    assert percentile_cont([], 0.9) is None
    assert percentile_cont([None, 4, None], 0.9) == 4.0
    assert percentile_cont(range(11), 0.9) == 9.0
    assert percentile_cont([1, 2], 0.5) == 1.5
    with pytest.raises(InvalidArgument, match="'fraction' field of percentile_cont"):
        percentile_cont([1], 1.5)
    with pytest.raises(InvalidArgument, match="'fraction' field of PercentileCont"):
        PercentileCont(-0.1)


def test_percentile_cont_combine_fn() -> None:
    values = list(range(1, 101))
    with beam.Pipeline() as pipeline:
        created = pipeline | beam.Create(values)
        p90 = created | "P90" >> beam.CombineGlobally(PercentileCont(0.9))
        assert_that(p90, equal_to([percentile_cont(values, 0.9)]), label="P90")
        empty = (
            pipeline
            | "Empty" >> beam.Create([])
            | "P50" >> beam.CombineGlobally(PercentileCont(0.5))
        )
        assert_that(empty, equal_to([None]), label="EmptyP50")
