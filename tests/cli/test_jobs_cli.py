"""The CLI as a user runs it: real processes, a real server, one-line errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import ServerProcess

pytestmark = pytest.mark.integration

Cli = Callable[..., subprocess.CompletedProcess[str]]


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The CLI's error: exactly one line on stderr starting with ERROR."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ERROR: "), lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


def submit(
    run_cli: Cli, job: str, package: Path, job_dir: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "jobs",
        "submit",
        "training",
        job,
        "--module-name",
        "trainer.task",
        "--package-path",
        str(package),
        "--job-dir",
        str(job_dir),
        *extra,
    )


def wait_state(run_cli: Cli, job: str, states: set[str], timeout: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = run_cli("jobs", "describe", job, "--format", "json")
        assert result.returncode == 0, result.stderr
        resource: dict[str, str] = json.loads(result.stdout)
        if resource["state"] in states:
            return resource
        time.sleep(0.2)
    raise AssertionError(f"{job} never reached {states}")


def test_commands_start_a_server_when_none_answers(run_cli: Cli, home: Path) -> None:
    assert run_cli("server", "status").returncode == 1
    try:
        listed = run_cli("jobs", "list", "--format", "json")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout) == []
        assert "Started a local mlengine server" in listed.stderr
        status = run_cli("server", "status", "--format", "json")
        assert status.returncode == 0
        assert json.loads(status.stdout)["home"] == str(home)
        again = run_cli("jobs", "list")
        assert "Started" not in again.stderr
    finally:
        stopped = run_cli("server", "stop")
    assert stopped.returncode == 0 and "Stopped" in stopped.stderr
    assert run_cli("server", "status").returncode == 1


def test_submit_stream_describe_list(
    run_cli: Cli, server: ServerProcess, trainer_package: Path, tmp_path: Path
) -> None:
    result = submit(
        run_cli,
        "cli_ok",
        trainer_package,
        tmp_path / "out",
        "--labels",
        "team=ml",
        "--stream-logs",
        "--",
        "--epochs",
        "3",
    )
    assert result.returncode == 0, result.stderr
    assert "master-replica-0" in result.stdout
    assert "trainer chief-0 done" in result.stdout
    assert "Job completed successfully." in result.stdout
    described = run_cli("jobs", "describe", "cli_ok", "--format", "json")
    resource = json.loads(described.stdout)
    assert resource["state"] == "SUCCEEDED"
    assert resource["labels"] == {"team": "ml"}
    assert resource["trainingInput"]["args"] == ["--epochs", "3"]
    as_yaml = yaml.safe_load(run_cli("jobs", "describe", "cli_ok", "--format", "yaml").stdout)
    assert as_yaml == resource
    listed = run_cli("jobs", "list", "--filter", "labels.team:ml", "--format", "json")
    assert [job["jobId"] for job in json.loads(listed.stdout)] == ["cli_ok"]
    table = run_cli("jobs", "list")
    assert "JOB_ID" in table.stdout and "cli_ok" in table.stdout and "SUCCEEDED" in table.stdout
    logs = run_cli("jobs", "stream-logs", "cli_ok", "--task-name", "master-replica-0")
    assert logs.returncode == 0
    assert logs.stdout and all("master-replica-0" in line for line in logs.stdout.splitlines())


def test_submit_returns_at_once_and_the_job_outlives_the_cli(
    run_cli: Cli, server: ServerProcess, trainer_package: Path, tmp_path: Path
) -> None:
    result = submit(
        run_cli,
        "cli_bg",
        trainer_package,
        tmp_path / "out",
        "--format",
        "json",
        "--",
        "--sleep",
        "2",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["state"] == "QUEUED"
    assert wait_state(run_cli, "cli_bg", {"SUCCEEDED", "FAILED"})["state"] == "SUCCEEDED"


def test_failed_job_with_stream_logs_exits_1(
    run_cli: Cli, server: ServerProcess, trainer_package: Path, tmp_path: Path
) -> None:
    result = submit(
        run_cli, "cli_crash", trainer_package, tmp_path / "out", "--stream-logs", "--", "--crash"
    )
    assert result.returncode == 1
    assert "RuntimeError: the trainer crashed on purpose" in result.stdout
    line = error_line(result.__class__(result.args, 1, "", result.stderr.split("\n", 1)[1]))
    assert "FAILED" in line and "non-zero status of 1" in line
    unknown = run_cli(
        "jobs",
        "submit",
        "training",
        "cli_nomodule",
        "--module-name",
        "trainer.missing",
        "--package-path",
        str(trainer_package),
        "--stream-logs",
    )
    assert unknown.returncode == 1
    resource = wait_state(run_cli, "cli_nomodule", {"FAILED"})
    assert "No module named trainer.missing" in resource["errorMessage"]


def test_cancel_from_the_cli(
    run_cli: Cli, server: ServerProcess, trainer_package: Path, tmp_path: Path
) -> None:
    assert (
        submit(
            run_cli, "cli_cancel", trainer_package, tmp_path / "out", "--", "--sleep", "60"
        ).returncode
        == 0
    )
    wait_state(run_cli, "cli_cancel", {"RUNNING"})
    cancelled = run_cli("jobs", "cancel", "cli_cancel", "--wait")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "CANCELLED" in cancelled.stderr
    again = run_cli("jobs", "cancel", "cli_cancel")
    assert again.returncode == 2
    assert "already finished with state CANCELLED" in error_line(again)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scale-tier", "mega"], "'scaleTier'"),
        (["--worker-count", "2"], "--worker-count needs --worker-machine-type"),
        (["--parameter-server-count", "1"], "must be given together"),
        (["--labels", "Bad=Value"], "labels"),
        (["--master-accelerator", "count=1"], "type=TYPE"),
        (["--worker-accelerator", "type=k80"], "unknown accelerator type 'k80'"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    run_cli: Cli,
    server: ServerProcess,
    trainer_package: Path,
    tmp_path: Path,
    args: list[str],
    message: str,
) -> None:
    result = submit(run_cli, "cli_bad", trainer_package, tmp_path / "out", *args)
    assert result.returncode == 2
    assert message in error_line(result)
    assert run_cli("jobs", "describe", "cli_bad").returncode == 2  # nothing half-created


def test_bad_inputs_exit_2_with_one_line(
    run_cli: Cli, server: ServerProcess, trainer_package: Path, tmp_path: Path
) -> None:
    missing = submit(run_cli, "cli_x", tmp_path / "nowhere", tmp_path / "out")
    assert missing.returncode == 2 and "nowhere" in error_line(missing)
    broken = tmp_path / "job.yaml"
    broken.write_text("trainingInput: [unclosed\n")
    bad_yaml = submit(run_cli, "cli_x", trainer_package, tmp_path / "out", "--config", str(broken))
    assert bad_yaml.returncode == 2 and "not valid YAML" in error_line(bad_yaml)
    bad_id = submit(run_cli, "1-bad", trainer_package, tmp_path / "out")
    assert bad_id.returncode == 2 and "'jobId'" in error_line(bad_id)
    unknown_job = run_cli("jobs", "describe", "nope")
    assert unknown_job.returncode == 2 and "not found" in error_line(unknown_job)
    assert submit(run_cli, "cli_dup", trainer_package, tmp_path / "out").returncode == 0
    duplicate = submit(run_cli, "cli_dup", trainer_package, tmp_path / "other")
    assert duplicate.returncode == 2 and "already exists" in error_line(duplicate)
    usage = run_cli("jobs", "list", "--page-size", "0")
    assert usage.returncode == 2


def test_config_file_with_flags_winning(
    run_cli: Cli, server: ServerProcess, trainer_package: Path, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "labels": {"team": "ml", "owner": "a"},
                "trainingInput": {
                    "scaleTier": "CUSTOM",
                    "masterType": "n1-standard-4",
                    "workerType": "n1-standard-4",
                    "workerCount": 1,
                    "args": ["--from-config", "--sleep", "2"],
                    "region": "us-central1",
                },
            }
        )
    )
    result = submit(
        run_cli,
        "cli_config",
        trainer_package,
        tmp_path / "out",
        "--config",
        str(config),
        "--labels",
        "owner=b",
        "--format",
        "json",
    )
    assert result.returncode == 0, result.stderr
    resource = json.loads(result.stdout)
    assert resource["labels"] == {"team": "ml", "owner": "b"}
    training = resource["trainingInput"]
    assert training["workerCount"] == "1" and training["scaleTier"] == "CUSTOM"
    assert (
        training["args"] == ["--from-config", "--sleep", "2"]
        and training["region"] == "us-central1"
    )
    done = wait_state(run_cli, "cli_config", {"SUCCEEDED", "FAILED"})
    assert done["state"] == "SUCCEEDED", done.get("errorMessage")
    assert (tmp_path / "out" / "worker-0.json").exists()


def test_restarted_server_reconciles_jobs_after_kill_9(
    run_cli: Cli, server: ServerProcess, trainer_package: Path, tmp_path: Path
) -> None:
    assert (
        submit(
            run_cli, "cli_survive", trainer_package, tmp_path / "a", "--", "--sleep", "3"
        ).returncode
        == 0
    )
    assert (
        submit(
            run_cli, "cli_lost", trainer_package, tmp_path / "b", "--", "--sleep", "60"
        ).returncode
        == 0
    )
    wait_state(run_cli, "cli_survive", {"RUNNING"})
    wait_state(run_cli, "cli_lost", {"RUNNING"})
    lost_pid = json.loads((tmp_path / "b" / "chief-0.json").read_text())["pid"]
    server.kill()
    subprocess.run(["kill", "-9", str(lost_pid)], check=True)  # dies while no server watches
    restarted = ServerProcess(server.settings).start()
    try:
        survived = wait_state(run_cli, "cli_survive", {"SUCCEEDED", "FAILED"})
        assert survived["state"] == "SUCCEEDED", survived.get("errorMessage")
        lost = wait_state(run_cli, "cli_lost", {"SUCCEEDED", "FAILED"})
        assert lost["state"] == "FAILED"
        assert "killed by SIGKILL" in lost["errorMessage"]
    finally:
        restarted.stop()


def test_local_train_runs_in_the_foreground(
    run_cli: Cli, trainer_package: Path, tmp_path: Path
) -> None:
    result = run_cli(
        "local",
        "train",
        "--module-name",
        "trainer.task",
        "--package-path",
        str(trainer_package),
        "--job-dir",
        str(tmp_path / "out"),
        "--",
        "--exit",
        "3",
    )
    assert result.returncode == 3
    assert "trainer master-0 started" in result.stdout or "started" in result.stdout
    record = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert record["argv"][-2:] == ["--job-dir", str(tmp_path / "out")]
    assert record["cwd"] == str(trainer_package.parent)
    distributed = run_cli(
        "local",
        "train",
        "--module-name",
        "trainer.task",
        "--package-path",
        str(trainer_package),
        "--job-dir",
        str(tmp_path / "dist"),
        "--distributed",
        "--worker-count",
        "1",
        "--parameter-server-count",
        "0",
        "--",
        "--sleep",
        "1",  # the worker speaks before the master's exit ends the run
    )
    assert distributed.returncode == 0, distributed.stderr
    assert "worker-replica-0: " in distributed.stdout
    bad = run_cli(
        "local", "train", "--module-name", "trainer.nope", "--package-path", str(trainer_package)
    )
    assert bad.returncode == 2 and "trainer.nope" in error_line(bad)
