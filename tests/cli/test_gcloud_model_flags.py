"""``gcloud ai-platform`` command lines for models, versions, operations and predict run as
they are with ``mlengine`` in place of ``gcloud ai-platform`` (AIPLATFORM.md 7.3): every command
takes ``--region``, and ``versions create``/``update`` and ``models create`` take gcloud's
serving, explanation and logging flags."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

import mlengine
from mlengine.cli._version_flags import explanation_config
from mlengine.config import Settings
from mlengine.errors import InvalidArgument
from tests.conftest import ServerProcess

Cli = Callable[..., subprocess.CompletedProcess[str]]

REGION = ("--region", "us-central1")


@pytest.fixture
def client(server: ServerProcess, settings: Settings) -> Iterator[mlengine.Client]:
    with mlengine.Client(settings=settings) as instance:
        yield instance


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    iris = load_iris()
    directory = tmp_path / "forest"
    directory.mkdir()
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(iris.data, iris.target)
    joblib.dump(forest, directory / "model.joblib")
    return directory


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a command printed, once it exited 0."""
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else None


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The CLI's error: exit 2 and exactly one line on stderr starting with ERROR."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ERROR: ") and "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.integration
def test_versions_create_takes_gclouds_serving_flags_over_its_config(
    run_cli: Cli, server: ServerProcess, model_dir: Path, tmp_path: Path
) -> None:
    model = ok(run_cli("models", "create", "iris", *REGION, "--enable-console-logging",
                       "--format", "json"))  # fmt: skip
    assert model["regions"] == ["us-central1"]
    assert model["onlinePredictionConsoleLogging"] is True
    config = tmp_path / "version.yaml"
    config.write_text(
        "description: from the file\nmachineType: mls1-c1-m2\n"
        "serviceAccount: file@p.iam.gserviceaccount.com\n"
        "autoScaling:\n  minNodes: 3\n  maxNodes: 5\n"
    )
    created = ok(run_cli(
        "versions", "create", "v1", "--model", "iris", "--origin", str(model_dir), *REGION,
        "--config", str(config), "--machine-type", "n1-standard-4",
        "--accelerator", "type=nvidia-tesla-t4,count=1", "--min-nodes", "1", "--max-nodes", "2",
        "--metric-targets", "gpu-duty-cycle=70,cpu-usage=60",
        "--service-account", "flag@p.iam.gserviceaccount.com",
        "--explanation-method", "sampled-shapley", "--num-paths", "10", "--format", "json",
    ))  # fmt: skip
    assert created["state"] == "READY"
    version = ok(run_cli("versions", "describe", "v1", "--model", "iris", *REGION,
                         "--format", "json"))  # fmt: skip
    assert version["description"] == "from the file"  # the file, where no flag is given
    assert version["machineType"] == "n1-standard-4"
    assert version["serviceAccount"] == "flag@p.iam.gserviceaccount.com"
    assert version["autoScaling"] == {  # the flags replace the file's autoScaling, as gcloud
        "minNodes": 1,
        "maxNodes": 2,
        "metrics": [{"name": "CPU_USAGE", "target": 60}, {"name": "GPU_DUTY_CYCLE", "target": 70}],
    }
    assert version["explanationConfig"] == {"sampledShapleyAttribution": {"numPaths": 10}}
    assert version["acceleratorConfig"] == {"count": "1", "type": "NVIDIA_TESLA_T4"}
    # gcloud's global --quiet and --verbosity, as scripts pass them: accepted, ignored
    ok(run_cli("versions", "create", "v2", "--model", "iris", "--origin", str(model_dir),
               "--quiet", "--verbosity", "error", "--format", "json"))  # fmt: skip
    ok(run_cli("versions", "delete", "v2", "--model", "iris", *REGION, "--quiet"))
    listed = ok(run_cli("versions", "list", "--model", "iris", "-q", "--verbosity=debug",
                        "--format", "json"))  # fmt: skip
    assert [entry["name"].rsplit("/", 1)[-1] for entry in listed] == ["v1"]
    assert "--verbosity must be one of" in error_line(
        run_cli("versions", "list", "--model", "iris", "--verbosity", "loud")
    )


