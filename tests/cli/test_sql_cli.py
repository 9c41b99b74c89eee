"""``mlengine sql`` and ``mlengine datasets``: in-process for the outputs, as real processes
for the one-line errors and exit codes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner, Result

from mlengine.cli import app
from mlengine.data import Warehouse

Cli = Callable[..., subprocess.CompletedProcess[str]]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BY_SEX = (
    "SELECT is_male, COUNT(1) AS num_babies, AVG(weight_pounds) AS avg_wt "
    "FROM publicdata.samples.natality WHERE year > 2000 GROUP BY is_male ORDER BY is_male"
)


@pytest.fixture
def natality(home: Path, monkeypatch: pytest.MonkeyPatch) -> Warehouse:
    """A tiny natality-shaped table in the temporary home's warehouse."""
    monkeypatch.delenv("MLENGINE_WAREHOUSE_PATH", raising=False)
    warehouse = Warehouse()
    warehouse.query(
        "CREATE SCHEMA samples; CREATE TABLE samples.natality AS SELECT * FROM (VALUES "
        "(7.5, true, 25, 1, 39, 2001, 3, DATE '2001-03-04'), "
        "(6.25, false, 31, 1, 38, 2001, 3, DATE '2001-03-09'), "
        "(8.0, true, 28, 2, 40, 2003, 11, DATE '2003-11-02'), "
        "(5.5, false, 19, 1, 35, 1999, 1, DATE '1999-01-20'), "
        "(7.0, true, 33, 1, 41, 2005, 7, NULL)"
        ") AS t(weight_pounds, is_male, mother_age, plurality, gestation_weeks, year, month, day)"
    )
    return warehouse


def invoke(*args: str, stdin: str | None = None) -> Result:
    result = CliRunner().invoke(app, list(args), input=stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ERROR: ") and "Traceback" not in result.stderr
    assert result.stdout == ""
    return lines[0]


def test_default_output_is_a_table(natality: Warehouse) -> None:
    result = invoke("sql", BY_SEX)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["is_male", "num_babies", "avg_wt"]
    assert lines[1].split() == ["False", "1", "6.25"]
    assert lines[2].split() == ["True", "3", "7.5"]


def test_max_rows_and_the_table_default(natality: Warehouse) -> None:
    many = invoke("sql", "SELECT * FROM range(250) t(x)")
    assert len(many.stdout.splitlines()) == 101
    assert "Showing 100 of 250 rows" in many.stderr
    few = invoke("sql", "SELECT * FROM range(250) t(x)", "--max-rows", "3", "--format", "json")
    assert json.loads(few.stdout) == [{"x": 0}, {"x": 1}, {"x": 2}]


def test_json_is_a_list_of_row_objects(natality: Warehouse) -> None:
    result = invoke(
        "sql",
        "SELECT day, weight_pounds, 'nan'::DOUBLE AS nan, SUM(plurality) OVER () AS births, "
        "'ab'::BLOB AS raw, [1, 2] AS list FROM samples.natality ORDER BY mother_age LIMIT 2",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"day": "1999-01-20", "weight_pounds": 5.5, "nan": None, "births": 6, "raw": "YWI=",
         "list": [1, 2]},
        {"day": "2001-03-04", "weight_pounds": 7.5, "nan": None, "births": 6, "raw": "YWI=",
         "list": [1, 2]},
    ]  # fmt: skip


def test_csv_parquet_and_yaml(natality: Warehouse, tmp_path: Path) -> None:
    csv = invoke("sql", BY_SEX, "--format", "csv")
    assert csv.stdout == "is_male,num_babies,avg_wt\nfalse,1,6.25\ntrue,3,7.5\n"
    written = invoke("sql", BY_SEX, "--format", "csv", "-o", str(tmp_path / "by_sex.csv"))
    assert written.stdout == ""
    assert (tmp_path / "by_sex.csv").read_text() == csv.stdout
    invoke("sql", BY_SEX, "--format", "parquet", "-o", str(tmp_path / "by_sex.parquet"))
    table = pq.read_table(tmp_path / "by_sex.parquet")
    assert table.column("num_babies").to_pylist() == [1, 3]
    assert table.schema.field("num_babies").type == pa.int64()
    yaml_out = invoke("sql", BY_SEX, "--format", "yaml")
    assert yaml_out.stdout.startswith("- is_male: false\n  num_babies: 1\n")


def test_query_from_stdin(natality: Warehouse) -> None:
    result = invoke(
        "sql", "-", "--format", "json", stdin="SELECT count(*) AS n FROM samples.natality"
    )
    assert json.loads(result.stdout) == [{"n": 5}]


def test_destination(natality: Warehouse) -> None:
    made = invoke("sql", BY_SEX, "--destination", "reports.by_sex", "--format", "json")
    assert made.exit_code == 0, made.output
    assert "Created table reports.by_sex (2 rows)" in made.stderr
    assert [row["num_babies"] for row in json.loads(made.stdout)] == [1, 3]
    replaced = invoke("sql", "SELECT 1 AS one", "--destination", "reports.by_sex", "--replace")
    assert replaced.exit_code == 0, replaced.output
    assert natality.query("SELECT * FROM reports.by_sex").to_records() == [{"one": 1}]


