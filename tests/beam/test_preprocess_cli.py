"""``mlengine preprocess``: the argv a pipeline receives for each runner, the early errors for
runners that cannot run here, and the exit codes. No cluster is faked: for Dataflow, Flink
and Spark the pipeline file records what it was given and stops before running anything."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from mlengine.beam import _launch, check_runner_args, pipeline_argv, run_pipeline
from mlengine.data import connect
from mlengine.errors import InvalidArgument, MissingDependency, OperationFailed

RECORDER = """
import json, sys
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
options = PipelineOptions()  # no argv: Beam reads sys.argv, as a user's pipeline may
record = {
    "argv": sys.argv,
    "runner": options.view_as(StandardOptions).runner,
    "all": {k: v for k, v in options.get_all_options(drop_default=True).items()},
    "path0": sys.path[0],
}
with open(sys.argv[sys.argv.index("--record") + 1], "w") as handle:
    json.dump(record, handle, default=str)
"""

COUNTER = """
import argparse, json
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
known, beam_args = parser.parse_known_args()

def save(count):
    with open(known.out, "w") as handle:
        json.dump(count, handle)

with beam.Pipeline(options=PipelineOptions(beam_args)) as pipeline:
    (pipeline | beam.Create(range(100)) | beam.Map(lambda x: x * 2)
     | beam.combiners.Count.Globally() | beam.Map(save))
"""

FAILING = """
import apache_beam as beam
from mlengine.beam import WriteToWarehouse

def boom(x):
    if x == 3:
        raise ValueError("row 3 is bad")
    return {"x": x}

with beam.Pipeline() as pipeline:
    (pipeline | beam.Create(range(5)) | beam.Map(boom)
     | WriteToWarehouse("shop.items", warehouse=WAREHOUSE))
