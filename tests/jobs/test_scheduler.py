"""The scheduler with a real metadata store, real trainer environments and the local runner."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlengine.config import Settings
from mlengine.jobs import JobService, Scheduler
from mlengine.jobs._packaging import build_package
from mlengine.store import MetadataStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(settings: Settings) -> Iterator[MetadataStore]:
    instance = MetadataStore(settings.database_url)
    instance.upgrade()
    yield instance
    instance.dispose()


@pytest.fixture
def package_uri(trainer_package: Path, tmp_path: Path) -> str:
    return str(build_package(trainer_package, tmp_path / "dist"))


@pytest.fixture
def make_scheduler(store: MetadataStore, settings: Settings) -> Iterator[Callable[..., Scheduler]]:
    started: list[Scheduler] = []

    def make(start: bool = True, **options: Any) -> Scheduler:
        options.setdefault("poll_interval", 0.05)
        scheduler = Scheduler(store, settings, **options)
        if start:
            scheduler.start()
        started.append(scheduler)
        return scheduler

    yield make
    for scheduler in started:
        scheduler.stop()


def submit(
    service: JobService, job_id: str, uri: str, job_dir: Path, *args: str, **training: Any
) -> None:
    service.create(
        "p",
        {
            "jobId": job_id,
            "trainingInput": {
                "pythonModule": "trainer.task",
                "packageUris": [uri],
                "args": list(args),
                "jobDir": str(job_dir),
                **training,
            },
        },
    )


def wait_for(
    service: JobService, job_id: str, states: set[str], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = service.get("p", job_id)
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"{job_id} is {service.get('p', job_id)['state']}, not in {states}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().split(")")[-1].split()[0] != "Z"


def wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def record(job_dir: Path, name: str = "chief-0", timeout: float = 30) -> dict[str, Any]:
    path = job_dir / f"{name}.json"
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    time.sleep(0.05)
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def wait_until_leader(scheduler: Scheduler, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not scheduler.is_leader and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scheduler.is_leader, f"{scheduler.owner} never took the lease"


def refuse_running_record(store: MetadataStore, refuse: Callable[[], None]) -> None:
    """Make `store.update_job` call `refuse` (which raises) instead of recording a job
    RUNNING: what a server that dies, or a database that fails, right after the runner
    started the replicas looks like from the job's side."""
    record_job = store.update_job

    def update_job(project: str, job_id: str, **changes: Any) -> bool:
        if changes.get("state") == "RUNNING":
            refuse()
        return record_job(project, job_id, **changes)

    store.update_job = update_job  # type: ignore[method-assign]


def test_job_runs_to_success_with_the_trainer_contract(
    store: MetadataStore,
    settings: Settings,
    make_scheduler: Callable[..., Scheduler],
    package_uri: str,
    tmp_path: Path,
) -> None:
    service = JobService(store, settings)
    make_scheduler()
    submit(service, "ok", package_uri, tmp_path / "out", "--epochs", "3")
    job = wait_for(service, "ok", {"SUCCEEDED", "FAILED"})
    assert job["state"] == "SUCCEEDED", job.get("errorMessage")
    assert job["createTime"] <= job["startTime"] <= job["endTime"]
    trainer = record(tmp_path / "out")
    assert trainer["argv"] == ["--epochs", "3", "--job-dir", str(tmp_path / "out")]
    assert Path(trainer["cwd"]).is_relative_to(settings.home_path)
    assert (Path(trainer["cwd"]) / "relative-output.txt").read_text() == "chief-0"
    assert trainer["env"]["CLOUD_ML_JOB_ID"] == "ok"
    tf_config = json.loads(trainer["env"]["TF_CONFIG"])
    assert json.loads(tf_config["job"])["python_module"] == "trainer.task"
    assert trainer["env"]["AIP_MODEL_DIR"].startswith(str(tmp_path / "out"))
    messages = [e["message"] for e in service.logs("p", "ok")["entries"]]
    assert "trainer chief-0 done" in messages
    assert "Job completed successfully." in messages


