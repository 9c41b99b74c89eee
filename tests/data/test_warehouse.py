"""The warehouse: queries shaped like BigQuery's client, destinations, dry runs, errors and
DuckDB's one-writer rule, on real DuckDB files."""

from __future__ import annotations

import datetime
import decimal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mlengine
from mlengine.data import QueryResult, Warehouse, _warehouse, connect
from mlengine.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)

HOLDER = """
import sys, duckdb
connection = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "read")
print("holding", flush=True)
sys.stdin.readline()
connection.close()
"""


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "warehouse.duckdb"


@pytest.fixture
def warehouse(path: Path) -> Warehouse:
    created = Warehouse(path, project="my-project")
    created.query(
        "CREATE SCHEMA shop; CREATE TABLE shop.sales AS SELECT * FROM (VALUES "
        "(1, 'tea', 2.5, DATE '2024-01-02'), (2, 'cake', 4.0, DATE '2024-01-03'), "
        "(3, 'tea', NULL, DATE '2024-02-01')) AS t(id, item, price, day)"
    )
    return created


class Holder:
    """Another process holding the warehouse file open until released."""

    def __init__(self, path: Path, mode: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "holding"

    def release(self) -> None:
        """Let the process close its connection and exit (closing our pipes too)."""
        if self.process.returncode is None:
            self.process.communicate("\n", timeout=30)


@pytest.fixture
def holder(path: Path, warehouse: Warehouse) -> Iterator[type[Holder]]:
    started: list[Holder] = []

    def start(mode: str) -> Holder:
        started.append(Holder(path, mode))
        return started[-1]

    yield start  # type: ignore[misc]
    for each in started:
        each.release()


def test_query_result_reads_like_bigquery(warehouse: Warehouse) -> None:
    result = warehouse.query("SELECT id, item, price, day FROM shop.sales ORDER BY id")
    assert isinstance(result, QueryResult)
    assert result.total_rows == 3 and len(result) == 3
    assert [(f.name, f.field_type, f.mode) for f in result.schema] == [
        ("id", "INTEGER", "NULLABLE"),
        ("item", "STRING", "NULLABLE"),
        ("price", "NUMERIC", "NULLABLE"),
        ("day", "DATE", "NULLABLE"),
    ]
    frame = result.to_dataframe()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["item"]) == ["tea", "cake", "tea"]
    assert isinstance(result.to_arrow(), pa.Table)
    rows = list(result.result())
    assert rows[0]["item"] == rows[0].item == rows[0][1] == "tea"
    assert rows[0].day == datetime.date(2024, 1, 2)
    assert rows[2].get("price") is None and rows[2].get("nope", 7) == 7
    assert rows[1].keys() == ["id", "item", "price", "day"]
    assert dict(rows[1].items())["price"] == decimal.Decimal("4.0")


def test_max_rows_keeps_the_first_rows_and_counts_all(warehouse: Warehouse) -> None:
    result = warehouse.query("SELECT * FROM range(200000) t(x)", max_rows=5)
    assert len(result) == 5 and result.total_rows == 200000
    assert [row.x for row in result] == [0, 1, 2, 3, 4]
    assert len(warehouse.query("SELECT 1", max_rows=0)) == 0
    with pytest.raises(InvalidArgument, match="max_rows"):
        warehouse.query("SELECT 1", max_rows=-1)


def test_sums_of_integers_are_int64_as_in_bigquery(warehouse: Warehouse) -> None:
    result = warehouse.query("SELECT SUM(id) AS total, COUNT(1) AS n FROM shop.sales")
    assert result.to_arrow().schema.field("total").type == pa.int64()
    assert result.to_records() == [{"total": 6, "n": 3}]


def test_parameters_and_scripts(warehouse: Warehouse) -> None:
    assert warehouse.query("SELECT ? + 1 AS x", params=[41]).to_records() == [{"x": 42}]
    script = "CREATE TABLE shop.tmp AS SELECT 1 AS a; INSERT INTO shop.tmp VALUES (2); "
    script += "SELECT sum(a) AS s FROM shop.tmp"
    assert warehouse.query(script).to_records() == [{"s": 3}]


def test_sql_uses_the_warehouse_of_mlengine_home(home: Path) -> None:
    mlengine.sql("CREATE TABLE main.t AS SELECT 42 AS answer")
    assert (home / "warehouse.duckdb").is_file()
    assert mlengine.sql("SELECT answer FROM main.t").to_dataframe()["answer"].tolist() == [42]