"""


@pytest.fixture
def write_pipeline(tmp_path: Path) -> Callable[[str, str], Path]:
    def write(source: str, name: str = "pipeline.py") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return path

    return write


def test_direct_is_the_default_and_args_pass_through(tmp_path: Path) -> None:
    argv = pipeline_argv("p.py", ["--input", "a b.csv", "--flag"])
    assert argv == ["p.py", "--runner=DirectRunner", "--input", "a b.csv", "--flag"]


def test_a_runner_after_double_dash_is_used(tmp_path: Path) -> None:
    args = ["--runner", "FlinkRunner", "--job_endpoint=localhost:8099"]
    assert pipeline_argv("p.py", args) == ["p.py", *args]
    assert pipeline_argv("p.py", ["--runner=direct"], "DirectRunner") == ["p.py", "--runner=direct"]
    with pytest.raises(InvalidArgument, match="Two runners given"):
        pipeline_argv("p.py", ["--runner=SparkRunner"], "DirectRunner")


def test_workers_add_the_multi_processing_options() -> None:
    argv = pipeline_argv("p.py", ["--x"], workers=2)
    assert argv == [
        "p.py",
        "--runner=DirectRunner",
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=2",
        "--default_sdk_harness_log_level=CRITICAL",
        "--x",
    ]
    assert "--direct_num_workers=2" not in pipeline_argv(
        "p.py", ["--direct_num_workers=3"], None, workers=2
    )
    with pytest.raises(InvalidArgument, match="--workers is for the DirectRunner"):
        pipeline_argv("p.py", ["--job_endpoint=h:1"], "FlinkRunner", workers=2)
    with pytest.raises(InvalidArgument, match="'--workers' field"):
        pipeline_argv("p.py", [], workers=0)


def test_unknown_runner_is_bad_usage() -> None:
    with pytest.raises(InvalidArgument, match="'--runner' field of mlengine preprocess must be"):
        pipeline_argv("p.py", [], "SparkleRunner")


DATAFLOW_ARGS = ["--project=my-project", "--region=us-central1", "--temp_location=gs://b/tmp"]


@pytest.mark.parametrize(
    ("args", "missing"),
    [
        ([], "--project, --region, --temp_location=gs://BUCKET/PATH"),
        (["--project", "p", "--region", "r"], "missing: --temp_location"),
        (["--region=r", "--temp_location=gs://b/t"], "missing: --project."),
    ],
)
def test_dataflow_needs_project_region_and_temp_location(args: list[str], missing: str) -> None:
    with pytest.raises(InvalidArgument, match=missing):
        check_runner_args("DataflowRunner", args)


def test_dataflow_temp_location_must_be_on_gcs() -> None:
    with pytest.raises(InvalidArgument, match="must be a gs:// path"):
        check_runner_args("DataflowRunner", ["--project=p", "--region=r", "--temp_location=/tmp"])


def test_dataflow_needs_the_gcp_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_launch, "_module_available", lambda name: False)
    with pytest.raises(MissingDependency, match=r"pip install 'apache-beam\[gcp\]'"):
        check_runner_args("DataflowRunner", DATAFLOW_ARGS)


def test_dataflow_args_pass_through_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_launch, "_module_available", lambda name: True)
    argv = pipeline_argv("p.py", [*DATAFLOW_ARGS, "--num_workers=5", "--input=gs://b/in.csv"],
                         "DataflowRunner")  # fmt: skip
    assert argv == ["p.py", "--runner=DataflowRunner", *DATAFLOW_ARGS, "--num_workers=5",
                    "--input=gs://b/in.csv"]  # fmt: skip


@pytest.mark.parametrize(("runner", "engine"), [("FlinkRunner", "flink"), ("SparkRunner", "spark")])
def test_flink_and_spark_need_a_job_server(tmp_path: Path, runner: str, engine: str) -> None:
    with pytest.raises(InvalidArgument, match="needs a Beam job server: pass --job_endpoint"):
        check_runner_args(runner, [f"--{engine}_master=host:8081"])
    with pytest.raises(InvalidArgument, match="is not a file"):
        check_runner_args(runner, [f"--{engine}_job_server_jar={tmp_path / 'missing.jar'}"])
    jar = tmp_path / "job-server.jar"
    jar.write_bytes(b"PK")
    check_runner_args(runner, [f"--{engine}_job_server_jar={jar}"])
    args = ["--job_endpoint=localhost:8099", "--environment_type=LOOPBACK", "--parallelism=4"]
    assert pipeline_argv("p.py", args, runner) == ["p.py", f"--runner={runner}", *args]


@pytest.mark.parametrize(
    ("runner", "args"),
    [
        (None, ["--input", "in.csv"]),
        ("FlinkRunner", ["--job_endpoint=localhost:8099", "--flink_master=h:8081"]),
        ("SparkRunner", ["--job_endpoint", "localhost:8099", "--spark_master_url=spark://h:7077"]),
    ],
)
def test_the_pipeline_sees_the_runner_and_its_options(
    write_pipeline: Callable[..., Path], tmp_path: Path, runner: str | None, args: list[str]
) -> None:
    pipeline = write_pipeline(RECORDER)
    record_file = tmp_path / "record.json"
    saved_argv = list(sys.argv)
    assert run_pipeline(pipeline, [*args, "--record", str(record_file)], runner) == 0
    assert sys.argv == saved_argv
    record = json.loads(record_file.read_text())
    expected_runner = runner or "DirectRunner"
    assert record["argv"] == [
        str(pipeline),
        f"--runner={expected_runner}",
        *args,
        "--record",
        str(record_file),
    ]
    assert record["runner"] == expected_runner
    assert record["path0"] == str(pipeline.parent.resolve())
    if runner == "FlinkRunner":
        assert record["all"]["flink_master"] == "h:8081"
        assert record["all"]["job_endpoint"] == "localhost:8099"


def test_a_pipeline_runs_in_process(write_pipeline: Callable[..., Path], tmp_path: Path) -> None:
    pipeline = write_pipeline(COUNTER)
    out = tmp_path / "count.json"
    assert run_pipeline(pipeline, ["--out", str(out)]) == 0
    assert json.loads(out.read_text()) == 100


@pytest.mark.slow
def test_two_worker_processes_run_functions_defined_in_the_file(
    write_pipeline: Callable[..., Path], tmp_path: Path
) -> None:
    pipeline = write_pipeline(COUNTER)
    out = tmp_path / "count.json"
    assert run_pipeline(pipeline, ["--out", str(out)], workers=2) == 0
    assert json.loads(out.read_text()) == 100


def test_sys_exit_in_the_file_is_the_exit_code(write_pipeline: Callable[..., Path]) -> None:
    assert run_pipeline(write_pipeline("import sys\nsys.exit(3)\n")) == 3
    assert run_pipeline(write_pipeline("import sys\nsys.exit()\n")) == 0


def test_bad_files_are_bad_usage(write_pipeline: Callable[..., Path], tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="does not exist"):
        run_pipeline(tmp_path / "missing.py")
    with pytest.raises(InvalidArgument, match="is not a file"):
        run_pipeline(tmp_path)
    with pytest.raises(InvalidArgument, match=r"does not compile: .* \(line 2\)"):
        run_pipeline(write_pipeline("x = 1\ndef broken(:\n", "broken.py"))


def test_a_failing_pipeline_is_one_line_and_leaves_the_warehouse(
    write_pipeline: Callable[..., Path], tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    connection = connect(warehouse)
    connection.execute("CREATE SCHEMA shop; CREATE TABLE shop.items AS SELECT 42 AS x")
    connection.close()
    pipeline = write_pipeline(FAILING.replace("WAREHOUSE", repr(str(warehouse))))
    with pytest.raises(OperationFailed) as caught:
        run_pipeline(pipeline)
    message = str(caught.value)
    assert message.startswith("The pipeline pipeline.py failed: ValueError: row 3 is bad")
    assert "\n" not in message
    connection = connect(warehouse, read_only=True)
    assert connection.execute("SELECT x FROM shop.items").fetchall() == [(42,)]
    connection.close()


def test_the_cli_reports_errors_in_one_line(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    write_pipeline: Callable[..., Path],
    tmp_path: Path,
) -> None:
    missing = run_cli("preprocess", str(tmp_path / "missing.py"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"ERROR: The pipeline file {tmp_path / 'missing.py'} does not exist."
    ]
    dataflow = run_cli("preprocess", str(write_pipeline("pass\n")), "--runner", "DataflowRunner")
    assert dataflow.returncode == 2
    assert len(dataflow.stderr.strip().splitlines()) == 1
    assert "needs --project, --region and --temp_location" in dataflow.stderr

    pipeline = write_pipeline("raise RuntimeError('no data here')\n", "fails.py")
    failed = run_cli("preprocess", str(pipeline))
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines() == [
        "ERROR: The pipeline fails.py failed: RuntimeError: no data here"
    ]


def test_the_cli_passes_flags_with_and_without_double_dash(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    write_pipeline: Callable[..., Path],
    tmp_path: Path,
) -> None:
    pipeline = write_pipeline(RECORDER)
    record_file = tmp_path / "record.json"
    done = run_cli(
        "preprocess", str(pipeline), "--runner", "FlinkRunner", "--record", str(record_file),
        "--", "--job_endpoint=localhost:8099", "--flink_master", "h:8081",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(record_file.read_text())["argv"] == [
        str(pipeline), "--runner=FlinkRunner", "--record", str(record_file),
        "--job_endpoint=localhost:8099", "--flink_master", "h:8081",
    ]  # fmt: skip


def test_help_lists_preprocess_without_importing_beam(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    done = run_cli("preprocess", "--help")
    assert done.returncode == 0
    assert "--runner" in done.stdout and "--workers" in done.stdout
    code = (
        "import sys; from typer.testing import CliRunner; from mlengine.cli import app;"
        "result = CliRunner().invoke(app, ['--help']);"
        "print('preprocess' in result.output, 'apache_beam' in sys.modules)"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert shown.stdout.split() == ["True", "False"]
