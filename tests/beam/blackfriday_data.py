"""A small table shaped like ``samples.blackfriday`` (its columns, a heavy tail of big buyers),
built without the sample generators so that the Beam tests depend on nothing but DuckDB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from mlengine.data import connect

COLUMNS = (
    "User_ID",
    "Product_ID",
    "Gender",
    "Age",
    "Occupation",
    "City_Category",
    "Stay_In_Current_City_Years",
    "Marital_Status",
    "Product_Category_1",
    "Purchase",
)


def blackfriday_table(rows: int = 4_000, users: int = 300, seed: int = 0) -> pa.Table:
    """Purchases of `users` users, a few with many rows; attributes constant per user except
    that a user's ``Gender`` changes once in a while (so that MIN per user matters)."""
    rng = np.random.default_rng(seed)
    weights = rng.pareto(1.5, users) + 0.1
    user_index = rng.choice(users, rows, p=weights / weights.sum())
    user_id = 1_000_001 + user_index
    gender = np.where(user_index % 3 == 0, "F", "M").astype(object)
    gender[rng.random(rows) < 0.01] = "F"
    return pa.table(
        {
            "User_ID": pa.array(user_id, pa.int64()),
            "Product_ID": [f"P00{code:04d}42" for code in rng.integers(0, 3_000, rows)],
            "Gender": pa.array(gender, pa.string()),
            "Age": pa.array(
                np.array(["0-17", "18-25", "26-35", "36-45", "46-50", "51-55", "55+"])[
                    user_index % 7
                ]
            ),
            "Occupation": pa.array(user_index % 21, pa.int64()),
            "City_Category": pa.array(np.array(["A", "B", "C"])[user_index % 3]),
            "Stay_In_Current_City_Years": pa.array(
                np.array(["0", "1", "2", "3", "4+"])[user_index % 5]
            ),
            "Marital_Status": pa.array(user_index % 2, pa.int64()),
            "Product_Category_1": pa.array(rng.integers(1, 19, rows), pa.int64()),
            "Purchase": pa.array(rng.integers(12, 23_962, rows), pa.int64()),
        }
    )


def make_warehouse(path: Path, table: pa.Table, name: str = "samples.blackfriday") -> Path:
    """Write `table` as `name` into the DuckDB warehouse file at `path`."""
    dataset = name.split(".")[0]
    connection = connect(path)
    try:
        connection.register("source_rows", table)
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {dataset}")
        connection.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM source_rows")
    finally:
        connection.close()
    return path