def test_gcloud_global_flags_are_dropped_before_a_trainers_arguments() -> None:
    from mlengine.cli import without_gcloud_flags

    args = ["jobs", "submit", "training", "j", "-q", "--verbosity", "info", "--module-name",
            "trainer.task", "--", "--quiet", "-q", "--verbosity", "x"]  # fmt: skip
    assert without_gcloud_flags(args) == [
        "jobs", "submit", "training", "j", "--module-name", "trainer.task",
        "--", "--quiet", "-q", "--verbosity", "x",
    ]  # fmt: skip
    with pytest.raises(InvalidArgument, match="--verbosity must be one of"):
        without_gcloud_flags(["models", "list", "--verbosity"])


@pytest.mark.parametrize(
    ("method", "steps", "paths", "expected"),
    [
        ("integrated-gradients", None, None,
         {"integratedGradientsAttribution": {"numIntegralSteps": 50}}),
        ("xrai", 25, None, {"xraiAttribution": {"numIntegralSteps": 25}}),
        ("sampled-shapley", None, None, {"sampledShapleyAttribution": {"numPaths": 50}}),
        (None, None, None, None),
    ],
)  # fmt: skip
def test_explanation_method_flags_build_gclouds_explanation_config(
    method: str | None, steps: int | None, paths: int | None, expected: dict[str, Any] | None
) -> None:
    assert explanation_config(method, steps, paths) == expected


