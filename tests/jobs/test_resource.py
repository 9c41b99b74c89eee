"""Validation of ml v1 Job bodies: one message template, unknown fields dropped."""

from __future__ import annotations

from typing import Any

import pytest

from mlengine.errors import InvalidArgument
from mlengine.jobs._resource import validate_job_id, validate_labels, validate_training_input
from mlengine.jobs._scale_tiers import replicas_for
from mlengine.jobs._service import validate_project
from mlengine.jobs._submission import build_training_job, parse_accelerator

BASE = {"pythonModule": "trainer.task", "packageUris": ["/p/trainer-0.1.tar.gz"]}


def test_normalised_training_input_drops_unknown_fields() -> None:
    result = validate_training_input(
        {**BASE, "scaleTier": "custom", "masterType": "m", "workerType": "w", "workerCount": 2,
         "mystery": {"x": 1}, "args": ["--a"]}
    )  # fmt: skip
    assert result["scaleTier"] == "CUSTOM"
    assert result["workerCount"] == "2"
    assert "mystery" not in result
    assert [r.name for r in replicas_for(result)] == [
        "master-replica-0", "worker-replica-0", "worker-replica-1"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"pythonModule": None}, "'pythonModule' field of TrainingInput is required"),
        ({"pythonModule": "not a module"}, "'pythonModule'"),
        ({"packageUris": []}, "'packageUris'"),
        ({"scaleTier": "HUGE"}, "The 'scaleTier' field of TrainingInput must be one of BASIC"),
        ({"workerCount": "2"}, "needs scaleTier CUSTOM"),
        ({"scaleTier": "CUSTOM"}, "'masterType' field of TrainingInput is required"),
        ({"scaleTier": "CUSTOM", "masterType": "m", "workerCount": 1}, "'workerType'"),
        ({"scaleTier": "CUSTOM", "masterType": "m", "workerType": "w", "workerCount": 1001},
         "between 0 and 1000"),
        ({"scaleTier": "CUSTOM", "masterType": "m", "workerType": "w", "workerCount": "1.5"},
         "'workerCount'"),
        ({"args": "--epochs 3"}, "'args' field of TrainingInput must be a list of strings"),
        ({"masterConfig": {"imageUri": "gcr.io/x"}}, "custom container"),
        ({"hyperparameters": {"goal": "MAXIMIZE"}}, "hyperparameter tuning"),
        ({"scheduling": {"maxRunningTime": "1h"}}, "'scheduling.maxRunningTime'"),
    ],
)  # fmt: skip
def test_bad_training_input(fields: dict[str, Any], message: str) -> None:
    body = {**BASE, **fields}
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(")):
        validate_training_input({k: v for k, v in body.items() if v is not None})


@pytest.mark.parametrize("job_id", ["1abc", "a-b", "", "x" * 129, None, 5, "job\n"])
def test_bad_job_ids(job_id: Any) -> None:
    with pytest.raises(InvalidArgument, match="The 'jobId' field of Job must be"):
        validate_job_id(job_id)


def test_labels() -> None:
    assert validate_labels({"team": "ml-1"}) == {"team": "ml-1"}
    for bad in ({"Team": "x"}, {"team": "X"}, {"team": 1}, ["team"], {"team\n": "x"},
                {"team": "x\n"}):  # fmt: skip
        with pytest.raises(InvalidArgument, match="labels"):
            validate_labels(bad)


@pytest.mark.parametrize(
    ("field", "value"),
    [("pythonModule", "trainer.task\n"), ("scheduling", {"maxRunningTime": "10s\n"})],
)
def test_a_trailing_newline_is_refused(field: str, value: Any) -> None:
    """Patterns ending in `$` match before a final newline: every check matches in full."""
    with pytest.raises(InvalidArgument, match=field):
        validate_training_input({**BASE, field: value})
    with pytest.raises(InvalidArgument, match="project"):
        validate_project("default\n")


def test_flags_override_the_config_file() -> None:
    job = build_training_job(
        "j",
        config={"labels": {"a": "1"}, "trainingInput": {"args": ["--x"], "scaleTier": "BASIC"}},
        module_name="trainer.task", package_uris=["u"], worker_machine_type="w", worker_count=2,
        scale_tier="custom", master_machine_type="m", labels={"b": "2"},
    )  # fmt: skip
    assert job["labels"] == {"a": "1", "b": "2"}
    training = job["trainingInput"]
    assert training["scaleTier"] == "CUSTOM" and training["workerCount"] == "2"
    assert training["args"] == ["--x"]
    assert build_training_job("j", master_machine_type="m")["trainingInput"]["scaleTier"] == (
        "CUSTOM"
    )
    assert parse_accelerator("type=nvidia-tesla-t4,count=2", "--x") == {
        "type": "NVIDIA_TESLA_T4", "count": "2"
    }  # fmt: skip
    assert parse_accelerator("type=NVIDIA_TESLA_T4", "--x") == {
        "type": "NVIDIA_TESLA_T4", "count": "1"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("count=2", r"--accelerator flag needs type=TYPE"),
        ("type=nvidia-h100", r"unknown accelerator type 'nvidia-h100': one of nvidia-tesla-a100"),
        ("type=accelerator-type-unspecified", r"unknown accelerator type"),
        ("typ=nvidia-tesla-t4", r"takes type=TYPE\[,count=COUNT\]; got 'typ=nvidia-tesla-t4'"),
        ("nvidia-tesla-t4", r"takes type=TYPE\[,count=COUNT\]; got 'nvidia-tesla-t4'"),
        ("type=nvidia-tesla-t4,count=0", r"'count' field of --accelerator must be an integer >= 1"),
        ("type=nvidia-tesla-t4,count=two", r"must be an integer >= 1"),
    ],
)
def test_a_bad_accelerator_flag_names_it(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_accelerator(text, "--accelerator")
