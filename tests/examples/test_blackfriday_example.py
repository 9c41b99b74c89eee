"""The Black Friday VIP example: the Beam pipeline (examples/blackfriday/pipeline.py) and the
one SQL statement (vip.sql) give the same users, labels and train/eval split."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlengine.beam import hash_bucket, percentile_cont, run_pipeline
from mlengine.data import connect, sql
from tests.beam.blackfriday_data import blackfriday_table, make_warehouse

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "blackfriday"
PIPELINE = EXAMPLE / "pipeline.py"
VIP_SQL = (EXAMPLE / "vip.sql").read_text()


@pytest.fixture(scope="module")
def purchases() -> pa.Table:
    return blackfriday_table(rows=6_000, users=400, seed=3)


@pytest.fixture
def warehouse(tmp_path: Path, purchases: pa.Table) -> Path:
    return make_warehouse(tmp_path / "warehouse.duckdb", purchases)


def sql_users(warehouse: Path) -> list[dict[str, Any]]:
    return sql(VIP_SQL, path=warehouse).to_arrow().to_pylist()


def test_the_sql_statement_labels_the_top_decile(warehouse: Path, purchases: pa.Table) -> None:
    users = sql_users(warehouse)
    totals: dict[int, int] = {}
    for user, amount in zip(
        purchases.column("User_ID").to_pylist(),
        purchases.column("Purchase").to_pylist(),
        strict=True,
    ):
        totals[user] = totals.get(user, 0) + amount
    threshold = percentile_cont(totals.values(), 0.9)
    assert threshold is not None
    assert len(users) == len(totals)
    for user in users:
        assert user["total_purchase"] == totals[user["User_ID"]]
        assert user["is_vip"] == (totals[user["User_ID"]] > threshold)
        bucket = hash_bucket(user["User_ID"], 10)
        assert bucket is not None
        assert user["split"] == ("train" if bucket < 8 else "eval")
    vip_share = sum(user["is_vip"] for user in users) / len(users)
    assert 0.09 <= vip_share <= 0.11


@pytest.mark.parametrize("mode", ["batched", "per_row"])
def test_beam_and_sql_agree_row_for_row(warehouse: Path, tmp_path: Path, mode: str) -> None:
    out = tmp_path / "out"
    args = ["--warehouse", str(warehouse), "--output_table", "features.vip_users"]
    if mode == "per_row":
        args.append("--per_row")
    assert run_pipeline(PIPELINE, [*args, "--output", str(out)]) == 0
    expected = sql_users(warehouse)
    connection = connect(warehouse, read_only=True)
    try:
        got = connection.sql("SELECT * FROM features.vip_users ORDER BY User_ID").to_arrow_table()
    finally:
        connection.close()
    assert got.to_pylist() == expected
    assert got.schema.names == list(expected[0])

    # The shards hold the same users, split the same way (no split column in the files).
    for split in ("train", "eval"):
        files = sorted(out.glob(f"{split}-*-of-*.parquet"))
        assert files
        rows = pa.concat_tables(pq.read_table(name) for name in files).to_pylist()
        wanted = [
            {k: v for k, v in r.items() if k != "split"} for r in expected if r["split"] == split
        ]
        assert sorted(rows, key=lambda row: row["User_ID"]) == wanted


def test_the_pipeline_reads_a_csv_input(tmp_path: Path, purchases: pa.Table) -> None:
    import pyarrow.csv

    source = tmp_path / "purchases.csv"
    pyarrow.csv.write_csv(purchases, source)
    warehouse = make_warehouse(tmp_path / "warehouse.duckdb", purchases)
    args = ["--input", str(source), "--output", str(tmp_path / "out"), "--format", "jsonl"]
    assert run_pipeline(PIPELINE, args) == 0
    lines = [
        json.loads(line)
        for name in sorted((tmp_path / "out").glob("*.jsonl"))
        for line in name.read_text().splitlines()
    ]
    expected = {user["User_ID"]: user for user in sql_users(warehouse)}
    assert len(lines) == len(expected)
    for row in lines:
        assert row["is_vip"] == expected[row["User_ID"]]["is_vip"]


@pytest.mark.slow
def test_the_cli_runs_the_example_with_two_workers_and_tfrecord_output(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], warehouse: Path, tmp_path: Path
) -> None:
    done = run_cli(
        "preprocess", str(PIPELINE), "--workers", "2", "--",
        "--warehouse", str(warehouse), "--output", str(tmp_path / "tf"), "--format", "tfrecord",
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    names = sorted(path.name for path in (tmp_path / "tf").iterdir())
    assert names and all(name.endswith(".tfrecord") for name in names)
    assert {name.split("-")[0] for name in names} == {"train", "eval"}


@pytest.mark.slow
def test_a_missing_table_is_reported_in_one_line(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    warehouse = make_warehouse(tmp_path / "w.duckdb", pa.table({"x": [1]}), "other.t")
    done = run_cli(
        "preprocess", str(PIPELINE), "--",
        "--warehouse", str(warehouse), "--output_table", "features.vip",
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR: The pipeline pipeline.py failed: ")
    assert "samples.blackfriday" in lines[0]