def test_dry_run(natality: Warehouse) -> None:
    table = invoke("sql", BY_SEX, "--dry-run")
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[1].split() == ["is_male", "BOOLEAN", "NULLABLE", "BOOLEAN"]
    assert table.stdout.splitlines()[-1].startswith("Estimated rows: ")
    resource = json.loads(invoke("sql", BY_SEX, "--dry-run", "--format", "json").stdout)
    assert [field["name"] for field in resource["schema"]] == ["is_male", "num_babies", "avg_wt"]
    assert isinstance(resource["estimatedRows"], int)


def test_plots_are_png_files(natality: Warehouse, tmp_path: Path) -> None:
    bar = invoke(
        "sql", BY_SEX, "--plot", "bar", "--x", "is_male", "--y", "num_babies",
        "-o", str(tmp_path / "bar.png"),
    )  # fmt: skip
    assert bar.exit_code == 0, bar.output
    assert (tmp_path / "bar.png").read_bytes().startswith(PNG_MAGIC)
    assert bar.stdout.splitlines()[0].split() == ["is_male", "num_babies", "avg_wt"]
    line = invoke(
        "sql",
        "SELECT gestation_weeks, AVG(weight_pounds) AS avg_wt FROM samples.natality "
        "GROUP BY gestation_weeks ORDER BY gestation_weeks",
        "--plot", "line", "--x", "gestation_weeks", "--y", "avg_wt", "--logy",
        "-o", str(tmp_path / "charts" / "line.png"),
    )  # fmt: skip
    assert line.exit_code == 0, line.output
    assert (tmp_path / "charts" / "line.png").read_bytes().startswith(PNG_MAGIC)
    assert sorted(p.name for p in (tmp_path / "charts").iterdir()) == ["line.png"]


def test_datasets_commands(home: Path, tmp_path: Path) -> None:
    source = tmp_path / "scores.csv"
    source.write_text("id,score\n1,2.5\n2,3.5\n")
    created = invoke("datasets", "create", "raw.scores", "--source", str(source))
    assert created.exit_code == 0, created.output
    assert "Created external table raw.scores (2 rows)" in created.stderr
    invoke("datasets", "create", "raw.copy", "--source", str(source), "--copy")
    listed = json.loads(invoke("datasets", "list", "--format", "json").stdout)
    assert [(t["name"], t["kind"], t["rows"]) for t in listed] == [
        ("raw.copy", "table", 2),
        ("raw.scores", "external", 2),
    ]
    table = invoke("datasets", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "KIND", "ROWS", "SOURCE"]
    assert table[2].split()[:3] == ["raw.scores", "external", "2"]
    described = invoke("datasets", "describe", "raw.scores")
    assert "rows: 2" in described.stdout and "score" in described.stdout
    as_json = json.loads(invoke("datasets", "describe", "raw.scores", "--format", "json").stdout)
    assert [(c["name"], c["warehouseType"]) for c in as_json["schema"]] == [
        ("id", "BIGINT"),
        ("score", "DOUBLE"),
    ]
    assert invoke("datasets", "delete", "raw.scores").exit_code == 0
    assert [
        t["name"] for t in json.loads(invoke("datasets", "list", "--format", "json").stdout)
    ] == ["raw.copy"]


def test_load_sample_then_the_tutorial_query(home: Path) -> None:
    loaded = invoke("datasets", "load-sample", "natality", "--rows", "200", "--seed", "3")
    assert loaded.exit_code == 0, loaded.output
    assert "Loaded samples.natality (200 rows)" in loaded.stderr
    rows = json.loads(
        invoke("sql", BY_SEX.replace("ORDER BY is_male", ""), "--format", "json").stdout
    )
    assert {row["is_male"] for row in rows} <= {True, False}
    assert sum(row["num_babies"] for row in rows) <= 200


@pytest.mark.integration
def test_errors_are_one_line_with_exit_code_2(
    natality: Warehouse, run_cli: Cli, tmp_path: Path
) -> None:
    syntax = run_cli("sql", "SELECT weight_pounds\nFROM samples.natality\nWHERE year > > 2000")
    assert syntax.returncode == 2
    assert error_line(syntax) == ('ERROR: SQL syntax error at or near ">" (line 3, column 14)')
    missing = run_cli("sql", "SELECT * FROM samples.nope")
    assert missing.returncode == 2 and "nope does not exist" in error_line(missing)
    column = run_cli("sql", "SELECT nope FROM samples.natality", "--format", "json")
    assert column.returncode == 2 and '"nope" not found' in error_line(column)
    run_cli("sql", BY_SEX, "--destination", "reports.by_sex")
    exists = run_cli("sql", "SELECT 1 AS x", "--destination", "reports.by_sex")
    assert exists.returncode == 2 and "already exists" in error_line(exists)
    assert natality.query("SELECT count(*) AS n FROM reports.by_sex").to_records() == [{"n": 2}]
    (tmp_path / "bad.parquet").write_text("not parquet")
    unreadable = run_cli("datasets", "create", "raw.bad", "--source", str(tmp_path / "bad.parquet"))
    assert unreadable.returncode == 2 and "bad.parquet" in error_line(unreadable)
    plot = run_cli(
        "sql", BY_SEX, "--plot", "bar", "--x", "sex", "--y", "num_babies",
        "-o", str(tmp_path / "no.png"),
    )  # fmt: skip
    assert plot.returncode == 2
    assert "'x' field of plot must be a column of the result" in error_line(plot)
    assert not (tmp_path / "no.png").exists()
    parquet = run_cli("sql", BY_SEX, "--format", "parquet")
    assert parquet.returncode == 2 and "-o FILE.parquet" in error_line(parquet)
    assert [t.name for t in natality.tables()] == ["reports.by_sex", "samples.natality"]
