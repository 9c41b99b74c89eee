from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlengine.jobs._cluster import (
    allocate_ports,
    cluster_spec,
    local_train_tf_config,
    output_dirs_environment,
    primary_key_for,
    replica_environment,
    trainer_command,
    training_input_job_string,
)
from mlengine.jobs.runners import LaunchSpec, ReplicaSpec

REPLICAS = [
    ReplicaSpec("master", 0),
    ReplicaSpec("worker", 0),
    ReplicaSpec("worker", 1),
    ReplicaSpec("ps", 0),
    ReplicaSpec("evaluator", 0),
]
PORTS = {r.name: 5000 + n for n, r in enumerate(REPLICAS)}
TRAINING_INPUT: dict[str, Any] = {
    "scaleTier": "CUSTOM",
    "masterType": "n1-standard-4",
    "masterConfig": {"acceleratorConfig": {"count": 1, "type": "NVIDIA_TESLA_T4"}},
    "workerType": "n1-standard-4",
    "workerCount": 2,
    "parameterServerType": "n1-standard-4",
    "parameterServerCount": "1",
    "evaluatorType": "n1-standard-4",
    "evaluatorCount": 1,
    "packageUris": ["gs://b/trainer-0.1.tar.gz"],
    "pythonModule": "trainer.task",
    "args": ["--epochs", "3"],
    "hyperparameters": {"maxTrials": 4, "params": [{"parameterName": "lr", "minValue": 0.1}]},
    "region": "us-central1",
}


def make_spec(trial_id: str | None = None, job_dir: str | None = "gs://bucket/out/") -> LaunchSpec:
    return LaunchSpec(
        job_id="job_1",
        python="/usr/bin/python3",
        module="trainer.task",
        args=["--epochs", "3"],
        job_dir=job_dir,
        run_dir=Path("/tmp/run"),
        log_dir=Path("/tmp/logs"),
        replicas=REPLICAS,
        training_input=TRAINING_INPUT,
        trial_id=trial_id,
    )


def test_allocate_ports_are_distinct_free_ports() -> None:
    ports = allocate_ports(8)
    assert len(set(ports)) == 8
    assert all(1024 <= p <= 65535 for p in ports)
    assert allocate_ports(0) == []


def test_cluster_spec_orders_types_and_leaves_evaluators_out() -> None:
    cluster = cluster_spec(REPLICAS, PORTS, "h")
    assert list(cluster) == ["chief", "worker", "ps"]
    assert cluster == {"chief": ["h:5000"], "worker": ["h:5001", "h:5002"], "ps": ["h:5003"]}
    with_evaluators = cluster_spec(
        REPLICAS, PORTS, "h", primary_key="master", include_evaluators=True
    )
    assert list(with_evaluators) == ["master", "worker", "ps", "evaluator"]
    assert with_evaluators["evaluator"] == ["h:5004"]


def test_cluster_spec_of_a_single_master() -> None:
    assert cluster_spec([ReplicaSpec("master", 0)], {"master-replica-0": 7}, "x") == {
        "chief": ["x:7"]
    }


@pytest.mark.parametrize(
    ("training_input", "expected"),
    [
        ({}, "chief"),
        ({"runtimeVersion": "2.11"}, "chief"),
        ({"runtimeVersion": "1.15"}, "master"),
        ({"masterConfig": {"imageUri": "gcr.io/p/i"}}, "master"),
        ({"masterConfig": {"imageUri": "gcr.io/p/i"}, "useChiefInTfConfig": True}, "chief"),
    ],
)
def test_primary_key_for(training_input: dict[str, Any], expected: str) -> None:
    assert primary_key_for(training_input) == expected


def test_job_string_uses_proto_names_and_int64_strings() -> None:
    job = json.loads(training_input_job_string(TRAINING_INPUT))
    assert job["scale_tier"] == "CUSTOM"
    assert job["worker_count"] == "2"
    assert job["parameter_server_count"] == "1"
    assert job["package_uris"] == ["gs://b/trainer-0.1.tar.gz"]
    assert job["python_module"] == "trainer.task"
    assert job["master_config"] == {"accelerator_config": {"count": "1", "type": "NVIDIA_TESLA_T4"}}
    assert job["hyperparameters"] == {
        "max_trials": 4,
        "params": [{"parameter_name": "lr", "min_value": 0.1}],
    }
    assert job["args"] == ["--epochs", "3"]
    nested = json.loads(training_input_job_string({"masterConfig": {"imageUri": "gcr.io/p/i"}}))
    assert nested == {"master_config": {"image_uri": "gcr.io/p/i"}}