def test_failed_job_reports_the_tail_of_stderr(
    store: MetadataStore,
    settings: Settings,
    make_scheduler: Callable[..., Scheduler],
    package_uri: str,
    tmp_path: Path,
) -> None:
    service = JobService(store, settings)
    make_scheduler()
    submit(service, "crash", package_uri, tmp_path / "out", "--crash")
    submit(service, "exit3", package_uri, tmp_path / "out3", "--exit", "3")
    crashed = wait_for(service, "crash", {"SUCCEEDED", "FAILED"})
    assert crashed["state"] == "FAILED"
    assert "The replica master 0 exited with a non-zero status of 1." in crashed["errorMessage"]
    assert "RuntimeError: the trainer crashed on purpose" in crashed["errorMessage"]
    exited = wait_for(service, "exit3", {"SUCCEEDED", "FAILED"})
    assert "non-zero status of 3" in exited["errorMessage"]


def test_killed_trainer_is_reported_as_possibly_out_of_memory(
    store: MetadataStore,
    settings: Settings,
    make_scheduler: Callable[..., Scheduler],
    package_uri: str,
    tmp_path: Path,
) -> None:
    service = JobService(store, settings)
    make_scheduler()
    submit(service, "oom", package_uri, tmp_path / "out", "--kill-self")
    job = wait_for(service, "oom", {"SUCCEEDED", "FAILED"})
    assert job["state"] == "FAILED"
    assert job["errorMessage"].startswith(
        "The replica master 0 was killed by SIGKILL (out of memory, or killed from outside)."
    )


def test_cancel_running_job_kills_the_process_tree(
    store: MetadataStore,
    settings: Settings,
    make_scheduler: Callable[..., Scheduler],
    package_uri: str,
    tmp_path: Path,
) -> None:
    service = JobService(store, settings)
    make_scheduler()
    submit(service, "long", package_uri, tmp_path / "out", "--spawn-child", "--sleep", "120")
    wait_for(service, "long", {"RUNNING"})
    trainer = record(tmp_path / "out")
    child = int((tmp_path / "out" / "chief-0.child").read_text())
    assert alive(trainer["pid"]) and alive(child)
    service.cancel("p", "long")
    assert service.get("p", "long")["state"] in ("CANCELLING", "CANCELLED")
    job = wait_for(service, "long", {"CANCELLED"}, timeout=20)
    assert job["errorMessage"] == "Job cancelled by the user."
    assert "endTime" in job
    assert wait_gone(trainer["pid"]) and wait_gone(child)


def test_a_job_created_beside_a_follower_wakes_the_leader(
    store: MetadataStore,
    settings: Settings,
    make_scheduler: Callable[..., Scheduler],
    package_uri: str,
    tmp_path: Path,
) -> None:
    """`server run --workers N`: the process that took the request is not the leader; its
    wake reaches the leader, which would otherwise find the job on its next idle poll only
    (here ten minutes away)."""
    service = JobService(store, settings)
    leader = make_scheduler(idle_interval=600.0, lease_ttl=1800.0)
    wait_until_leader(leader)
    assert leader.wakeups.listening
    follower = make_scheduler(idle_interval=600.0, lease_ttl=1800.0)
    time.sleep(0.3)  # its first pass found the lease taken
    assert not follower.is_leader and not follower.wakeups.listening
    submit(service, "woken", package_uri, tmp_path / "out")
    follower.wake()  # what the follower's job API does after creating the job
    job = wait_for(service, "woken", {"SUCCEEDED", "FAILED"}, timeout=120)
    assert job["state"] == "SUCCEEDED", job.get("errorMessage")
    assert leader.wakeups.wakeups >= 1


def test_passes_are_paced_by_role_and_load(
    store: MetadataStore, settings: Settings, make_scheduler: Callable[..., Scheduler]
) -> None:
    scheduler = make_scheduler(start=False, poll_interval=0.05, idle_interval=1.0, lease_ttl=15)
    assert scheduler.next_wait() == 5.0  # a follower: three tries per lease lifetime
    scheduler.step()  # takes the lease; no job: idle
    assert scheduler.is_leader and scheduler.next_wait() == 1.0
    sleepy = make_scheduler(start=False, idle_interval=600.0, lease_ttl=15)
    sleepy.is_leader, sleepy._idle = True, True
    assert sleepy.next_wait() == 5.0  # idle, but renewing in time
    sleepy._idle = False
    assert sleepy.next_wait() == sleepy.poll_interval


def test_an_idle_leader_renews_its_lease_in_time(
    make_scheduler: Callable[..., Scheduler],
) -> None:
    """However long its idle interval, a leader passes (and renews) at least three times per
    lease: a follower never takes over from a live, idle leader."""
    leader = make_scheduler(idle_interval=600.0, lease_ttl=1.5)
    wait_until_leader(leader)
    follower = make_scheduler(idle_interval=600.0, lease_ttl=1.5)
    time.sleep(4.0)  # more than two lease lifetimes
    assert leader.is_leader and not follower.is_leader
    assert leader.store.lease_owner("scheduler", time.time()) == leader.owner