def test_reading_an_empty_warehouse_creates_nothing(path: Path) -> None:
    assert Warehouse(path).query("SELECT 1 AS one").to_records() == [{"one": 1}]
    with pytest.raises(NotFound, match="load-sample natality"):
        Warehouse(path).query("SELECT * FROM publicdata.samples.natality")
    assert not path.exists()


def test_destination_is_created_then_only_replaced_when_asked(warehouse: Warehouse) -> None:
    made = warehouse.query(
        "SELECT item, count(*) AS n FROM shop.sales GROUP BY item ORDER BY item",
        destination="reports.items",
    )
    assert made.destination == "reports.items"
    assert made.to_records() == [{"item": "cake", "n": 1}, {"item": "tea", "n": 2}]
    with pytest.raises(AlreadyExists, match=r"reports\.items.*--replace"):
        warehouse.query("SELECT 1 AS other", destination="reports.items")
    assert warehouse.query("SELECT * FROM reports.items").total_rows == 2
    warehouse.query("SELECT 1 AS other", destination="reports.items", replace=True)
    assert warehouse.query("SELECT * FROM reports.items").to_records() == [{"other": 1}]
    assert warehouse.describe("reports.items").kind == "table"


def test_a_failing_destination_query_leaves_the_warehouse_unchanged(warehouse: Warehouse) -> None:
    warehouse.query("SELECT 1 AS keep", destination="reports.kept")
    with pytest.raises(InvalidArgument):
        warehouse.query(
            "SELECT CAST(item AS INTEGER) AS broken FROM shop.sales",
            destination="reports.kept",
            replace=True,
        )
    assert warehouse.query("SELECT * FROM reports.kept").to_records() == [{"keep": 1}]
    with pytest.raises(InvalidArgument, match="one SELECT"):
        warehouse.query("SELECT 1; SELECT 2", destination="reports.two")
    with pytest.raises(InvalidArgument, match=r"DATASET\.TABLE"):
        warehouse.query("SELECT 1", destination="no_dataset")
    assert [t.name for t in warehouse.tables()] == ["reports.kept", "shop.sales"]


def test_dry_run_gives_schema_and_estimate_without_running(warehouse: Warehouse) -> None:
    estimate = warehouse.dry_run("SELECT item, price * 2 AS double FROM shop.sales")
    assert [(f.name, f.field_type) for f in estimate.schema] == [
        ("item", "STRING"),
        ("double", "NUMERIC"),
    ]
    assert estimate.estimated_rows == 3
    assert estimate.to_api_repr()["estimatedRows"] == 3
    side_effect = warehouse.dry_run("SELECT * FROM range(1000) t(x)")
    assert side_effect.estimated_rows == 1000
    with pytest.raises(InvalidArgument, match="one SELECT"):
        warehouse.dry_run("CREATE TABLE shop.no AS SELECT 1")
    with pytest.raises(NotFound):
        warehouse.dry_run("SELECT * FROM shop.nope")


@pytest.mark.parametrize(
    ("query", "error", "message"),
    [
        (
            "SELEC 1",
            InvalidArgument,
            r"^SQL syntax error at or near \"SELEC\" \(line 1, column 1\)$",
        ),
        (
            "SELECT id\nFROM shop.sales\nWHERE id = = 2",
            InvalidArgument,
            r"syntax error at or near \"=\" \(line 3, column 12\)$",
        ),
        ("SELECT nope FROM shop.sales", InvalidArgument, r"column \"nope\" not found"),
        ("SELECT * FROM shop.nope", NotFound, r"nope does not exist"),
        ("SELECT * FROM nope.t", NotFound, r"does not exist"),
        ("SELECT no_such_function(1)", NotFound, "no_such_function"),
        ("SELECT CAST('x' AS INTEGER)", InvalidArgument, "Could not convert"),
        ("CREATE TABLE shop.sales AS SELECT 1", AlreadyExists, "already exists"),
    ],
)
def test_bad_queries_give_one_line_errors(
    warehouse: Warehouse, query: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as raised:
        warehouse.query(query)
    assert "\n" not in str(raised.value)
    assert raised.value.__cause__ is not None  # chained to DuckDB's error
    assert warehouse.query("SELECT count(*) AS n FROM shop.sales").to_records() == [{"n": 3}]


def test_outputs_csv_and_parquet(warehouse: Warehouse, tmp_path: Path) -> None:
    result = warehouse.query("SELECT id, item, day FROM shop.sales ORDER BY id")
    assert result.to_csv() == (
        "id,item,day\n1,tea,2024-01-02\n2,cake,2024-01-03\n3,tea,2024-02-01\n"
    )
    result.to_csv(tmp_path / "out" / "sales.csv")
    assert (tmp_path / "out" / "sales.csv").read_text().startswith("id,item,day\n")
    result.to_parquet(tmp_path / "sales.parquet")
    assert pq.read_table(tmp_path / "sales.parquet").num_rows == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out",
        "sales.parquet",
        "warehouse.duckdb",
    ]


