"""Dataset tables registered from files: external (a view over the files) or copied."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlengine.data import Warehouse
from mlengine.errors import AlreadyExists, InvalidArgument, NotFound


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "warehouse.duckdb", project="my-project")


@pytest.fixture
def files(tmp_path: Path) -> Path:
    directory = tmp_path / "files"
    directory.mkdir()
    (directory / "part-1.csv").write_text("id,name,score\n1,ann,2.5\n2,bob,3.0\n")
    (directory / "part-2.csv").write_text("id,name,score\n3,cy,4.5\n")
    pq.write_table(
        pa.table({"id": [1, 2, 3, 4], "label": ["a", "b", "a", "c"]}), directory / "t.parquet"
    )
    (directory / "rows.jsonl").write_text(
        "\n".join(json.dumps({"k": i, "v": f"x{i}"}) for i in range(5)) + "\n"
    )
    (directory / "data.bin").write_text("id\n1\n")
    (directory / "broken.parquet").write_text("this is not parquet")
    return directory


@pytest.fixture
def memory_files() -> Iterator[str]:
    filesystem = fsspec.filesystem("memory")
    root = "memory://mlengine-test-datasets"
    for index in range(3):
        with filesystem.open(f"{root}/part-{index}.csv", "w") as handle:
            handle.write(f"n,word\n{index},w{index}\n")
    yield root
    filesystem.rm(root, recursive=True)


def test_an_external_table_reads_the_files_as_they_are(warehouse: Warehouse, files: Path) -> None:
    info = warehouse.create_table("raw.scores", str(files / "part-1.csv"))
    assert (info.name, info.kind, info.rows, info.format) == ("raw.scores", "external", 2, "csv")
    assert info.source == (str(files / "part-1.csv"),)
    assert [(f.name, f.warehouse_type) for f in info.schema] == [
        ("id", "BIGINT"),
        ("name", "VARCHAR"),
        ("score", "DOUBLE"),
    ]
    with (files / "part-1.csv").open("a") as handle:
        handle.write("9,dee,1.0\n")
    assert warehouse.query("SELECT count(*) AS n FROM raw.scores").to_records() == [{"n": 3}]
    assert warehouse.describe("raw.scores").rows == 3


def test_a_copied_table_is_a_snapshot(warehouse: Warehouse, files: Path) -> None:
    info = warehouse.create_table("raw.snapshot", str(files / "*.csv"), copy=True)
    assert (info.kind, info.rows) == ("table", 3)
    (files / "part-2.csv").unlink()
    assert warehouse.query("SELECT sum(id) AS s FROM raw.snapshot").to_records() == [{"s": 6}]


@pytest.mark.parametrize(
    ("source", "file_format", "rows", "columns"),
    [
        ("*.csv", None, 3, ["id", "name", "score"]),
        ("t.parquet", None, 4, ["id", "label"]),
        ("rows.jsonl", None, 5, ["k", "v"]),
        ("data.bin", "csv", 1, ["id"]),
    ],
)
def test_formats_and_globs(
    warehouse: Warehouse,
    files: Path,
    source: str,
    file_format: str | None,
    rows: int,
    columns: list[str],
) -> None:
    info = warehouse.create_table("raw.t", str(files / source), format=file_format)
    assert info.rows == rows
    assert [field.name for field in info.schema] == columns


def test_fsspec_urls_are_registered_with_duckdb(warehouse: Warehouse, memory_files: str) -> None:
    info = warehouse.create_table("remote.words", f"{memory_files}/*.csv")
    assert (info.kind, info.rows, info.source) == ("external", 3, (f"{memory_files}/*.csv",))
    fresh = Warehouse(warehouse.path)  # a new connection registers the filesystem again
    assert fresh.query("SELECT sum(n) AS s FROM remote.words").to_records() == [{"s": 3}]
    copied = warehouse.create_table("remote.copy", f"{memory_files}/part-1.csv", copy=True)
    assert copied.rows == 1
    with pytest.raises(NotFound, match="No files match"):
        warehouse.create_table("remote.none", f"{memory_files}/*.parquet")


def test_list_describe_delete(warehouse: Warehouse, files: Path) -> None:
    warehouse.create_table("raw.ext", str(files / "t.parquet"))
    warehouse.create_table("raw.copy", str(files / "t.parquet"), copy=True)
    warehouse.query("CREATE VIEW raw.v AS SELECT * FROM raw.copy WHERE label = 'a'")
    listed = {info.name: (info.kind, info.rows) for info in warehouse.tables()}
    assert listed == {
        "raw.copy": ("table", 4),
        "raw.ext": ("external", 4),
        "raw.v": ("view", None),
    }
    assert [info.name for info in warehouse.tables("other")] == []
    described = warehouse.describe("raw.copy").to_api_repr()
    assert described["kind"] == "table" and described["rows"] == 4
    assert [(c["name"], c["type"]) for c in described["schema"]] == [
        ("id", "INTEGER"),
        ("label", "STRING"),
    ]
    warehouse.delete("raw.ext")
    warehouse.delete("raw.v")
    assert (files / "t.parquet").is_file()  # an external table's files stay
    assert [info.name for info in warehouse.tables()] == ["raw.copy"]
    with pytest.raises(NotFound, match=r"raw\.ext does not exist"):
        warehouse.delete("raw.ext")
    with pytest.raises(NotFound):
        warehouse.describe("raw.ext")


def test_an_existing_table_is_only_replaced_when_asked(warehouse: Warehouse, files: Path) -> None:
    warehouse.create_table("raw.t", str(files / "t.parquet"))
    with pytest.raises(AlreadyExists, match=r"raw\.t already exists.*--replace"):
        warehouse.create_table("raw.t", str(files / "*.csv"), copy=True)
    assert warehouse.describe("raw.t").kind == "external"
    replaced = warehouse.create_table("raw.t", str(files / "*.csv"), copy=True, replace=True)
    assert (replaced.kind, replaced.rows) == ("table", 3)
    back = warehouse.create_table("raw.t", str(files / "t.parquet"), replace=True)
    assert (back.kind, back.rows) == ("external", 4)


@pytest.mark.parametrize(
    ("name", "source", "error", "message"),
    [
        ("raw.t", "missing.csv", NotFound, "does not exist"),
        ("raw.t", "nothing-*.csv", NotFound, "No files match"),
        ("raw.t", "", InvalidArgument, "is a directory"),
        ("raw.t", "data.bin", InvalidArgument, "--format csv|parquet|jsonl"),
        ("raw.t", "broken.parquet", InvalidArgument, "broken.parquet"),
        ("no_dataset", "t.parquet", InvalidArgument, "DATASET.TABLE"),
        ("raw.bad-name", "t.parquet", InvalidArgument, "DATASET.TABLE"),
        ("information_schema.t", "t.parquet", InvalidArgument, "DATASET.TABLE"),
    ],
)
def test_bad_sources_leave_the_warehouse_unchanged(
    warehouse: Warehouse,
    files: Path,
    name: str,
    source: str,
    error: type[Exception],
    message: str,
) -> None:
    warehouse.create_table("raw.t", str(files / "t.parquet"), copy=True)
    with pytest.raises(error, match=message) as raised:
        warehouse.create_table(name, str(files / source) if source else str(files), replace=True)
    assert "\n" not in str(raised.value)
    assert [(t.name, t.kind, t.rows) for t in warehouse.tables()] == [("raw.t", "table", 4)]


def test_an_external_table_whose_files_vanished(warehouse: Warehouse, files: Path) -> None:
    warehouse.create_table("raw.gone", str(files / "part-2.csv"))
    (files / "part-2.csv").unlink()
    assert [(t.name, t.rows) for t in warehouse.tables()] == [("raw.gone", None)]
    with pytest.raises(NotFound, match=r"part-2\.csv"):
        warehouse.query("SELECT * FROM raw.gone")


def test_project_qualified_names(warehouse: Warehouse, files: Path) -> None:
    info = warehouse.create_table("my-project.raw.t", str(files / "t.parquet"))
    assert info.name == "raw.t"
    result = warehouse.query("SELECT count(*) AS n FROM `my-project.raw.t`")
    assert result.to_records() == [{"n": 4}]


def test_load_sample_creates_the_samples_table(warehouse: Warehouse) -> None:
    info = warehouse.load_sample("iris", rows=20, seed=1)
    assert (info.name, info.kind, info.rows) == ("samples.iris", "table", 20)
    again = warehouse.load_sample("iris", rows=10, seed=1)
    assert again.rows == 10
    with pytest.raises(NotFound, match="nope"):
        warehouse.load_sample("nope")
