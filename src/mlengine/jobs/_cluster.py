"""The environment each trainer replica starts with (AIPLATFORM.md §5): pure functions.

A replica of an AI Platform job runs ``python -m MODULE ARGS --job-dir DIR`` with:

* ``TF_CONFIG``: ``{"cluster", "task", "job", "environment": "cloud"}``, where ``cluster`` maps
  ``chief`` (or ``master``), ``worker`` and ``ps`` to ``host:port`` lists (never evaluators)
  and ``job`` is a JSON *string* of the TrainingInput with proto snake_case keys;
* ``CLUSTER_SPEC``: the same shape with task names ``master``/``worker``/``ps``/``evaluator``,
  evaluators included;
* ``CLOUD_ML_JOB_ID``, ``CLOUD_ML_TRIAL_ID`` (HP trials), ``AIP_MODEL_DIR``,
  ``AIP_CHECKPOINT_DIR``, ``AIP_TENSORBOARD_LOG_DIR``;
* for PyTorch's ``env://`` rendezvous: ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``,
  ``RANK`` and ``LOCAL_RANK`` (the master and the workers are ranks; ps and evaluators are not).

Runners call these functions; nothing here starts a process.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from mlengine.jobs.runners._base import LaunchSpec, ReplicaSpec

__all__ = [
    "allocate_ports",
    "cluster_spec",
    "local_train_tf_config",
    "output_dirs_environment",
    "primary_key_for",
    "pytorch_environment",
    "replica_environment",
    "trainer_command",
    "training_input_job_string",
]

_CLUSTER_ORDER = ("master", "worker", "ps", "evaluator")
_INT64_FIELDS = frozenset({"workerCount", "parameterServerCount", "evaluatorCount", "count"})
"""TrainingInput fields typed int64 in the ml v1 discovery document (``count`` only occurs in
``*Config.acceleratorConfig``); proto JSON renders int64 as strings."""


def allocate_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """Return `n` distinct free TCP ports on `host`, chosen by the kernel.

    Every socket stays bound until all ports are chosen, so the ports are distinct. A port is
    free when this returns; another program may still take it before the trainer binds it.

    Raises:
        OSError: the kernel could not bind a socket on `host`.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def primary_key_for(training_input: Mapping[str, Any]) -> str:
    """The `TF_CONFIG` cluster key of the primary replica: ``chief`` or ``master``.

    ``master`` for custom containers without ``useChiefInTfConfig`` and for TF 1.x runtime
    versions (as AI Platform did), ``chief`` otherwise.
    """
    master_config = training_input.get("masterConfig") or {}
    if master_config.get("imageUri"):
        return "chief" if training_input.get("useChiefInTfConfig") else "master"
    if str(training_input.get("runtimeVersion") or "").startswith("1."):
        return "master"
    return "chief"


def cluster_spec(
    replicas: Sequence[ReplicaSpec],
    ports: Mapping[str, int],
    host: str,
    *,
    primary_key: str = "chief",
    include_evaluators: bool = False,
) -> dict[str, list[str]]:
    """The ``cluster`` mapping of `TF_CONFIG` (or, with evaluators, of `CLUSTER_SPEC`).

    Args:
        replicas: the replicas of the job.
        ports: the port of each replica, keyed by replica name (``worker-replica-0``).
        host: the host name every address uses.
        primary_key: the key of the primary replica: ``chief`` or ``master``.
        include_evaluators: add an ``evaluator`` key (`CLUSTER_SPEC` does; `TF_CONFIG` never).

    Returns:
        ``{primary_key: ["host:port"], "worker": [...], "ps": [...]}`` with addresses in index
        order; types without replicas are left out.

    Raises:
        KeyError: a replica in the cluster has no port in `ports`.
    """
    cluster: dict[str, list[str]] = {}
    for task_type in _CLUSTER_ORDER:
        if task_type == "evaluator" and not include_evaluators:
            continue
        members = sorted(
            (r for r in replicas if _canonical_type(r.task_type) == task_type),
            key=lambda r: r.index,
        )
        if members:
            key = primary_key if task_type == "master" else task_type
            cluster[key] = [f"{host}:{ports[r.name]}" for r in members]
    return cluster


def training_input_job_string(training_input: Mapping[str, Any]) -> str:
    """`TF_CONFIG.job` as AI Platform set it: the TrainingInput as a JSON string.

    Keys are the proto's snake_case names, recursively (``masterConfig.imageUri`` becomes
    ``master_config.image_uri``) and int64 values are strings (``"worker_count": "2"``).
    """
    return json.dumps(_proto_json(training_input), indent=1)


def trainer_command(
    python: str, module: str, args: Sequence[str], job_dir: str | None
) -> list[str]:
    """The trainer's command line: ``python -m module *args --job-dir DIR``.

    ``--job-dir`` comes last, as two tokens, and only when `job_dir` is set (gcloud does the
    same).
    """
    command = [python, "-m", module, *args]
    if job_dir is not None:
        command += ["--job-dir", job_dir]
    return command