@pytest.mark.parametrize(
    ("method", "steps", "paths", "says"),
    [
        (None, None, 10, "The --num-paths flag needs --explanation-method."),
        (None, 10, None, "The --num-integral-steps flag needs --explanation-method."),
        ("lime", None, None, "The --explanation-method flag must be one of integrated-gradients, "
         "sampled-shapley, xrai. Got 'lime'."),
        ("xrai", None, 5, "The --num-paths flag does not apply to --explanation-method xrai (it "
         "takes --num-integral-steps)."),
        ("sampled-shapley", 10, None, "The --num-integral-steps flag does not apply"),
        ("integrated-gradients", 0, None, "The --num-integral-steps flag must be an integer >= 1. "
         "Got 0."),
    ],
)  # fmt: skip
def test_explanation_flags_that_cannot_be_right_are_refused(
    method: str | None, steps: int | None, paths: int | None, says: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        explanation_config(method, steps, paths)
    assert str(refused.value).startswith(says)


@pytest.mark.integration
def test_bad_flag_values_exit_2_with_one_line_and_create_nothing(
    run_cli: Cli, server: ServerProcess, client: mlengine.Client, model_dir: Path, tmp_path: Path
) -> None:
    client.models.create("iris")
    create = ("versions", "create", "v1", "--model", "iris", "--origin", str(model_dir))
    for flags, says in (
        (
            ["--accelerator", "type=nvidia-tesla-t4,count=x"],
            "The 'count' field of --accelerator must be an integer >= 1. Got 'x'.",
        ),
        (["--accelerator", "count=1"], "The --accelerator flag needs type=TYPE"),
        (
            ["--accelerator", "type=nvidia-h100"],
            "The --accelerator flag names an unknown accelerator type 'nvidia-h100': one of",
        ),
        (
            ["--metric-targets", "cpu=60"],
            "The 'name' field of --metric-targets must be cpu-usage or gpu-duty-cycle. Got 'cpu'.",
        ),
        (
            ["--metric-targets", "cpu-usage=101"],
            "The 'cpu-usage' field of --metric-targets must "
            "be an integer from 0 to 100. Got '101'.",
        ),
        (["--min-nodes", "-1"], "The --min-nodes flag must be an integer >= 0. Got -1."),
        (["--num-paths", "10"], "The --num-paths flag needs --explanation-method."),
        # refused by the server: one line still, no "Creating version..." before it
        (["--labels", "max_batch_size=0"], "The 'labels.max_batch_size' field of Version"),
        (["--runtime-version", "abc"], "The 'runtimeVersion' field"),
    ):
        assert error_line(run_cli(*create, *flags)).startswith(f"ERROR: {says}"), flags
    config = tmp_path / "version.yaml"
    config.write_text("acceleratorConfig: {type: NVIDIA_TESLA_T4, count: 1}\nfoo: 1\n")
    assert error_line(run_cli(*create, "--config", str(config))) == (
        f"ERROR: The version config {config} has unknown keys: acceleratorConfig (use "
        "--accelerator), foo. It may hold autoScaling, deploymentUri, description, framework, "
        "labels, machineType, manualScaling, packageUris, predictionClass, pythonVersion, "
        "runtimeVersion, serviceAccount."
    )
    assert list(client.versions.list("iris")) == []
    both = run_cli("models", "create", "other", "--region", "us-east1", "--regions", "us-east1")
    assert error_line(both) == "ERROR: Only one of --region or --regions can be given."
    assert [m["name"] for m in client.models.list()] == ["projects/default/models/iris"]
    sampling = run_cli("versions", "update", "v1", "--model", "iris", "--sampling-percentage", "2")
    assert error_line(sampling) == (
        "ERROR: The --sampling-percentage flag must be a number from 0 to 1. Got 2.0."
    )


@pytest.mark.integration
@pytest.mark.slow
def test_every_model_version_operation_and_predict_command_takes_region(
    run_cli: Cli, server: ServerProcess, client: mlengine.Client, model_dir: Path, tmp_path: Path
) -> None:
    """A gcloud story, each command with ``--region``; request logging flags merge with the
    version's current ``requestLoggingConfig`` and the ``--config`` file."""
    model = ok(run_cli("models", "create", "iris", "--region", "global", "--format", "json"))
    assert model["regions"] == ["us-central1"]  # gcloud: global records the default region
    client.versions.create("iris", "v1", model_dir)  # the CLI's is in the test above
    listed = ok(run_cli("models", "list", *REGION, "--format", "json"))
    assert [m["name"] for m in listed] == ["projects/default/models/iris"]
    described = ok(run_cli("models", "describe", "iris", *REGION, "--format", "json"))
    assert described["defaultVersion"]["name"].endswith("/versions/v1")
    ok(run_cli("models", "update", "iris", *REGION, "--description", "d", "--format", "json"))
    versions = ok(run_cli("versions", "list", "--model", "iris", *REGION, "--format", "json"))
    assert [v["name"].rsplit("/", 1)[-1] for v in versions] == ["v1"]
    assert ok(run_cli("versions", "set-default", "v1", "--model", "iris", *REGION,
                      "--format", "json"))["isDefault"] is True  # fmt: skip

    instances = tmp_path / "instances.json"
    instances.write_text("[5.1, 3.5, 1.4, 0.2]\n")
    predicted = ok(run_cli("predict", "--model", "iris", *REGION, "--json-instances",
                           str(instances), "--format", "json"))  # fmt: skip
    assert predicted == {"predictions": [0]}

    logged = ok(run_cli("versions", "update", "v1", "--model", "iris", *REGION,
                        "--bigquery-table-name", "p.d.requests", "--format", "json"))  # fmt: skip
    assert logged["requestLoggingConfig"] == {"bigqueryTableName": "p.d.requests"}
    config = tmp_path / "update.yaml"
    config.write_text("requestLoggingConfig:\n  samplingPercentage: 0.2\n")
    sampled = ok(run_cli("versions", "update", "v1", "--model", "iris", "--config", str(config),
                         "--sampling-percentage", "0.5", "--format", "json"))  # fmt: skip
    assert sampled["requestLoggingConfig"] == {  # the table kept, the flag over the file
        "bigqueryTableName": "p.d.requests",
        "samplingPercentage": 0.5,
    }

    creates = ok(run_cli("operations", "list", *REGION, "--filter",
                         "operationType:CREATE_VERSION", "--format", "json"))  # fmt: skip
    assert [op["metadata"]["operationType"] for op in creates] == ["CREATE_VERSION"]
    sdk = list(client.operations.list(filter="operationType:CREATE_VERSION"))
    assert [op["name"] for op in sdk] == [op["name"] for op in creates]
    assert len(list(client.operations.list())) > len(sdk)  # the updates' operations
    operation = creates[0]["name"]
    assert ok(run_cli("operations", "describe", operation, *REGION, "--format", "json"))["done"]
    waited = ok(run_cli("operations", "wait", operation, *REGION, "--format", "json"))
    assert waited["name"].endswith("/versions/v1")
    cancel = run_cli("operations", "cancel", operation, *REGION)
    assert "is already done" in error_line(cancel)

    assert run_cli("versions", "delete", "v1", "--model", "iris", *REGION).returncode == 0
    assert run_cli("models", "delete", "iris", *REGION).returncode == 0
    assert list(client.models.list()) == []
