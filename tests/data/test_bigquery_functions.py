"""BigQuery functions on the warehouse, checked against values BigQuery documents."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import farmhash
import pyarrow as pa
import pytest

from mlengine.data import (
    Warehouse,
    connect,
    farm_fingerprint,
    farm_fingerprint_array,
    translate_query,
)
from mlengine.errors import InvalidArgument, NotFound

# DESIGN §7 and BigQuery's FARM_FINGERPRINT documentation (the CONCAT example's three rows).
REFERENCE = {
    "": -7286425919675154353,
    "alphabet": -2427165924636348523,
    "3true": -4880158226897771312,
    "1footrue": -1541654101129638711,
    "2applefalse": 2794438866806483259,
}


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "warehouse.duckdb", project="my-project")


@pytest.fixture
def connection(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    with connect(tmp_path / "functions.duckdb") as opened:
        yield opened


def truncated_mod(value: int, divisor: int) -> int:
    """BigQuery's MOD: the sign of the dividend (Python's % floors)."""
    remainder = abs(value) % abs(divisor)
    return -remainder if value < 0 else remainder


@pytest.mark.parametrize(("text", "expected"), sorted(REFERENCE.items()))
def test_farm_fingerprint_scalar_matches_bigquery(text: str, expected: int) -> None:
    assert farm_fingerprint(text) == expected
    assert farm_fingerprint(text.encode()) == expected


def test_farm_fingerprint_scalar_types() -> None:
    assert farm_fingerprint(None) is None
    assert farm_fingerprint("é") == farm_fingerprint("é".encode())
    assert farm_fingerprint(True) == farm_fingerprint("true")
    assert farm_fingerprint(False) == farm_fingerprint("false")
    assert farm_fingerprint(2001) == farm_fingerprint("2001")
    assert farm_fingerprint(-5) == farm_fingerprint("-5")
    assert farm_fingerprint(1.5) == farm_fingerprint("1.5")
    assert farm_fingerprint(3.0) == farm_fingerprint("3")
    assert farm_fingerprint(bytearray(b"alphabet")) == REFERENCE["alphabet"]
    with pytest.raises(TypeError, match="list"):
        farm_fingerprint([1])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "array_type", [pa.string(), pa.large_string(), pa.binary(), pa.large_binary()]
)
def test_farm_fingerprint_array_matches_the_scalar(array_type: pa.DataType) -> None:
    texts = ["alphabet", None, "", "3true", "alphabet", "1footrue", None]
    values = [t.encode() if t is not None and "binary" in str(array_type) else t for t in texts]
    hashed = farm_fingerprint_array(pa.array(values, type=array_type))
    assert hashed.type == pa.int64()
    assert hashed.to_pylist() == [None if t is None else REFERENCE[t] for t in texts]


def test_farm_fingerprint_array_shapes() -> None:
    chunked = pa.chunked_array([["alphabet", "3true"], [], ["alphabet"]])
    assert farm_fingerprint_array(chunked).to_pylist() == [
        REFERENCE["alphabet"],
        REFERENCE["3true"],
        REFERENCE["alphabet"],
    ]
    encoded = pa.array(["3true", None, "3true"]).dictionary_encode()
    assert farm_fingerprint_array(encoded).to_pylist() == [
        REFERENCE["3true"],
        None,
        REFERENCE["3true"],
    ]
    assert farm_fingerprint_array(pa.array([], pa.string())).to_pylist() == []
    assert farm_fingerprint_array(pa.array([None, None], pa.string())).to_pylist() == [None, None]
    with pytest.raises(TypeError, match="CAST"):
        farm_fingerprint_array(pa.array([1, 2]))


def test_farm_fingerprint_array_hashes_each_distinct_value_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[object] = []
    original: Callable[[object], int] = farmhash.fingerprint64

    def counting(value: object) -> int:
        calls.append(value)
        return original(value)

    monkeypatch.setattr(farmhash, "fingerprint64", counting)
    keys = pa.array([str(i % 7) for i in range(10_000)])
    hashed = farm_fingerprint_array(keys)
    assert len(calls) == 7
    assert hashed.to_pylist()[:7] == [farm_fingerprint(str(i)) for i in range(7)]


def test_farm_fingerprint_in_sql(connection: duckdb.DuckDBPyConnection) -> None:
    rows = connection.sql(
        "SELECT FARM_FINGERPRINT(s) AS f, farm_fingerprint(CAST(s AS BLOB)) AS b "
        "FROM (VALUES ('alphabet'), (''), (NULL)) AS t(s)"
    ).fetchall()
    assert rows == [
        (REFERENCE["alphabet"], REFERENCE["alphabet"]),
        (REFERENCE[""], REFERENCE[""]),
        (None, None),
    ]


def test_bigquery_documentation_example(warehouse: Warehouse) -> None:
    # BigQuery's FARM_FINGERPRINT example, with its "..." string literals written '...'.
    result = warehouse.query(
        """
        WITH example AS (
          SELECT 1 AS x, 'foo' AS y, true AS z UNION ALL
          SELECT 2 AS x, 'apple' AS y, false AS z UNION ALL
          SELECT 3 AS x, '' AS y, true AS z
        )
        SELECT *, FARM_FINGERPRINT(CONCAT(CAST(x AS STRING), y, CAST(z AS STRING)))
          AS row_fingerprint
        FROM example ORDER BY x
        """
    )
    assert [row["row_fingerprint"] for row in result] == [
        -1541654101129638711,
        2794438866806483259,
        -4880158226897771312,
    ]


def test_farm_fingerprint_rejects_other_types(warehouse: Warehouse) -> None:
    with pytest.raises(InvalidArgument, match=r"STRING or BYTES.*CAST"):
        warehouse.query("SELECT FARM_FINGERPRINT(42)")


def test_split_idiom_selects_the_rows_bigquery_selects(warehouse: Warehouse) -> None:
    keys = [str(i) for i in range(2000)]
    result = warehouse.query(
        "SELECT x FROM UNNEST(range(2000)) AS t(x) "
        "WHERE ABS(MOD(FARM_FINGERPRINT(CAST(x AS STRING)), 10)) < 8 ORDER BY x"
    )
    expected = [int(k) for k in keys if abs(truncated_mod(farm_fingerprint(k) or 0, 10)) < 8]
    assert [row["x"] for row in result] == expected
    floored = [int(k) for k in keys if abs((farm_fingerprint(k) or 0) % 10) < 8]
    assert floored != expected  # Python's flooring % would pick other rows
    assert 0.75 < len(expected) / len(keys) < 0.85


def test_split_idiom_on_the_reference_fingerprints(warehouse: Warehouse) -> None:
    rows = warehouse.query(
        "SELECT s, MOD(FARM_FINGERPRINT(s), 10) AS m, ABS(MOD(FARM_FINGERPRINT(s), 10)) AS a "
        "FROM (VALUES (''), ('alphabet'), ('3true'), ('1footrue'), ('2applefalse')) AS t(s)"
    ).to_records()
    assert {row["s"]: (row["m"], row["a"]) for row in rows} == {
        "": (-3, 3),
        "alphabet": (-3, 3),
        "3true": (-2, 2),
        "1footrue": (-1, 1),
        "2applefalse": (9, 9),
    }


def test_mod_and_abs_follow_bigquery(warehouse: Warehouse) -> None:
    row = warehouse.query(
        "SELECT MOD(-7, 3) AS a, MOD(7, -3) AS b, MOD(-9223372036854775808, 10) AS c, "
        "ABS(-9223372036854775807) AS d"
    ).to_records()[0]
    assert row == {"a": -1, "b": 1, "c": -8, "d": 9223372036854775807}
    with pytest.raises(InvalidArgument, match="Overflow"):
        warehouse.query("SELECT ABS(CAST(-9223372036854775808 AS INT64))")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # BigQuery's APPROX_QUANTILES documentation examples.
        (
            "SELECT APPROX_QUANTILES(x, 2) AS q FROM UNNEST([1, 1, 1, 4, 5, 6, 7, 8, 9, 10]) AS x",
            [1, 5, 10],
        ),
        (
            "SELECT APPROX_QUANTILES(x, 100)[OFFSET(90)] AS q "
            "FROM UNNEST([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) AS x",
            9,
        ),
        (
            "SELECT APPROX_QUANTILES(DISTINCT x, 2) AS q "
            "FROM UNNEST([1, 1, 1, 4, 5, 6, 7, 8, 9, 10]) AS x",
            [1, 6, 10],
        ),
        (
            "SELECT APPROX_QUANTILES(x, 2) AS q "
            "FROM UNNEST([NULL, NULL, 1, 1, 1, 4, 5, 6, 7, 8, 9, 10]) AS x",
            [1, 5, 10],
        ),
        ("SELECT APPROX_QUANTILES(x, 4)[ORDINAL(1)] AS q FROM UNNEST(range(101)) AS t(x)", 0),
        ("SELECT APPROX_QUANTILES(x, 4)[SAFE_OFFSET(4)] AS q FROM UNNEST(range(101)) AS t(x)", 100),
        (
            "SELECT APPROX_QUANTILES(x, 4)[SAFE_OFFSET(9)] AS q FROM UNNEST(range(101)) AS t(x)",
            None,
        ),
        (
            "SELECT APPROX_QUANTILES(x, 4) AS q FROM UNNEST(range(101)) AS t(x)",
            [0, 25, 50, 75, 100],
        ),
        ("SELECT APPROX_QUANTILES(x, 1) AS q FROM UNNEST([3, 1, 2]) AS x", [1, 3]),
    ],
)
def test_approx_quantiles(warehouse: Warehouse, query: str, expected: object) -> None:
    assert warehouse.query(query).to_records() == [{"q": expected}]


def test_approx_quantiles_per_group(connection: duckdb.DuckDBPyConnection) -> None:
    rows = connection.sql(
        "SELECT x % 2 = 0 AS even, APPROX_QUANTILES(x, 2) AS q FROM range(11) t(x) "
        "GROUP BY even ORDER BY even"
    ).fetchall()
    assert rows == [(False, [1, 5, 9]), (True, [0, 4, 10])]


def test_rand_and_bigquery_type_names(connection: duckdb.DuckDBPyConnection) -> None:
    rows = connection.sql(
        "SELECT min(RAND()) >= 0 AND max(RAND()) < 1, count(DISTINCT RAND()) > 1 FROM range(100)"
    ).fetchall()
    assert rows == [(True, True)]
    typed = connection.sql(
        "SELECT CAST('1.5' AS FLOAT64), CAST('ab' AS BYTES), CAST('7' AS INT64), CAST(1 AS STRING)"
    ).fetchall()
    assert typed == [(1.5, b"ab", 7, "1")]


def test_functions_work_on_read_only_connections(tmp_path: Path) -> None:
    path = tmp_path / "read-only.duckdb"
    with connect(path) as writer:
        writer.execute("CREATE TABLE t AS SELECT 'alphabet' AS s")
    with connect(path, read_only=True) as reader:
        assert reader.sql("SELECT FARM_FINGERPRINT(s), RAND() < 1 FROM t").fetchall() == [
            (REFERENCE["alphabet"], True)
        ]
    with connect(path) as writer:  # nothing of ours was stored in the file
        objects = writer.sql(
            "SELECT count(*) FROM duckdb_functions() WHERE function_name = 'approx_quantiles' "
            "AND NOT database_name = 'temp'"
        ).fetchall()
    assert objects == [(0,)]


def test_connect_read_only_needs_the_file(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        connect(tmp_path / "missing.duckdb", read_only=True)


NATALITY = """
CREATE SCHEMA samples;
CREATE TABLE samples.natality AS SELECT * FROM (VALUES
  (7.5, true, 25, 1, 39, 2001, 3),
  (6.25, false, 31, 1, 38, 2001, 3),
  (8.0, true, 28, 2, 40, 2003, 11),
  (5.5, false, 19, 1, 35, 1999, 1),
  (7.0, true, 33, 1, 41, 2005, 7)
) AS t(weight_pounds, is_male, mother_age, plurality, gestation_weeks, year, month);
"""


@pytest.mark.parametrize(
    "table", ["publicdata.samples.natality", "`bigquery-public-data.samples.natality`",
              "bigquery-public-data.samples.natality", "`my-project.samples.natality`",
              "samples.natality"],
)  # fmt: skip
def test_natality_tutorial_queries_run_unchanged(warehouse: Warehouse, table: str) -> None:
    warehouse.query(NATALITY)
    rows = warehouse.query(
        "SELECT weight_pounds, is_male, mother_age, plurality, gestation_weeks, "
        "FARM_FINGERPRINT(CONCAT(CAST(YEAR AS STRING), CAST(month AS STRING))) AS hashmonth "
        f"FROM {table} WHERE year > 2000"
    ).to_dataframe()
    assert len(rows) == 4
    assert sorted(set(rows["hashmonth"])) == sorted(
        {farm_fingerprint("20013"), farm_fingerprint("200311"), farm_fingerprint("20057")}
    )
    by_sex = warehouse.query(
        "SELECT is_male, COUNT(1) AS num_babies, AVG(weight_pounds) AS avg_wt "
        f"FROM {table} WHERE year > 2000 GROUP BY is_male ORDER BY is_male"
    ).to_records()
    assert by_sex == [
        {"is_male": False, "num_babies": 1, "avg_wt": 6.25},
        {"is_male": True, "num_babies": 3, "avg_wt": pytest.approx(7.5)},
    ]


def test_translate_query_rewrites_only_code() -> None:
    query = (
        "SELECT a[OFFSET(1)], 'publicdata.x.y [OFFSET(1)]' -- publicdata.x.y\n"
        "FROM publicdata.samples.natality AS publicdata, other.samples.t, SAFE_CAST(x AS INT64)"
    )
    assert translate_query(query) == (
        "SELECT a[(1) + 1], 'publicdata.x.y [OFFSET(1)]' -- publicdata.x.y\n"
        "FROM samples.natality AS publicdata, other.samples.t, TRY_CAST(x AS INT64)"
    )
    assert translate_query("SELECT `my col` FROM `proj.ds.t`", ["proj"]) == (
        'SELECT "my col" FROM "ds"."t"'
    )
    assert translate_query("SELECT a[ordinal(f(1, 2))]") == "SELECT a[(f(1, 2))]"
    assert translate_query("SELECT 1") == "SELECT 1"


def test_percentile_cont_and_disc_as_bigquery_computes_them(warehouse: Warehouse) -> None:
    """BigQuery's analytic PERCENTILE_CONT/DISC(x, f) OVER (); values from the definition:
    sorted 1, 2, 3, 4, 10 -> CONT(0.9) interpolates between 4 and 10 at 0.6; DISC(0.5) = 3."""
    assert translate_query("SELECT PERCENTILE_CONT(x, 0.9) OVER () FROM t") == (
        "SELECT quantile_cont(x, 0.9) OVER () FROM t"
    )
    keep = "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM t"
    assert translate_query(keep) == keep  # DuckDB's own ordered-set form
    rows = warehouse.query(
        "SELECT x, PERCENTILE_CONT(x, 0.9) OVER () AS p90, "
        "PERCENTILE_DISC(x, 0.5) OVER () AS median "
        "FROM UNNEST([1, 2, 3, 4, 10, NULL]) AS t(x) ORDER BY x NULLS LAST"
    ).to_records()
    assert [row["p90"] for row in rows] == [pytest.approx(7.6)] * 6
    assert {row["median"] for row in rows} == {3}