def output_dirs_environment(job_dir: str | None, trial_id: str | None = None) -> dict[str, str]:
    """``AIP_MODEL_DIR``, ``AIP_CHECKPOINT_DIR`` and ``AIP_TENSORBOARD_LOG_DIR`` (Vertex's names).

    They are ``<job_dir>/model/``, ``<job_dir>/checkpoints/`` and ``<job_dir>/logs/``, or
    ``<job_dir>/<trial_id>/model/`` etc. in an HP trial. Joined with ``/`` so that fsspec URLs
    (``gs://bucket/dir``) stay URLs. Empty without a job dir.
    """
    if not job_dir:
        return {}
    base = job_dir.rstrip("/")
    if trial_id:
        base = f"{base}/{trial_id}"
    return {
        "AIP_MODEL_DIR": f"{base}/model/",
        "AIP_CHECKPOINT_DIR": f"{base}/checkpoints/",
        "AIP_TENSORBOARD_LOG_DIR": f"{base}/logs/",
    }


def pytorch_environment(
    replica: ReplicaSpec, replicas: Sequence[ReplicaSpec], host: str, port: int
) -> dict[str, str]:
    """``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` for `replica`.

    The DDP ranks are the master (0) and the workers (worker i is rank i + 1), so
    ``WORLD_SIZE`` is 1 + the number of workers. Parameter servers and evaluators get the
    address and the world size but no rank. ``LOCAL_RANK`` equals ``RANK``: each replica is
    its own machine on AI Platform.
    """
    workers = sum(1 for r in replicas if r.task_type == "worker")
    env = {"MASTER_ADDR": host, "MASTER_PORT": str(port), "WORLD_SIZE": str(1 + workers)}
    task_type = _canonical_type(replica.task_type)
    if task_type in ("master", "worker"):
        rank = 0 if task_type == "master" else replica.index + 1
        env["RANK"] = env["LOCAL_RANK"] = str(rank)
    return env


def replica_environment(
    spec: LaunchSpec,
    replica: ReplicaSpec,
    cluster: Mapping[str, list[str]],
    ports_by_replica: Mapping[str, int],
) -> dict[str, str]:
    """The environment variables a runner adds for `replica` of `spec` (module docstring).

    Args:
        spec: the launch spec of the job (or trial).
        replica: the replica being started.
        cluster: the `TF_CONFIG` cluster from `cluster_spec`; its primary key (``chief`` or
            ``master``) is the primary's ``TF_CONFIG.task.type``, and its primary address
            gives the host of ``MASTER_ADDR``.
        ports_by_replica: the port of every replica, keyed by replica name, evaluators
            included (`CLUSTER_SPEC` lists them).

    Returns:
        The variables to set on top of the runner's own environment.

    Raises:
        KeyError: `cluster` has no primary, or a replica has no port.
    """
    primary_key = "master" if "master" in cluster else "chief"
    host = cluster[primary_key][0].rpartition(":")[0]
    primary = next(r for r in spec.replicas if r.is_primary)
    task_type = _canonical_type(replica.task_type)
    task: dict[str, Any] = {"type": task_type, "index": replica.index}
    if spec.trial_id is not None:
        task["trial"] = spec.trial_id
    job = training_input_job_string(spec.training_input)
    tf_config = {
        "cluster": dict(cluster),
        "task": {**task, "type": primary_key if task_type == "master" else task_type},
        "job": job,
        "environment": "cloud",
    }
    spec_cluster = cluster_spec(
        spec.replicas, ports_by_replica, host, primary_key="master", include_evaluators=True
    )
    cluster_spec_env = {"cluster": spec_cluster, "task": task, "job": job, "environment": "cloud"}
    env = {
        "TF_CONFIG": json.dumps(tf_config),
        "CLUSTER_SPEC": json.dumps(cluster_spec_env),
        "CLOUD_ML_JOB_ID": spec.job_id,
        "PYTHONUNBUFFERED": "1",
    }
    if spec.trial_id is not None:
        env["CLOUD_ML_TRIAL_ID"] = spec.trial_id
    env.update(output_dirs_environment(spec.job_dir, spec.trial_id))
    env.update(pytorch_environment(replica, spec.replicas, host, ports_by_replica[primary.name]))
    return env


def local_train_tf_config(
    module: str,
    args: Sequence[str],
    cluster: Mapping[str, list[str]] | None = None,
    task_type: str | None = None,
    index: int | None = None,
) -> dict[str, Any]:
    """`TF_CONFIG` as gcloud's ``local train`` sets it (an object in ``job``, not a string).

    Without `cluster`: ``{"job": {"job_name": module, "args": args}, "task": {}, "cluster": {},
    "environment": "cloud"}``. With it (``--distributed``), ``task`` is
    ``{"type": task_type, "index": index}``. `args` are the user args including the trailing
    ``--job-dir DIR``, as gcloud passes them.
    """
    return {
        "job": {"job_name": module, "args": list(args)},
        "task": {"type": task_type, "index": index} if cluster else {},
        "cluster": dict(cluster) if cluster else {},
        "environment": "cloud",
    }


def _canonical_type(task_type: str) -> str:
    return "master" if task_type == "chief" else task_type


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _proto_json(value: Any, key: str | None = None) -> Any:
    if isinstance(value, Mapping):
        return {_snake(str(k)): _proto_json(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_proto_json(v, key) for v in value]
    if key in _INT64_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value