def test_cancel_of_queued_job_is_immediate(
    store: MetadataStore,
    settings: Settings,
    package_uri: str,
    tmp_path: Path,
) -> None:
    service = JobService(store, settings)
    submit(service, "queued", package_uri, tmp_path / "out")
    service.cancel("p", "queued")
    job = service.get("p", "queued")
    assert job["state"] == "CANCELLED"
    assert "startTime" not in job


def test_a_new_scheduler_adopts_running_jobs_after_a_crash(
    store: MetadataStore,
    settings: Settings,
    make_scheduler: Callable[..., Scheduler],
    package_uri: str,
    tmp_path: Path,
) -> None:
    service = JobService(store, settings)
    first = make_scheduler(lease_ttl=1.0)
    submit(service, "survivor", package_uri, tmp_path / "out", "--sleep", "3")
    wait_for(service, "survivor", {"RUNNING"})
    first._stopping.set()  # the first scheduler "dies": it stops without releasing its lease
    assert first._thread is not None
    first._thread.join(5)
    second = make_scheduler(start=False, lease_ttl=5.0)
    second.step()
    assert not second.is_leader  # the dead owner's lease has not expired yet
    time.sleep(1.1)
    second.start()
    job = wait_for(service, "survivor", {"SUCCEEDED", "FAILED"})
    assert job["state"] == "SUCCEEDED", job.get("errorMessage")
    assert second.is_leader


def test_replicas_left_by_an_interrupted_start_are_stopped_before_it_starts_again(
    store: MetadataStore,
    settings: Settings,
    make_scheduler: Callable[..., Scheduler],
    package_uri: str,
    tmp_path: Path,
) -> None:
    """A server that stops after its runner started the replicas but before it recorded the
    job RUNNING leaves a PREPARING job and live replicas: the next scheduler requeues the job,
    and stops those replicas before starting it again (no trainer runs twice)."""
    service = JobService(store, settings)
    frozen = threading.Event()
    dying_store = MetadataStore(settings.database_url)
    first = Scheduler(dying_store, settings, poll_interval=0.05, lease_ttl=1.0)

    def die() -> None:  # the server "dies" here: it never records the job RUNNING
        first._stopping.set()
        frozen.wait(120)
        raise RuntimeError("the server died")

    refuse_running_record(dying_store, die)
    first.start()
    try:
        submit(service, "twice", package_uri, tmp_path / "out", "--sleep", "60")
        state_file = next(iter(_eventually_glob(settings.home_path, "runner-state.json")))
        old = json.loads(state_file.read_text())
        old_pids = [int(entry["pid"]) for entry in old["replicas"]]
        assert old_pids and all(alive(pid) for pid in old_pids)
        assert service.get("p", "twice")["state"] == "PREPARING"
        second = make_scheduler(lease_ttl=5.0)
        job = wait_for(service, "twice", {"RUNNING", "FAILED"}, timeout=120)
        assert job["state"] == "RUNNING", job.get("errorMessage")
        assert all(wait_gone(pid) for pid in old_pids), "the first start's replicas still run"
        messages = [e["message"] for e in service.logs("p", "twice")["entries"]]
        assert "Stopping the replicas an interrupted start left running..." in messages
        new_pids = [
            int(entry["pid"]) for entry in store.get_job("p", "twice").runner_state["replicas"]
        ]
        assert set(new_pids).isdisjoint(old_pids) and all(alive(pid) for pid in new_pids)
        service.cancel("p", "twice")
        assert wait_for(service, "twice", {"CANCELLED"})["state"] == "CANCELLED"
        assert second.is_leader
    finally:
        frozen.set()
        first.stop()
        dying_store.dispose()