def test_trainer_command_puts_job_dir_last_as_two_tokens() -> None:
    assert trainer_command("py", "m.t", ["--a", "1"], "/jd") == [
        "py", "-m", "m.t", "--a", "1", "--job-dir", "/jd",
    ]  # fmt: skip
    assert trainer_command("py", "m.t", [], None) == ["py", "-m", "m.t"]


def test_output_dirs() -> None:
    assert output_dirs_environment(None) == {}
    assert output_dirs_environment("gs://b/out/") == {
        "AIP_MODEL_DIR": "gs://b/out/model/",
        "AIP_CHECKPOINT_DIR": "gs://b/out/checkpoints/",
        "AIP_TENSORBOARD_LOG_DIR": "gs://b/out/logs/",
    }
    assert output_dirs_environment("/o", "3")["AIP_MODEL_DIR"] == "/o/3/model/"


@pytest.mark.parametrize(
    ("replica", "tf_type", "spec_type", "rank"),
    [
        (ReplicaSpec("master", 0), "chief", "master", "0"),
        (ReplicaSpec("worker", 0), "worker", "worker", "1"),
        (ReplicaSpec("worker", 1), "worker", "worker", "2"),
        (ReplicaSpec("ps", 0), "ps", "ps", None),
        (ReplicaSpec("evaluator", 0), "evaluator", "evaluator", None),
    ],
)
def test_replica_environment(
    replica: ReplicaSpec, tf_type: str, spec_type: str, rank: str | None
) -> None:
    spec = make_spec()
    cluster = cluster_spec(REPLICAS, PORTS, "127.0.0.1")
    env = replica_environment(spec, replica, cluster, PORTS)

    tf_config = json.loads(env["TF_CONFIG"])
    assert tf_config["cluster"] == cluster
    assert tf_config["task"] == {"type": tf_type, "index": replica.index}
    assert tf_config["environment"] == "cloud"
    assert isinstance(tf_config["job"], str)
    assert json.loads(tf_config["job"])["worker_count"] == "2"

    cluster_spec_env = json.loads(env["CLUSTER_SPEC"])
    assert cluster_spec_env["cluster"] == {
        "master": ["127.0.0.1:5000"],
        "worker": ["127.0.0.1:5001", "127.0.0.1:5002"],
        "ps": ["127.0.0.1:5003"],
        "evaluator": ["127.0.0.1:5004"],
    }
    assert cluster_spec_env["task"] == {"type": spec_type, "index": replica.index}
    assert cluster_spec_env["job"] == tf_config["job"]

    assert env["CLOUD_ML_JOB_ID"] == "job_1"
    assert "CLOUD_ML_TRIAL_ID" not in env
    assert env["AIP_MODEL_DIR"] == "gs://bucket/out/model/"
    assert env["AIP_CHECKPOINT_DIR"] == "gs://bucket/out/checkpoints/"
    assert env["AIP_TENSORBOARD_LOG_DIR"] == "gs://bucket/out/logs/"
    assert env["MASTER_ADDR"] == "127.0.0.1"
    assert env["MASTER_PORT"] == "5000"
    assert env["WORLD_SIZE"] == "3"
    assert env.get("RANK") == rank
    assert env.get("LOCAL_RANK") == rank
    assert env["PYTHONUNBUFFERED"] == "1"


def test_replica_environment_of_a_trial_with_a_master_cluster() -> None:
    spec = make_spec(trial_id="2", job_dir="/out")
    cluster = cluster_spec(REPLICAS, PORTS, "h", primary_key="master")
    env = replica_environment(spec, REPLICAS[0], cluster, PORTS)
    tf_config = json.loads(env["TF_CONFIG"])
    assert tf_config["task"] == {"type": "master", "index": 0, "trial": "2"}
    assert json.loads(env["CLUSTER_SPEC"])["task"]["trial"] == "2"
    assert env["CLOUD_ML_TRIAL_ID"] == "2"
    assert env["AIP_MODEL_DIR"] == "/out/2/model/"
    assert env["MASTER_ADDR"] == "h"


def test_replica_environment_without_job_dir_has_no_output_dirs() -> None:
    env = replica_environment(make_spec(job_dir=None), REPLICAS[0], {"chief": ["h:1"]}, PORTS)
    assert not any(name.startswith("AIP_") for name in env)


def test_local_train_tf_config() -> None:
    assert local_train_tf_config("trainer.task", ["--a", "--job-dir", "/j"]) == {
        "job": {"job_name": "trainer.task", "args": ["--a", "--job-dir", "/j"]},
        "task": {},
        "cluster": {},
        "environment": "cloud",
    }
    cluster = {"chief": ["localhost:1"], "worker": ["localhost:2"]}
    config = local_train_tf_config("m", [], cluster, "worker", 0)
    assert config["task"] == {"type": "worker", "index": 0}
    assert config["cluster"] == cluster
    assert config["job"] == {"job_name": "m", "args": []}
