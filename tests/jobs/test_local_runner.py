from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlengine.errors import OperationFailed
from mlengine.jobs._logs import read_logs
from mlengine.jobs._scale_tiers import replicas_for
from mlengine.jobs.runners import (
    LaunchSpec,
    ReplicaPhase,
    ReplicaSpec,
    RunnerState,
    _local,
    get_runner,
)
from mlengine.jobs.runners._local import LocalRunner

pytestmark = pytest.mark.integration

# A trainer whose behaviour per replica comes from its args: `--exit-<type> N`,
# `--sleep-<type>`, `--grandchild-<type>` (starts `sleep 1000`), `--ignore-term-<type>`.
TRAINER = textwrap.dedent(
    """\
    import json, os, signal, subprocess, sys, time

    def put(path, text):
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)

    args = sys.argv[1:]
    job_dir = args[args.index("--job-dir") + 1]
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    kind = {"chief": "master"}.get(task["type"], task["type"])
    name = f"{kind}-replica-{task['index']}"
    keys = ["TF_CONFIG", "CLUSTER_SPEC", "CLOUD_ML_JOB_ID", "CLOUD_ML_TRIAL_ID", "MASTER_ADDR",
            "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "AIP_MODEL_DIR",
            "AIP_CHECKPOINT_DIR", "AIP_TENSORBOARD_LOG_DIR", "CUDA_VISIBLE_DEVICES", "EXTRA"]
    record = {"argv": args, "cwd": os.getcwd(), "files": os.listdir("."),
              "env": {k: os.environ.get(k) for k in keys}}
    put(os.path.join(job_dir, name + ".json"), json.dumps(record))
    open("scratch.txt", "w").close()
    print("hello from", name)
    print("trouble in", name, file=sys.stderr)
    if f"--ignore-term-{kind}" in args:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if f"--grandchild-{kind}" in args:
        child = subprocess.Popen(["sleep", "1000"])
        put(os.path.join(job_dir, name + ".grandchild"), str(child.pid))
    if f"--sleep-{kind}" in args:
        put(os.path.join(job_dir, name + ".ready"), str(os.getpid()))
        time.sleep(1000)
    sys.stdout.write("bye")  # no newline: the last line is partial
    flag = f"--exit-{kind}"
    sys.exit(int(args[args.index(flag) + 1]) if flag in args else 0)
    """
)


@pytest.fixture
def package_root(tmp_path: Path) -> Path:
    root = tmp_path / "code"
    (root / "trainer").mkdir(parents=True)
    (root / "trainer" / "__init__.py").write_text("")
    (root / "trainer" / "task.py").write_text(TRAINER)
    return root


@pytest.fixture
def make_spec(tmp_path: Path, package_root: Path) -> Callable[..., LaunchSpec]:
    def make(
        args: list[str], training_input: dict[str, Any] | None = None, **changes: Any
    ) -> LaunchSpec:
        training_input = training_input or {}
        job_dir = tmp_path / "job"
        job_dir.mkdir(exist_ok=True)
        spec = LaunchSpec(
            job_id="job_1",
            python=sys.executable,
            module="trainer.task",
            args=args,
            job_dir=str(job_dir),
            run_dir=tmp_path / "run",
            log_dir=tmp_path / "logs",
            replicas=replicas_for(training_input),
            training_input=training_input,
            env={"PYTHONPATH": str(package_root), "EXTRA": "yes"},
        )
        return dataclasses.replace(spec, **changes)

    return make


@pytest.fixture
def runner() -> Iterator[LocalRunner]:
    runner = LocalRunner()
    states: list[RunnerState] = []
    original = runner.start

    def start(spec: LaunchSpec) -> RunnerState:
        state = original(spec)
        states.append(state)
        return state

    runner.start = start  # type: ignore[method-assign]
    yield runner
    for state in states:  # never leave processes behind, even when a test fails
        runner.stop(state, grace_s=0.2)