def test_replicas_are_stopped_when_their_start_cannot_be_recorded(
    settings: Settings, package_uri: str, tmp_path: Path
) -> None:
    """The store refuses the RUNNING record (a database error): the job fails, and the
    replicas already started do not run on unwatched."""
    failing_store = MetadataStore(settings.database_url)
    failing_store.upgrade()
    service = JobService(failing_store, settings)

    def fail() -> None:
        raise RuntimeError("database is locked")

    refuse_running_record(failing_store, fail)
    scheduler = Scheduler(failing_store, settings, poll_interval=0.05)
    scheduler.start()
    try:
        submit(service, "unrecorded", package_uri, tmp_path / "out", "--sleep", "60")
        state_file = _eventually_glob(settings.home_path, "runner-state.json")[0]
        job = wait_for(service, "unrecorded", {"FAILED", "SUCCEEDED"}, timeout=120)
        assert job["state"] == "FAILED"
        assert "database is locked" in job["errorMessage"]
        pids = [int(entry["pid"]) for entry in json.loads(state_file.read_text())["replicas"]]
        assert pids and all(wait_gone(pid) for pid in pids)
    finally:
        scheduler.stop()
        failing_store.dispose()


def _eventually_glob(root: Path, name: str, timeout: float = 120) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(root.rglob(name))
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no {name} under {root}")


def test_vanished_replicas_fail_the_job_with_the_reason(
    store: MetadataStore,
    settings: Settings,
    make_scheduler: Callable[..., Scheduler],
    package_uri: str,
    tmp_path: Path,
) -> None:
    service = JobService(store, settings)
    make_scheduler()
    submit(service, "lost", package_uri, tmp_path / "out", "--sleep", "120")
    wait_for(service, "lost", {"RUNNING"})
    record(tmp_path / "out")
    state = store.get_job("p", "lost").runner_state
    assert state is not None
    for replica in state["replicas"]:
        os.killpg(replica["pid"], signal.SIGKILL)  # supervisor and trainer die together
    job = wait_for(service, "lost", {"FAILED", "SUCCEEDED"})
    assert job["state"] == "FAILED"
    assert "was lost" in job["errorMessage"]


def test_orphaned_preparation_is_queued_again(
    store: MetadataStore,
    settings: Settings,
    make_scheduler: Callable[..., Scheduler],
    package_uri: str,
    tmp_path: Path,
) -> None:
    service = JobService(store, settings)
    submit(service, "orphan", package_uri, tmp_path / "out")
    store.update_job("p", "orphan", state="PREPARING")  # a dead server was preparing it
    make_scheduler()
    job = wait_for(service, "orphan", {"SUCCEEDED", "FAILED"})
    assert job["state"] == "SUCCEEDED", job.get("errorMessage")
    messages = [e["message"] for e in service.logs("p", "orphan")["entries"]]
    assert any("queued again" in m for m in messages)


def test_concurrency_limit_keeps_jobs_queued(
    store: MetadataStore,
    home: Path,
    package_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLENGINE_MAX_RUNNING_JOBS", "1")
    settings = Settings.load()
    service = JobService(store, settings)
    scheduler = Scheduler(store, settings, poll_interval=0.05)
    scheduler.start()
    try:
        submit(service, "first", package_uri, tmp_path / "a", "--sleep", "2")
        submit(service, "second", package_uri, tmp_path / "b")
        wait_for(service, "first", {"RUNNING"})
        second = service.get("p", "second")
        assert second["state"] == "QUEUED"
        assert second["jobPosition"] == "1"
        assert wait_for(service, "second", {"SUCCEEDED"})["state"] == "SUCCEEDED"
        first = service.get("p", "first")
        assert first["endTime"] <= service.get("p", "second")["startTime"]
    finally:
        scheduler.stop()


def test_missing_package_fails_the_job_clearly(
    store: MetadataStore,
    settings: Settings,
    make_scheduler: Callable[..., Scheduler],
    tmp_path: Path,
) -> None:
    service = JobService(store, settings)
    make_scheduler()
    missing = str(tmp_path / "nowhere" / "trainer-0.1.tar.gz")
    submit(service, "nopkg", missing, tmp_path / "out")
    job = wait_for(service, "nopkg", {"FAILED", "SUCCEEDED"})
    assert job["state"] == "FAILED"
    assert missing in job["errorMessage"]


def test_max_running_time_stops_the_job(
    store: MetadataStore,
    settings: Settings,
    make_scheduler: Callable[..., Scheduler],
    package_uri: str,
    tmp_path: Path,
) -> None:
    service = JobService(store, settings)
    make_scheduler()
    submit(
        service,
        "slow",
        package_uri,
        tmp_path / "out",
        "--sleep",
        "60",
        scheduling={"maxRunningTime": "1s"},
    )
    job = wait_for(service, "slow", {"FAILED", "SUCCEEDED"}, timeout=30)
    assert job["state"] == "FAILED"
    assert "maxRunningTime=1s" in job["errorMessage"]