def test_readers_share_the_file_with_other_readers(
    warehouse: Warehouse, holder: type[Holder]
) -> None:
    holder("read")  # type: ignore[call-arg]
    blocked = Warehouse(warehouse.path, project="my-project", lock_timeout=0.2)
    assert blocked.query("SELECT count(*) AS n FROM shop.sales").to_records() == [{"n": 3}]
    assert [t.name for t in blocked.tables()] == ["shop.sales"]
    with pytest.raises(Unavailable, match=str(warehouse.path)):
        blocked.query("CREATE TABLE shop.other AS SELECT 1")


def test_a_locked_warehouse_is_unavailable_after_the_retries(
    warehouse: Warehouse, holder: type[Holder]
) -> None:
    holder("write")  # type: ignore[call-arg]
    blocked = Warehouse(warehouse.path, lock_timeout=0.2)
    with pytest.raises(Unavailable, match=rf"{warehouse.path}.*locked by another process"):
        blocked.query("SELECT 1")
    with pytest.raises(Unavailable):
        connect(warehouse.path, read_only=True, lock_timeout=0)


def test_a_writer_waits_for_the_lock_to_be_released(
    warehouse: Warehouse, holder: type[Holder], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = holder("write")  # type: ignore[call-arg]
    retried = threading.Event()

    def sleep(seconds: float) -> None:
        retried.set()
        time.sleep(seconds)

    clock = types.SimpleNamespace(monotonic=time.monotonic, sleep=sleep)
    monkeypatch.setattr(_warehouse, "time", clock)
    outcome: list[object] = []
    waiting = Warehouse(warehouse.path, lock_timeout=120)
    thread = threading.Thread(
        target=lambda: outcome.append(waiting.query("CREATE TABLE shop.late AS SELECT 1 AS x"))
    )
    thread.start()
    assert retried.wait(60), "the writer never met the lock"
    other.release()
    thread.join(120)
    assert len(outcome) == 1
    assert warehouse.query("SELECT x FROM shop.late").to_records() == [{"x": 1}]


def test_a_file_that_is_not_a_warehouse(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.duckdb"
    bogus.write_text("not a database" * 100)
    with pytest.raises(InvalidArgument, match="not a valid DuckDB database"):
        Warehouse(bogus).query("CREATE TABLE t AS SELECT 1")


def test_connections_of_one_process_share_the_file(warehouse: Warehouse) -> None:
    with connect(warehouse.path) as mine:
        assert warehouse.query("SELECT FARM_FINGERPRINT('') AS f").to_records() == [
            {"f": -7286425919675154353}
        ]
        warehouse.query("INSERT INTO shop.sales VALUES (4, 'pie', 1.0, DATE '2024-03-01')")
        assert mine.sql("SELECT count(*) FROM shop.sales").fetchall() == [(4,)]
    with connect(warehouse.path, read_only=True) as reader:
        assert warehouse.query("SELECT count(*) AS n FROM shop.sales").to_records() == [{"n": 4}]
        with pytest.raises(FailedPrecondition, match="open read-only"):
            warehouse.query("DELETE FROM shop.sales")
        assert reader.sql("SELECT FARM_FINGERPRINT('alphabet')").fetchall() == [
            (-2427165924636348523,)
        ]


def test_a_select_that_writes_runs_as_a_writer(warehouse: Warehouse) -> None:
    warehouse.query("CREATE SEQUENCE shop.ids")
    assert warehouse.query("SELECT nextval('shop.ids') AS n").to_records() == [{"n": 1}]
    assert warehouse.query("SELECT nextval('shop.ids') AS n").to_records() == [{"n": 2}]