def wait_for(predicate: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out")


def wait_exited(runner: LocalRunner, state: RunnerState) -> dict[str, int | None]:
    def done() -> dict[str, int | None] | None:
        statuses = runner.poll(state)
        if all(s.phase is ReplicaPhase.EXITED for s in statuses):
            return {s.replica.name: s.exit_code for s in statuses}
        return None

    result: dict[str, int | None] = wait_for(done)
    return result


def pid_gone(pid: int) -> bool:
    """True once `pid` is neither running nor a zombie."""
    return not os.path.exists(f"/proc/{pid}")


def describe(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"


def pid_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def group_pids(pgid: int) -> list[int]:
    return _local._process_groups().get(pgid, [])


CUSTOM = {
    "scaleTier": "CUSTOM",
    "masterType": "n1-standard-4",
    "workerType": "n1-standard-4",
    "workerCount": 2,
    "parameterServerType": "n1-standard-4",
    "parameterServerCount": 1,
    "evaluatorType": "n1-standard-4",
    "evaluatorCount": 1,
}


def test_replicas_get_the_trainer_contract(
    runner: LocalRunner, make_spec: Callable[..., LaunchSpec], tmp_path: Path
) -> None:
    spec = make_spec(["--lr", "0.1", "--exit-worker", "3"], CUSTOM)
    state = runner.start(spec)
    assert json.loads(json.dumps(state)) == state
    assert [(r["task_type"], r["index"]) for r in state["replicas"]] == [
        ("master", 0), ("worker", 0), ("worker", 1), ("ps", 0), ("evaluator", 0),
    ]  # fmt: skip

    codes = wait_exited(runner, state)
    assert codes == {
        "master-replica-0": 0,
        "worker-replica-0": 3,
        "worker-replica-1": 3,
        "ps-replica-0": 0,
        "evaluator-replica-0": 0,
    }
    records = {name: json.loads((tmp_path / "job" / f"{name}.json").read_text()) for name in codes}
    cwds = {record["cwd"] for record in records.values()}
    assert cwds == {str(tmp_path / "run" / name) for name in codes}
    assert all(record["files"] == [] for record in records.values())  # fresh directories
    for name, record in records.items():
        assert record["argv"] == ["--lr", "0.1", "--exit-worker", "3", "--job-dir", spec.job_dir]
        env = record["env"]
        assert env["EXTRA"] == "yes"
        assert env["CLOUD_ML_JOB_ID"] == "job_1"
        assert env["CLOUD_ML_TRIAL_ID"] is None
        assert env["AIP_MODEL_DIR"] == f"{spec.job_dir}/model/"
        assert env["AIP_CHECKPOINT_DIR"] == f"{spec.job_dir}/checkpoints/"
        assert env["AIP_TENSORBOARD_LOG_DIR"] == f"{spec.job_dir}/logs/"
        assert env["CUDA_VISIBLE_DEVICES"] == os.environ.get("CUDA_VISIBLE_DEVICES")
        tf_config = json.loads(env["TF_CONFIG"])
        assert set(tf_config) == {"cluster", "task", "job", "environment"}
        assert list(tf_config["cluster"]) == ["chief", "worker", "ps"]
        assert len(tf_config["cluster"]["worker"]) == 2
        assert json.loads(tf_config["job"])["worker_count"] == "2"
        cluster_spec = json.loads(env["CLUSTER_SPEC"])
        assert list(cluster_spec["cluster"]) == ["master", "worker", "ps", "evaluator"]
        assert cluster_spec["cluster"]["master"] == tf_config["cluster"]["chief"]
        task_type, _, index = name.split("-")
        assert cluster_spec["task"] == {"type": task_type, "index": int(index)}
        assert env["WORLD_SIZE"] == "3"
        assert env["MASTER_ADDR"] == "127.0.0.1"
        assert tf_config["cluster"]["chief"] == [f"127.0.0.1:{env['MASTER_PORT']}"]
    assert json.loads(records["master-replica-0"]["env"]["TF_CONFIG"])["task"] == {
        "type": "chief",
        "index": 0,
    }
    assert json.loads(records["evaluator-replica-0"]["env"]["TF_CONFIG"])["task"] == {
        "type": "evaluator",
        "index": 0,
    }
    ranks = {name: (r["env"]["RANK"], r["env"]["LOCAL_RANK"]) for name, r in records.items()}
    assert ranks == {
        "master-replica-0": ("0", "0"),
        "worker-replica-0": ("1", "1"),
        "worker-replica-1": ("2", "2"),
        "ps-replica-0": (None, None),
        "evaluator-replica-0": (None, None),
    }

    entries, _ = read_logs(spec.log_dir)
    lines = {(e.task_name, e.stream, e.message) for e in entries}
    for name in codes:
        assert (name, "stdout", f"hello from {name}") in lines
        assert (name, "stderr", f"trouble in {name}") in lines
        assert (name, "stdout", "bye") in lines
    assert [e.timestamp for e in entries] == sorted(e.timestamp for e in entries)

    runner.stop(state, grace_s=0.2)
    for entry in state["replicas"]:
        assert pid_gone(entry["pid"])  # supervisors reaped: no zombies


def test_trial_and_gpu_environment(
    runner: LocalRunner, make_spec: Callable[..., LaunchSpec], tmp_path: Path
) -> None:
    spec = make_spec([], {"scaleTier": "BASIC_GPU"}, trial_id="4")
    state = runner.start(spec)
    assert wait_exited(runner, state) == {"master-replica-0": 0}
    env = json.loads((tmp_path / "job" / "master-replica-0.json").read_text())["env"]
    assert json.loads(env["TF_CONFIG"])["task"] == {"type": "chief", "index": 0, "trial": "4"}
    assert env["CLOUD_ML_TRIAL_ID"] == "4"
    assert env["AIP_MODEL_DIR"] == f"{spec.job_dir}/4/model/"
    assert env["CUDA_VISIBLE_DEVICES"] == "0"
    assert env["WORLD_SIZE"] == "1"


def test_gpu_blocks_follow_replica_order() -> None:
    training_input = {
        **CUSTOM,
        "masterConfig": {"acceleratorConfig": {"count": "2", "type": "NVIDIA_TESLA_T4"}},
        "workerConfig": {"acceleratorConfig": {"count": 1, "type": "NVIDIA_TESLA_T4"}},
    }
    devices = _local._visible_devices(training_input, replicas_for(training_input))
    assert devices == {
        "master-replica-0": "0,1",
        "worker-replica-0": "2",
        "worker-replica-1": "3",
        "ps-replica-0": "",
        "evaluator-replica-0": "",
    }
    assert _local._visible_devices(CUSTOM, replicas_for(CUSTOM)) == {}


def test_sigkilled_trainer_exits_negative(
    runner: LocalRunner, make_spec: Callable[..., LaunchSpec]
) -> None:
    spec = make_spec(["--sleep-master"])
    state = runner.start(spec)
    exit_file = state["replicas"][0]["exit_file"]
    pids = wait_for(lambda: os.path.exists(f"{exit_file}.pids") and Path(f"{exit_file}.pids"))
    child = json.loads(pids.read_text())["child"]
    wait_for(lambda: (Path(spec.job_dir or "") / "master-replica-0.ready").exists())
    assert [s.phase for s in runner.poll(state)] == [ReplicaPhase.RUNNING]
    os.kill(child, signal.SIGKILL)
    assert wait_exited(runner, state) == {"master-replica-0": -9}


def test_stop_kills_the_whole_tree(
    runner: LocalRunner, make_spec: Callable[..., LaunchSpec], tmp_path: Path
) -> None:
    training_input = {**CUSTOM, "workerCount": 1, "parameterServerCount": 0, "evaluatorCount": 0}
    args = ["--sleep-master", "--grandchild-master", "--sleep-worker", "--ignore-term-worker"]
    args.append("--grandchild-worker")
    state = runner.start(make_spec(args, training_input))
    job_dir = tmp_path / "job"
    for name in ("master-replica-0", "worker-replica-0"):
        wait_for((job_dir / f"{name}.ready").exists)
    names = ("master-replica-0", "worker-replica-0")
    grandchildren = [int((job_dir / f"{name}.grandchild").read_text()) for name in names]
    trainers = [int((job_dir / f"{name}.ready").read_text()) for name in names]
    supervisors = [entry["pid"] for entry in state["replicas"]]

    started = time.monotonic()
    runner.stop(state, grace_s=0.5)
    assert time.monotonic() - started < 4.0
    for pid in grandchildren + trainers + supervisors:
        assert pid_gone(pid), (pid, describe(pid), grandchildren, trainers, supervisors)
    for pgid in supervisors:
        assert group_pids(pgid) == []
    statuses = {s.replica.name: (s.phase, s.exit_code) for s in runner.poll(state)}
    assert statuses == {
        "master-replica-0": (ReplicaPhase.EXITED, -signal.SIGTERM),
        "worker-replica-0": (ReplicaPhase.EXITED, -signal.SIGKILL),
    }
    started = time.monotonic()
    runner.stop(state, grace_s=5.0)  # idempotent, and quick when nothing is left
    assert time.monotonic() - started < 1.0


def test_a_fresh_instance_takes_over(
    runner: LocalRunner, make_spec: Callable[..., LaunchSpec]
) -> None:
    state = runner.start(make_spec(["--sleep-master"]))
    other = LocalRunner()
    assert [s.phase for s in other.poll(json.loads(json.dumps(state)))] == [ReplicaPhase.RUNNING]
    started = time.monotonic()
    other.stop(state, grace_s=5.0)  # right after start: the SIGTERM still reaches the trainer
    assert time.monotonic() - started < 2.5
    assert [(s.phase, s.exit_code) for s in runner.poll(state)] == [
        (ReplicaPhase.EXITED, -signal.SIGTERM)
    ]
    assert pid_gone(state["replicas"][0]["pid"])


def test_state_from_another_process(make_spec: Callable[..., LaunchSpec], tmp_path: Path) -> None:
    spec = make_spec(["--sleep-master"])
    script = textwrap.dedent(
        f"""\
        import json, sys
        from pathlib import Path
        from mlengine.jobs.runners import LaunchSpec, ReplicaSpec
        from mlengine.jobs.runners._local import LocalRunner
        spec = LaunchSpec(
            job_id="job_1", python=sys.executable, module="trainer.task",
            args={list(spec.args)!r}, job_dir={spec.job_dir!r}, run_dir=Path({str(spec.run_dir)!r}),
            log_dir=Path({str(spec.log_dir)!r}), replicas=[ReplicaSpec("master", 0)],
            env={dict(spec.env)!r},
        )
        print(json.dumps(LocalRunner().start(spec)))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    state = json.loads(done.stdout)
    runner = LocalRunner()
    try:
        wait_for((tmp_path / "job" / "master-replica-0.ready").exists)
        assert [s.phase for s in runner.poll(state)] == [ReplicaPhase.RUNNING]
        pgid = state["replicas"][0]["pid"]
        assert group_pids(pgid)
    finally:
        runner.stop(state, grace_s=1.0)
    # The supervisor's parent is gone, so init adopted it; here only liveness is ours to check.
    assert group_pids(pgid) == []
    assert not pid_running(pgid)
    assert [(s.phase, s.exit_code) for s in runner.poll(state)] == [
        (ReplicaPhase.EXITED, -signal.SIGTERM)
    ]


def test_killed_supervisor_is_lost(
    runner: LocalRunner, make_spec: Callable[..., LaunchSpec], tmp_path: Path
) -> None:
    state = runner.start(make_spec(["--sleep-master"]))
    wait_for((tmp_path / "job" / "master-replica-0.ready").exists)
    trainer = int((tmp_path / "job" / "master-replica-0.ready").read_text())
    os.kill(state["replicas"][0]["pid"], signal.SIGKILL)
    wait_for(lambda: runner.poll(state)[0].phase is ReplicaPhase.LOST)
    runner.stop(state, grace_s=1.0)  # the orphaned trainer is still in the group
    assert not pid_running(trainer)
    assert runner.poll(state)[0].phase is ReplicaPhase.LOST


def test_missing_interpreter_exits_127(
    runner: LocalRunner, make_spec: Callable[..., LaunchSpec]
) -> None:
    spec = make_spec([], python="/nonexistent/python")
    state = runner.start(spec)
    assert wait_exited(runner, state) == {"master-replica-0": 127}
    entries, _ = read_logs(spec.log_dir)
    assert entries[0].stream == "stderr"
    assert "cannot start '/nonexistent/python'" in entries[0].message


def test_failed_launch_stops_the_started_replicas(
    make_spec: Callable[..., LaunchSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    launched: list[int] = []
    real_popen = subprocess.Popen

    def flaky_popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        if launched:
            raise OSError("no more processes")
        process = real_popen(*args, **kwargs)
        launched.append(process.pid)
        return process

    monkeypatch.setattr(_local.subprocess, "Popen", flaky_popen)
    spec = make_spec(["--sleep-master"], {**CUSTOM, "parameterServerCount": 0})
    with pytest.raises(OperationFailed, match="Cannot start worker-replica-0 of job job_1"):
        LocalRunner().start(spec)
    assert launched
    assert pid_gone(launched[0])
    assert group_pids(launched[0]) == []


def test_get_runner_returns_the_local_runner() -> None:
    runner = get_runner("local")
    assert isinstance(runner, LocalRunner)
    assert runner.name == "local"
    assert ReplicaSpec("master", 0).is_primary


def test_leftover_is_what_start_recorded_in_the_run_dir(
    runner: LocalRunner, make_spec: Callable[..., LaunchSpec], tmp_path: Path
) -> None:
    spec = make_spec(["--sleep-master"])
    assert runner.leftover(spec.run_dir) is None  # nothing started there yet
    state = runner.start(spec)
    left = runner.leftover(spec.run_dir)
    assert left is not None
    assert [e["pid"] for e in left["replicas"]] == [e["pid"] for e in state["replicas"]]
    runner.stop(left, grace_s=1.0)  # what a scheduler does before starting the job again
    assert [s.phase for s in runner.poll(state)] == [ReplicaPhase.EXITED]
    (spec.run_dir / "runner-state.json").write_text("{not json")
    assert runner.leftover(spec.run_dir) is None
    assert runner.leftover(tmp_path / "nowhere") is None
